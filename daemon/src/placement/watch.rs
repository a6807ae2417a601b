//! Shared reflectors of SyncTargets (in the control plane's workspace),
//! placements and namespaces (in the workspaces served, see
//! [`Workspaces`]); a change that matters to placement re-queues every
//! workload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tmc_api::crd::{ClusterWorkloadPlacement, SyncTarget, SyncTargetGrant};
use tmc_api::tenancy::store_key;

use super::heartbeats::Heartbeats;
use super::targets::TargetView;
use super::triggers::Triggers;
use crate::workspaces::Workspaces;

/// The stores, filled in the background until `shutdown`.
pub struct Stores {
    pub targets: Store<SyncTarget>,
    pub placements: Store<ClusterWorkloadPlacement>,
    pub namespaces: Store<Namespace>,
    /// The SyncTargetGrants of the inventory; watched in export mode only.
    pub grants: Option<Store<SyncTargetGrant>>,
}

/// Starts the reflectors; the returned stores fill as the watches run. Each
/// SyncTarget event is noted in `heartbeats`, and a change that matters to
/// placement fires `triggers`. SyncTargets are read with `client`,
/// placements and namespaces from `workspaces`.
pub fn start(
    client: &Client,
    workspaces: &Workspaces,
    heartbeats: &Arc<Heartbeats>,
    triggers: &Arc<Triggers>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Stores {
    let seen = heartbeats.clone();
    let on_target = Watched {
        triggers: triggers.clone(),
        heartbeats: Some(heartbeats.clone()),
    };
    let served = workspaces.watch_client(client);
    let targets =
        spawn_reflector::<SyncTarget, _>(client, None, on_target, shutdown.clone(), move |o| {
            // When the heartbeat changed is noted as the event arrives (tmcd's clock).
            seen.observe(o);
            // Only what placement reads; the heartbeat itself is checked on a timer.
            let view =
                TargetView::with_age(o, None, chrono::Utc::now(), Duration::ZERO).without_time();
            format!("{:?}|{:?}|{:?}", view.labels, o.spec, ready_reason(o))
        });
    let watched = Watched {
        triggers: triggers.clone(),
        heartbeats: None,
    };
    let placements = spawn_reflector::<ClusterWorkloadPlacement, _>(
        &served,
        Some(workspaces.clone()),
        watched.clone(),
        shutdown.clone(),
        |o| {
            // A new rollout stage (or revision, or phase) re-queues the
            // workloads, once the cache holds it, so that they take it.
            let rollout = o
                .status
                .as_ref()
                .and_then(|s| s.rollout.as_ref())
                .map(|r| (&r.revision, r.stage, r.phase));
            format!(
                "{:?}|{:?}|{:?}",
                o.metadata.generation, o.metadata.deletion_timestamp, rollout
            )
        },
    );
    let grants = workspaces.is_bound().then(|| {
        spawn_reflector::<SyncTargetGrant, _>(
            client,
            None,
            watched.clone(),
            shutdown.clone(),
            |o| format!("{:?}|{:?}", o.spec, o.metadata.deletion_timestamp),
        )
    });
    let namespaces = spawn_reflector::<Namespace, _>(
        &served,
        Some(workspaces.clone()),
        watched,
        shutdown,
        |o| format!("{:?}", o.metadata.labels),
    );
    Stores {
        targets,
        placements,
        namespaces,
        grants,
    }
}

fn ready_reason(o: &SyncTarget) -> Option<(String, String)> {
    super::targets::ready_condition(o).map(|c| (c.status.clone(), c.reason.clone()))
}

/// What a reflector tells of the changes it sees.
#[derive(Clone)]
struct Watched {
    triggers: Arc<Triggers>,
    /// SyncTargets only: a deleted target's heartbeat is forgotten.
    heartbeats: Option<Arc<Heartbeats>>,
}

/// Runs a reflector of `K`, each object mapped for the store by `mapped`
/// (see [`Workspaces::map_for_store`]) when given; fires the triggers when
/// `fingerprint` of an object changes, an object goes, or the initial list
/// completes.
fn spawn_reflector<K, F>(
    client: &Client,
    mapped: Option<Workspaces>,
    watched: Watched,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    fingerprint: F,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    F: Fn(&K) -> String + Send + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).to_string();
    tokio::spawn(async move {
        let mut seen: HashMap<String, String> = HashMap::new();
        let objects = watcher(api, watcher::Config::default()).modify(move |o| {
            if let Some(workspaces) = &mapped {
                workspaces.map_for_store(o);
            }
        });
        let stream = reflector::reflector(writer, objects).default_backoff();
        futures::pin_mut!(stream);
        loop {
            let event = tokio::select! {
                _ = shutdown.changed() => break,
                event = stream.next() => event,
            };
            let Some(event) = event else { break };
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    let print = fingerprint(&obj);
                    let name = store_key(obj.meta().namespace.as_deref(), &obj.name_any());
                    if seen.get(&name) != Some(&print) {
                        seen.insert(name, print);
                        watched.triggers.fire();
                    }
                }
                Ok(watcher::Event::Delete(obj)) => {
                    if let Some(heartbeats) = &watched.heartbeats {
                        heartbeats.forget(&obj.name_any());
                    }
                    seen.remove(&store_key(obj.meta().namespace.as_deref(), &obj.name_any()));
                    watched.triggers.fire();
                }
                Ok(watcher::Event::InitDone) => watched.triggers.fire(),
                Ok(watcher::Event::Init) => {}
                Err(err) => tracing::debug!(kind = %kind, error = %err, "watch error; retrying"),
            }
        }
    });
    reader
}
