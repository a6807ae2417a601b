//! Fenced leadership on the real bed: the leader reaches kcp only through a
//! pausable TCP proxy; cut it off and the standby takes over, after the old
//! leader stopped every write, and the old leader writes nothing afterwards.

mod common;

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde_json::json;
use tmc_tests::testbed::proxy::TcpProxy;
use tmc_tests::testbed::wait::Poll;

use common::{Env, apply_placement, create_deployment, split_over_both, until};

/// The leader-election timings of both replicas.
const LEASE: Duration = Duration::from_secs(6);
const RENEW_DEADLINE: Duration = Duration::from_secs(4);
/// Scheduling slack on a shared 2-core machine.
const SLACK: Duration = Duration::from_millis(1_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_stops_writing_before_the_standby_takes_over() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    let kcp = env.kcp().await?;
    let west = env.cluster("west").await?;
    let east = env.cluster("east").await?;

    // The leader-to-be talks to kcp through the proxy.
    let base = env.bed.kcp()?.base_url();
    let kcp_addr = base
        .trim_start_matches("https://")
        .parse()
        .with_context(|| format!("kcp address of {base}"))?;
    let proxy = TcpProxy::start(kcp_addr).await?;
    let direct_kubeconfig = env.bed.kubeconfig_path("kcp")?;
    let proxied_kubeconfig = env.dir.path().join("kcp-via-proxy.kubeconfig");
    std::fs::write(
        &proxied_kubeconfig,
        std::fs::read_to_string(&direct_kubeconfig)?.replace(&base, &proxy.url()),
    )?;
    let extra = format!(
        "renew_deadline_seconds = {}\nretry_period_seconds = 1\n",
        RENEW_DEADLINE.as_secs()
    );
    // The heartbeats of the cut-off leader's push syncers stop with it: a
    // threshold longer than the takeover keeps the targets Ready meanwhile.
    let text = env.config_text(&extra)?.replace(
        "heartbeat_threshold_seconds = 8",
        "heartbeat_threshold_seconds = 30",
    );
    ensure!(text.contains("lease_duration_seconds = 6"), "{text}");
    let proxied_text = text.replace(
        &direct_kubeconfig.display().to_string(),
        &proxied_kubeconfig.display().to_string(),
    );
    ensure!(proxied_text != text, "the kcp kubeconfig is replaced");
    let old = env.daemon_with_text("old.toml", &proxied_text).await?;
    until("the proxied replica leads", || async {
        Ok(if old.state().is_leader() {
            Poll::Ready(())
        } else {
            Poll::Pending("standby".into())
        })
    })
    .await?;
    let new = env.daemon_with_text("new.toml", &text).await?;

    // The old leader works (through the proxy).
    apply_placement(
        &kcp,
        "spread",
        json!({"policy": {"name": "replica-spread"}}),
    )
    .await?;
    create_deployment(&kcp, "before", 2).await?;
    split_over_both(&west, &east, "before", 2).await?;
    assert!(old.state().is_leader() && !new.state().is_leader());
    assert!(old.state().fence.writes_sent() > 0);
    assert_eq!(
        new.state().fence.writes_sent(),
        0,
        "a standby writes nothing"
    );

    // Cut it off: nothing passes, open connections are dropped with what they held.
    proxy.pause();
    proxy.cut();
    let cut = SystemTime::now();
    let up_at_cut = proxy.bytes_up();
    let lease_api: Api<Lease> = Api::namespaced(kcp.clone(), "default");
    let new_identity = new.state().identity.clone();
    let lease = until("the standby takes the lease over", || async {
        let lease = lease_api.get("tmcd").await?;
        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
        Ok(if holder.as_deref() == Some(new_identity.as_str()) {
            Poll::Ready(lease)
        } else {
            Poll::Pending(format!("holder {holder:?}"))
        })
    })
    .await?;
    let acquired = lease
        .spec
        .and_then(|s| s.acquire_time)
        .context("the new holder wrote acquireTime")?
        .0;

    // The old leader stopped (fence closed) within its renew deadline of the
    // cut, before the new one acquired (both stamped by this host's clock).
    assert!(!old.state().is_leader());
    let fenced = old
        .state()
        .fence
        .closed_at()
        .context("the old leader's fence closed")?;
    let since_cut = fenced.duration_since(cut).unwrap_or_default();
    assert!(
        since_cut <= RENEW_DEADLINE + SLACK,
        "fenced {since_cut:?} after the cut"
    );
    let fenced_ts = Timestamp::try_from(fenced)?;
    assert!(
        fenced_ts < acquired,
        "old leader fenced at {fenced_ts}, new leader acquired at {acquired}"
    );
    if let Some(last) = old.state().fence.last_write_sent() {
        assert!(last <= fenced, "no write let through after the fence");
    }
    let metrics = old.state().metrics.render();
    assert!(
        metrics.contains("tmcd_leadership_stops_total 1"),
        "{metrics}"
    );
    assert_eq!(
        proxy.bytes_up(),
        up_at_cut,
        "nothing of the old leader reached kcp while cut off"
    );

    // The new leader places; then heal the partition: the old replica talks
    // to kcp again (reads, the Lease) but, a standby, writes nothing.
    create_deployment(&kcp, "during", 2).await?;
    split_over_both(&west, &east, "during", 2).await?;
    let sent_by_old = old.state().fence.writes_sent();
    proxy.resume();
    create_deployment(&kcp, "after", 2).await?;
    split_over_both(&west, &east, "after", 2).await?;
    tokio::time::sleep(LEASE).await;
    assert!(
        proxy.bytes_up() > up_at_cut,
        "the old replica is connected again"
    );
    assert!(!old.state().is_leader() && new.state().is_leader());
    assert_eq!(
        old.state().fence.writes_sent(),
        sent_by_old,
        "the old leader sent no write after its fence"
    );
    assert!(new.state().fence.writes_sent() > 0);

    old.stop().await;
    new.stop().await;
    Ok(())
}
