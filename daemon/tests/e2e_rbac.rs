//! tmcd with least privilege: the roles of `config/rbac/` applied on the bed,
//! tmcd given only ServiceAccount tokens bound to them (the workspace's and
//! each physical cluster's), the CRDs installed by an admin beforehand. The
//! whole flow works (placement split over both clusters, status aggregated,
//! a move), no request is forbidden, only tmcd may write the decision
//! protocol (a workspace user's forgery is refused, a removal loses nothing),
//! and a permission taken away is reported naming the verb and the resource.

mod common;

use anyhow::{Context, Result, ensure};
use common::{Env, NS, apply_placement, available, copy, create_deployment, protocol_guard, until};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tmc_tests::rbac;
use tmc_tests::testbed::wait::Poll;

/// A kubeconfig of ServiceAccount `tmc-system/<account>` next to the bed's admin one for `name`.
async fn least_privilege(env: &Env, name: &str, account: &str) -> Result<String> {
    let admin = env.bed.kubeconfig_path(name)?;
    let client = if name == "kcp" {
        env.kcp().await?
    } else {
        env.cluster(name).await?
    };
    let out = env.dir.path().join(format!("{name}-{account}.kubeconfig"));
    rbac::token_kubeconfig(&client, "tmc-system", account, &admin, &out).await?;
    Ok(out.display().to_string())
}

fn forbidden_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("forbidden") || l.contains(" 403"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmcd_runs_on_the_shipped_least_privilege_roles() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    let kcp = env.kcp().await?;
    for file in std::fs::read_dir(tmc_tests::testbed::binaries::repo_root().join("config/crds"))? {
        rbac::apply(&kcp, &file?.path()).await?;
    }
    rbac::apply(&kcp, &rbac::manifest("control-plane.yaml")).await?;
    let mut config = env.config_text("")?;
    let kcp_token = least_privilege(&env, "kcp", "tmcd").await?;
    config = config.replace(
        &env.bed.kubeconfig_path("kcp")?.display().to_string(),
        &kcp_token,
    );
    for cluster in ["west", "east"] {
        rbac::apply(
            &env.cluster(cluster).await?,
            &rbac::manifest("physical-cluster.yaml"),
        )
        .await?;
        let token = least_privilege(&env, cluster, "tmc-syncer").await?;
        config = config.replace(
            &env.bed.kubeconfig_path(cluster)?.display().to_string(),
            &token,
        );
    }
    for name in ["kcp", "west", "east"] {
        let admin = env.bed.kubeconfig_path(name)?.display().to_string();
        ensure!(
            !config.contains(&admin),
            "the admin kubeconfig {admin} is left in:\n{config}"
        );
    }
    let path = env.dir.path().join("tmc.toml");
    std::fs::write(&path, &config)?;
    let log_path = env.bed.dir().join("tmcd.log");
    let _tmcd = env.bed.spawn(
        "tmcd",
        env!("CARGO_BIN_EXE_tmcd"),
        ["--config".to_string(), path.display().to_string()],
    )?;

    // The flow: split over both, status aggregated upstream, then a move.
    let (west, east) = (env.cluster("west").await?, env.cluster("east").await?);
    let spread = |selectors: serde_json::Value| json!({"policy": {"name": "replica-spread"}, "locationSelectors": selectors});
    apply_placement(&kcp, "spread", spread(json!([]))).await?;
    create_deployment(&kcp, "web", 4).await?;
    let upstream: Api<Deployment> = Api::namespaced(kcp.clone(), NS);
    until(
        "web split over west and east, 4 available upstream",
        || async {
            let (w, e) = (copy(&west, "web").await?, copy(&east, "web").await?);
            let total = available(&upstream.get_opt("web").await?);
            Ok(if available(&w) > 0 && available(&e) > 0 && total == 4 {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "west {} east {} upstream {total}",
                    available(&w),
                    available(&e)
                ))
            })
        },
    )
    .await?;
    apply_placement(
        &kcp,
        "spread",
        spread(json!([{"matchLabels": {"topology.kubernetes.io/region": "us-east"}}])),
    )
    .await?;
    until("web only on east, 4 available", || async {
        let (w, e) = (copy(&west, "web").await?, copy(&east, "web").await?);
        Ok(if w.is_none() && available(&e) == 4 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!(
                "west {:?} east {}",
                w.map(|_| "present"),
                available(&e)
            ))
        })
    })
    .await?;
    let log = std::fs::read_to_string(&log_path)?;
    let denied = forbidden_lines(&log);
    ensure!(
        denied.is_empty(),
        "requests were forbidden with the shipped roles:\n{}",
        denied.join("\n")
    );
    // The syncers read their clusters' capacity (nodes and pods) with these roles.
    let targets: Api<tmc_api::crd::SyncTarget> = Api::all(kcp.clone());
    for name in ["west", "east"] {
        until(
            &format!("{name}'s capacity read with the shipped roles"),
            || async {
                let capacity = targets.get(name).await?.status.and_then(|s| s.capacity);
                Ok(match capacity {
                    Some(c) if c.nodes > 0 && c.stale_reason.is_none() => Poll::Ready(()),
                    other => Poll::Pending(format!("{other:?}")),
                })
            },
        )
        .await?;
    }

    // Only tmcd writes the decision protocol: it learned its ServiceAccount's
    // username (SelfSubjectReview) and installed the guard; the decisions
    // and the move above ran under it.
    ensure!(
        log.lines()
            .any(|l| l.contains("ValidatingAdmissionPolicy installed")
                && l.contains("writer=system:serviceaccount:tmc-system:tmcd")),
        "tmcd did not install the decision-protocol guard for its ServiceAccount:\n{log}"
    );
    let user = protocol_guard::workspace_user(
        &kcp,
        &env.bed.kubeconfig_path("kcp")?,
        Some(env.bed.kcp()?.workspace()),
        NS,
        env.dir.path(),
    )
    .await?;
    protocol_guard::forging_is_refused(&user, NS, "west").await?;
    protocol_guard::removal_is_allowed_and_loses_nothing(&user, &kcp, NS, "web", "east", &east)
        .await?;

    // Take `patch` on Deployments away: recording a decision is refused, and
    // the log says which verb on which resource.
    let roles: Api<ClusterRole> = Api::all(kcp.clone());
    let mut role = roles.get("tmc:tmcd").await?;
    for rule in role.rules.iter_mut().flatten() {
        if rule.resources.iter().flatten().any(|r| r == "deployments") {
            rule.verbs.retain(|v| v != "patch");
        }
    }
    role.metadata.managed_fields = None;
    roles
        .patch(
            "tmc:tmcd",
            &PatchParams::apply("tmc-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .context("taking patch on deployments away")?;
    create_deployment(&kcp, "api", 2).await?;
    until("tmcd reports the missing permission", || async {
        let log = std::fs::read_to_string(&log_path)?;
        Ok(
            match log
                .lines()
                .find(|l| l.contains("cannot patch resource \"deployments\""))
            {
                Some(line) => Poll::Ready(line.to_string()),
                None => Poll::Pending("no line naming patch on deployments yet".into()),
            },
        )
    })
    .await?;
    ensure!(
        copy(&east, "api").await?.is_none() && copy(&west, "api").await?.is_none(),
        "api was synced although tmcd could not record its decision"
    );
    Ok(())
}
