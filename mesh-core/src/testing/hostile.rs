//! What every abuse test measures and reports: the process's resident memory (the servers
//! under test run in the test's process) and one line per abuse, the same in every crate, so
//! that one run prints the table README reports:
//!
//! ```text
//! cargo test -p mesh-tests --test server_abuse -p mesh-control --test abuse \
//!     --test connection_limits --test config_limits -- --nocapture --test-threads 1 \
//!     | grep '^hostile: '
//! ```
//!
//! Each line is a Markdown table row after its `hostile: ` prefix: the abuse, what the
//! legitimate client beside it did, how many of its calls failed, and the resident memory in
//! MiB before the abuse, at the highest sample during it, and after it.

/// This process's resident memory in bytes (`VmRSS` of `/proc/self/status`; 0 where there is
/// no such file).
pub fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Prints the report line of one abuse (see the module docs). Memory figures are in bytes.
pub fn report(abuse: &str, legitimate: &str, failures: usize, before: u64, peak: u64, after: u64) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    // On a line of its own: the test harness may have printed the test's name without one.
    println!(
        "\nhostile: | {abuse} | {legitimate} | {failures} | {:.1} | {:.1} | {:.1} |",
        mib(before),
        mib(peak.max(before)),
        mib(after)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_has_memory() {
        // Linux: the figure is read; elsewhere there is none to read.
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_bytes() > 1024 * 1024);
        }
    }
}
