//! Deleted SyncTargets: which targets a workload still names (state label,
//! result, status, finalizer) although their SyncTarget no longer exists.
//!
//! Deletion of a SyncTarget is positive evidence, unlike a target that does
//! not answer: its syncer will never clean up, so tmcd forgets the target on
//! every object that names it (otherwise an upstream delete would wait
//! forever on its finalizer, and a re-created target would inherit stale
//! decisions). Absence from the watch cache is only a hint; a GET answering
//! 404 confirms it.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use tmc_syncer::api::SyncTarget;
use tmc_syncer::decision::FINALIZER_PREFIX;

use super::assignment::Recorded;

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

/// The subset of `names` whose SyncTarget a GET confirms deleted (404). A
/// failed GET proves nothing: that name is left out and looked at again on
/// the next reconcile.
pub async fn confirm_gone(api: &Api<SyncTarget>, names: BTreeSet<String>) -> BTreeSet<String> {
    let mut gone = BTreeSet::new();
    for name in names {
        match api.get_opt(&name).await {
            Ok(None) => {
                gone.insert(name);
            }
            Ok(Some(_)) => {}
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
    use tmc_syncer::api::SyncTargetSpec;

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
