//! Supervised child processes: own process group, log file, killed with the test process.
//!
//! Children are spawned from one long-lived thread and get `PR_SET_PDEATHSIG = SIGKILL`: the kernel
//! kills them when that thread dies, i.e. when the test process exits or is killed, so no orphans are left
//! even without `Drop`. Each child leads its own process group, which is what every signal goes to.
//!
//! Faults for tests: [`Supervised::pause`] / [`Supervised::resume`] (SIGSTOP / SIGCONT),
//! [`Supervised::kill`] (`kill -9`), [`Supervised::stop_async`] (SIGTERM, then SIGKILL), and
//! [`Supervised::relaunch`] to start the same command again (same arguments, so same ports and data).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// What to run and where its output goes.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Short name used in messages, e.g. `west/kube-apiserver`.
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Log file receiving stdout and stderr (appended to, so restarts keep history).
    pub log: PathBuf,
}

/// A child process in its own process group (running, paused, or exited and not yet relaunched).
#[derive(Debug)]
pub struct Supervised {
    spec: ProcessSpec,
    child: Child,
    exited: Option<ExitStatus>,
    paused: bool,
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Sends a command to the spawner thread, which never exits while the process lives.
fn spawn_on_spawner_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| eprintln!("testbed: cannot start the spawner thread: {e}"));
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

impl Supervised {
    /// Starts `spec` with its output appended to `spec.log`.
    pub fn spawn(spec: ProcessSpec) -> Result<Self> {
        let child = start_child(&spec)?;
        Ok(Self {
            spec,
            child,
            exited: None,
            paused: false,
        })
    }

    /// The spec this process was started from.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Fails with the log tail when the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.spec.name,
                self.spec.log.display(),
                tail(&self.spec.log, 30)
            )),
        }
    }

    /// Whether the process is paused by [`Supervised::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Sends `signal` to the process group (no-op once exited).
    fn signal(&mut self, signal: libc::c_int) {
        if self.exit_status().is_some() {
            return;
        }
        // SAFETY: plain syscall; the group id is our child's pid, which we have not reaped yet.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), signal);
        }
    }

    /// Sends SIGTERM, and SIGCONT after it when paused so the process can act on it.
    fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
        if self.paused {
            self.signal(libc::SIGCONT);
            self.paused = false;
        }
    }

    /// Freezes the whole process group with SIGSTOP: it keeps its sockets, so clients connect and then
    /// hang until [`Supervised::resume`]. Returns once every thread of the process is stopped: `kill`
    /// only queues the signal, and on a loaded machine a thread already running can still answer a
    /// request sent right after it. Fails if the process has exited or does not stop within 5 s.
    pub fn pause(&mut self) -> Result<()> {
        self.ensure_running()?;
        self.signal(libc::SIGSTOP);
        self.paused = true;
        wait_all_threads_stopped(self.pid(), Duration::from_secs(5))
            .with_context(|| format!("pausing {}", self.spec.name))
    }

    /// Lets a paused process group run again with SIGCONT (no-op if not paused).
    pub fn resume(&mut self) -> Result<()> {
        self.ensure_running()?;
        if self.paused {
            self.signal(libc::SIGCONT);
            self.paused = false;
        }
        Ok(())
    }

    /// `kill -9` of the whole process group, then reaps it: a crash, no chance to clean up.
    /// No-op if it has already exited.
    pub fn kill(&mut self) {
        if self.exit_status().is_none() {
            self.signal(libc::SIGKILL);
            self.exited = self.child.wait().ok();
        }
        self.paused = false;
    }

    /// Starts the same command again (same arguments, so the same ports and data dirs); the log is appended
    /// to. Fails if the process is still running: stop or kill it first.
    pub fn relaunch(&mut self) -> Result<()> {
        if let Some(pid) = self.exit_status().is_none().then(|| self.pid()) {
            anyhow::bail!(
                "{} (pid {pid}) is still running; stop or kill it before relaunching",
                self.spec.name
            );
        }
        self.child = start_child(&self.spec)?;
        self.exited = None;
        self.paused = false;
        Ok(())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; reaps the child. Blocks the thread.
    pub fn stop(&mut self, grace: Duration) {
        stop_all(&mut [self], grace);
    }

    /// Like [`Supervised::stop`] but waits without blocking the async runtime.
    pub async fn stop_async(&mut self, grace: Duration) {
        self.terminate();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.exit_status().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop(Duration::ZERO);
    }
}

/// Spawns `spec` on the spawner thread: own process group, PDEATHSIG, output appended to the log.
/// Waits until every thread of `pid` is in the stopped state (`T` in `/proc/<pid>/task/*/stat`).
fn wait_all_threads_stopped(pid: u32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let running =
            running_threads(pid).with_context(|| format!("reading the threads of pid {pid}"))?;
        if running == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{running} thread(s) of pid {pid} still not stopped after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The number of threads of `pid` not (yet) stopped by a signal.
fn running_threads(pid: u32) -> io::Result<usize> {
    let mut running = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        match stat_state(&task?.path().join("stat")) {
            Ok(Some('T')) => {}
            Ok(_) => running += 1,
            // The thread exited between listing and reading.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(running)
}

/// The state letter of process `pid` (`S` sleeping, `T` stopped, `Z` zombie, ...), `None` once it is gone.
pub fn process_state(pid: u32) -> Option<char> {
    stat_state(Path::new(&format!("/proc/{pid}/stat")))
        .ok()
        .flatten()
}

/// The state letter of a `/proc` `stat` file: it follows the command name, which is in parentheses
/// and may hold spaces.
fn stat_state(stat: &Path) -> io::Result<Option<char>> {
    let stat = std::fs::read_to_string(stat)?;
    Ok(stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next()))
}

fn start_child(spec: &ProcessSpec) -> Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening log file {}", spec.log.display()))?;
    let log_err = log.try_clone().context("duplicating the log file handle")?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe libc functions.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    spawn_on_spawner_thread(cmd)
        .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Stops several processes at once: SIGTERM to all, wait up to `grace`, SIGKILL the rest, reap all.
pub fn stop_all(procs: &mut [&mut Supervised], grace: Duration) {
    for p in procs.iter_mut() {
        p.terminate();
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && procs.iter_mut().any(|p| p.exit_status().is_none()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in procs.iter_mut() {
        p.kill();
        // The group may still hold grandchildren; make sure they go too.
        // SAFETY: plain syscall on a group we created; ESRCH when empty is fine.
        unsafe {
            libc::kill(-(p.child.id() as libc::pid_t), libc::SIGKILL);
        }
    }
}

/// The last `lines` lines of a log file (reads at most the last 64 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The last `lines` lines of every `*.log` file in `dir`, each under a header naming the file.
pub fn tails_of_dir(dir: &Path, lines: usize) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    logs.iter()
        .map(|p| {
            format!(
                "----- last lines of {} -----\n{}",
                p.display(),
                tail(p, lines)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, script: &str) -> ProcessSpec {
        ProcessSpec {
            name: "sh".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: dir.to_path_buf(),
            log: dir.join("sh.log"),
        }
    }

    /// Running (a zombie awaiting its reaper counts as dead).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .is_some_and(|zombie| !zombie)
    }

    #[test]
    fn output_goes_to_the_log_and_exit_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Supervised::spawn(spec(dir.path(), "echo hello; echo oops >&2; exit 3"))
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.exit_status().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let err = p.ensure_running().expect_err("exited");
        let msg = format!("{err:#}");
        assert!(msg.contains("hello") && msg.contains("oops"), "{msg}");
        assert_eq!(p.exit_status().and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn stop_kills_the_whole_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The shell ignores TERM and starts a grandchild; both must be gone after stop.
        let mut p = Supervised::spawn(spec(
            dir.path(),
            "trap '' TERM; sleep 300 & echo $! > child.pid; wait",
        ))
        .expect("spawn");
        let pid_file = dir.path().join("child.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        let grandchild: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        assert!(alive(grandchild));
        p.stop(Duration::from_millis(200));
        assert!(p.exit_status().is_some());
        // The grandchild is reaped by init; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(grandchild) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(grandchild), "grandchild {grandchild} survived");
    }

    fn wait_state(pid: u32, want: char) -> Option<char> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_state(pid) != Some(want) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        process_state(pid)
    }

    #[test]
    fn pause_resume_kill_and_relaunch() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Supervised::spawn(spec(dir.path(), "exec sleep 300")).expect("spawn");
        let first = p.pid();
        p.pause().expect("pause");
        assert!(p.is_paused());
        assert_eq!(process_state(first), Some('T'), "paused means stopped");
        p.resume().expect("resume");
        assert_eq!(wait_state(first, 'S'), Some('S'), "resumed means running");
        let err = p.relaunch().expect_err("relaunch while running");
        assert!(format!("{err:#}").contains("still running"), "{err:#}");

        p.pause().expect("pause again");
        p.kill();
        assert_eq!(
            p.exit_status().and_then(|s| s.signal()),
            Some(libc::SIGKILL)
        );
        assert!(p.ensure_running().is_err());
        assert!(p.pause().is_err(), "an exited process cannot be paused");

        p.relaunch().expect("relaunch");
        assert_ne!(p.pid(), first);
        p.ensure_running().expect("running again");
        assert!(!p.is_paused());
    }

    #[test]
    fn stop_ends_a_paused_process_gracefully() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Supervised::spawn(spec(dir.path(), "exec sleep 300")).expect("spawn");
        p.pause().expect("pause");
        let started = Instant::now();
        p.stop(Duration::from_secs(5));
        assert_eq!(
            p.exit_status().and_then(|s| s.signal()),
            Some(libc::SIGTERM)
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "SIGTERM must reach a paused process"
        );
    }

    #[test]
    fn tails_of_dir_covers_every_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("etcd.log"), "e1\ne2\n").expect("write");
        std::fs::write(dir.path().join("kwok.log"), "k1\n").expect("write");
        std::fs::write(dir.path().join("data.db"), "x").expect("write");
        let text = tails_of_dir(dir.path(), 1);
        // Whole lines: the temp dir's random name may contain "e1" too.
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            text.contains("etcd.log") && lines.contains(&"e2") && !lines.contains(&"e1"),
            "{text}"
        );
        assert!(lines.contains(&"k1") && !text.contains("data.db"), "{text}");
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, "a\nb\nc\nd\n").expect("write");
        assert_eq!(tail(&path, 2), "c\nd");
        assert!(tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }
}
