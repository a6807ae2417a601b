//! A small fleet end to end: tmcd with 20 push targets (logical clusters of a second kcp, see
//! `tmc_tests::testbed::fleet`) places 500 Deployments with `replica-spread` over the 3 targets of one region;
//! every workload's copies must sit on exactly those 3 with the right replica sum, and nothing anywhere else.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use tmc_daemon::Daemon;
use tmc_tests::fleet_load::{self, Copies, FleetSetup};
use tmc_tests::testbed::fleet::Location;
use tmc_tests::testbed::wait::{self, Poll};

const TARGETS: usize = 20;
const WORKLOADS: usize = 500;
/// Targets are spread over this many regions by index; region `r3` holds targets 3, 10 and 17.
const REGIONS: usize = 7;
const CHOSEN_REGION: &str = "r3";
const NS: &str = "fleet";
const CONCURRENCY: usize = 16;
/// Generous for 1,500 copies written through one kcp on a shared 2-core machine.
const PLACED_TIMEOUT: Duration = Duration::from_secs(300);

fn locate(index: usize, name: &str) -> Location {
    Location {
        region: format!("r{}", index % REGIONS),
        zone: format!("{name}-a"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_spread_places_500_workloads_on_3_of_20_targets() -> Result<()> {
    let logs = tmc_daemon::logging::init_with_default(
        tmc_syncer::process::LogFormat::Text,
        "info,kube_client=off,kube_runtime=warn",
    );
    let setup = FleetSetup::start(TARGETS, locate, CHOSEN_REGION).await?;
    let FleetSetup {
        bed, kcp, chosen, ..
    } = &setup;
    assert_eq!(chosen, &["fleet-004", "fleet-011", "fleet-018"]);

    let config = tmc_daemon::config::load(&setup.config)?;
    let daemon = Daemon::start(config, logs).await?;
    let ready = setup.place(NS, PLACED_TIMEOUT).await?;
    eprintln!(
        "{TARGETS} SyncTargets Ready {:.1} s after tmcd started",
        ready.as_secs_f64()
    );

    // 3 to 7 replicas: every chosen target gets at least one.
    let expected: Copies = (0..WORKLOADS)
        .map(|i| (format!("w{i:04}"), 3 + (i % 5) as i32))
        .collect();
    let started = Instant::now();
    let created =
        fleet_load::create_deployments(kcp, NS, &expected, json!({}), CONCURRENCY).await?;
    eprintln!(
        "{WORKLOADS} Deployments created in kcp in {:.1} s",
        created.as_secs_f64()
    );

    let placed = wait::until(
        &format!("{WORKLOADS} workloads spread over {chosen:?} and nothing elsewhere"),
        PLACED_TIMEOUT,
        Duration::from_secs(2),
        || {
            let expected = &expected;
            async move {
                let observed = fleet_load::copies_by_target(bed, NS).await?;
                let problems = fleet_load::spread_problems(expected, chosen, &observed, 5);
                let copies: usize = observed.values().map(|c| c.len()).sum();
                Ok(if problems.is_empty() {
                    Poll::Ready(observed)
                } else {
                    Poll::Pending(format!("{copies} copies; first problems: {problems:?}"))
                })
            }
        },
    )
    .await;
    let placed = match placed {
        Ok(p) => p,
        Err(e) => {
            bed.print_log_tails();
            return Err(e);
        }
    };
    eprintln!(
        "{} copies on {chosen:?} {:.1} s after the first create ({TARGETS} targets)",
        placed.values().map(|c| c.len()).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    // Still so a little later: no late copy elsewhere, none removed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = fleet_load::copies_by_target(bed, NS).await?;
    assert_eq!(
        fleet_load::spread_problems(&expected, chosen, &again, 5),
        Vec::<String>::new()
    );
    daemon.stop().await;
    Ok(())
}
