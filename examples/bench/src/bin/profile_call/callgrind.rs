//! One `profile_call` run under callgrind, and each side's instructions over the measured
//! window read back from callgrind's per-thread dumps (see [`super::window`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::window;

/// One measured configuration: what the calls go through, how many at once, over how many
/// connections, and how many are counted (after the warm-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Config {
    /// `mesh` or `tonic` (the harness's own target names).
    pub(crate) target: &'static str,
    pub(crate) in_flight: usize,
    pub(crate) connections: usize,
    pub(crate) calls: usize,
}

/// Instructions each side's thread ran over the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) server: u64,
    pub(crate) client: u64,
}

/// Runs `exe` (this program) as `config` says under `valgrind`, its dumps in a fresh
/// directory under `scratch`, and reads the two sides' counts.
pub(crate) fn measure(
    valgrind: &Path,
    exe: &Path,
    config: Config,
    scratch: &Path,
) -> anyhow::Result<Counts> {
    let dir = tempfile::tempdir_in(scratch)?;
    let output = Command::new(valgrind)
        .arg("--tool=callgrind")
        // One dump per thread: the server's and the caller's apart.
        .arg("--separate-threads=yes")
        // Threads take valgrind's lock in the order they ask for it rather than as the OS
        // wakes them: at 64 in flight this halves how far two runs' counts differ.
        .arg("--fair-sched=yes")
        .arg(format!("--zero-before={}", window::ZERO_BEFORE))
        .arg(format!("--dump-before={}", window::DUMP_BEFORE))
        .arg(format!(
            "--callgrind-out-file={}",
            dir.path().join("callgrind.out.%p").display()
        ))
        .arg(exe)
        .arg(config.target)
        .args(["--calls", &config.calls.to_string()])
        .args(["--in-flight", &config.in_flight.to_string()])
        .args(["--connections", &config.connections.to_string()])
        .output()
        .with_context(|| format!("running {}", valgrind.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{config:?} under callgrind failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The harness's own report ends with "N failed": every counted call must have succeeded.
    if !stdout.contains(", 0 failed") {
        bail!("{config:?}: calls failed under callgrind:\n{stdout}");
    }
    let mut server = None;
    let mut client = None;
    for file in dumps(dir.path())? {
        let text = std::fs::read_to_string(&file)?;
        let side = if text.contains(window::SERVER_MARK) {
            &mut server
        } else if text.contains(window::CLIENT_MARK) {
            &mut client
        } else {
            continue;
        };
        if side.is_some() {
            bail!(
                "{config:?}: two dumps of one side's window ({})",
                file.display()
            );
        }
        *side = Some(total(&text).with_context(|| format!("no totals in {}", file.display()))?);
    }
    match (server, client) {
        (Some(server), Some(client)) => Ok(Counts { server, client }),
        _ => bail!(
            "{config:?}: callgrind wrote no window dump for {} (were the markers inlined?)",
            if server.is_none() {
                "the server"
            } else {
                "the client"
            }
        ),
    }
}

/// Callgrind's dump files in `dir`.
fn dumps(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("callgrind.out."))
        {
            files.push(path);
        }
    }
    Ok(files)
}

/// A dump's total instructions: its `totals:` line (the only event collected is `Ir`).
fn total(dump: &str) -> Option<u64> {
    dump.lines()
        .find_map(|line| line.strip_prefix("totals:"))
        .or_else(|| dump.lines().find_map(|line| line.strip_prefix("summary:")))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_totals_line_is_read() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\npart: 1\nthread: 2\nevents: Ir\nsummary: 123\ntotals: 456\n";
        assert_eq!(total(dump), Some(456));
        assert_eq!(total("events: Ir\nsummary: 789\n"), Some(789));
        assert_eq!(total("events: Ir\n"), None);
    }
}
