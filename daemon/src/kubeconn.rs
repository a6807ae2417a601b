//! Building kube clients from kubeconfig files, contexts and kcp workspace paths.

use std::path::Path;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;

use anyhow::{Context as _, Result};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::fence::Fence;
use crate::watch_count::OpenWatches;

use crate::config::Config as TmcConfig;

/// A client for the server of `kubeconfig` (or the inferred default) and
/// `context`; with `workspace`, the URL is pointed at `/clusters/<workspace>`.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    workspace: Option<&str>,
) -> Result<Client> {
    let config = kube_config(kubeconfig, context, workspace).await?;
    Client::try_from(config).context("building the Kubernetes client")
}

/// Like [`client`], but every write goes through `fence` (refused while it is closed).
pub async fn fenced_client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    workspace: Option<&str>,
    fence: &Fence,
) -> Result<Client> {
    let config = kube_config(kubeconfig, context, workspace).await?;
    Ok(ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(fence)
        .build())
}

/// The client configuration of `kubeconfig`, `context` and `workspace`.
async fn kube_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    workspace: Option<&str>,
) -> Result<Config> {
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
        let url = workspace_url(&config.cluster_url.to_string(), ws);
        config.cluster_url = url
            .parse()
            .with_context(|| format!("workspace path {ws:?} gives an invalid URL {url}"))?;
    }
    Ok(config)
}

/// A client for the control plane of `config`: its kubeconfig, context and workspace.
pub async fn control_plane(config: &TmcConfig) -> Result<Client> {
    Client::try_from(control_plane_config(config).await?).context("building the Kubernetes client")
}

/// The client configuration of the control plane of `config`: its
/// kubeconfig, context and workspace.
pub async fn control_plane_config(config: &TmcConfig) -> Result<Config> {
    let cp = &config.control_plane;
    let kubeconfig = cp.kubeconfig.as_ref().map(|k| config.resolve(k.get_ref()));
    let workspace = cp.workspace.as_ref().map(|w| w.get_ref().as_str());
    kube_config(kubeconfig.as_deref(), cp.context.as_deref(), workspace)
        .await
        .context("connecting to the control plane")
}

/// A client with the credentials of `base` for the server at `url` (`None`:
/// `base`'s own, or e.g. a kcp virtual workspace) whose watches count in
/// `watches`; with `fence`, every write goes through it.
pub fn client_at(
    base: &Config,
    url: Option<&str>,
    fence: Option<&Fence>,
    watches: &OpenWatches,
) -> Result<Client> {
    let mut config = base.clone();
    if let Some(url) = url {
        config.cluster_url = url
            .parse()
            .with_context(|| format!("{url} is not a valid URL"))?;
    }
    let builder = ClientBuilder::try_from(config).with_context(|| {
        format!(
            "building a client for {}",
            url.unwrap_or("the control plane")
        )
    })?;
    Ok(match fence {
        Some(fence) => builder.with_layer(fence).with_layer(watches).build(),
        None => builder.with_layer(watches).build(),
    })
}

/// A client of `/clusters/<cluster>` under `endpoint`'s URL that sends every
/// request through `endpoint`: one connection pool (and `endpoint`'s layers,
/// its fence and watch count) for every logical cluster written to, however
/// many there are. A client per URL would hold a pool each, and a workspace
/// written to once in a while would pay a new TLS handshake per write.
pub fn in_cluster(endpoint: &Client, cluster: &str) -> Client {
    let service = InCluster {
        endpoint: endpoint.clone(),
        prefix: format!("/clusters/{cluster}"),
    };
    Client::new(service, endpoint.default_namespace())
}

/// The service of [`in_cluster`]: the request's path under the cluster's prefix, sent by the endpoint's client.
#[derive(Clone)]
struct InCluster {
    endpoint: Client,
    prefix: String,
}

impl tower::Service<Request<Body>> for InCluster {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        // The endpoint's client waits for its own readiness in `send`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let endpoint = self.endpoint.clone();
        let request = under_prefix(&self.prefix, request);
        Box::pin(async move { endpoint.send(request?).await })
    }
}

/// `request` with `prefix` put before its path.
fn under_prefix(prefix: &str, request: Request<Body>) -> Result<Request<Body>, kube::Error> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = format!("{prefix}{path}")
        .parse()
        .map_err(|err: http::uri::InvalidUri| kube::Error::HttpError(err.into()))?;
    Ok(Request::from_parts(parts, body))
}

/// `url` with its path set to `/clusters/<workspace>` (replacing any
/// workspace path the kubeconfig already names).
pub fn workspace_url(url: &str, workspace: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let path = format!("/{path}");
    let base = match path.find("/clusters/") {
        Some(i) => &path[..i],
        None => path.trim_end_matches('/'),
    };
    format!("{scheme}://{authority}{base}/clusters/{workspace}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn clients_in_clusters_send_through_the_endpoints_client_under_their_prefix() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        let endpoint = Client::new(
            tower::service_fn(move |request: Request<Body>| {
                recorder.lock().unwrap().push(request.uri().to_string());
                async { Ok::<_, std::convert::Infallible>(Response::new(Body::empty())) }
            }),
            "default",
        );
        let a = in_cluster(&endpoint, "2a");
        let b = in_cluster(&endpoint, "3b");
        for (client, path) in [
            (&a, "/apis/apps/v1/namespaces/default/deployments/web"),
            (&b, "/api/v1/namespaces?watch=true&resourceVersion=7"),
        ] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            client.send(request).await.unwrap();
        }
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "/clusters/2a/apis/apps/v1/namespaces/default/deployments/web",
                "/clusters/3b/api/v1/namespaces?watch=true&resourceVersion=7",
            ]
        );
    }

    #[test]
    fn workspace_is_appended_or_replaced() {
        assert_eq!(
            workspace_url("https://127.0.0.1:6443", "root:tmc"),
            "https://127.0.0.1:6443/clusters/root:tmc"
        );
        assert_eq!(
            workspace_url("https://127.0.0.1:6443/", "root:tmc"),
            "https://127.0.0.1:6443/clusters/root:tmc"
        );
        assert_eq!(
            workspace_url("https://127.0.0.1:6443/clusters/root", "root:tmc"),
            "https://127.0.0.1:6443/clusters/root:tmc"
        );
    }
}
