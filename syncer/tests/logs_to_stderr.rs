//! The `tmc-syncer` binary logs to stderr (as tmcd, kubectl and the
//! controllers do) and writes nothing to stdout. No servers: its upstream is
//! a closed loopback port, so it cannot read its SyncTarget and warns so.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: closed
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: nobody
  user: {token: none}
contexts:
- name: closed
  context: {cluster: closed, user: nobody}
current-context: closed
"#;

/// What the agent warns when its upstream cannot be reached.
const UPSTREAM_WARNINGS: [&str; 2] = ["cannot read the SyncTarget", "upstream discovery failed"];

/// Runs the binary with `--log-format <format>`, stdout and stderr piped (no terminal), until it logs its
/// discovery warning; returns that stderr line and everything on stdout.
fn first_warning(format: &str) -> (String, String) {
    let kubeconfig = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "tmc-syncer-logs-{format}-{}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(&kubeconfig, KUBECONFIG).expect("writing the kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tmc-syncer"))
        .arg("--upstream-kubeconfig")
        .arg(&kubeconfig)
        .arg("--downstream-kubeconfig")
        .arg(&kubeconfig)
        .args(["--sync-target", "west", "--resources", "v1/ConfigMap"])
        .args(["--log-format", format])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tmc-syncer");

    // The discovery warning, read from stderr on a thread (a line may never come).
    let stderr = child.stderr.take().expect("stderr is piped");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    // The agent's first warning about its unreachable upstream (reading its
    // SyncTarget, or discovery), within 30 s in all.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let warning = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if UPSTREAM_WARNINGS.iter().any(|w| line.contains(w)) => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    child.kill().expect("stopping tmc-syncer");
    child.wait().expect("waiting for tmc-syncer");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut stdout)
        .expect("reading stdout");
    let _ = std::fs::remove_file(&kubeconfig);

    let warning = warning.unwrap_or_else(|| {
        panic!(
            "no warning about the upstream on stderr within 30 s; stderr so far:\n{}",
            seen.join("\n")
        )
    });
    (warning, stdout)
}

#[test]
fn text_lines_carry_no_colour_codes_when_stderr_is_no_terminal() {
    let (warning, stdout) = first_warning("text");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        !warning.contains('\u{1b}'),
        "ANSI escape codes in a log that goes to a pipe: {warning:?}"
    );
    assert_eq!(stdout, "", "tmc-syncer wrote to stdout");
}

#[test]
fn logs_go_to_stderr_as_json_lines_and_stdout_stays_empty() {
    let (warning, stdout) = first_warning("json");
    let event: serde_json::Value = serde_json::from_str(&warning)
        .unwrap_or_else(|err| panic!("not a JSON line ({err}): {warning}"));
    assert_eq!(event["level"], "WARN", "{event}");
    // One JSON shape for tmcd and tmc-syncer: the event's fields at the top level.
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| UPSTREAM_WARNINGS.iter().any(|w| m.starts_with(w))),
        "{event}"
    );
    assert!(event["error"].is_string(), "{event}");
    assert_eq!(stdout, "", "tmc-syncer wrote to stdout");
}

#[test]
fn completions_and_man_page_need_no_other_flag() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tmc-syncer"))
            .args(args)
            .output()
            .expect("tmc-syncer runs")
    };
    let out = run(&["--completions", "bash"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("_tmc__syncer()") && script.contains("--upstream-kubeconfig"),
        "{script}"
    );
    let out = run(&["--man"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH tmc-syncer 1"));
    // Combined with a run flag it is refused, not half-applied.
    let out = run(&["--man", "--sync-target", "west"]);
    assert!(!out.status.success());
}
