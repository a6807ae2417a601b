//! kwok, the bed's stand-in for every node's kubelet: its arguments and the pod stages it plays.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Annotation kwok selects the nodes it manages by.
pub const NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// kwok's node Lease duration, as kwokctl sets it. kwok v0.7.0 run standalone keeps no node Lease by default
/// (its `nodeLeaseDurationSeconds` has no default outside kwokctl) and then picks its slow node heartbeat
/// stage (a status update every 10 to 20 minutes), so kube-controller-manager marked every node NotReady
/// ~45 s after start. With a duration, kwok renews a Lease per node every 10 s and updates node status
/// every 20 to 45 s, as a kubelet does.
pub const NODE_LEASE_SECONDS: u32 = 40;

/// The pod stages (see the file's header): kwok's own, plus Ready again after someone else set it False.
pub const POD_STAGES: &str = include_str!("kwok_stages.yaml");

/// Writes [`POD_STAGES`] to `dir/kwok-stages.yaml` and returns the path.
pub fn write_stages(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("kwok-stages.yaml");
    std::fs::write(&path, POD_STAGES).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Arguments for kwok managing the bed's nodes of the cluster behind `kubeconfig`, with `stages` from
/// [`write_stages`].
///
/// kwok runs without its kubelet-like server (no `--server-address`): the test bed uses neither its
/// metrics nor its logs/exec endpoints, and kwok v0.7.0 builds that server's CEL environment while
/// its stage controllers build theirs, writing one unguarded global map (easycel v0.6.0
/// `typeTraitMap`) from two goroutines; that crashed kwok at start-up with "concurrent map writes".
pub fn args(kubeconfig: &Path, stages: &Path) -> Vec<OsString> {
    [
        format!("--kubeconfig={}", kubeconfig.display()),
        // Only this file: not the user's ~/.kwok/kwok.yaml.
        format!("--config={}", stages.display()),
        format!("--node-lease-duration-seconds={NODE_LEASE_SECONDS}"),
        "--manage-all-nodes=false".into(),
        format!("--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake"),
        "--cidr=10.0.0.1/16".into(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn has(args: &[OsString], arg: &str) -> bool {
        args.iter().any(|a| a == arg)
    }

    #[test]
    fn kwok_keeps_node_leases_and_reads_only_our_stages() {
        let args = args(Path::new("/k"), Path::new("/d/kwok-stages.yaml"));
        assert!(has(&args, "--node-lease-duration-seconds=40"));
        assert!(has(&args, "--config=/d/kwok-stages.yaml"));
    }

    #[test]
    fn kwok_runs_without_its_racy_server() {
        let args = args(Path::new("/k"), Path::new("/s"));
        assert!(
            !args
                .iter()
                .any(|a| a.to_string_lossy().starts_with("--server-address"))
        );
    }

    #[test]
    fn stages_cover_the_pod_lifecycle() {
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(POD_STAGES)
            .map(serde_yaml::Value::deserialize)
            .collect::<Result<_, _>>()
            .expect("stages parse");
        let names: Vec<&str> = docs
            .iter()
            .map(|d| {
                assert_eq!(d["kind"].as_str(), Some("Stage"));
                assert_eq!(d["spec"]["resourceRef"]["kind"].as_str(), Some("Pod"));
                d["metadata"]["name"].as_str().expect("name")
            })
            .collect();
        assert_eq!(
            names,
            ["pod-start", "pod-ready-again", "pod-job-done", "pod-remove"]
        );
    }
}
