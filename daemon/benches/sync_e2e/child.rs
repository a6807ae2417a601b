//! The real `tmcd` binary as a child process, stopped on drop.

use super::*;

/// A running tmcd.
pub struct Tmcd {
    child: Child,
    pub log: PathBuf,
}

impl Tmcd {
    /// Starts `binary --config <config>` with its output in `log`.
    pub fn start(binary: &Path, config: &Path, log: &Path) -> Result<Self> {
        if !binary.is_file() {
            bail!(
                "{} is missing (fix: cargo build --release -p tmc-daemon --bin tmcd, or set TMC_BENCH_TMCD)",
                binary.display()
            );
        }
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log = log.to_path_buf();
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("TMC_BENCH_TMCD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, log })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the child has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "tmcd exited with {status}; last log lines:\n{}",
                self.tail(30)
            );
        }
        Ok(())
    }

    /// The last `n` lines of the child's log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Resident and peak resident memory in KiB, from `/proc/<pid>/status`.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{path} has no {name} line"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> Result<Duration> {
        proc_cpu(self.pid())
    }
}

/// User + system CPU time of process `pid` so far, from `/proc/<pid>/stat`
/// (clock ticks of 10 ms, the Linux default).
pub fn proc_cpu(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the ")" closing the command name: state is field 3, utime 14, stime 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: unexpected format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: no field {}", i + 3))
    };
    Ok(Duration::from_millis((tick(11)? + tick(12)?) * 10))
}

impl Drop for Tmcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
