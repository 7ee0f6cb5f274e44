//! Child processes of the benchmark and what `/proc` tells about them: the bench binary re-runs
//! itself with a hidden subcommand (`bench __control ...`) so that a measured server has a
//! process, and so a CPU time and an RSS, of its own.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};

/// A child process of the benchmark, killed when dropped. Its stdout is read line by line on a
/// thread of its own: the child reports readiness and events there.
pub(crate) struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProcess {
    /// Runs this very binary with `args` (a hidden subcommand and its arguments).
    pub(crate) fn bench(args: &[&str]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("the bench binary's path")?;
        Self::spawn(Command::new(exe).args(args))
    }

    /// Spawns `command` with stdout piped.
    pub(crate) fn spawn(command: &mut Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {command:?}"))?;
        let stdout: ChildStdout = child.stdout.take().context("stdout is piped")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the child printed that starts with `prefix` (others are skipped), without
    /// the prefix.
    pub(crate) fn expect_line(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("child {} printed no {prefix:?} in {timeout:?}", self.pid())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("child {} exited before printing {prefix:?}", self.pid())
                }
            }
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Our own child, by its handle: nothing else is signalled.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of process `pid` so far: its threads' time on a CPU, in nanoseconds
/// (`/proc/PID/task/*/schedstat`; `/proc/PID/stat` counts 10 ms ticks, too coarse for one
/// change's few milliseconds). A thread that exits between two readings takes its time with
/// it: differences are taken saturating, over windows in which the servers keep their threads.
pub(crate) fn process_cpu(pid: u32) -> Duration {
    threads_cpu(pid, None)
}

/// CPU time so far of process `pid`'s threads named `name` (`/proc/PID/task/*/comm`), or of
/// all of them; see [`process_cpu`].
pub(crate) fn threads_cpu(pid: u32, name: Option<&str>) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos = tasks
        .flatten()
        .filter(|task| {
            name.is_none_or(|name| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == name)
            })
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
pub(crate) fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Write system calls (`write`, `writev`, `sendmsg`...) made by process `pid` so far
/// (`syscw` of `/proc/PID/io`).
pub(crate) fn write_syscalls(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("syscw:")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Raises this process's open-file soft limit to its hard limit: 10,000 connections need
/// 10,000 descriptors. Children inherit the raised limit.
pub(crate) fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Pins this thread, and the threads it starts later, to core `index` where the OS allows.
pub(crate) fn pin_to_core(index: usize) {
    if let Some(core) = core_affinity::get_core_ids().and_then(|c| c.get(index).copied()) {
        core_affinity::set_for_current(core);
    }
}

/// Nanoseconds since the Unix epoch: the one clock two processes share.
pub(crate) fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Writes `contents` to `path` atomically: a reader sees the old file or the new one.
pub(crate) fn write_atomic(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Whether `program` is an executable on `PATH`.
pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
