//! Scenario `fan-out`: how fast one endpoint change reaches N subscribers of the control
//! service, each on its own mTLS connection and Watch stream as real meshed processes are, and
//! what each subscriber costs the control service; against plain tonic server streaming to N
//! connections, cleartext and rustls mTLS, measured in the same run.
//!
//! The server under test runs in a process of its own pinned to core 0 (see
//! [`fanout_servers`](crate::fanout_servers)); the subscribers share one runtime thread pinned
//! to core 1. Each subscriber records when a version reached it; a change's latency for one
//! subscriber is that instant minus the instant the server had the new version in force (for
//! the control service: when its file poller published the edited control file, which lags
//! the file write by up to two poll intervals by design). CPU time, RSS and write system calls
//! come from the server's `/proc` entries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use mesh_core::delta;
use mesh_core::proto::control_client::ControlClient;
use mesh_core::proto::{self, Ack, CertifyRequest, Subscribe, WatchRequest, watch_request};
use mesh_core::snapshot::Snapshot;
use mesh_core::tls::{SpiffeServerVerifier, TrustBundle, TrustStore, crypto_provider};
use mesh_core::{SpiffeId, TrustDomain};
use prost::Message as _;
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::fanout_servers::proto::fanout_client::FanoutClient;
use crate::fanout_servers::proto::{SubscribeRequest, Update};
use crate::plain_tls::PlainTls;
use crate::procs::{self, ChildProcess};
use crate::{Args, verdict};

/// Subscriber counts measured by default.
const DEFAULT_SUBSCRIBERS: [usize; 2] = [1_000, 10_000];
/// Connections opened at once while subscribers connect.
const CONNECT_CONCURRENCY: usize = 64;
/// How long every subscriber may take to get a version before the run is declared failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Let ACKs and late frames finish before CPU time and memory are read.
const SETTLE: Duration = Duration::from_millis(300);
const TOKEN: &str = "fanout-bench-token";
const DESTINATION: &str = "fanout-target";

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Target {
    /// The control service: mTLS, Watch with ACKs.
    Control,
    /// Plain tonic server streaming over cleartext HTTP/2.
    TonicStream,
    /// Plain tonic server streaming over rustls mTLS: what TLS itself costs per connection.
    TonicStreamTls,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::Control => "control (mTLS)",
            Self::TonicStream => "tonic stream (h2c)",
            Self::TonicStreamTls => "tonic stream (mTLS)",
        }
    }
}

/// One change delivered to every subscriber.
#[derive(Debug, Clone, Serialize)]
struct Change {
    version: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The last subscriber measured from the file write (control only): includes the file
    /// poller's delay.
    max_from_write_ms: Option<f64>,
    server_cpu_ms: f64,
    server_write_syscalls: u64,
    /// CPU of the subscribers' process (one core): when it nears the latency, the subscribers
    /// and not the server set the pace.
    subscriber_cpu_ms: f64,
}

/// One target at one subscriber count.
#[derive(Debug, Clone, Serialize)]
struct Measured {
    target: Target,
    subscribers: usize,
    /// Endpoints of the watched service.
    endpoints: usize,
    connect_seconds: f64,
    rss_before_bytes: u64,
    rss_after_bytes: u64,
    bytes_per_subscriber: f64,
    /// Server CPU per second while idle with every subscriber connected (subtracted from each
    /// change's CPU time).
    idle_cpu_ms_per_second: f64,
    message_bytes: u64,
    changes: Vec<Change>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_cpu_ms_per_change: f64,
    subscriber_cpu_ms_per_change: f64,
    write_syscalls_per_subscriber: f64,
}

/// Where one subscriber is: the last version it received and when.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) version: AtomicU64,
    at_unix_nanos: AtomicI64,
    message_bytes: AtomicU64,
}

impl Slot {
    fn record(&self, version: u64, at: i64, bytes: usize) {
        self.at_unix_nanos.store(at, Ordering::Relaxed);
        self.message_bytes.store(bytes as u64, Ordering::Relaxed);
        // Published last: whoever sees the version sees its instant.
        self.version.store(version, Ordering::Release);
    }
}

pub(crate) type Slots = Arc<Vec<Slot>>;

/// Runs the scenario: one endpoint (as since the first version), a service of
/// [`BIG_SERVICE`] endpoints with one changing, and churn ([`crate::fanout_churn`]).
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let limit = procs::raise_fd_limit();
    let counts = args
        .subscribers
        .map_or_else(|| DEFAULT_SUBSCRIBERS.to_vec(), |n| vec![n]);
    let changes = args.runs.max(3);
    println!(
        "\nfan-out benchmark: {counts:?} subscribers, {changes} changes each, open-file limit {limit}"
    );
    let mut measured = Vec::new();
    let shapes: [(usize, &[Target]); 2] = [
        (
            1,
            &[Target::Control, Target::TonicStreamTls, Target::TonicStream],
        ),
        (BIG_SERVICE, &[Target::Control, Target::TonicStreamTls]),
    ];
    for (endpoints, targets) in shapes {
        println!("\n  a service of {endpoints} endpoint(s), one changes:");
        for &n in &counts {
            if n as u64 + 64 > limit {
                bail!("{n} subscribers need more than the open-file limit of {limit}");
            }
            for &target in targets {
                let m = on_core_1(move || measure(target, n, changes, endpoints))?;
                println!(
                    "  {:<19} {n:>6} subscribers: last {:>7.1} ms (p50 {:>6.1}, p99 {:>6.1})  CPU {:>7.1} ms/change  {:>5.1} KB/subscriber  {:.2} writes/subscriber/change  {} B/message",
                    target.label(),
                    m.max_ms,
                    m.p50_ms,
                    m.p99_ms,
                    m.server_cpu_ms_per_change,
                    m.bytes_per_subscriber / 1024.0,
                    m.write_syscalls_per_subscriber,
                    m.message_bytes,
                );
                measured.push(m);
            }
        }
    }
    let churn_subscribers = counts
        .iter()
        .copied()
        .min()
        .map_or(crate::fanout_churn::SUBSCRIBERS, |n| {
            n.min(crate::fanout_churn::SUBSCRIBERS)
        });
    let churn = on_core_1(move || in_runtime(crate::fanout_churn::measure(churn_subscribers)))?;
    report(&measured, &churn, &args.json("fan-out"))
}

/// Endpoints of the large service.
pub(crate) const BIG_SERVICE: usize = 1_000;

/// Bytes of framing around one message: the gRPC prefix (5) and an HTTP/2 DATA frame header
/// (9).
const FRAMING_BYTES: u64 = 14;

/// Runs `f` on a thread pinned to core 1 (the subscribers' core), with a runtime of its own
/// that is dropped, with every socket, before the next measurement.
pub(crate) fn on_core_1<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::Builder::new()
        .name("fanout-subscribers".into())
        .spawn(move || {
            procs::pin_to_core(1);
            f()
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the subscriber thread panicked"))?
}

fn measure(target: Target, n: usize, changes: usize, endpoints: usize) -> anyhow::Result<Measured> {
    in_runtime(async move {
        match target {
            Target::Control => measure_control(n, changes, endpoints).await,
            Target::TonicStream => measure_stream(n, changes, endpoints, None).await,
            Target::TonicStreamTls => {
                measure_stream(n, changes, endpoints, Some(PlainTls::generate()?)).await
            }
        }
    })
}

/// Runs `f` on a current-thread runtime of its own, dropped (with every socket) afterwards.
pub(crate) fn in_runtime<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(f);
    // Every subscriber connection closes with the runtime.
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

/// The control file: one destination of `endpoints` endpoints, the middle one's port marking
/// the change (a replica restarted on a new address).
pub(crate) fn control_file(endpoints: usize, change: u16) -> String {
    let mut yaml = format!("services:\n  - name: {DESTINATION}\n    endpoints:\n");
    for j in 0..endpoints {
        let (host, port) = if j == endpoints / 2 {
            (1, 20_000 + change)
        } else {
            (2 + j / 50_000, 1_000 + (j % 50_000) as u16)
        };
        yaml += &format!(
            "      - address: \"127.0.{}.{}:{port}\"\n        identity: spiffe://mesh.local/ns/default/sa/{DESTINATION}\n",
            host / 256,
            host % 256
        );
    }
    yaml += &format!(
        "bootstrapTokens:\n  - {{token: {TOKEN}, namespace: default, serviceAccount: fanout-subscriber}}\n"
    );
    yaml
}

/// A control service in a process of its own over a control file of `endpoints` endpoints
/// (polled every `poll_ms` when given), and the TLS its subscribers connect with.
pub(crate) struct ControlUnderTest {
    pub(crate) child: ChildProcess,
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ControlUnderTest {
    pub(crate) async fn start(endpoints: usize, poll_ms: Option<u64>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("control.yaml");
        procs::write_atomic(&config, &control_file(endpoints, 0))?;
        let config_arg = config.to_string_lossy().into_owned();
        let poll_arg = poll_ms.map(|ms| ms.to_string());
        let mut args = vec!["__control", &config_arg];
        if let Some(poll) = &poll_arg {
            args.push(poll);
        }
        let child = ChildProcess::bench(&args)?;
        let ready = child.expect_line("ready ", Duration::from_secs(30))?;
        let (addr, control_id) = ready.split_once(' ').context("ready ADDR ID")?;
        let addr: SocketAddr = addr.parse()?;
        let control_id = SpiffeId::parse(control_id)?;
        let td = TrustDomain::new("mesh.local")?;
        let bundle = TrustBundle::from_pem(
            td.clone(),
            &std::fs::read(dir.path().join("trust-bundle.pem"))?,
        )?;
        let trust = TrustStore::new(bundle);
        let tls = subscriber_tls(addr, &trust, &control_id).await?;
        Ok(Self {
            child,
            addr,
            tls,
            config,
            _dir: dir,
        })
    }

    /// Opens `n` Watch subscribers that record into `slots`.
    pub(crate) async fn subscribe_all(
        &self,
        n: usize,
        slots: &Slots,
    ) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let memo = Arc::new(Memo::default());
        let addr = self.addr;
        connect_all(n, |i| {
            let (tls, slots, memo) = (self.tls.clone(), slots.clone(), memo.clone());
            async move {
                let channel = bench::tls_channel(addr, tls).await?;
                Ok(tokio::spawn(watch(i, channel, slots, memo)))
            }
        })
        .await
    }
}

async fn measure_control(n: usize, changes: usize, endpoints: usize) -> anyhow::Result<Measured> {
    let control = ControlUnderTest::start(endpoints, None).await?;
    let config = control.config.clone();
    let child = &control.child;
    let pid = child.pid();
    tokio::time::sleep(SETTLE).await;
    let rss_before = procs::status_bytes(pid, "VmRSS");
    let slots: Slots = Arc::new((0..n).map(|_| Slot::default()).collect());
    let started = Instant::now();
    let tasks = control.subscribe_all(n, &slots).await?;
    wait_all(&slots, 1).await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    let (idle_cpu, rss_after) = idle(pid).await;

    let mut version = 1;
    let mut measured = Vec::new();
    for change in 1..=changes {
        let meter = ChangeMeter::start(pid);
        let written = procs::unix_nanos();
        procs::write_atomic(&config, &control_file(endpoints, change as u16))?;
        wait_all(&slots, version + 1).await?;
        tokio::time::sleep(SETTLE).await;
        let used = meter.stop();
        let published = child.expect_line("published ", Duration::from_secs(5))?;
        let (v, at) = published.split_once(' ').context("published V T")?;
        version = v.parse()?;
        let mut c = change_figures(&slots, version, at.parse()?);
        c.max_from_write_ms = Some(max_since(&slots, written));
        used.fill(&mut c, idle_cpu);
        measured.push(c);
    }
    for task in &tasks {
        task.abort();
    }
    drop(control);
    Ok(summarize(
        Target::Control,
        n,
        endpoints,
        connect_seconds,
        rss_before,
        rss_after,
        idle_cpu,
        &slots,
        measured,
    ))
}

async fn measure_stream(
    n: usize,
    changes: usize,
    endpoints: usize,
    tls: Option<PlainTls>,
) -> anyhow::Result<Measured> {
    // The baseline pushes as many bytes as the control service did: one snapshot's worth.
    let payload = control_message_bytes();
    let dir = tempfile::tempdir()?;
    let target = match &tls {
        Some(tls) => {
            tls.material.write(dir.path())?;
            Target::TonicStreamTls
        }
        None => Target::TonicStream,
    };
    let dir_arg = dir.path().to_string_lossy().into_owned();
    let child = match tls {
        Some(_) => ChildProcess::bench(&["__stream", &dir_arg])?,
        None => ChildProcess::bench(&["__stream"])?,
    };
    let addr: SocketAddr = child
        .expect_line("ready ", Duration::from_secs(30))?
        .parse()?;
    let pid = child.pid();
    let client_tls = tls.map(|t| t.client);
    let connect = |client_tls: Option<Arc<rustls::ClientConfig>>| async move {
        match client_tls {
            Some(tls) => bench::tls_channel(addr, tls).await,
            None => Ok(Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?),
        }
    };
    let mut publisher = FanoutClient::new(connect(client_tls.clone()).await?);
    tokio::time::sleep(SETTLE).await;
    let rss_before = procs::status_bytes(pid, "VmRSS");
    let slots: Slots = Arc::new((0..n).map(|_| Slot::default()).collect());
    let started = Instant::now();
    let tasks = connect_all(n, |i| {
        let (slots, client_tls) = (slots.clone(), client_tls.clone());
        async move {
            let channel = connect(client_tls).await?;
            Ok(tokio::spawn(stream(i, channel, slots)))
        }
    })
    .await?;
    wait_all(&slots, 1).await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    let (idle_cpu, rss_after) = idle(pid).await;

    let mut measured = Vec::new();
    for change in 1..=changes {
        let version = 1 + change as u64;
        let meter = ChangeMeter::start(pid);
        let sent = publisher
            .publish(Update {
                version,
                payload: vec![0x5a; payload],
            })
            .await?
            .into_inner()
            .sent_unix_nanos;
        wait_all(&slots, version).await?;
        tokio::time::sleep(SETTLE).await;
        let used = meter.stop();
        let mut c = change_figures(&slots, version, sent);
        used.fill(&mut c, idle_cpu);
        measured.push(c);
    }
    for task in &tasks {
        task.abort();
    }
    drop(child);
    Ok(summarize(
        target,
        n,
        endpoints,
        connect_seconds,
        rss_before,
        rss_after,
        idle_cpu,
        &slots,
        measured,
    ))
}

/// The size of the control service's snapshot for [`DESTINATION`], encoded (what the
/// baseline pushes as filler): the snapshot the subscribers receive after a change.
fn control_message_bytes() -> usize {
    CONTROL_MESSAGE_BYTES.load(Ordering::Relaxed) as usize
}

/// Recorded by the control measurement, which runs first.
static CONTROL_MESSAGE_BYTES: AtomicU64 = AtomicU64::new(256);

/// Opens `n` subscribers, [`CONNECT_CONCURRENCY`] at a time.
pub(crate) async fn connect_all<F, Fut>(n: usize, open: F) -> anyhow::Result<Vec<JoinHandle<()>>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<JoinHandle<()>>>,
{
    let results: Vec<anyhow::Result<JoinHandle<()>>> = futures_util::stream::iter(0..n)
        .map(open)
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// CPU idle for a second with everyone connected (per second), and the RSS then.
async fn idle(pid: u32) -> (Duration, u64) {
    tokio::time::sleep(SETTLE).await;
    let cpu0 = procs::process_cpu(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = procs::process_cpu(pid).saturating_sub(cpu0);
    (idle, procs::status_bytes(pid, "VmRSS"))
}

/// What the server and the subscribers' process used while one change went out: read at the
/// start of the change and again once every subscriber has it.
struct ChangeMeter {
    pid: u32,
    cpu: Duration,
    writes: u64,
    own_cpu: Duration,
    started: Instant,
}

impl ChangeMeter {
    fn start(pid: u32) -> Self {
        Self {
            pid,
            cpu: procs::process_cpu(pid),
            writes: procs::write_syscalls(pid),
            own_cpu: procs::process_cpu(std::process::id()),
            started: Instant::now(),
        }
    }

    /// The usage since [`start`](Self::start).
    fn stop(self) -> ChangeUsage {
        ChangeUsage {
            window: self.started.elapsed(),
            server_cpu: procs::process_cpu(self.pid).saturating_sub(self.cpu),
            server_writes: procs::write_syscalls(self.pid) - self.writes,
            own_cpu: procs::process_cpu(std::process::id()).saturating_sub(self.own_cpu),
        }
    }
}

/// One change's usage, from a [`ChangeMeter`].
struct ChangeUsage {
    window: Duration,
    server_cpu: Duration,
    server_writes: u64,
    own_cpu: Duration,
}

impl ChangeUsage {
    /// Writes the usage into `change`, the server's CPU less what it spends idle (per second,
    /// `idle_per_second`) over the same window.
    fn fill(&self, change: &mut Change, idle_per_second: Duration) {
        let idle = idle_per_second.as_secs_f64() * self.window.as_secs_f64();
        change.server_cpu_ms = (self.server_cpu.as_secs_f64() - idle).max(0.0) * 1e3;
        change.server_write_syscalls = self.server_writes;
        change.subscriber_cpu_ms = self.own_cpu.as_secs_f64() * 1e3;
    }
}

/// Waits until every subscriber has `version` (or a later one).
pub(crate) async fn wait_all(slots: &Slots, version: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let behind = slots
            .iter()
            .filter(|s| s.version.load(Ordering::Acquire) < version)
            .count();
        if behind == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{behind} of {} subscribers still lack version {version} after {DELIVERY_TIMEOUT:?}",
                slots.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Latency percentiles of `version` over the subscribers, from `published` (Unix ns).
fn change_figures(slots: &Slots, version: u64, published: i64) -> Change {
    let mut ms: Vec<f64> = slots
        .iter()
        .map(|s| (s.at_unix_nanos.load(Ordering::Relaxed) - published) as f64 / 1e6)
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    Change {
        version,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        max_from_write_ms: None,
        server_cpu_ms: 0.0,
        server_write_syscalls: 0,
        subscriber_cpu_ms: 0.0,
    }
}

fn max_since(slots: &Slots, since: i64) -> f64 {
    slots
        .iter()
        .map(|s| s.at_unix_nanos.load(Ordering::Relaxed) - since)
        .max()
        .unwrap_or(0) as f64
        / 1e6
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    target: Target,
    n: usize,
    endpoints: usize,
    connect_seconds: f64,
    rss_before: u64,
    rss_after: u64,
    idle_cpu: Duration,
    slots: &Slots,
    changes: Vec<Change>,
) -> Measured {
    let med = |f: fn(&Change) -> f64| crate::median(changes.iter().map(f).collect());
    let message_bytes = slots
        .first()
        .map_or(0, |s| s.message_bytes.load(Ordering::Relaxed));
    Measured {
        target,
        subscribers: n,
        endpoints,
        connect_seconds,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_subscriber: rss_after.saturating_sub(rss_before) as f64 / n as f64,
        idle_cpu_ms_per_second: idle_cpu.as_secs_f64() * 1e3,
        message_bytes,
        p50_ms: med(|c| c.p50_ms),
        p99_ms: med(|c| c.p99_ms),
        max_ms: med(|c| c.max_ms),
        server_cpu_ms_per_change: med(|c| c.server_cpu_ms),
        subscriber_cpu_ms_per_change: med(|c| c.subscriber_cpu_ms),
        write_syscalls_per_subscriber: med(|c| c.server_write_syscalls as f64) / n as f64,
        changes,
    }
}

/// What the subscribers of one process share: the snapshots they hold and the increments they
/// applied, by version. Applying an increment to a snapshot and validating the result is a
/// pure function of the two; subscribers that hold the same snapshot (the same `Arc`) and get
/// an equal increment share one result rather than each making a copy of a 1,000-endpoint
/// snapshot, which 10,000 subscribers in one process on one core could not afford (each real
/// workload does the work once, in its own process).
#[derive(Default)]
pub(crate) struct Memo {
    full: Mutex<HashMap<u64, Held>>,
    applied: Mutex<HashMap<(u64, u64), Applied>>,
}

/// An increment applied: the snapshot it was applied to, the increment, the result.
type Applied = (Arc<proto::Snapshot>, proto::Snapshot, Held);

/// A snapshot a subscriber holds, and what validating it said (empty: valid).
type Held = (Arc<proto::Snapshot>, String);

/// How many versions [`Memo`] keeps.
const MEMO_VERSIONS: u64 = 8;

impl Memo {
    /// The full snapshot `wire`, validated, shared with the subscribers that got an equal one.
    fn full(&self, wire: proto::Snapshot) -> Held {
        let mut full = self.full.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = full.get(&wire.version).filter(|(s, _)| **s == wire) {
            return held.clone();
        }
        let version = wire.version;
        let held = (Arc::new(wire.clone()), validate(wire));
        full.retain(|v, _| v + MEMO_VERSIONS > version);
        full.insert(version, held.clone());
        held
    }

    /// `base` brought forward by `increment`, validated.
    fn apply(
        &self,
        base: &Arc<proto::Snapshot>,
        increment: proto::Snapshot,
    ) -> Result<Held, delta::DeltaError> {
        let key = (increment.base_version, increment.version);
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, held)) = applied
            .get(&key)
            .filter(|(b, i, _)| Arc::ptr_eq(b, base) && *i == increment)
        {
            return Ok(held.clone());
        }
        let mut next = proto::Snapshot::clone(base);
        delta::apply(&mut next, increment.clone())?;
        // One `Arc` per version, whatever base a subscriber came from (applying is exact, so
        // results for one version are equal): chains of subscribers that skipped different
        // versions merge again, and the next increment is applied once for all of them.
        let held = {
            let mut full = self.full.lock().unwrap_or_else(PoisonError::into_inner);
            match full.get(&next.version).filter(|(s, _)| **s == next) {
                Some(held) => held.clone(),
                None => {
                    let version = next.version;
                    let held = (Arc::new(next.clone()), validate(next));
                    full.retain(|v, _| v + MEMO_VERSIONS > version);
                    full.insert(version, held.clone());
                    held
                }
            }
        };
        applied.retain(|(_, v), _| v + MEMO_VERSIONS > key.1);
        applied.insert(key, (base.clone(), increment, held.clone()));
        Ok(held)
    }
}

/// What the mesh's validation says of a full snapshot (empty: valid).
fn validate(wire: proto::Snapshot) -> String {
    match Snapshot::try_from(wire) {
        Ok(_) => String::new(),
        Err(errors) => errors.to_string(),
    }
}

/// Resyncs the subscribers asked for.
pub(crate) static RESYNCS: AtomicU64 = AtomicU64::new(0);

/// The size of one endpoint of the watched service as it is encoded in a snapshot (its
/// field key and length included), recorded by the first subscriber.
static ENDPOINT_BYTES: AtomicU64 = AtomicU64::new(0);

/// One Watch subscriber: subscribes to [`DESTINATION`] and takes increments, records each
/// message, brings its snapshot forward and checks it as the mesh does, and ACKs it (or NACKs
/// with the reason, or asks for a resync).
async fn watch(i: usize, channel: Channel, slots: Slots, memo: Arc<Memo>) {
    let (requests, outbound) = mpsc::channel(4);
    let subscribe = WatchRequest {
        kind: Some(watch_request::Kind::Subscribe(Subscribe {
            node: format!("fanout-{i}"),
            own_service: None,
            destinations: vec![mesh_core::proto::ServiceRef {
                namespace: "default".into(),
                name: DESTINATION.into(),
                port: 0,
            }],
            grpc_services: Vec::new(),
            incremental: true,
        })),
    };
    if requests.send(subscribe).await.is_err() {
        return;
    }
    let Ok(response) = ControlClient::new(channel)
        .watch(ReceiverStream::new(outbound))
        .await
    else {
        return;
    };
    let mut snapshots = response.into_inner();
    let mut held: Option<Arc<proto::Snapshot>> = None;
    while let Ok(Some(wire)) = snapshots.message().await {
        let at = procs::unix_nanos();
        let version = wire.version;
        let bytes = wire.encoded_len();
        let (error, resync) = if delta::is_increment(&wire) {
            match held.as_ref().map(|base| memo.apply(base, wire)) {
                Some(Ok((next, error))) => {
                    held = Some(next);
                    (error, false)
                }
                Some(Err(e)) => {
                    RESYNCS.fetch_add(1, Ordering::Relaxed);
                    held = None;
                    (e.to_string(), true)
                }
                // A resync is awaited.
                None => continue,
            }
        } else {
            if i == 0
                && let Some(endpoint) = wire.destinations.first().and_then(|d| d.endpoints.first())
            {
                let len = endpoint.encoded_len();
                let framed = 1 + prost::length_delimiter_len(len) + len;
                ENDPOINT_BYTES.store(framed as u64, Ordering::Relaxed);
            }
            let (next, error) = memo.full(wire);
            held = Some(next);
            (error, false)
        };
        if !resync {
            slots[i].record(version, at, bytes);
        }
        if i == 0 && version > 1 {
            CONTROL_MESSAGE_BYTES.store(bytes as u64, Ordering::Relaxed);
        }
        let ack = WatchRequest {
            kind: Some(watch_request::Kind::Ack(Ack {
                version,
                error,
                details: Vec::new(),
                resync,
            })),
        };
        if requests.send(ack).await.is_err() {
            return;
        }
    }
}

/// One baseline subscriber: records each update.
async fn stream(i: usize, channel: Channel, slots: Slots) {
    let Ok(response) = FanoutClient::new(channel)
        .subscribe(SubscribeRequest {
            node: format!("stream-{i}"),
        })
        .await
    else {
        return;
    };
    let mut updates = response.into_inner();
    while let Ok(Some(update)) = updates.message().await {
        slots[i].record(update.version, procs::unix_nanos(), update.encoded_len());
    }
}

/// Certifies once (the subscribers share the certificate) and returns the client TLS config
/// every subscriber connects with: the control service's identity checked, our certificate
/// presented.
async fn subscriber_tls(
    addr: SocketAddr,
    trust: &TrustStore,
    control_id: &SpiffeId,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let verifier = Arc::new(SpiffeServerVerifier::new(trust.clone(), control_id.clone()));
    let builder = || {
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(verifier.clone())
            })
    };
    let mut anonymous = builder()?.with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr_der = CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .der()
        .to_vec();
    let reply = ControlClient::new(bench::tls_channel(addr, Arc::new(anonymous)).await?)
        .certify(CertifyRequest {
            csr_der,
            token: TOKEN.into(),
        })
        .await
        .context("Certify")?
        .into_inner();
    let chain: Vec<CertificateDer<'static>> = reply
        .chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut tls = builder()?.with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(tls))
}

fn report(
    measured: &[Measured],
    churn: &crate::fanout_churn::Churn,
    json: &Path,
) -> anyhow::Result<()> {
    println!(
        "\nmedians over the changes (latency from the new version in force to each subscriber):"
    );
    println!(
        "  {:<19} {:>9} {:>11} {:>8} {:>8} {:>8} {:>13} {:>11} {:>8} {:>11} {:>14}",
        "target",
        "endpoints",
        "subscribers",
        "p50 ms",
        "p99 ms",
        "last ms",
        "CPU ms/change",
        "CPU µs/sub",
        "KB/sub",
        "writes/sub",
        "client CPU ms"
    );
    for m in measured {
        println!(
            "  {:<19} {:>9} {:>11} {:>8.1} {:>8.1} {:>8.1} {:>13.1} {:>11.1} {:>8.1} {:>11.2} {:>14.1}",
            m.target.label(),
            m.endpoints,
            m.subscribers,
            m.p50_ms,
            m.p99_ms,
            m.max_ms,
            m.server_cpu_ms_per_change,
            m.server_cpu_ms_per_change * 1e3 / m.subscribers as f64,
            m.bytes_per_subscriber / 1024.0,
            m.write_syscalls_per_subscriber,
            m.subscriber_cpu_ms_per_change,
        );
    }
    println!(
        "  (CPU and writes: the server process per change, idle CPU subtracted; client CPU: the subscribers' process, one core, over the same window)"
    );
    println!(
        "  (control: the file write reaches the last subscriber after {} ms at most, the poller's 200-400 ms included; messages {} B control, {} B baseline)",
        measured
            .iter()
            .filter_map(|m| m
                .changes
                .iter()
                .filter_map(|c| c.max_from_write_ms)
                .reduce(f64::max))
            .reduce(f64::max)
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
        measured
            .iter()
            .find(|m| m.target == Target::Control && m.endpoints == 1)
            .map_or(0, |m| m.message_bytes),
        measured
            .iter()
            .find(|m| m.target == Target::TonicStream)
            .map_or(0, |m| m.message_bytes),
    );
    println!("\nratios (same run) and targets:");
    let mut ratios = Vec::new();
    for control in measured
        .iter()
        .filter(|m| m.target == Target::Control && m.endpoints > 1)
    {
        let n = control.subscribers;
        let Some(tls) = measured.iter().find(|m| {
            m.target == Target::TonicStreamTls
                && m.subscribers == n
                && m.endpoints == control.endpoints
        }) else {
            continue;
        };
        let endpoint = ENDPOINT_BYTES.load(Ordering::Relaxed);
        let sent = control.message_bytes + FRAMING_BYTES;
        let bytes_ok = sent <= 2 * endpoint + FRAMING_BYTES;
        let last = control.max_ms / tls.max_ms;
        let cpu = control.server_cpu_ms_per_change / tls.server_cpu_ms_per_change;
        println!(
            "  {n} subscribers of a service of {} endpoints, one changes:",
            control.endpoints
        );
        println!(
            "    bytes per subscriber per change {sent} B (an increment of {} B + {FRAMING_BYTES} B framing)   (target <= 2 x one endpoint ({endpoint} B) + framing = {} B, whatever the service's size: {})",
            control.message_bytes,
            2 * endpoint + FRAMING_BYTES,
            verdict(bytes_ok),
        );
        println!(
            "    last subscriber {:.1} ms, {last:.2}x tonic mTLS ({:.1} ms) sending the same bytes   (target <= 1.2x: {})",
            control.max_ms,
            tls.max_ms,
            verdict(last <= 1.2),
        );
        println!(
            "    CPU per subscriber {:.1} µs, {cpu:.2}x tonic mTLS ({:.1} µs)   (target <= 1.2x: {})",
            control.server_cpu_ms_per_change * 1e3 / n as f64,
            tls.server_cpu_ms_per_change * 1e3 / n as f64,
            verdict(cpu <= 1.2),
        );
        ratios.push(serde_json::json!({
            "subscribers": n,
            "endpoints": control.endpoints,
            "bytes_per_subscriber_per_change": sent,
            "endpoint_bytes": endpoint,
            "bytes_target_met": bytes_ok,
            "last_control_over_tonic_mtls": last,
            "cpu_control_over_tonic_mtls": cpu,
            "last_target_met": last <= 1.2,
            "cpu_target_met": cpu <= 1.2,
        }));
    }
    for control in measured
        .iter()
        .filter(|m| m.target == Target::Control && m.endpoints == 1)
    {
        let n = control.subscribers;
        let baseline = |target: Target| {
            measured
                .iter()
                .find(|m| m.target == target && m.subscribers == n && m.endpoints == 1)
        };
        let (Some(tls), Some(h2c)) = (
            baseline(Target::TonicStreamTls),
            baseline(Target::TonicStream),
        ) else {
            continue;
        };
        let over = |base: &Measured| {
            (
                control.max_ms / base.max_ms,
                control.bytes_per_subscriber / base.bytes_per_subscriber,
                control.server_cpu_ms_per_change / base.server_cpu_ms_per_change,
            )
        };
        let (last_tls, memory_tls, cpu_tls) = over(tls);
        let (last_h2c, memory_h2c, cpu_h2c) = over(h2c);
        let kb = control.bytes_per_subscriber / 1024.0;
        let scale = if n == 10_000 {
            String::new()
        } else {
            format!(", measured at {n} rather than 10,000")
        };
        println!(
            "  {n} subscribers, control / tonic mTLS: last {last_tls:.2}, memory per subscriber {memory_tls:.2}, CPU per change {cpu_tls:.2};  control / tonic h2c: {last_h2c:.2}, {memory_h2c:.2}, {cpu_h2c:.2}"
        );
        println!(
            "    last subscriber {:.1} ms   (target <= 200 ms{scale}: {}; tonic mTLS {:.1} ms, h2c {:.1} ms)",
            control.max_ms,
            verdict(control.max_ms <= 200.0),
            tls.max_ms,
            h2c.max_ms,
        );
        println!(
            "    control memory {kb:.1} KB per subscriber   (target <= 30 KB{scale}: {}; tonic mTLS {:.1} KB, h2c {:.1} KB)",
            verdict(kb <= 30.0),
            tls.bytes_per_subscriber / 1024.0,
            h2c.bytes_per_subscriber / 1024.0,
        );
        println!(
            "    last subscriber {last_tls:.2}x tonic mTLS   (target <= 1.2x{scale}: {});  memory per subscriber {memory_tls:.2}x   (target <= 1.05x: {})",
            verdict(last_tls <= 1.2),
            verdict(memory_tls <= 1.05),
        );
        ratios.push(serde_json::json!({
            "subscribers": n,
            "last_control_over_tonic_mtls": last_tls,
            "memory_control_over_tonic_mtls": memory_tls,
            "cpu_control_over_tonic_mtls": cpu_tls,
            "last_control_over_tonic": last_h2c,
            "memory_control_over_tonic": memory_h2c,
            "cpu_control_over_tonic": cpu_h2c,
            "last_ms_target_met": control.max_ms <= 200.0,
            "memory_target_met": kb <= 30.0,
            "last_ratio_target_met": last_tls <= 1.2,
            "memory_ratio_target_met": memory_tls <= 1.05,
        }));
    }
    println!(
        "  write system calls (/proc/PID/io syscw) per subscriber per change are in the last column: about one write per HTTP/2 frame, so syscalls grow with subscribers"
    );
    churn.report();
    crate::write_json(
        json,
        &serde_json::json!({
            "scenario": "fan-out",
            "measured": measured,
            "ratios": ratios,
            "churn": churn,
        }),
    )
}
