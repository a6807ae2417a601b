//! Writing kubeconfig files and building `kube::Client`s from them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// How a client checks the server certificate.
#[derive(Debug, Clone)]
pub enum Ca {
    /// A PEM file.
    File(PathBuf),
    /// Base64 PEM, as in `certificate-authority-data`.
    Data(String),
}

/// One context: its cluster and user get the same name.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Context (and cluster and user) name.
    pub name: String,
    /// Server URL, possibly with a path (kcp: `https://host:port/clusters/root:tmc`).
    pub server: String,
    /// Trust anchor.
    pub ca: Ca,
    /// Bearer token.
    pub token: String,
}

/// Writes a kubeconfig with `entries`, `current` as the current context.
pub fn write(path: &Path, entries: &[Entry], current: &str) -> Result<()> {
    let clusters: Vec<_> = entries
        .iter()
        .map(|e| {
            let mut cluster = json!({ "server": e.server });
            match &e.ca {
                Ca::File(p) => cluster["certificate-authority"] = json!(p),
                Ca::Data(d) => cluster["certificate-authority-data"] = json!(d),
            }
            json!({ "name": e.name, "cluster": cluster })
        })
        .collect();
    let users: Vec<_> = entries
        .iter()
        .map(|e| json!({ "name": e.name, "user": { "token": e.token } }))
        .collect();
    let contexts: Vec<_> = entries
        .iter()
        .map(|e| json!({ "name": e.name, "context": { "cluster": e.name, "user": e.name } }))
        .collect();
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": users,
        "contexts": contexts,
        "current-context": current,
    });
    let text = serde_yaml::to_string(&doc).context("serializing kubeconfig")?;
    std::fs::write(path, text).with_context(|| format!("writing kubeconfig {}", path.display()))
}

/// A client for `context` (or the current context) of the kubeconfig at `path`.
pub async fn client(path: &Path, context: Option<&str>) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("loading context {context:?} of {}", path.display()))?;
    kube::Client::try_from(config)
        .with_context(|| format!("building a client from {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn written_kubeconfig_loads_with_the_right_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        let entries = [
            Entry {
                name: "a".into(),
                server: "https://127.0.0.1:1/clusters/root:tmc".into(),
                ca: Ca::Data("bm90LWEtY2VydA==".into()),
                token: "t1".into(),
            },
            Entry {
                name: "b".into(),
                server: "https://127.0.0.1:2".into(),
                ca: Ca::File(dir.path().join("ca.crt")),
                token: "t2".into(),
            },
        ];
        write(&path, &entries, "b").expect("write");
        let kc = Kubeconfig::read_from(&path).expect("read");
        assert_eq!(kc.current_context.as_deref(), Some("b"));
        let servers: Vec<_> = kc
            .clusters
            .iter()
            .filter_map(|c| c.cluster.as_ref().and_then(|c| c.server.clone()))
            .collect();
        assert_eq!(
            servers,
            [
                "https://127.0.0.1:1/clusters/root:tmc",
                "https://127.0.0.1:2"
            ]
        );
        assert_eq!(kc.auth_infos.len(), 2);
    }
}
