//! Deleted SyncTargets: which targets a workload still names (state label,
//! result, status, finalizer) although their SyncTarget no longer exists.
//!
//! Deleting a SyncTarget detaches its cluster from tmc: tmcd forgets the
//! target on every object that names it (otherwise an upstream delete would
//! wait forever on its finalizer, and a re-created target would inherit
//! stale decisions) and places the workloads elsewhere; nothing on the
//! cluster is deleted (the syncer of a missing target touches nothing, and
//! the absence of the protocol keys is never a reason to delete), so its
//! copies keep running, unmanaged. Absence from the watch cache is only a
//! hint; a GET answering 404 for that very name confirms it.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use tmc_api::crd::SyncTarget;
use tmc_api::decision::FINALIZER_PREFIX;
use tmc_syncer::error::is_object_not_found;

use tmc_api::protocol::Recorded;

/// Targets named by `recorded` or by a tmc finalizer in `finalizers` that
/// `known` (a synced SyncTarget cache) does not hold.
pub fn unknown_targets(
    recorded: &BTreeMap<String, Recorded>,
    finalizers: &[String],
    known: &Store<SyncTarget>,
) -> BTreeSet<String> {
    recorded
        .keys()
        .map(String::as_str)
        .chain(
            finalizers
                .iter()
                .filter_map(|f| f.strip_prefix(FINALIZER_PREFIX)),
        )
        .filter(|name| known.get(&ObjectRef::new(name)).is_none())
        .map(str::to_string)
        .collect()
}

/// The subset of `names` whose SyncTarget a GET confirms deleted: a 404
/// answer that names the object. Any other failure proves nothing (a 404 for
/// an unserved `synctargets` resource included): that name is left out and
/// looked at again on the next reconcile.
pub async fn confirm_gone(api: &Api<SyncTarget>, names: BTreeSet<String>) -> BTreeSet<String> {
    let mut gone = BTreeSet::new();
    for name in names {
        match api.get(&name).await {
            Err(err) if is_object_not_found(&err, &name) => {
                gone.insert(name);
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(target_cluster = %name, error = %err, "could not confirm that the SyncTarget is gone");
            }
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use tmc_api::crd::SyncTargetSpec;

    #[test]
    fn names_from_the_protocol_and_finalizers_that_the_cache_lacks() {
        let (reader, mut writer) = reflector::store::<SyncTarget>();
        writer.apply_watcher_event(&Event::Apply(SyncTarget::new(
            "west",
            SyncTargetSpec::default(),
        )));
        let recorded: BTreeMap<String, Recorded> = [
            ("west".to_string(), Recorded::default()),
            ("old".to_string(), Recorded::default()),
        ]
        .into();
        let finalizers = vec![
            "workload.kcp.io/syncer-west".to_string(),
            "workload.kcp.io/syncer-older".to_string(),
            "example.com/other".to_string(),
        ];
        assert_eq!(
            unknown_targets(&recorded, &finalizers, &reader),
            ["old".to_string(), "older".to_string()].into()
        );
    }
}
