//! Hot reload through `PolicyHost::watch`: replacements, broken replacements,
//! deletions, atomic renames and editor temp files.

mod common;

use common::*;
use tmc_policy_host::{HostConfig, PolicyHost, PolicyStatus};

async fn reason(host: &PolicyHost, policy: &str) -> String {
    host.place(policy, &request(None))
        .await
        .expect("policy answers")
        .value
        .reason
}

#[tokio::test]
async fn replace_broken_replacement_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    write_policy(dir.path(), "p", &fixture("good-v1"));
    host.load_dir(dir.path()).await.expect("initial load");
    let _watch = host.watch(dir.path()).expect("watch");
    assert_eq!(reason(&host, "p").await, "v1");

    // Replace: a new generation serves v2.
    let g1 = host.generation().number;
    write_policy(dir.path(), "p", &fixture("good-v2"));
    let g2 = next_generation(&host, g1).await;
    assert_eq!(reason(&host, "p").await, "v2");

    // Broken replacement: refused, v2 keeps serving, the status says so.
    write_policy(dir.path(), "p", &fixture("wrong-abi"));
    let g3 = next_generation(&host, g2).await;
    let generation = host.generation();
    let entry = generation.get("p").expect("entry");
    assert_eq!(entry.status, PolicyStatus::UpdateRefused);
    assert!(
        entry
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("tmc_abi_version() returned 2")),
        "{entry:?}"
    );
    assert_eq!(reason(&host, "p").await, "v2");

    // Delete: still serving the last good version.
    std::fs::remove_file(dir.path().join("p.wasm")).expect("delete");
    next_generation(&host, g3).await;
    let generation = host.generation();
    let entry = generation.get("p").expect("entry kept");
    assert_eq!(entry.status, PolicyStatus::Deleted);
    assert_eq!(
        entry.status.to_string(),
        "Deleted, still serving last good version"
    );
    assert_eq!(reason(&host, "p").await, "v2");
}

#[tokio::test]
async fn atomic_rename_is_picked_up_and_temp_files_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host_with(HostConfig {
        debounce: std::time::Duration::from_millis(20),
        ..HostConfig::default()
    });
    host.load_dir(dir.path()).await.expect("initial load");
    let _watch = host.watch(dir.path()).expect("watch");

    // An editor's temp file is not a policy.
    std::fs::write(dir.path().join(".p.wasm.swp"), b"junk").expect("write");
    std::fs::write(dir.path().join("p.wasm~"), b"junk").expect("write");
    // Write under a temp name, then rename into place.
    let tmp = dir.path().join(".p.wasm.tmp");
    std::fs::write(&tmp, fixture("good-v1")).expect("write");
    std::fs::rename(&tmp, dir.path().join("p.wasm")).expect("rename");
    let g = next_generation(&host, 0).await;
    assert_eq!(reason(&host, "p").await, "v1");
    let generation = host.generation();
    assert_eq!(generation.number, g);
    let names: Vec<_> = generation.policies.keys().cloned().collect();
    assert_eq!(names, ["p"], "temp files are not policies");
}

/// Writes a new version of a ConfigMap volume the way the kubelet's atomic writer does: the keys into a
/// fresh hidden timestamped directory, a `..data_tmp` symlink to it renamed over `..data`, the old
/// directory removed. The visible `<key>` entries are symlinks to `..data/<key>`, created once.
fn kubelet_writes(volume: &std::path::Path, version: u32, files: &[(&str, Vec<u8>)]) {
    let stamp = format!("..2026_12_02_00_00_{version:02}.000000001");
    std::fs::create_dir(volume.join(&stamp)).expect("timestamped dir");
    for (key, bytes) in files {
        std::fs::write(volume.join(&stamp).join(key), bytes).expect("key");
    }
    let old = std::fs::read_link(volume.join("..data")).ok();
    std::os::unix::fs::symlink(&stamp, volume.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).expect("swap ..data");
    for (key, _) in files {
        let visible = volume.join(key);
        if visible.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{key}"), visible).expect("key link");
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(volume.join(old)).expect("old dir");
    }
}

#[tokio::test]
async fn a_configmap_volume_update_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    kubelet_writes(dir.path(), 1, &[("p.wasm", fixture("good-v1"))]);
    let host = host_with(HostConfig {
        debounce: std::time::Duration::from_millis(20),
        ..HostConfig::default()
    });
    host.load_dir(dir.path()).await.expect("initial load");
    let _watch = host.watch(dir.path()).expect("watch");
    assert_eq!(reason(&host, "p").await, "v1");
    let g1 = host.generation().number;

    // The ConfigMap is edited: only `..data` and hidden directories change on disk.
    kubelet_writes(dir.path(), 2, &[("p.wasm", fixture("good-v2"))]);
    next_generation(&host, g1).await;
    assert_eq!(reason(&host, "p").await, "v2");
    let names: Vec<_> = host.generation().policies.keys().cloned().collect();
    assert_eq!(names, ["p"], "the hidden entries are not policies");
}

#[tokio::test]
async fn unchanged_reload_keeps_the_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    write_policy(dir.path(), "p", &fixture("good-v1"));
    let first = host.load_dir(dir.path()).await.expect("load");
    let second = host.load_dir(dir.path()).await.expect("reload");
    assert!(first.swapped);
    assert!(!second.swapped);
    assert_eq!(second.generation, first.generation);
    assert_eq!(second.unchanged, ["p"]);
}

#[tokio::test]
async fn in_flight_evaluation_finishes_on_its_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    write_policy(dir.path(), "p", &fixture("good-v1"));
    host.load_dir(dir.path()).await.expect("load");
    let old = host.generation();
    write_policy(dir.path(), "p", &fixture("good-v2"));
    host.load_dir(dir.path()).await.expect("reload");
    // The old generation is still a complete, usable policy set.
    assert_eq!(old.number, 1);
    assert!(old.active("p").is_some());
    assert_ne!(
        old.active("p").map(|a| a.digest.clone()),
        host.generation().active("p").map(|a| a.digest.clone())
    );
}
