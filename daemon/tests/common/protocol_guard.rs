//! Checks of the decision-protocol guard (`daemon/src/admission.rs`) as a
//! workspace user who is not tmcd: a ServiceAccount that may write
//! Deployments in one namespace and nothing else.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tmc_tests::rbac;
use tmc_tests::testbed::wait::Poll;

use super::until;

/// A client of ServiceAccount `<namespace>/intruder`, allowed to do anything
/// with Deployments in `namespace` (created if missing). `admin` is the
/// admin's client, `admin_kubeconfig` its file; the user's kubeconfig is
/// written to `dir` and `context` chosen in it.
pub async fn workspace_user(
    admin: &kube::Client,
    admin_kubeconfig: &Path,
    context: Option<&str>,
    namespace: &str,
    dir: &Path,
) -> Result<kube::Client> {
    let pp = PatchParams::apply("tmc-tests").force();
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}
    }))?;
    Api::<Namespace>::all(admin.clone())
        .patch(namespace, &pp, &Patch::Apply(&ns))
        .await
        .context("creating the user's namespace")?;
    let account: ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "intruder", "namespace": namespace},
    }))?;
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .patch("intruder", &pp, &Patch::Apply(&account))
        .await?;
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "workloads", "namespace": namespace},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}],
    }))?;
    Api::<Role>::namespaced(admin.clone(), namespace)
        .patch("workloads", &pp, &Patch::Apply(&role))
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "intruder-workloads", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "workloads"},
        "subjects": [{"kind": "ServiceAccount", "name": "intruder", "namespace": namespace}],
    }))?;
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .patch("intruder-workloads", &pp, &Patch::Apply(&binding))
        .await?;
    let out = dir.join(format!("intruder-{namespace}.kubeconfig"));
    rbac::token_kubeconfig(admin, namespace, "intruder", admin_kubeconfig, &out).await?;
    tmc_tests::testbed::kubeconfig::client(&out, context).await
}

fn deployment(name: &str, labels: Value, annotations: Value) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": "nginx"}]}},
        },
    }))?)
}

/// The refusal message of `result`, or an error when it was not refused by
/// the guard.
fn refusal<T: std::fmt::Debug>(result: kube::Result<T>, what: &str) -> Result<String> {
    match result {
        Err(kube::Error::Api(status))
            if status.code == 403 && status.message.contains("decision protocol") =>
        {
            Ok(status.message)
        }
        other => bail!("{what}: expected the guard's refusal (403), got {other:?}"),
    }
}

/// As `user` in `namespace`: creating a workload with a forged state label
/// is refused (waiting until the policy is in force, with dry runs, so no
/// forged workload is ever stored), the message naming the key and the fix;
/// so is a forged result or deletion annotation on an existing workload and
/// a changed state label; an ordinary edit passes.
pub async fn forging_is_refused(user: &kube::Client, namespace: &str, target: &str) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(user.clone(), namespace);
    let state_key = format!("state.workload.kcp.io/{target}");
    let forged = deployment("forged", json!({ state_key.clone(): "Sync" }), json!({}))?;
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let message = until("the guard refuses a forged state label", || async {
        Ok(match api.create(&dry, &forged).await {
            Err(kube::Error::Api(status))
                if status.code == 403 && status.message.contains("decision protocol") =>
            {
                Poll::Ready(status.message)
            }
            other => Poll::Pending(format!("not refused yet: {other:?}")),
        })
    })
    .await?;
    ensure!(
        message.contains(&format!("label {state_key}"))
            && message.contains("ClusterWorkloadPlacement")
            && message.contains("system:serviceaccount:"),
        "the refusal names neither the key, the fix nor the user: {message}"
    );
    refusal(
        api.create(&PostParams::default(), &forged).await,
        "creating the forged workload",
    )?;
    ensure!(
        api.get_opt("forged").await?.is_none(),
        "the forged workload was stored"
    );

    // An ordinary workload of the user's: created, edited; forged keys refused.
    api.create(
        &PostParams::default(),
        &deployment("own", json!({"app": "own"}), json!({}))?,
    )
    .await
    .context("creating a workload without protocol keys")?;
    let merge = |patch: Value| {
        let api = api.clone();
        async move {
            api.patch("own", &PatchParams::default(), &Patch::Merge(patch))
                .await
        }
    };
    merge(json!({"metadata": {"labels": {"tier": "web"}}}))
        .await
        .context("an ordinary label edit")?;
    for (kind, key) in [
        ("annotation", format!("result.workload.kcp.io/{target}")),
        (
            "annotation",
            format!("deletion.internal.workload.kcp.io/{target}"),
        ),
        ("label", state_key.clone()),
    ] {
        let field = if kind == "label" {
            "labels"
        } else {
            "annotations"
        };
        let message = refusal(
            merge(json!({"metadata": {field: {key.clone(): "forged"}}})).await,
            &format!("adding {kind} {key}"),
        )?;
        ensure!(
            message.contains(&format!("{kind} {key}")),
            "the refusal does not name {kind} {key}: {message}"
        );
    }
    Ok(())
}

/// As `user`: changing the state label of `placed` (which tmcd placed on
/// `target`) to another value is refused; removing it is allowed, the copy
/// on `cluster` stays throughout, and tmcd records the decision again.
pub async fn removal_is_allowed_and_loses_nothing(
    user: &kube::Client,
    admin: &kube::Client,
    namespace: &str,
    placed: &str,
    target: &str,
    cluster: &kube::Client,
) -> Result<()> {
    let key = format!("state.workload.kcp.io/{target}");
    let api: Api<Deployment> = Api::namespaced(user.clone(), namespace);
    refusal(
        api.patch(
            placed,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key.clone(): "Pending"}}})),
        )
        .await,
        "changing a state label",
    )?;
    api.patch(
        placed,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {key.clone(): null}}})),
    )
    .await
    .context("removing a state label (allowed: the target becomes undecided)")?;
    let upstream: Api<Deployment> = Api::namespaced(admin.clone(), namespace);
    let copies: Api<Deployment> = Api::namespaced(cluster.clone(), namespace);
    until("tmcd records the decision again, the copy kept", || async {
        ensure!(
            copies.get_opt(placed).await?.is_some(),
            "the copy of {placed} on {target} was removed after a user removed its state label"
        );
        let labels = upstream
            .get(placed)
            .await?
            .metadata
            .labels
            .unwrap_or_default();
        Ok(match labels.get(&key).map(String::as_str) {
            Some("Sync") => Poll::Ready(()),
            other => Poll::Pending(format!("{key} is {other:?}")),
        })
    })
    .await
}
