//! The source identity of this control plane's copies (`synced_from`): the
//! configured value, else the one recorded on the SyncTargets, else, for a
//! new install, a value unique to this control plane. tmcd records it on
//! every SyncTarget it registers (annotation
//! [`tmc_syncer::identity::SYNCED_FROM_ANNOTATION`]), where pull agents read
//! it, so push and pull syncers agree and the value survives restarts.
//!
//! Installs that predate the record keep the legacy default (the workspace
//! path as a label value, which two kcp instances share): their copies carry
//! it, and a changed identity would orphan every one of them.

use anyhow::{Context as _, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::{Client, CustomResourceExt, ResourceExt};
use tmc_api::crd::SyncTarget;
use tmc_syncer::identity::{SYNCED_FROM_ANNOTATION, unique_synced_from};

use crate::config::Config;

/// Where the value came from, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `synced_from` in tmc.toml.
    Configured,
    /// Recorded on the SyncTargets by an earlier start.
    Recorded,
    /// SyncTargets registered before tmcd recorded identities: the legacy default.
    Legacy,
    /// A new install: unique to this control plane.
    Unique,
}

/// The synced-from value, decided from what the configured clusters'
/// SyncTargets record (`recorded`: one entry per existing SyncTarget, with
/// its annotation) and, for a new install, the UID of tmc's SyncTarget CRD.
pub fn decide(
    config: &Config,
    recorded: &[(String, Option<String>)],
    crd_uid: Option<&str>,
) -> Result<(String, Origin)> {
    if let Some(value) = &config.synced_from {
        return Ok((value.get_ref().clone(), Origin::Configured));
    }
    let workspace = config
        .control_plane
        .workspace
        .as_ref()
        .map(|ws| ws.get_ref().as_str());
    let mut values: Vec<&str> = recorded.iter().filter_map(|(_, v)| v.as_deref()).collect();
    values.sort_unstable();
    values.dedup();
    match values.as_slice() {
        [one] => return Ok(((*one).to_string(), Origin::Recorded)),
        [] => {}
        many => bail!(
            "the SyncTargets record different synced-from values ({}: {}); tmcd cannot tell which one its copies carry (fix: set synced_from in tmc.toml to the value of this control plane's copies)",
            SYNCED_FROM_ANNOTATION,
            many.join(", ")
        ),
    }
    if !recorded.is_empty() {
        let legacy = tmc_syncer::SourceIdentity::resolve(workspace, None).synced_from;
        return Ok((legacy, Origin::Legacy));
    }
    let uid = crd_uid.context("tmc's SyncTarget CRD has no UID to derive a unique synced_from from (fix: set synced_from in tmc.toml)")?;
    Ok((unique_synced_from(workspace, uid), Origin::Unique))
}

/// Resolves the synced-from value against the control plane (see [`decide`]).
pub async fn resolve(client: &Client, config: &Config) -> Result<String> {
    let targets: Api<SyncTarget> = Api::all(client.clone());
    let mut recorded = Vec::new();
    for cluster in &config.clusters {
        let name = cluster.name.get_ref();
        if let Some(st) = targets
            .get_opt(name)
            .await
            .with_context(|| format!("reading SyncTarget {name}"))?
        {
            recorded.push((
                name.clone(),
                st.annotations().get(SYNCED_FROM_ANNOTATION).cloned(),
            ));
        }
    }
    let crd_uid = if config.synced_from.is_none() && recorded.is_empty() {
        let name = SyncTarget::crd_name();
        let crd = Api::<CustomResourceDefinition>::all(client.clone())
            .get(name)
            .await
            .with_context(|| format!("reading CRD {name}"))?;
        crd.metadata.uid
    } else {
        None
    };
    let (value, origin) = decide(config, &recorded, crd_uid.as_deref())?;
    match origin {
        Origin::Legacy => {
            tracing::warn!(synced_from = %value, "SyncTargets registered before tmcd recorded source identities: keeping the legacy synced_from derived from the workspace path (another control plane with the same path would share it; set synced_from in tmc.toml to change it, which orphans the existing copies)")
        }
        _ => tracing::info!(synced_from = %value, origin = ?origin, "source identity"),
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        crate::config::parse(Path::new("tmc.toml"), text, dir.path().to_path_buf()).expect("valid")
    }

    const WORKSPACE: &str = "[control_plane]\nworkspace = \"root:tmc\"\n";

    #[test]
    fn a_new_install_gets_a_value_unique_to_its_control_plane() {
        let cfg = config(WORKSPACE);
        let (a, origin) = decide(&cfg, &[], Some("crd-uid-a")).unwrap();
        assert_eq!(origin, Origin::Unique);
        let (b, _) = decide(&cfg, &[], Some("crd-uid-b")).unwrap();
        assert!(a.starts_with("root-tmc-") && a != b, "{a} {b}");
        assert!(
            decide(&cfg, &[], None)
                .unwrap_err()
                .to_string()
                .contains("fix:")
        );
    }

    #[test]
    fn the_recorded_value_survives_restarts_and_old_installs_keep_theirs() {
        let cfg = config(WORKSPACE);
        let recorded = [
            ("west".to_string(), Some("root-tmc-0a1b2c3d4e".to_string())),
            ("east".to_string(), Some("root-tmc-0a1b2c3d4e".to_string())),
            ("north".to_string(), None),
        ];
        assert_eq!(
            decide(&cfg, &recorded, None).unwrap(),
            ("root-tmc-0a1b2c3d4e".to_string(), Origin::Recorded)
        );
        let old = [("west".to_string(), None)];
        assert_eq!(
            decide(&cfg, &old, Some("crd-uid")).unwrap(),
            ("root-tmc".to_string(), Origin::Legacy)
        );
        let split = [
            ("west".to_string(), Some("a".to_string())),
            ("east".to_string(), Some("b".to_string())),
        ];
        let err = decide(&cfg, &split, None).unwrap_err().to_string();
        assert!(err.contains("a, b") && err.contains("fix:"), "{err}");
    }

    #[test]
    fn a_configured_value_wins() {
        let cfg = config("synced_from = \"prod-eu\"\n");
        let recorded = [("west".to_string(), Some("other".to_string()))];
        assert_eq!(
            decide(&cfg, &recorded, Some("uid")).unwrap(),
            ("prod-eu".to_string(), Origin::Configured)
        );
    }
}
