//! Running tmc with least privilege on the bed: apply the manifests of `config/rbac/` with an admin client,
//! then hand tmc a kubeconfig whose only credential is a ServiceAccount token bound to those roles.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{self, Scope};
use serde::Deserialize as _;

use crate::testbed::binaries::repo_root;

/// `config/rbac/<file>` of this repository.
pub fn manifest(file: &str) -> PathBuf {
    repo_root().join("config/rbac").join(file)
}

/// Server-side applies every document of the YAML stream `path` with `client` (an admin's).
pub async fn apply(client: &kube::Client, path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_yaml::from_value(value)
            .with_context(|| format!("a document of {}", path.display()))?;
        let types = obj
            .types
            .clone()
            .context("a document without apiVersion/kind")?;
        let gvk = kube::api::GroupVersionKind::try_from(&types)?;
        let (resource, caps) = discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("discovering {}/{}", types.api_version, types.kind))?;
        let name = obj
            .metadata
            .name
            .clone()
            .context("a document without a name")?;
        let api: Api<DynamicObject> = match (&caps.scope, obj.metadata.namespace.as_deref()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (Scope::Namespaced, None) => bail!("{} {name} needs a namespace", types.kind),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply("tmc-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("applying {} {name} from {}", types.kind, path.display()))?;
    }
    Ok(())
}

/// Writes `out`: `admin_kubeconfig` (servers, CAs, contexts kept) with every user's credential replaced by a
/// fresh token of ServiceAccount `namespace/name`, requested with `client`.
pub async fn token_kubeconfig(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    admin_kubeconfig: &Path,
    out: &Path,
) -> Result<PathBuf> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token of ServiceAccount {namespace}/{name}"))?
        .status
        .context("a TokenRequest without status")?
        .token;
    let text = std::fs::read_to_string(admin_kubeconfig)
        .with_context(|| format!("reading {}", admin_kubeconfig.display()))?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let users = config
        .get_mut("users")
        .and_then(|u| u.as_sequence_mut())
        .context("a kubeconfig without users")?;
    for user in users {
        user["user"] = serde_yaml::to_value(serde_json::json!({ "token": token }))?;
    }
    std::fs::write(out, serde_yaml::to_string(&config)?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out.to_path_buf())
}
