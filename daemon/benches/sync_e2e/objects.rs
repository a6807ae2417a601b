//! Objects the benchmarks create.

use super::*;

/// A Deployment `ns/name` labelled `bench=<scenario>`, with extra annotations.
pub fn deployment(
    ns: &str,
    name: &str,
    scenario: &str,
    replicas: i32,
    annotations: Value,
) -> Result<Deployment> {
    fixtures::deployment(
        ns,
        name,
        replicas,
        json!({ "bench": scenario }),
        annotations,
    )
}

/// Creates `d` in its namespace.
pub async fn create(client: &kube::Client, d: &Deployment) -> Result<()> {
    let ns = d.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), d)
        .await
        .with_context(|| {
            format!(
                "creating deployment {ns}/{}",
                d.metadata.name.as_deref().unwrap_or("")
            )
        })?;
    Ok(())
}

/// Creates namespace `name`.
pub async fn namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let body: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    api.create(&PostParams::default(), &body)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Applies placement `name` selecting workloads labelled `bench=<scenario>`.
pub async fn placement(
    client: &kube::Client,
    name: &str,
    scenario: &str,
    mut spec: Value,
) -> Result<()> {
    spec["workloadSelector"] = json!({"matchLabels": {"bench": scenario}});
    fixtures::apply_placement(client, "tmc-bench", name, spec).await
}
