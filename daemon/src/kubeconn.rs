//! Building kube clients from kubeconfig files, contexts and kcp workspace paths.

use std::path::Path;

use anyhow::{Context as _, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client for the server of `kubeconfig` (or the inferred default) and
/// `context`; with `workspace`, the URL is pointed at `/clusters/<workspace>`.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    workspace: Option<&str>,
) -> Result<Client> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let mut config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).with_context(|| {
                format!(
                    "reading kubeconfig {} (fix: point at a valid kubeconfig file)",
                    path.display()
                )
            })?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| {
                    format!(
                        "loading kubeconfig {} context {:?}",
                        path.display(),
                        context
                    )
                })?
        }
        None if context.is_some() => Config::from_kubeconfig(&options)
            .await
            .with_context(|| format!("loading the default kubeconfig with context {context:?}"))?,
        None => Config::infer().await.context(
            "no kubeconfig given and none found (fix: set control_plane.kubeconfig or $KUBECONFIG)",
        )?,
    };
    if let Some(ws) = workspace {
        config.cluster_url = workspace_url(&config.cluster_url, ws)?;
    }
    Client::try_from(config).context("building the Kubernetes client")
}

/// `url` with its path set to `/clusters/<workspace>` (replacing any
/// workspace path the kubeconfig already names).
pub fn workspace_url(url: &http::Uri, workspace: &str) -> Result<http::Uri> {
    let path = url.path();
    let base = match path.find("/clusters/") {
        Some(i) => &path[..i],
        None => path.trim_end_matches('/'),
    };
    let mut parts = url.clone().into_parts();
    parts.path_and_query = Some(
        format!("{base}/clusters/{workspace}")
            .parse()
            .with_context(|| format!("workspace path {workspace:?} does not fit in a URL"))?,
    );
    http::Uri::from_parts(parts)
        .with_context(|| format!("building the URL of workspace {workspace:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_is_appended_or_replaced() {
        let plain: http::Uri = "https://127.0.0.1:6443".parse().expect("uri");
        let url = workspace_url(&plain, "root:tmc").expect("url");
        assert_eq!(url.to_string(), "https://127.0.0.1:6443/clusters/root:tmc");
        let kcp: http::Uri = "https://127.0.0.1:6443/clusters/root".parse().expect("uri");
        let url = workspace_url(&kcp, "root:tmc").expect("url");
        assert_eq!(url.to_string(), "https://127.0.0.1:6443/clusters/root:tmc");
    }
}
