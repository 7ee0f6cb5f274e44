//! Scenario `request-path`: `helloworld.Greeter/SayHello` through the mesh against plain
//! tonic (h2c, and rustls mTLS), measured in the same run so that the ratios hold on a noisy
//! machine even when the absolute numbers move.
//!
//! The servers run on one thread (a current-thread runtime pinned to core 0 where the OS
//! allows) and the load generator on another (pinned to core 1); the control service runs on
//! the main thread. Each target is measured at 1 call in flight (latency) and at 64 in flight
//! (throughput; plain tonic over 4 connections, the mesh with `connections_per_endpoint` =
//! 4), for `--runs` rounds of `--seconds` each after a warm-up, the targets taking turns in
//! half-second slices so that the machine's noise falls on all of them alike; the table shows
//! medians over the rounds. Each target is judged over the runs (9 by default) by
//! [`judge`](crate::judge): met only when the median of the runs' own ratios meets it and at
//! least 7 of 9 runs do; every run's ratio and the spread are printed with the verdict. Server
//! CPU per request comes from the server thread's own CPU time (`/proc/thread-self/schedstat`).
//!
//! Latency at one call in flight depends on what an idle core does (see
//! [`machine`](crate::machine)): the added p50 is judged against 10 µs when idle cores halt at
//! once (this project's VMs as provisioned) and 5 µs when they poll; with `--poll` (root, the
//! haltpoll driver) each run measures 1 in flight a second time with the cores polling.
//!
//! When `haproxy` is installed, plain tonic h2c through two haproxy hops (a sidecar pair, see
//! [`haproxy`](crate::haproxy)) is measured too; the haproxy processes' CPU is reported beside
//! the server's. Afterwards [`rss`](crate::rss) measures the memory the mesh adds to a server
//! process, and a latency-distribution chart is written next to the JSON.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::haproxy::{self, SidecarPair};
use crate::judge::Judged;
use crate::machine::{self, HaltPolling, IdleSettings};
use crate::plain_tls::{self, PlainTls};
use crate::{Args, chart, median, procs, rss};
use examples::PlainGreeter;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::TrustDomain;
use mesh_tonic::{MeshChannel, MeshTonicExt};
use mesh_tower::{Mesh, MeshSettings};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

const IN_FLIGHT_THROUGHPUT: usize = 64;
const CONNECTIONS_THROUGHPUT: usize = 4;
const WARMUP: Duration = Duration::from_secs(1);

/// The request path's targets, against plain tonic over the same mTLS: throughput at least
/// this share of it,
const THROUGHPUT_RATIO_TARGET: f64 = 0.95;
/// server CPU per request at most this multiple,
const CPU_RATIO_TARGET: f64 = 1.05;
/// and at most this much added to the median latency at one call in flight with idle cores
/// polling,
const ADDED_P50_TARGET_US: f64 = 5.0;
/// or this much when they halt at once (every wake-up a VM exit; the RSS target is in
/// [`rss`]).
const ADDED_P50_HALTING_TARGET_US: f64 = 10.0;
/// Runs when `--runs` is not given: enough for "7 of 9" to mean something.
const DEFAULT_RUNS: usize = 9;

/// How long each target runs before the next takes its turn (see [`load`]).
const SLICE: Duration = Duration::from_millis(500);
/// The latency percentiles kept for the chart.
const CURVE: [f64; 9] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999];

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Target {
    /// Plain tonic over cleartext HTTP/2.
    TonicH2c,
    /// Plain tonic over rustls with client certificates.
    TonicMtls,
    /// The mesh: mTLS with SPIFFE identities, discovery, routing, retries, balancing.
    Mesh,
    /// Plain tonic h2c through two haproxy hops with mTLS between them (a sidecar pair).
    Haproxy,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::TonicH2c => "tonic h2c",
            Self::TonicMtls => "tonic mTLS",
            Self::Mesh => "mesh",
            Self::Haproxy => "2x haproxy",
        }
    }
}

/// One measured round.
#[derive(Debug, Clone, Serialize)]
struct Round {
    target: Target,
    in_flight: usize,
    /// Measured with idle cores polling (`--poll`) rather than as the machine is set.
    polling: bool,
    requests: u64,
    errors: u64,
    seconds: f64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    server_cpu_us_per_request: f64,
    /// CPU of the two haproxy processes per request (the sidecar target only).
    proxy_cpu_us_per_request: Option<f64>,
    /// `[quantile, µs]` points of the latency distribution.
    curve: Vec<[f64; 2]>,
}

/// Runs the scenario.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let main_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let runs = if args.runs_given {
        args.runs
    } else {
        DEFAULT_RUNS
    };
    println!(
        "request-path benchmark: {} s x {} runs, {} cores visible{}",
        args.seconds,
        runs,
        cores.len(),
        if cores.len() >= 2 {
            " (server on core 0, load on core 1)"
        } else {
            " (not pinned)"
        }
    );

    // The control service, on the main runtime.
    let listeners = main_rt.block_on(async {
        Ok::<_, std::io::Error>([
            std::net::TcpListener::bind("127.0.0.1:0")?,
            std::net::TcpListener::bind("127.0.0.1:0")?,
            std::net::TcpListener::bind("127.0.0.1:0")?,
        ])
    })?;
    let mesh_addr = listeners[2].local_addr()?;
    // The meshed server process of the RSS measurement listens here.
    let rss_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let trust_domain = TrustDomain::new("mesh.local")?;
    let control = main_rt.block_on(mesh_control::start(ControlOptions::new(
        trust_domain.clone(),
        ConfigSource::Inline(mesh_config(mesh_addr, rss_addr)),
    )))?;
    let dir = tempfile::tempdir()?;
    let bench_settings = crate::BenchSettings::new(&control, &trust_domain, dir.path())?;
    let settings =
        |account: &str, service: Option<&str>| bench_settings.for_account(account, service);
    let plain_tls = PlainTls::generate()?;

    // The servers, on their own pinned thread.
    let (cpu_tx, cpu_rx) = mpsc::channel::<oneshot::Sender<Duration>>(4);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_settings = settings("greeter", Some("greeter"))?;
    let server_tls = plain_tls.server.clone();
    let server_core = cores.first().copied();
    let [h2c_listener, tls_listener, mesh_listener] = listeners;
    let h2c_addr = h2c_listener.local_addr()?;
    let tls_addr = tls_listener.local_addr()?;
    std::thread::Builder::new()
        .name("bench-server".into())
        .spawn(move || {
            if let Some(core) = server_core {
                core_affinity::set_for_current(core);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            rt.block_on(serve(
                [h2c_listener, tls_listener, mesh_listener],
                server_tls,
                server_settings,
                cpu_rx,
                ready_tx,
            ));
        })?;
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .context("servers did not start")??;

    // The sidecar pair in front of the h2c server, when haproxy is installed.
    let material = &plain_tls.material;
    let sidecars = SidecarPair::start(
        h2c_addr,
        &haproxy::Pems {
            ca: &material.ca.cert_pem,
            server: &haproxy::cert_and_key(&material.server.cert_pem, &material.server.key_pem),
            client: &haproxy::cert_and_key(&material.client.cert_pem, &material.client.key_pem),
        },
    )?;
    if sidecars.is_none() {
        println!("  haproxy is not on PATH: the two-haproxy (sidecar) path is skipped");
    }
    let proxy = sidecars.as_ref().map(|s| (s.front, s.pids()));

    // The load, on another pinned thread.
    let client_settings = settings("bench-client", None)?;
    let client_tls = plain_tls.client.clone();
    let client_core = cores.get(1).copied();
    let seconds = Duration::from_secs(args.seconds);
    let poll = args.poll;
    let rounds = std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || -> anyhow::Result<Vec<Round>> {
            if let Some(core) = client_core {
                core_affinity::set_for_current(core);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(load(
                h2c_addr,
                tls_addr,
                proxy,
                client_tls,
                client_settings,
                cpu_tx,
                seconds,
                runs,
                poll,
            ))
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;

    drop(sidecars);

    let rss = rss::measure(&rss::Setup {
        control: control.addr(),
        anchors: bench_settings.anchors().to_owned(),
        addr: rss_addr,
        material: plain_tls.material.clone(),
        client: settings("bench-client", None)?,
        seconds: Duration::from_secs(args.seconds.clamp(1, 10)),
    })?;
    report(&rounds, &rss, &args.json("request-path"))?;
    main_rt.block_on(control.shutdown());
    Ok(())
}

fn mesh_config(addr: SocketAddr, rss_addr: SocketAddr) -> String {
    let (greeter, policies) = examples::everything_on_greeter(addr, "bench-client");
    format!(
        r#"
services:
{greeter}  - name: greeter-rss
    endpoints:
      - address: "{rss_addr}"
        identity: spiffe://mesh.local/ns/default/sa/greeter
{policies}bootstrapTokens:
  - {{token: greeter-bench-token, namespace: default, serviceAccount: greeter}}
  - {{token: bench-client-bench-token, namespace: default, serviceAccount: bench-client}}
"#
    )
}

/// Serves the greeter three ways, and answers CPU-time queries, until the process ends.
async fn serve(
    listeners: [std::net::TcpListener; 3],
    tls: Arc<rustls::ServerConfig>,
    settings: MeshSettings,
    mut cpu_queries: mpsc::Receiver<oneshot::Sender<Duration>>,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let started = async {
        let [h2c, plain_tls, meshed] = listeners;
        let mut tcp = Vec::new();
        for listener in [h2c, plain_tls, meshed] {
            listener.set_nonblocking(true)?;
            tcp.push(TcpListener::from_std(listener)?);
        }
        let meshed = tcp.pop().context("three listeners")?;
        let plain_tls = tcp.pop().context("three listeners")?;
        let h2c = tcp.pop().context("three listeners")?;
        // The same handler behind every target.
        let greeter = GreeterServer::new(PlainGreeter);

        let incoming = tokio_stream::wrappers::TcpListenerStream::new(h2c);
        let service = greeter.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
        });

        let incoming = plain_tls::incoming(plain_tls, tls);
        let service = greeter.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
        });

        bench::spawn_meshed_greeter(Mesh::start(settings).await?, meshed, PlainGreeter)?;
        Ok(())
    };
    let result = started.await;
    let failed = result.is_err();
    let _ = ready.send(result);
    if failed {
        return;
    }
    while let Some(reply) = cpu_queries.recv().await {
        let _ = reply.send(bench::thread_cpu_time());
    }
}

/// A client of one target: `connections` channels (the mesh has one).
enum Clients {
    Tonic(Vec<GreeterClient<Channel>>),
    Mesh(GreeterClient<MeshChannel>),
}

impl Clients {
    fn get(&self, i: usize) -> Client {
        match self {
            Self::Tonic(clients) => Client::Tonic(clients[i % clients.len()].clone()),
            Self::Mesh(client) => Client::Mesh(client.clone()),
        }
    }
}

enum Client {
    Tonic(GreeterClient<Channel>),
    Mesh(GreeterClient<MeshChannel>),
}

impl Client {
    async fn call(&mut self) -> bool {
        let request = HelloRequest {
            name: "bench".into(),
        };
        let result = match self {
            Self::Tonic(c) => c.say_hello(request).await,
            Self::Mesh(c) => c.say_hello(request).await,
        };
        if let Err(status) = &result {
            tracing::debug!(%status, "call failed");
        }
        result.is_ok()
    }
}

#[allow(clippy::too_many_arguments)]
async fn load(
    h2c: SocketAddr,
    tls: SocketAddr,
    proxy: Option<(SocketAddr, [u32; 2])>,
    tls_config: Arc<rustls::ClientConfig>,
    settings: MeshSettings,
    cpu: mpsc::Sender<oneshot::Sender<Duration>>,
    seconds: Duration,
    runs: usize,
    mut poll: bool,
) -> anyhow::Result<Vec<Round>> {
    // At 64 in flight the mesh keeps as many connections per endpoint as plain tonic opens.
    let pooled = Mesh::start(
        settings
            .clone()
            .with_connections_per_endpoint(CONNECTIONS_THROUGHPUT),
    )
    .await?;
    let mesh = Mesh::start(settings).await?;
    let slices = (seconds.as_millis() / SLICE.as_millis()).max(1) as u32;
    let slice = seconds / slices;
    let mut rounds = Vec::new();
    for run in 0..runs {
        let phases = [
            (1, 1, false),
            (1, 1, true),
            (IN_FLIGHT_THROUGHPUT, CONNECTIONS_THROUGHPUT, false),
        ];
        for (in_flight, connections, polling) in phases {
            // With `--poll`, 1 in flight a second time with idle cores polling (restored when
            // `_polling` drops at the end of the phase).
            let _polling = match (polling, poll) {
                (false, _) => None,
                (true, false) => continue,
                (true, true) => match HaltPolling::set(machine::POLL_NS) {
                    Ok(set) => Some(set),
                    Err(error) => {
                        println!("  --poll: idle polling cannot be switched here: {error:#}");
                        poll = false;
                        continue;
                    }
                },
            };
            let mut measured = Vec::new();
            for target in targets(proxy.is_some()) {
                let clients = match target {
                    Target::TonicH2c | Target::Haproxy => {
                        let addr = match (target, proxy) {
                            (Target::Haproxy, Some((front, _))) => front,
                            _ => h2c,
                        };
                        let mut v = Vec::new();
                        for _ in 0..connections {
                            let channel = Endpoint::from_shared(format!("http://{addr}"))?
                                .tcp_nodelay(true)
                                .connect()
                                .await?;
                            v.push(GreeterClient::new(channel));
                        }
                        Clients::Tonic(v)
                    }
                    Target::TonicMtls => {
                        let mut v = Vec::new();
                        for _ in 0..connections {
                            v.push(GreeterClient::new(
                                plain_tls::tls_channel(tls, tls_config.clone()).await?,
                            ));
                        }
                        Clients::Tonic(v)
                    }
                    Target::Mesh => {
                        let mesh = if connections > 1 { &pooled } else { &mesh };
                        Clients::Mesh(GreeterClient::new(mesh.channel("greeter.default").await?))
                    }
                };
                let _ = drive(&clients, in_flight, WARMUP).await;
                measured.push((target, clients, Slices::default()));
            }
            // The targets take turns, a slice each, so that what the machine does meanwhile
            // falls on all of them alike.
            for _ in 0..slices {
                for (target, clients, sum) in &mut measured {
                    let proxy_cpu = || match (*target, proxy) {
                        (Target::Haproxy, Some((_, pids))) => Some(
                            pids.iter()
                                .map(|&p| procs::process_cpu(p))
                                .sum::<Duration>(),
                        ),
                        _ => None,
                    };
                    let proxy_before = proxy_cpu();
                    let before = server_cpu(&cpu).await?;
                    let (latencies, errors, elapsed) = drive(clients, in_flight, slice).await;
                    sum.server_cpu += server_cpu(&cpu).await? - before;
                    if let (Some(b), Some(a)) = (proxy_before, proxy_cpu()) {
                        sum.proxy_cpu = Some(sum.proxy_cpu.unwrap_or_default() + (a - b));
                    }
                    sum.latencies.extend(latencies);
                    sum.errors += errors;
                    sum.elapsed += elapsed;
                }
            }
            for (target, _, sum) in measured {
                let mut round = summarize(
                    target,
                    in_flight,
                    polling,
                    sum.latencies,
                    sum.errors,
                    sum.elapsed,
                    sum.server_cpu,
                );
                round.proxy_cpu_us_per_request = sum
                    .proxy_cpu
                    .map(|cpu| cpu.as_secs_f64() * 1e6 / round.requests.max(1) as f64);
                println!(
                    "  run {} {:<11} {:>2} in flight{}: {:>9.0} req/s  p50 {:>6.1} µs  p99 {:>7.1} µs  server CPU {:>5.1} µs/req{}",
                    run + 1,
                    target.label(),
                    in_flight,
                    if polling { " (polling)" } else { "" },
                    round.rps,
                    round.p50_us,
                    round.p99_us,
                    round.server_cpu_us_per_request,
                    if round.errors > 0 {
                        format!("  ({} errors)", round.errors)
                    } else {
                        String::new()
                    }
                );
                rounds.push(round);
            }
        }
    }
    Ok(rounds)
}

/// What one target's slices of a run add up to.
#[derive(Default)]
struct Slices {
    latencies: Vec<u64>,
    errors: u64,
    elapsed: Duration,
    server_cpu: Duration,
    proxy_cpu: Option<Duration>,
}

/// The targets measured, in order: the sidecar path only when haproxy runs.
fn targets(with_haproxy: bool) -> Vec<Target> {
    let mut targets = vec![Target::TonicH2c, Target::TonicMtls, Target::Mesh];
    if with_haproxy {
        targets.push(Target::Haproxy);
    }
    targets
}

async fn server_cpu(cpu: &mpsc::Sender<oneshot::Sender<Duration>>) -> anyhow::Result<Duration> {
    let (tx, rx) = oneshot::channel();
    cpu.send(tx).await.context("server thread gone")?;
    Ok(rx.await?)
}

/// Runs `in_flight` callers for `duration`; returns every latency (ns), the error count and
/// the time taken.
async fn drive(
    clients: &Clients,
    in_flight: usize,
    duration: Duration,
) -> (Vec<u64>, u64, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(in_flight);
    for i in 0..in_flight {
        let mut client = clients.get(i);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                if client.call().await {
                    latencies.push(t0.elapsed().as_nanos() as u64);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((latencies, e)) = task.await {
            all.extend(latencies);
            errors += e;
        }
    }
    (all, errors, started.elapsed())
}

fn summarize(
    target: Target,
    in_flight: usize,
    polling: bool,
    mut latencies: Vec<u64>,
    errors: u64,
    elapsed: Duration,
    server_cpu: Duration,
) -> Round {
    latencies.sort_unstable();
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i] as f64 / 1e3
    };
    let requests = latencies.len() as u64;
    Round {
        target,
        in_flight,
        polling,
        requests,
        errors,
        seconds: elapsed.as_secs_f64(),
        rps: requests as f64 / elapsed.as_secs_f64(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        server_cpu_us_per_request: server_cpu.as_secs_f64() * 1e6 / requests.max(1) as f64,
        proxy_cpu_us_per_request: None,
        curve: CURVE.iter().map(|&q| [q, at(q)]).collect(),
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    target: Target,
    in_flight: usize,
    polling: bool,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    server_cpu_us_per_request: f64,
    proxy_cpu_us_per_request: Option<f64>,
    /// The latency distribution of the round with the median throughput.
    curve: Vec<[f64; 2]>,
}

fn summaries(rounds: &[Round]) -> Vec<Summary> {
    let mut summaries = Vec::new();
    let present = targets(rounds.iter().any(|r| r.target == Target::Haproxy));
    for target in present {
        for (in_flight, polling) in [(1, false), (1, true), (IN_FLIGHT_THROUGHPUT, false)] {
            let mut mine: Vec<&Round> = rounds
                .iter()
                .filter(|r| r.target == target && r.in_flight == in_flight && r.polling == polling)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let pick = |f: fn(&Round) -> f64| median(mine.iter().map(|r| f(r)).collect());
            let proxy: Vec<f64> = mine
                .iter()
                .filter_map(|r| r.proxy_cpu_us_per_request)
                .collect();
            let summary = Summary {
                target,
                in_flight,
                polling,
                rps: pick(|r| r.rps),
                p50_us: pick(|r| r.p50_us),
                p99_us: pick(|r| r.p99_us),
                p999_us: pick(|r| r.p999_us),
                server_cpu_us_per_request: pick(|r| r.server_cpu_us_per_request),
                proxy_cpu_us_per_request: (!proxy.is_empty()).then(|| median(proxy)),
                curve: {
                    mine.sort_by(|a, b| a.rps.total_cmp(&b.rps));
                    mine.get(mine.len() / 2)
                        .map(|r| r.curve.clone())
                        .unwrap_or_default()
                },
            };
            summaries.push(summary);
        }
    }
    summaries
}

/// Each run's `f(a's round, b's round)` at `in_flight` (and `polling`): each run's targets
/// were measured in the same slices of time, so their ratio is what holds when the machine's
/// speed moves between runs.
fn paired(
    rounds: &[Round],
    (a, b): (Target, Target),
    (in_flight, polling): (usize, bool),
    f: fn(&Round, &Round) -> f64,
) -> Vec<f64> {
    let of = |target: Target| {
        rounds
            .iter()
            .filter(move |r| r.target == target && r.in_flight == in_flight && r.polling == polling)
    };
    of(a).zip(of(b)).map(|(x, y)| f(x, y)).collect()
}

/// The request path's targets, each judged over the runs.
#[derive(Debug, Serialize)]
struct Verdicts {
    throughput_mesh_over_tonic_mtls: Judged,
    throughput_mesh_over_two_haproxy: Option<Judged>,
    /// At 1 in flight, idle cores as the machine is set.
    added_p50_us_over_tonic_mtls: Judged,
    /// The target the line above is judged against (5 µs, or 10 when idle cores halt at once).
    added_p50_target_us: f64,
    /// At 1 in flight with idle cores polling (`--poll`).
    added_p50_us_over_tonic_mtls_polling: Option<Judged>,
    server_cpu_mesh_over_tonic_mtls: Judged,
}

fn report(rounds: &[Round], rss: &rss::Figures, json: &Path) -> anyhow::Result<()> {
    let summaries = summaries(rounds);
    let idle = IdleSettings::read();
    println!("\nmedians over the runs:");
    println!(
        "  {:<11} {:>13} {:>11} {:>9} {:>9} {:>10} {:>14} {:>15}",
        "target",
        "in flight",
        "req/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "server µs/req",
        "haproxy µs/req"
    );
    for s in &summaries {
        println!(
            "  {:<11} {:>13} {:>11.0} {:>9.1} {:>9.1} {:>10.1} {:>14.2} {:>15}",
            s.target.label(),
            if s.polling {
                format!("{} (polling)", s.in_flight)
            } else {
                s.in_flight.to_string()
            },
            s.rps,
            s.p50_us,
            s.p99_us,
            s.p999_us,
            s.server_cpu_us_per_request,
            s.proxy_cpu_us_per_request
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
        );
    }
    println!(
        "  (at {IN_FLIGHT_THROUGHPUT} in flight every target uses {CONNECTIONS_THROUGHPUT} connections: plain tonic and haproxy {CONNECTIONS_THROUGHPUT} channels, the mesh connections_per_endpoint = {CONNECTIONS_THROUGHPUT}; haproxy µs/req is both haproxy processes' CPU; idle cores: {}{})",
        idle.describe_short(),
        if summaries.iter().any(|s| s.polling) {
            format!(", \"polling\": guest_halt_poll_ns {}", machine::POLL_NS)
        } else {
            String::new()
        }
    );
    let get = |target: Target, in_flight: usize| {
        summaries
            .iter()
            .find(|s| s.target == target && s.in_flight == in_flight && !s.polling)
    };
    let (Some(mesh_tp), Some(tls_tp), Some(h2c_tp)) = (
        get(Target::Mesh, IN_FLIGHT_THROUGHPUT),
        get(Target::TonicMtls, IN_FLIGHT_THROUGHPUT),
        get(Target::TonicH2c, IN_FLIGHT_THROUGHPUT),
    ) else {
        bail!("missing measurements");
    };
    let mesh_vs_tls = |shape: (usize, bool), f: fn(&Round, &Round) -> f64| {
        paired(rounds, (Target::Mesh, Target::TonicMtls), shape, f)
    };
    let throughput = (IN_FLIGHT_THROUGHPUT, false);
    let p50_target = if idle.halts_at_once() {
        ADDED_P50_HALTING_TARGET_US
    } else {
        ADDED_P50_TARGET_US
    };
    let polled = mesh_vs_tls((1, true), |m, t| m.p50_us - t.p50_us);
    let verdicts = Verdicts {
        throughput_mesh_over_tonic_mtls: Judged::new(
            mesh_vs_tls(throughput, |m, t| m.rps / t.rps),
            |r| r >= THROUGHPUT_RATIO_TARGET,
        ),
        throughput_mesh_over_two_haproxy: get(Target::Haproxy, IN_FLIGHT_THROUGHPUT).map(|_| {
            Judged::new(
                paired(
                    rounds,
                    (Target::Mesh, Target::Haproxy),
                    throughput,
                    |m, h| m.rps / h.rps,
                ),
                |r| r >= 2.5,
            )
        }),
        added_p50_us_over_tonic_mtls: Judged::new(
            mesh_vs_tls((1, false), |m, t| m.p50_us - t.p50_us),
            |us| us <= p50_target,
        ),
        added_p50_target_us: p50_target,
        added_p50_us_over_tonic_mtls_polling: (!polled.is_empty())
            .then(|| Judged::new(polled, |us| us <= ADDED_P50_TARGET_US)),
        server_cpu_mesh_over_tonic_mtls: Judged::new(
            mesh_vs_tls(throughput, |m, t| {
                m.server_cpu_us_per_request / t.server_cpu_us_per_request
            }),
            |r| r <= CPU_RATIO_TARGET,
        ),
    };
    let ratio = |r: f64| format!("{r:.2}");
    let micros = |us: f64| format!("{us:+.1}");
    println!(
        "\nverdicts (each run's own ratio; met when the median and at least {} of {} runs meet the target):",
        crate::judge::required(verdicts.throughput_mesh_over_tonic_mtls.runs.len()),
        verdicts.throughput_mesh_over_tonic_mtls.runs.len()
    );
    let line = |what: &str, judged: &Judged, fmt: &dyn Fn(f64) -> String, target: &str| {
        println!(
            "  {what} = {}   (target {target}: {})\n      {}",
            fmt(judged.median),
            judged.verdict(),
            judged.spread(fmt)
        );
    };
    line(
        "throughput  mesh / tonic mTLS",
        &verdicts.throughput_mesh_over_tonic_mtls,
        &ratio,
        &format!(">= {THROUGHPUT_RATIO_TARGET}"),
    );
    println!(
        "  throughput  mesh / tonic h2c  = {:.2};  tonic mTLS / h2c = {:.2}  (medians of the runs)",
        mesh_tp.rps / h2c_tp.rps,
        tls_tp.rps / h2c_tp.rps
    );
    match &verdicts.throughput_mesh_over_two_haproxy {
        Some(judged) => line(
            "throughput  mesh / two haproxy hops",
            judged,
            &ratio,
            ">= 2.5",
        ),
        None => {
            println!("  throughput  mesh / two haproxy hops: not measured (haproxy not installed)")
        }
    }
    line(
        &format!(
            "added p50 at 1 in flight over tonic mTLS, µs ({})",
            idle.describe_short()
        ),
        &verdicts.added_p50_us_over_tonic_mtls,
        &micros,
        &format!("<= {p50_target} µs"),
    );
    match &verdicts.added_p50_us_over_tonic_mtls_polling {
        Some(judged) => line(
            &format!(
                "added p50 at 1 in flight over tonic mTLS, µs (idle cores polling: guest_halt_poll_ns {})",
                machine::POLL_NS
            ),
            judged,
            &micros,
            &format!("<= {ADDED_P50_TARGET_US} µs"),
        ),
        None if idle.halts_at_once() => println!(
            "  added p50 with idle cores polling: not measured (`--poll`, as root, measures it; target <= {ADDED_P50_TARGET_US} µs)"
        ),
        None => {}
    }
    line(
        "server CPU per request  mesh / tonic mTLS",
        &verdicts.server_cpu_mesh_over_tonic_mtls,
        &ratio,
        &format!("<= {CPU_RATIO_TARGET}"),
    );
    rss.print();

    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let chart_path = json.with_file_name("latency.svg");
    let series: Vec<chart::Series> = summaries
        .iter()
        .filter(|s| !s.polling)
        .map(|s| chart::Series {
            label: s.target.label().to_owned(),
            in_flight: s.in_flight,
            points: s.curve.iter().map(|p| (p[0], p[1])).collect(),
        })
        .collect();
    chart::write(&chart_path, &series, &[1, IN_FLIGHT_THROUGHPUT])?;
    println!("\nlatency chart: {}", chart_path.display());
    crate::write_json(
        json,
        &serde_json::json!({
            "scenario": "request-path",
            "rounds": rounds,
            "medians": summaries,
            "rss": rss,
            "machine": idle.to_json(),
            "verdicts": verdicts,
        }),
    )
}
