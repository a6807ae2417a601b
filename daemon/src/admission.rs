//! Only tmcd writes the decision protocol: a ValidatingAdmissionPolicy (and
//! its binding) that refuses, from anyone but tmcd, a create or update that
//! adds or changes a `state.workload.kcp.io/*` label or a
//! `result.workload.kcp.io/*` or `deletion.internal.workload.kcp.io/*`
//! annotation on a synced kind.
//!
//! Removing such a key stays allowed to everyone: it only leaves a target
//! undecided, and a syncer keeps the copy of an undecided target (tmcd
//! decides again). The pull agents only write `status.workload.kcp.io/*`
//! annotations and their finalizers and remove their own keys, so they need
//! no exemption. tmcd installs the policy at start where the control plane
//! serves `admissionregistration.k8s.io/v1` ValidatingAdmissionPolicies
//! ([`install`]); `config/admission/` holds the same manifest for operators
//! who install it themselves.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource as _};
use serde_json::json;
use tmc_api::decision::{
    DELETION_ANNOTATION_PREFIX, FIELD_MANAGER, RESULT_ANNOTATION_PREFIX, STATE_LABEL_PREFIX,
};
use tmc_syncer::SyncedKind;

use crate::config::Config;

/// Name of the policy and of its binding.
pub const POLICY_NAME: &str = "tmc-decision-protocol";

/// The username of the shipped manifest: the ServiceAccount of
/// `config/rbac/control-plane.yaml`.
pub const DEFAULT_WRITER: &str = "system:serviceaccount:tmc-system:tmcd";

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The policy is installed; only this username may write the protocol.
    Installed { writer: String },
    /// Not installed (the control plane does not serve the API, the config
    /// turned it off, or tmcd may not install it): the reason, as logged.
    Unguarded { reason: String },
}

/// The policy and its binding, exempting `writer` (tmcd's username), for
/// the synced `kinds`.
pub fn manifests(
    writer: &str,
    kinds: &[SyncedKind],
) -> Result<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)> {
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for kind in kinds {
        by_group
            .entry(kind.group.as_str())
            .or_default()
            .push(kind.plural.as_str());
    }
    let rules: Vec<_> = by_group
        .iter()
        .map(|(group, plurals)| {
            json!({
                "apiGroups": [group],
                "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"],
                "resources": plurals,
            })
        })
        .collect();
    let changed = |map: &str, old: &str, prefixes: &[&str]| {
        let prefix_test = prefixes
            .iter()
            .map(|p| format!("k.startsWith('{p}')"))
            .collect::<Vec<_>>()
            .join(" || ");
        format!(
            "variables.{map}.filter(k, ({prefix_test}) && !(k in variables.{old} && variables.{old}[k] == variables.{map}[k]))"
        )
    };
    let forged = format!(
        "{}.map(k, 'label ' + k) + {}.map(k, 'annotation ' + k)",
        changed("labels", "oldLabels", &[STATE_LABEL_PREFIX]),
        changed(
            "annotations",
            "oldAnnotations",
            &[RESULT_ANNOTATION_PREFIX, DELETION_ANNOTATION_PREFIX]
        ),
    );
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": rules},
            "matchConditions": [{
                "name": "not-tmcd",
                "expression": format!("request.userInfo.username != {}", cel_string(writer)),
            }],
            "variables": [
                {"name": "labels", "expression": "has(object.metadata.labels) ? object.metadata.labels : {}"},
                {"name": "oldLabels", "expression": "oldObject != null && has(oldObject.metadata.labels) ? oldObject.metadata.labels : {}"},
                {"name": "annotations", "expression": "has(object.metadata.annotations) ? object.metadata.annotations : {}"},
                {"name": "oldAnnotations", "expression": "oldObject != null && has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {}"},
                {"name": "forged", "expression": forged},
            ],
            "validations": [{
                "expression": "size(variables.forged) == 0",
                "messageExpression": "'only tmcd writes the decision protocol: ' + request.userInfo.username + ' may not add or change the ' + variables.forged.join(', ') + ' (fix: select the workload with a ClusterWorkloadPlacement and let tmcd place it; removing the key is allowed)'",
                "reason": "Forbidden",
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME},
        "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
    });
    Ok((
        serde_json::from_value(policy).context("building the admission policy")?,
        serde_json::from_value(binding).context("building the admission policy binding")?,
    ))
}

/// The manifest of `config/admission/decision-protocol.yaml`: the policy
/// for the default synced kinds, exempting [`DEFAULT_WRITER`].
pub fn shipped_yaml() -> Result<String> {
    let (policy, binding) = manifests(DEFAULT_WRITER, &SyncedKind::defaults())?;
    Ok(format!(
        "# Only tmcd writes the decision protocol (docs/security.md). tmcd installs this itself at start, with its\n\
         # own username and the kinds of sync.resources; apply it by hand only with\n\
         # control_plane.install_admission_policy = false (then edit the username and the resources to match).\n\
         # Generated by the tmc-daemon tests from daemon/src/admission.rs.\n---\n{}---\n{}",
        serde_yaml::to_string(&policy).context("serializing the policy")?,
        serde_yaml::to_string(&binding).context("serializing the binding")?,
    ))
}

/// A CEL string literal of `text`.
fn cel_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Installs (server-side apply) the policy for `kinds` where the control
/// plane serves it; otherwise, or when tmcd may not install it, logs one
/// warning saying that the protocol is unguarded. Fails only on errors that
/// are neither (the control plane unreachable).
pub async fn install(client: &Client, config: &Config, kinds: &[SyncedKind]) -> Result<Guard> {
    let guard = decide_and_apply(client, config, kinds).await?;
    match &guard {
        Guard::Installed { writer } => tracing::info!(
            policy = POLICY_NAME,
            writer = %writer,
            "only tmcd may write the decision protocol (ValidatingAdmissionPolicy installed)"
        ),
        Guard::Unguarded { reason } => tracing::warn!(
            "the decision protocol is unguarded: any workspace user may place a workload that no placement governs by labelling it (state.workload.kcp.io/<target>: Sync); {reason}"
        ),
    }
    Ok(guard)
}

async fn decide_and_apply(client: &Client, config: &Config, kinds: &[SyncedKind]) -> Result<Guard> {
    if !config.control_plane.install_admission_policy {
        return Ok(Guard::Unguarded {
            reason: "control_plane.install_admission_policy is false (fix: apply config/admission/decision-protocol.yaml with tmcd's username and your synced kinds)".into(),
        });
    }
    if !serves_policies(client).await? {
        return Ok(Guard::Unguarded {
            reason: "the control plane does not serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicies (fix: a Kubernetes API server of 1.30 or later, or kcp 0.28 or later)".into(),
        });
    }
    let writer = match &config.control_plane.username {
        Some(name) => name.get_ref().clone(),
        None => match whoami(client).await {
            Ok(name) => name,
            Err(err) => {
                return Ok(Guard::Unguarded {
                    reason: format!(
                        "tmcd could not learn its own username ({err:#}) (fix: set control_plane.username)"
                    ),
                });
            }
        },
    };
    let (policy, binding) = manifests(&writer, kinds)?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let applied = async {
        policies
            .patch(POLICY_NAME, &params, &Patch::Apply(&policy))
            .await?;
        bindings
            .patch(POLICY_NAME, &params, &Patch::Apply(&binding))
            .await
    }
    .await;
    match applied {
        Ok(_) => Ok(Guard::Installed { writer }),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Guard::Unguarded {
            reason: format!(
                "tmcd may not apply the ValidatingAdmissionPolicy {POLICY_NAME} ({}) (fix: grant tmcd create, get and patch on validatingadmissionpolicies and validatingadmissionpolicybindings, as config/rbac/control-plane.yaml does, or apply config/admission/decision-protocol.yaml as an admin)",
                status.message
            ),
        }),
        Err(err) => Err(err).with_context(|| {
            format!("applying the ValidatingAdmissionPolicy {POLICY_NAME} and its binding")
        }),
    }
}

/// Whether the control plane serves ValidatingAdmissionPolicies in
/// `admissionregistration.k8s.io/v1`.
async fn serves_policies(client: &Client) -> Result<bool> {
    let group = ValidatingAdmissionPolicy::group(&());
    let groups = client
        .list_api_groups()
        .await
        .context("listing the API groups of the control plane")?;
    if !groups.groups.iter().any(|g| g.name == group) {
        return Ok(false);
    }
    let resources = client
        .list_api_group_resources(&ValidatingAdmissionPolicy::api_version(&()))
        .await
        .with_context(|| format!("listing the resources of {group}/v1"))?;
    Ok(resources
        .resources
        .iter()
        .any(|r| r.name == ValidatingAdmissionPolicy::plural(&())))
}

/// tmcd's username, from a SelfSubjectReview.
async fn whoami(client: &Client) -> Result<String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review: SelfSubjectReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
    }))
    .context("building a SelfSubjectReview")?;
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .context("creating a SelfSubjectReview (authentication.k8s.io/v1)")?;
    answer
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .context("the SelfSubjectReview names no username")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_manifest_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/admission/decision-protocol.yaml");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = shipped_yaml().expect("generate");
        if committed != generated && std::env::var_os("TMC_REGENERATE").is_some() {
            std::fs::write(&path, &generated).expect("write the manifest");
            return;
        }
        assert!(
            committed == generated,
            "config/admission/decision-protocol.yaml differs from daemon/src/admission.rs; regenerate with:\n  \
             TMC_REGENERATE=1 cargo test -p tmc-daemon --lib admission"
        );
    }

    /// A control plane answering discovery with `groups` and every
    /// ValidatingAdmissionPolicy write with `write_status`; it records the
    /// paths asked.
    fn fake_client(
        groups: serde_json::Value,
        write_status: u16,
        asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) -> Client {
        use http::{Request, Response};
        use kube::client::Body;
        let svc = tower::service_fn(move |req: Request<Body>| {
            let groups = groups.clone();
            let asked = asked.clone();
            async move {
                let path = req.uri().path().to_string();
                asked
                    .lock()
                    .expect("lock")
                    .push(format!("{} {path}", req.method()));
                let (status, body) = match path.as_str() {
                    "/apis" => (200, groups),
                    "/apis/admissionregistration.k8s.io/v1" => (
                        200,
                        json!({"kind": "APIResourceList", "groupVersion": "admissionregistration.k8s.io/v1",
                               "resources": [{"name": "validatingadmissionpolicies", "namespaced": false,
                                              "kind": "ValidatingAdmissionPolicy", "verbs": ["create", "patch"]}]}),
                    ),
                    _ => (
                        write_status,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "message": "forbidden: nope", "reason": "Forbidden", "code": write_status}),
                    ),
                };
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string().into_bytes()))
                    .expect("response");
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        Client::new(svc, "default")
    }

    fn config(extra: &str) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        crate::config::parse(
            std::path::Path::new("tmc.toml"),
            extra,
            dir.path().to_path_buf(),
        )
        .expect("valid")
    }

    #[tokio::test]
    async fn unguarded_where_not_served_not_permitted_or_turned_off() {
        let kinds = SyncedKind::defaults();
        let asked = std::sync::Arc::default();
        let no_admission = fake_client(
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
            403,
            std::sync::Arc::clone(&asked),
        );
        let guard = install(&no_admission, &config(""), &kinds)
            .await
            .expect("a warning, not an error");
        assert!(
            matches!(&guard, Guard::Unguarded { reason } if reason.contains("does not serve")),
            "{guard:?}"
        );
        assert_eq!(
            *asked.lock().expect("lock"),
            ["GET /apis"],
            "nothing applied"
        );

        let groups = json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
            "name": "admissionregistration.k8s.io",
            "versions": [{"groupVersion": "admissionregistration.k8s.io/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "admissionregistration.k8s.io/v1", "version": "v1"},
        }]});
        let forbidden = fake_client(groups.clone(), 403, std::sync::Arc::default());
        let guard = install(
            &forbidden,
            &config("[control_plane]\nusername = \"tmcd\"\n"),
            &kinds,
        )
        .await
        .expect("a warning, not an error");
        assert!(
            matches!(&guard, Guard::Unguarded { reason } if reason.contains("may not apply") && reason.contains("config/admission/decision-protocol.yaml")),
            "{guard:?}"
        );

        let applied = fake_client(groups, 200, std::sync::Arc::default());
        let off = install(
            &applied,
            &config("[control_plane]\ninstall_admission_policy = false\n"),
            &kinds,
        )
        .await
        .expect("off");
        assert!(
            matches!(&off, Guard::Unguarded { reason } if reason.contains("install_admission_policy is false")),
            "{off:?}"
        );
    }

    #[test]
    fn rules_group_the_synced_kinds_and_exempt_only_the_writer() {
        let (policy, _) = manifests("it's me", &SyncedKind::defaults()).expect("build");
        let spec = serde_json::to_value(policy.spec).expect("json");
        let rules = &spec["matchConstraints"]["resourceRules"];
        assert_eq!(rules[0]["apiGroups"], json!([""]));
        assert_eq!(
            rules[0]["resources"],
            json!(["services", "configmaps", "secrets"])
        );
        assert_eq!(rules[1]["apiGroups"], json!(["apps"]));
        assert_eq!(rules[1]["resources"], json!(["deployments"]));
        assert_eq!(
            spec["matchConditions"][0]["expression"],
            json!("request.userInfo.username != 'it\\'s me'")
        );
        let forged = spec["variables"][4]["expression"].as_str().expect("str");
        for prefix in [
            STATE_LABEL_PREFIX,
            RESULT_ANNOTATION_PREFIX,
            DELETION_ANNOTATION_PREFIX,
        ] {
            assert!(forged.contains(prefix), "{forged}");
        }
        assert!(!forged.contains("status.workload.kcp.io/"), "{forged}");
    }
}
