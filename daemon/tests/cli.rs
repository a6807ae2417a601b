//! The `tmcd` binary's offline subcommands.

use std::process::Command;

fn tmcd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tmcd"))
        .args(args)
        .output()
        .expect("tmcd runs")
}

#[test]
fn check_config_locates_mistakes_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
    let path = dir.path().join("tmc.toml");
    std::fs::write(
        &path,
        "[sync]\nheartbeat_interval_seconds = 10\nresync = true\n",
    )
    .expect("write");
    let out = tmcd(&["check-config", "--config", path.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tmc.toml:3:1:") && err.contains("resync"),
        "{err}"
    );

    std::fs::write(&path, "[sync]\nheartbeat_interval_seconds = 10\n").expect("write");
    let out = tmcd(&["check-config", "--config", path.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn crds_prints_every_definition() {
    let out = tmcd(&["crds"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "synctargets.workload.kcp.io",
            "clusterworkloadplacements.workload.kcp.io",
            "synctargetgrants.workload.kcp.io"
        ]
    );
}

#[test]
fn help_teaches_with_examples() {
    let out = tmcd(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for example in [
        "tmcd --config tmc.toml",
        "tmcd status",
        "tmcd syncer logs --cluster west",
        "tmcd verify",
        "tmcd explain deployment/demo/web",
    ] {
        assert!(text.contains(example), "missing {example:?} in:\n{text}");
    }
}

#[test]
fn status_without_a_running_tmcd_says_what_to_check() {
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    let out = tmcd(&["status", "--admin", "http://127.0.0.1:9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is tmcd running"), "{err}");
}

#[test]
fn status_table_shows_targets_policies_and_placements() {
    let body = serde_json::json!({
        "identity": "host-1", "leader": true, "policyGeneration": 3,
        "targets": [{"name": "west", "mode": "Push", "ready": true, "region": "us-west", "zone": "a", "lastHeartbeat": "2026-01-01T00:00:00Z",
                     "syncer": {"upstreamConnected": true, "downstreamConnected": true, "objectsSynced": 4, "failing": 0, "lastError": null}}],
        "policies": [{"name": "replica-spread", "kind": "placement", "status": "active", "statusText": "Active",
                      "digest": "0123456789abcdef0123", "lastError": null, "source": "/p/replica-spread.wasm",
                      "loadedAt": 1, "serving": true}],
        "placements": [{"name": "spread", "policy": "replica-spread", "workloadCount": 2,
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "targets": [{"name": "west", "workloads": 2, "replicas": 5}]}],
    });
    let report = serde_json::from_value(body).expect("a status report");
    let table = tmc_daemon::commands::render_status(&report);
    assert!(
        table.contains("tmcd host-1 (leader), policy generation 3"),
        "{table}"
    );
    assert!(
        table.contains("west") && table.contains("up=true down=true synced=4 failing=0 err=-"),
        "{table}"
    );
    assert!(
        table.contains("replica-spread") && table.contains("0123456789abcdef"),
        "{table}"
    );
    assert!(table.contains("west:2w/5r"), "{table}");
}

#[test]
fn without_admin_the_clients_ask_the_address_of_the_config_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("tmc.toml");
    // A wildcard listen address is reached on loopback; port 1 answers nobody.
    std::fs::write(&path, "[admin]\naddress = \"0.0.0.0:1\"\n").expect("write");
    let config = path.to_str().expect("utf-8");
    for args in [
        &["status", "--config", config][..],
        &["policy", "list", "--config", config],
        &["syncer", "logs", "--cluster", "west", "--config", config],
        &["explain", "deployment/demo/web", "--config", config],
    ] {
        let out = tmcd(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("http://127.0.0.1:1 "),
            "{args:?}: {err}"
        );
    }
    // --admin wins over the file.
    let out = tmcd(&[
        "status",
        "--config",
        config,
        "--admin",
        "http://127.0.0.1:2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http://127.0.0.1:2 "), "{err}");
}

#[test]
fn completions_and_man_page_come_from_the_command_line_definition() {
    let out = tmcd(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("_tmcd()") && script.contains("check-config") && script.contains("diff"),
        "{script}"
    );
    let out = tmcd(&["completions", "zsh"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("#compdef tmcd"));
    let out = tmcd(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains(".TH tmcd 1") && page.contains("check\\-config"),
        "{page}"
    );
}

#[test]
fn explain_help_teaches_what_it_answers() {
    let out = tmcd(&["explain", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "KIND/NAMESPACE/NAME",
        "tmcd explain deployment/demo/web",
        "-o json",
        "location mismatch",
        "VERDICT",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}
