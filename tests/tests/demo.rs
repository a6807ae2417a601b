//! Runs `./tmc-virtual-cluster-demo.sh --non-interactive --skip-cleanup` against real servers, then every
//! verb of `./tmc-syncer-helper.sh` against the tmcd it left running, then `stop`, and checks that no
//! process of the demo is left.
//!
//! The demo checks its own expectations at every step (copies on both clusters, replica split, hot reload,
//! placement change) and exits non-zero naming the one that failed; this test asserts its exit code and
//! what the helper reports. It needs the binaries of `hack/testbed/build.sh` (the demo builds what is
//! missing) and runs in a private state root (`TMC_DEMO_ROOT`), so it neither sees nor stops a demo run
//! by hand. A second test runs the demo with `--tenants` (step 8).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail, ensure};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Runs a script of the repository with the private state root; stdin is closed.
fn script(root: &Path, name: &str, args: &[&str]) -> Result<Output> {
    let path = repo_root().join(name);
    Command::new(&path)
        .args(args)
        .current_dir(repo_root())
        .env("TMC_DEMO_ROOT", root)
        .env("NO_COLOR", "1")
        .env_remove("TMC_DEMO_DIR")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", path.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Output of a run that must succeed; the error shows both streams.
fn succeeded(what: &str, out: &Output) -> Result<String> {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if !out.status.success() {
        bail!(
            "{what} failed with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
    }
    Ok(stdout)
}

/// Stops the demo (whatever happened) when dropped.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(out) = script(self.0, "tmc-syncer-helper.sh", &["stop"]) {
            eprintln!("cleanup: {}", text(&out.stdout).trim());
        }
    }
}

/// The single state directory the demo created under `root` (not the literal `kcp-demo-*` link to it).
fn state_dir(root: &Path) -> Result<PathBuf> {
    let dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("listing {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.is_symlink())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kcp-demo-"))
        })
        .collect();
    match dirs.as_slice() {
        [one] => Ok(one.clone()),
        other => bail!(
            "expected one kcp-demo-* directory in {}, found {other:?}",
            root.display()
        ),
    }
}

/// PIDs recorded in STATE/pids (lines "NAME PID START_TIME").
fn recorded_pids(state: &Path) -> Result<Vec<(String, u32)>> {
    let file = state.join("pids");
    let body =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.split_whitespace();
            let (Some(name), Some(pid)) = (fields.next(), fields.next()) else {
                bail!("malformed line {l:?} in {}", file.display());
            };
            Ok((
                name.to_string(),
                pid.parse().with_context(|| format!("pid in {l:?}"))?,
            ))
        })
        .collect()
}

/// True when the process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

/// Live processes whose command line names `dir`.
fn processes_naming(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = text(&cmd).replace('\0', " ");
            (cmd.contains(&needle) && alive(pid)).then_some((pid, cmd))
        })
        .collect()
}

fn sha256_prefix(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    let stdout = succeeded("sha256sum", &out)?;
    let digest = stdout
        .split_whitespace()
        .next()
        .context("empty sha256sum output")?;
    Ok(digest.chars().take(16).collect())
}

/// The policy generation on the first line of `tmcd status`: "... policy generation N".
fn generation(status: &str) -> Result<u64> {
    let first = status
        .lines()
        .find(|l| l.contains("policy generation"))
        .context("no 'policy generation' line in the status output")?;
    first
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no generation number in {first:?}"))
}

/// The demos of this file one at a time: each starts a bed of three API servers on a 2-core machine.
static ONE_DEMO_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn demo_runs_and_the_helper_drives_its_daemon() -> Result<()> {
    one_demo_in_a_private_root("tmc-demo-test-", run_demo_and_helper)
}

/// Runs `demo` in a private root under /tmp named `prefix...`, one demo at a time; keeps the root for its logs
/// when it fails.
fn one_demo_in_a_private_root(prefix: &str, demo: fn(&Path) -> Result<()>) -> Result<()> {
    let _one = ONE_DEMO_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .context("creating the private demo root")?;
    let result = demo(dir.path());
    if result.is_err() {
        eprintln!("keeping {} for its logs", dir.keep().display());
    }
    result
}

/// `--tenants` adds step 8 (tenant workspaces through tmcd's export mode) after the seven steps; the demo checks
/// that both tenants' `default/web` run on kcp-west in namespaces of their own with their status back home,
/// and cleans up after itself (no `--skip-cleanup`).
#[test]
fn demo_with_tenants_runs_the_seven_steps_then_two_tenants() -> Result<()> {
    one_demo_in_a_private_root("tmc-demo-tenants-test-", run_demo_with_tenants)
}

fn run_demo_with_tenants(root: &Path) -> Result<()> {
    let _stop = StopOnDrop(root);
    let demo = script(
        root,
        "tmc-virtual-cluster-demo.sh",
        &["--non-interactive", "--tenants"],
    )?;
    let out = succeeded("the demo with --tenants", &demo)?;
    for expected in [
        "Step 7",
        "Step 8: Many virtual clusters through one tmcd",
        "root:teams:a deployment/web readyReplicas=2",
        "root:teams:b deployment/web readyReplicas=2",
        "each workspace lists only its own",
        "Demo complete: every step's expectation held.",
    ] {
        ensure!(
            out.contains(expected),
            "demo output lacks {expected:?}:\n{out}"
        );
    }
    let left = processes_naming(root);
    ensure!(left.is_empty(), "the demo left processes running: {left:?}");
    Ok(())
}

/// The state directory is 0700, and every kubeconfig, key and token file under it (the bed's included,
/// links followed) is readable by its owner only: they hold client keys and bearer tokens.
fn private_to_the_user(state: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| -> Result<u32> {
        Ok(std::fs::metadata(path)
            .with_context(|| format!("reading the mode of {}", path.display()))?
            .permissions()
            .mode()
            & 0o777)
    };
    ensure!(
        mode(state)? == 0o700,
        "{} has mode {:o}, not 700",
        state.display(),
        mode(state)?
    );
    let mut secrets = 0;
    let mut dirs = vec![state.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_symlink() && !name.ends_with(".kubeconfig") {
                continue;
            } else if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if name.ends_with(".kubeconfig") || name.ends_with(".key") || name.contains("token") {
                secrets += 1;
                ensure!(
                    mode(&path)? & 0o077 == 0,
                    "{} has mode {:o}: group or others can read a credential",
                    path.display(),
                    mode(&path)?
                );
            }
        }
    }
    ensure!(
        secrets >= 3,
        "found only {secrets} kubeconfig/key/token files under {}",
        state.display()
    );
    Ok(())
}

fn run_demo_and_helper(root: &Path) -> Result<()> {
    let _stop = StopOnDrop(root);

    let demo = script(
        root,
        "tmc-virtual-cluster-demo.sh",
        &["--non-interactive", "--skip-cleanup"],
    )?;
    let demo_out = succeeded("the demo", &demo)?;
    for expected in [
        "Step 7",
        "Demo complete: every step's expectation held.",
        "export KUBECONFIG=",
        "./tmc-syncer-helper.sh stop",
    ] {
        ensure!(
            demo_out.contains(expected),
            "demo output lacks {expected:?}:\n{demo_out}"
        );
    }
    let state = state_dir(root)?;
    let link = root.join("kcp-demo-*");
    ensure!(
        std::fs::canonicalize(&link).ok() == std::fs::canonicalize(&state).ok(),
        "{} does not point at {}",
        link.display(),
        state.display()
    );
    for file in [
        "admin.kubeconfig",
        "kcp.log",
        "kcp-west.kubeconfig",
        "kcp-east.kubeconfig",
        "tmc.toml",
    ] {
        ensure!(
            state.join(file).exists(),
            "{} is missing",
            state.join(file).display()
        );
    }

    private_to_the_user(&state)?;

    // The exploring commands that README.md and docs/demo.md print after the demo, typed
    // as written (only /tmp replaced by the private root).
    let bin_dir = std::fs::read_to_string(state.join("env"))?
        .lines()
        .find_map(|l| l.strip_prefix("TMC_DEMO_BIN_DIR=").map(str::to_string))
        .context("no TMC_DEMO_BIN_DIR in the demo's env file")?;
    let explore = |command: &str| -> Result<String> {
        let line = format!(
            "export PATH={bin_dir}:$PATH; export KUBECONFIG={}/kcp-demo-*/admin.kubeconfig; {command}",
            root.display()
        );
        let out = Command::new("bash")
            .args(["-c", &line])
            .stdin(Stdio::null())
            .output()
            .context("running bash")?;
        succeeded(command, &out)
    };
    let checks: [(&str, &[&str]); 7] = [
        (
            "kubectl get deployments,services,pods -n demo-app",
            &["deployment.apps/web", "service/web"],
        ),
        // What a Kubernetes user types without thinking: short names, the `all` category, the columns.
        (
            "kubectl get deploy,svc -n demo-app",
            &[
                "deployment.apps/web",
                "AVAILABLE",
                "service/web",
                "CLUSTER-IP",
            ],
        ),
        (
            "kubectl get all -n demo-app",
            &["deployment.apps/web", "service/web"],
        ),
        (
            "kubectl get synctargets -o wide",
            &["kcp-west", "kcp-east", "us-west-1", "True"],
        ),
        (
            "kubectl get clusterworkloadplacements -o yaml",
            &["name: demo-placement", "name: label-stamper"],
        ),
        (
            "kubectl --context kind-kcp-east get all -n demo-app --show-labels",
            &[
                "deployment.apps/web",
                "workload.kcp.io/managed=true",
                "pod/web-",
            ],
        ),
        (
            "kubectl --context kind-kcp-west get all -n demo-app --show-labels",
            &[],
        ),
    ];
    for (command, expected) in checks {
        let out = explore(command)?;
        for e in expected {
            ensure!(out.contains(e), "`{command}` lacks {e:?}:\n{out}");
        }
    }

    // status: both targets, the hot-reloaded module (active-passive's digest), a generation past the first.
    let status = succeeded(
        "helper status",
        &script(root, "tmc-syncer-helper.sh", &["status"])?,
    )?;
    for expected in [
        "kcp-west",
        "kcp-east",
        "demo-placement",
        "label-stamper",
        "tmcd ",
    ] {
        ensure!(
            status.contains(expected),
            "status lacks {expected:?}:\n{status}"
        );
    }
    let active_passive = sha256_prefix(&repo_root().join("target/policies/active-passive.wasm"))?;
    ensure!(
        status.contains(&active_passive),
        "status does not show active-passive's digest {active_passive} for demo-placement:\n{status}"
    );
    ensure!(
        generation(&status)? >= 2,
        "the hot reload did not raise the policy generation:\n{status}"
    );

    // logs: the push syncer's lines through tmcd; the pull agent's log tail for kcp-east.
    let west = succeeded(
        "helper logs kcp-west",
        &script(
            root,
            "tmc-syncer-helper.sh",
            &["logs", "--cluster", "kcp-west"],
        )?,
    )?;
    ensure!(
        west.contains("# kcp-west:"),
        "logs of kcp-west lack the header:\n{west}"
    );
    ensure!(
        west.lines()
            .skip_while(|l| !l.starts_with("# kcp-west:"))
            .skip(1)
            .any(|l| l.contains("target_name=kcp-west")),
        "no line of kcp-west's push syncer after the header:\n{west}"
    );
    let east = succeeded(
        "helper logs kcp-east",
        &script(
            root,
            "tmc-syncer-helper.sh",
            &["logs", "--cluster", "kcp-east"],
        )?,
    )?;
    ensure!(
        east.contains("# kcp-east:"),
        "logs of kcp-east lack the header:\n{east}"
    );
    // The workload ends on kcp-east: the agent's last lines are its copies being applied there.
    ensure!(
        east.lines()
            .skip_while(|l| !l.starts_with("# pull-mode agent tmc-syncer for kcp-east"))
            .any(|l| l.contains("demo-app/web") && l.contains("target=kcp-east")),
        "logs of kcp-east lack the pull agent's lines about demo-app/web:\n{east}"
    );
    let unknown = script(
        root,
        "tmc-syncer-helper.sh",
        &["logs", "--cluster", "nowhere"],
    )?;
    ensure!(
        !unknown.status.success(),
        "logs of an unknown cluster succeeded"
    );
    ensure!(
        text(&unknown.stderr).contains("nowhere"),
        "the error does not name the unknown cluster:\n{}",
        text(&unknown.stderr)
    );

    // sync-workload: tmcd re-queues and logs it.
    let tmcd_log = state.join("tmcd.log");
    let resyncs = || -> Result<usize> {
        Ok(std::fs::read_to_string(&tmcd_log)
            .with_context(|| format!("reading {}", tmcd_log.display()))?
            .matches("resync requested")
            .count())
    };
    let before = resyncs()?;
    let sync = succeeded(
        "helper sync-workload",
        &script(
            root,
            "tmc-syncer-helper.sh",
            &["sync-workload", "--cluster", "kcp-east"],
        )?,
    )?;
    ensure!(
        sync.contains("re-queued every workload for kcp-east"),
        "sync-workload said:\n{sync}"
    );
    ensure!(
        resyncs()? > before,
        "tmcd.log has no new 'resync requested' line"
    );

    // verify: the control plane and both clusters are reachable.
    let verify = succeeded(
        "helper verify",
        &script(root, "tmc-syncer-helper.sh", &["verify"])?,
    )?;
    for expected in [
        "ok    control plane (workspace root:tmc)",
        "ok    cluster kcp-west",
        "ok    cluster kcp-east",
    ] {
        ensure!(
            verify.contains(expected),
            "verify lacks {expected:?}:\n{verify}"
        );
    }

    // stop: every recorded process and every bed process is gone.
    let pids = recorded_pids(&state)?;
    ensure!(
        pids.iter().any(|(n, _)| n == "tmcd"),
        "no tmcd in {}/pids",
        state.display()
    );
    let stop = succeeded(
        "helper stop",
        &script(root, "tmc-syncer-helper.sh", &["stop"])?,
    )?;
    ensure!(stop.contains("stopped 1 demo"), "stop said:\n{stop}");
    let left: Vec<_> = pids.iter().filter(|(_, pid)| alive(*pid)).collect();
    ensure!(left.is_empty(), "still running after stop: {left:?}");
    let leftovers = processes_naming(&state);
    ensure!(
        leftovers.is_empty(),
        "processes naming {} after stop: {leftovers:?}",
        state.display()
    );
    let again = succeeded(
        "helper status after stop",
        &script(root, "tmc-syncer-helper.sh", &["stop"])?,
    )?;
    ensure!(
        again.contains("no running demo"),
        "a second stop found something:\n{again}"
    );
    Ok(())
}

/// Runs `body` in bash with demo/lib/common.sh and observe.sh sourced and a fake `kubectl` first on PATH that
/// reports `west` as kcp-west's replicas and NotFound for kcp-east.
fn with_fake_kubectl(west: &str, body: &str) -> Result<Output> {
    let bin = tempfile::tempdir().context("creating a dir for the fake kubectl")?;
    let fake = bin.path().join("kubectl");
    std::fs::write(
        &fake,
        format!(
            "#!/usr/bin/env bash\ncase \"$*\" in\n  *kind-kcp-west*) echo '{west} ' ;;\n  \
             *) echo 'Error from server (NotFound): deployments.apps \"web\" not found' >&2; exit 1 ;;\nesac\n"
        ),
    )?;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", fake.display()))?;
    let lib = repo_root().join("demo/lib");
    let script = format!(
        "set -euo pipefail; source {}/common.sh; source {}/observe.sh; {body}",
        lib.display(),
        lib.display()
    );
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .args(["-c", &script])
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .context("running bash")
}

/// The demo's checks fail, naming what they saw, when the clusters do not hold what a step expects; and a
/// wait that times out exits non-zero with the expectation and where to look.
#[test]
fn demo_expectations_fail_on_the_wrong_distribution() -> Result<()> {
    let held = with_fake_kubectl("3", "expect_distribution 3 absent")?;
    ensure!(
        held.status.success(),
        "3/absent should hold: {}",
        text(&held.stdout)
    );

    let wrong = with_fake_kubectl("3", "expect_distribution 4 absent")?;
    ensure!(!wrong.status.success(), "4/absent held against 3/absent");
    ensure!(
        text(&wrong.stdout)
            .contains("seen kcp-west=3 kcp-east=absent, expected kcp-west=4 kcp-east=absent"),
        "the check does not say what it saw: {}",
        text(&wrong.stdout)
    );
    let split = with_fake_kubectl("4", "expect_split_over_both 4")?;
    ensure!(
        !split.status.success(),
        "a split over both held with kcp-east absent"
    );

    let timeout = with_fake_kubectl(
        "2",
        "wait_until 1 'all 4 replicas on kcp-west' 'tmcd.log' expect_distribution 4 absent; echo unreachable",
    )?;
    let stderr = text(&timeout.stderr);
    ensure!(
        !timeout.status.success(),
        "wait_until returned on a failed expectation"
    );
    ensure!(
        !text(&timeout.stdout).contains("unreachable"),
        "the script went on after a failed wait"
    );
    for expected in [
        "FAILED: expected all 4 replicas on kcp-west within 1s",
        "seen kcp-west=2 kcp-east=absent",
        "look at: tmcd.log",
    ] {
        ensure!(
            stderr.contains(expected),
            "the failure lacks {expected:?}:\n{stderr}"
        );
    }
    Ok(())
}
