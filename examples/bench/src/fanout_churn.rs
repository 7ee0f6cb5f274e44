//! Scenario `fan-out`, churn: one endpoint of a service of
//! [`BIG_SERVICE`](crate::fanout::BIG_SERVICE) endpoints changes every 100 ms for 30 s under
//! 1,000 subscribers (increments on). Checked: every subscriber converges to the final version;
//! none falls behind by more than 2 versions at any time (the newest version the control
//! service published against each subscriber's, sampled every 5 ms); the control service's CPU
//! and memory stay flat (reported every 5 s).
//!
//! The control service reads its file every 20 ms here (its default is 200 ms, which would
//! merge two edits into one version), so every edit is a version of its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fanout::{BIG_SERVICE, ControlUnderTest, Slot, Slots, control_file, wait_all};
use crate::{procs, verdict};

/// Subscribers under churn (fewer when `--subscribers` asks for fewer).
pub(crate) const SUBSCRIBERS: usize = 1_000;
/// One edit every this.
const PERIOD: Duration = Duration::from_millis(100);
/// For this long.
const DURATION: Duration = Duration::from_secs(30);
/// CPU and memory are read at this interval.
const WINDOW: Duration = Duration::from_secs(5);
/// How often how far behind the subscribers are is sampled.
const SAMPLE: Duration = Duration::from_millis(5);
/// The file poll interval of the control service under churn, in milliseconds.
const POLL_MS: u64 = 20;

/// What the churn did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Churn {
    subscribers: usize,
    edits: usize,
    first_version: u64,
    final_version: u64,
    /// Every subscriber reached the final version.
    converged: bool,
    /// Subscribers short of the final version at the end, and the oldest version held.
    lagging: usize,
    oldest: u64,
    /// Full snapshots the subscribers asked for after an increment they could not apply.
    resyncs: u64,
    /// The most versions any subscriber was behind the newest published, at any sample.
    max_behind: u64,
    /// Per window: the control service's CPU (ms per second) and RSS (MB) at its end.
    windows: Vec<Window>,
}

/// One [`WINDOW`] of the churn.
#[derive(Debug, Clone, Serialize)]
struct Window {
    end_seconds: f64,
    cpu_ms_per_second: f64,
    rss_mb: f64,
    versions_published: u64,
}

/// Runs the churn (on the subscribers' core, in a runtime of its own).
pub(crate) async fn measure(subscribers: usize) -> anyhow::Result<Churn> {
    let control = ControlUnderTest::start(BIG_SERVICE, Some(POLL_MS)).await?;
    let pid = control.child.pid();
    let slots: Slots = Arc::new((0..subscribers).map(|_| Slot::default()).collect());
    let tasks = control.subscribe_all(subscribers, &slots).await?;
    wait_all(&slots, 1).await?;
    let first_version = slots
        .iter()
        .map(|s| s.version.load(Ordering::Acquire))
        .max()
        .unwrap_or(1);
    let mut published = first_version;
    let drain = |published: &mut u64| {
        while let Ok(line) = control.child.expect_line("published ", Duration::ZERO) {
            if let Some(v) = line.split(' ').next().and_then(|v| v.parse::<u64>().ok()) {
                *published = v.max(*published);
            }
        }
    };

    let started = Instant::now();
    let mut windows = Vec::new();
    let mut window = (started, procs::process_cpu(pid), published);
    let mut max_behind = 0;
    let edits = (DURATION.as_millis() / PERIOD.as_millis()) as usize;
    for edit in 1..=edits {
        procs::write_atomic(&control.config, &control_file(BIG_SERVICE, edit as u16))?;
        let next = started + PERIOD * edit as u32;
        while Instant::now() < next {
            tokio::time::sleep(SAMPLE).await;
            drain(&mut published);
            let behind = slots
                .iter()
                .map(|s| published.saturating_sub(s.version.load(Ordering::Acquire)))
                .max()
                .unwrap_or(0);
            max_behind = max_behind.max(behind);
        }
        if window.0.elapsed() >= WINDOW {
            let cpu = procs::process_cpu(pid).saturating_sub(window.1);
            windows.push(Window {
                end_seconds: started.elapsed().as_secs_f64(),
                cpu_ms_per_second: cpu.as_secs_f64() * 1e3 / window.0.elapsed().as_secs_f64(),
                rss_mb: procs::status_bytes(pid, "VmRSS") as f64 / 1e6,
                versions_published: published - window.2,
            });
            window = (Instant::now(), procs::process_cpu(pid), published);
        }
    }
    // The last edit's version, once the file poller has taken it.
    tokio::time::sleep(Duration::from_millis(POLL_MS * 4)).await;
    drain(&mut published);
    let converged = wait_all(&slots, published).await.is_ok();
    let held: Vec<u64> = slots
        .iter()
        .map(|s| s.version.load(Ordering::Acquire))
        .collect();
    let lagging = held.iter().filter(|v| **v < published).count();
    let oldest = held.iter().copied().min().unwrap_or(0);
    for task in &tasks {
        task.abort();
    }
    drop(control);
    Ok(Churn {
        subscribers,
        edits,
        first_version,
        final_version: published,
        converged,
        lagging,
        oldest,
        resyncs: crate::fanout::RESYNCS.load(Ordering::Relaxed),
        max_behind,
        windows,
    })
}

impl Churn {
    /// Prints the figures and the targets.
    pub(crate) fn report(&self) {
        println!(
            "\nchurn: one endpoint of {BIG_SERVICE} changes every {} ms for {} s under {} subscribers ({} edits, versions {} to {}):",
            PERIOD.as_millis(),
            DURATION.as_secs(),
            self.subscribers,
            self.edits,
            self.first_version,
            self.final_version,
        );
        println!(
            "  {:>6} {:>14} {:>8} {:>9}",
            "at s", "CPU ms/s", "RSS MB", "versions"
        );
        for w in &self.windows {
            println!(
                "  {:>6.1} {:>14.1} {:>8.1} {:>9}",
                w.end_seconds, w.cpu_ms_per_second, w.rss_mb, w.versions_published
            );
        }
        println!(
            "  every subscriber at the final version {}   (target: all converge: {}; {} short of it, the oldest at {}; {} resyncs)",
            self.final_version,
            verdict(self.converged),
            self.lagging,
            self.oldest,
            self.resyncs,
        );
        println!(
            "  most versions any subscriber was behind the newest published: {}   (target <= 2: {})",
            self.max_behind,
            verdict(self.max_behind <= 2)
        );
        let (cpu_flat, rss_flat) = self.flat();
        println!(
            "  control CPU flat (every 5 s window within 1.5x of the median): {};  memory flat (last window within 10 % of the first): {}",
            verdict(cpu_flat),
            verdict(rss_flat)
        );
    }

    /// Whether CPU and memory stayed flat over the windows.
    fn flat(&self) -> (bool, bool) {
        let cpu: Vec<f64> = self.windows.iter().map(|w| w.cpu_ms_per_second).collect();
        let median = crate::median(cpu.clone());
        let cpu_flat = cpu.iter().all(|c| *c <= median * 1.5);
        let rss_flat = match (self.windows.first(), self.windows.last()) {
            (Some(first), Some(last)) => last.rss_mb <= first.rss_mb * 1.1,
            _ => false,
        };
        (cpu_flat, rss_flat)
    }
}
