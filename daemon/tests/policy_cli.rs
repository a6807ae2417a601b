//! `tmcd policy eval|check|list` run as a binary against the example modules
//! in `target/policies/` (built by `hack/build-policies.sh`).

use std::path::PathBuf;
use std::process::{Command, Output};

/// A built example module; fails with the command that builds them.
fn module(name: &str) -> String {
    let path = tmc_tests::fixtures::built_policy(name).unwrap_or_else(|e| panic!("{e:#}"));
    path.to_string_lossy().into_owned()
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/policy-cli")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn tmcd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tmcd"))
        .args(args)
        .output()
        .expect("tmcd runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tmcd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The target rows of the eval table: (name, replicas, edits).
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip_while(|l| !l.starts_with("TARGET"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// `tmcd policy eval <module> --workload deployment.yaml --targets <targets> <extra>`.
fn eval(policy: &str, targets: &str, extra: &[&str]) -> Output {
    let (module, workload) = (module(policy), fixture("deployment.yaml"));
    let base = [
        "policy",
        "eval",
        module.as_str(),
        "--workload",
        workload.as_str(),
        "--targets",
        targets,
    ];
    tmcd(&[&base[..], extra].concat())
}

#[test]
fn eval_splits_four_replicas_over_two_ready_targets() {
    let out = eval("location-affinity", &fixture("targets.yaml"), &[]);
    let text = stdout(&out);
    let rows = rows(&text);
    let pairs: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(pairs, [("east", "2"), ("west", "2")], "{text}");
    assert!(text.contains("reason: "), "{text}");
    assert!(text.contains("evaluated in "), "{text}");
}

#[test]
fn eval_with_a_region_selector_places_on_one_target_as_json() {
    let placement = fixture("west-only.yaml");
    let out = eval(
        "location-affinity",
        &fixture("targets.yaml"),
        &["--placement", &placement, "--json"],
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(
        report["targets"],
        serde_json::json!([{"name": "west", "replicas": 4}]),
        "{report}"
    );
    assert!(report["reason"].as_str().is_some_and(|r| !r.is_empty()));
}

#[test]
fn eval_of_a_not_ready_target_leaves_it_out_unless_all_ready() {
    let dir = tempfile::tempdir().expect("dir");
    let text = std::fs::read_to_string(fixture("targets.yaml")).expect("fixture");
    let targets = dir.path().join("targets.yaml");
    std::fs::write(
        &targets,
        text.replacen("status: \"True\"", "status: \"False\"", 1),
    )
    .expect("write");
    let targets = targets.to_string_lossy().into_owned();
    let out = eval("location-affinity", &targets, &[]);
    let names: Vec<String> = rows(&stdout(&out))
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(names, ["east"], "west is not Ready");
    let out = eval("location-affinity", &targets, &["--all-ready"]);
    assert_eq!(rows(&stdout(&out)).len(), 2);
}

#[test]
fn eval_of_a_transformation_prints_its_edits_per_target() {
    let out = eval(
        "label-stamper",
        &fixture("targets.yaml"),
        &[
            "--target",
            "west",
            "--settings",
            r#"{"labels":{"team":"web-{region}"}}"#,
        ],
    );
    let text = stdout(&out);
    assert!(text.contains("(transformation)"), "{text}");
    let rows = rows(&text);
    assert_eq!(rows.len(), 1, "only --target west: {text}");
    let line = rows[0].join(" ");
    assert!(line.starts_with("west 4 "), "{text}");
    assert!(line.contains("label tmc.kcp.io/target=west"), "{text}");
    assert!(line.contains("label team=web-us-west"), "{text}");
}

#[test]
fn eval_of_a_transformation_shows_each_targets_copy_with_all_replicas() {
    // As if the placement put the whole workload on each target in turn: the
    // copy every target would get, checked by the same rules as in tmcd.
    let out = eval(
        "label-stamper",
        &fixture("targets.yaml"),
        &["--settings", r#"{"labels":{"team":"web-{region}"}}"#],
    );
    let text = stdout(&out);
    let rows: Vec<String> = rows(&text).into_iter().map(|r| r.join(" ")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    for (row, (target, region)) in rows.iter().zip([("east", "us-east"), ("west", "us-west")]) {
        assert!(row.starts_with(&format!("{target} 4 ")), "{text}");
        assert!(
            row.contains(&format!("label tmc.kcp.io/target={target}"))
                && row.contains(&format!("label team=web-{region}")),
            "{text}"
        );
    }
}

#[test]
fn eval_refusing_settings_exits_1_naming_the_module() {
    let out = eval(
        "location-affinity",
        &fixture("targets.yaml"),
        &["--settings", r#"{"mode":"sideways"}"#],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("location-affinity") && err.contains("sideways"),
        "{err}"
    );
}

#[test]
fn check_of_a_good_module_reports_kind_exports_and_vectors() {
    let out = tmcd(&[
        "policy",
        "check",
        &module("location-affinity"),
        "--settings",
        r#"{"mode":"preferred"}"#,
    ]);
    let text = stdout(&out);
    assert!(text.contains("location-affinity: ok"), "{text}");
    assert!(text.contains("kind:     placement"), "{text}");
    assert!(
        text.contains("tmc_place") && text.contains("tmc_abi_version"),
        "{text}"
    );
    assert!(text.contains("vectors:  shipped"), "{text}");
    assert!(text.contains("all passed"), "{text}");
    assert!(text.contains("digest:   sha256:"), "{text}");
}

#[test]
fn check_of_garbage_exits_1_naming_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\x7fELF not a wasm module at all").expect("write");
    let out = tmcd(&["policy", "check", junk.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("junk.wasm") && err.contains("not a WebAssembly module"),
        "{err}"
    );

    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x01\0\0\0").expect("write");
    let out = tmcd(&["policy", "check", empty.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("empty.wasm refused") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn list_without_a_daemon_names_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let admin = format!("http://{addr}");
    let out = tmcd(&["policy", "list", "--admin", &admin]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&admin) && err.contains("start tmcd"), "{err}");
}

#[test]
fn help_teaches_with_examples() {
    for cmd in ["eval", "check", "list"] {
        let out = tmcd(&["policy", cmd, "--help"]);
        let text = stdout(&out);
        assert!(
            text.contains(&format!("tmcd policy {cmd} ")),
            "{cmd}: {text}"
        );
    }
}

/// Serves one `GET /api/v1/status` with `body`, like tmcd's admin server.
fn serve_once(body: String) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).expect("read");
        let request = String::from_utf8_lossy(&buf[..n]).into_owned();
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(reply.as_bytes()).expect("write");
        request
    });
    (admin, handle)
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_the_active_generation_of_the_status_api() {
    use tmc_daemon::placement::runner::PolicyRunner;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::copy(
        module("location-affinity"),
        dir.path().join("location-affinity.wasm"),
    )
    .expect("copy");
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm\x01\0\0\0").expect("write");
    let host = tmc_policy_host::PolicyHost::new(Default::default()).expect("host");
    host.load_dir(dir.path()).await.expect("load");
    let runner = tmc_daemon::policy::HostRunner(host);
    // The same fields as the status handler's `policyGeneration` and `policies`.
    let body = serde_json::json!({
        "policyGeneration": runner.generation(),
        "policies": runner.policies(),
    });
    let digest = body["policies"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "location-affinity"))
        .and_then(|p| p["digest"].as_str())
        .expect("digest")
        .to_string();
    let (admin, server) = serve_once(body.to_string());
    let out = tokio::task::spawn_blocking(move || tmcd(&["policy", "list", "--admin", &admin]))
        .await
        .expect("tmcd");
    let request = server.join().expect("server");
    assert!(request.starts_with("GET /api/v1/status "), "{request}");
    let text = stdout(&out);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row: {text}"))
            .to_string()
    };
    let good = line("location-affinity");
    assert!(
        good.contains("placement") && good.contains(&digest[..12]),
        "{text}"
    );
    assert!(!good.contains(&digest[..13]), "digest prefix only: {text}");
    let bad = line("broken");
    assert!(bad.contains("refused") && bad.contains("memory"), "{text}");
}
