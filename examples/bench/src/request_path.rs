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
//! medians over the rounds, and each ratio is the median of the rounds' own ratios. Server CPU per request comes from the server thread's own CPU time
//! (`/proc/thread-self/schedstat`).
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
use crate::plain_tls::{self, PlainTls};
use crate::{Args, chart, median, procs, rss, verdict};
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
/// and at most this much added to the median latency at one call in flight (the RSS target
/// is in [`rss`]).
const ADDED_P50_TARGET_US: f64 = 5.0;

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
    println!(
        "request-path benchmark: {} s x {} runs, {} cores visible{}",
        args.seconds,
        args.runs,
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
    let runs = args.runs;
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
        for (in_flight, connections) in [(1, 1), (IN_FLIGHT_THROUGHPUT, CONNECTIONS_THROUGHPUT)] {
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
                    sum.latencies,
                    sum.errors,
                    sum.elapsed,
                    sum.server_cpu,
                );
                round.proxy_cpu_us_per_request = sum
                    .proxy_cpu
                    .map(|cpu| cpu.as_secs_f64() * 1e6 / round.requests.max(1) as f64);
                println!(
                    "  run {} {:<11} {:>2} in flight: {:>9.0} req/s  p50 {:>6.1} µs  p99 {:>7.1} µs  server CPU {:>5.1} µs/req{}",
                    run + 1,
                    target.label(),
                    in_flight,
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
        for in_flight in [1, IN_FLIGHT_THROUGHPUT] {
            let mut mine: Vec<&Round> = rounds
                .iter()
                .filter(|r| r.target == target && r.in_flight == in_flight)
                .collect();
            let pick = |f: fn(&Round) -> f64| median(mine.iter().map(|r| f(r)).collect());
            let proxy: Vec<f64> = mine
                .iter()
                .filter_map(|r| r.proxy_cpu_us_per_request)
                .collect();
            let summary = Summary {
                target,
                in_flight,
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

/// The median over the runs of `f(a's round, b's round)` at `in_flight`: each run's targets
/// were measured in the same slices of time, so their ratio is what holds when the machine's
/// speed moves between runs.
fn paired(
    rounds: &[Round],
    a: Target,
    b: Target,
    in_flight: usize,
    f: fn(&Round, &Round) -> f64,
) -> f64 {
    let of = |target: Target| {
        rounds
            .iter()
            .filter(move |r| r.target == target && r.in_flight == in_flight)
    };
    median(of(a).zip(of(b)).map(|(x, y)| f(x, y)).collect())
}

fn report(rounds: &[Round], rss: &rss::Figures, json: &Path) -> anyhow::Result<()> {
    let summaries = summaries(rounds);
    println!("\nmedians over the runs:");
    println!(
        "  {:<11} {:>9} {:>11} {:>9} {:>9} {:>10} {:>14} {:>15}",
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
            "  {:<11} {:>9} {:>11.0} {:>9.1} {:>9.1} {:>10.1} {:>14.2} {:>15}",
            s.target.label(),
            s.in_flight,
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
        "  (at {IN_FLIGHT_THROUGHPUT} in flight every target uses {CONNECTIONS_THROUGHPUT} connections: plain tonic and haproxy {CONNECTIONS_THROUGHPUT} channels, the mesh connections_per_endpoint = {CONNECTIONS_THROUGHPUT}; haproxy µs/req is both haproxy processes' CPU)"
    );
    let get = |target: Target, in_flight: usize| {
        summaries
            .iter()
            .find(|s| s.target == target && s.in_flight == in_flight)
    };
    let (Some(mesh_tp), Some(tls_tp), Some(h2c_tp)) = (
        get(Target::Mesh, IN_FLIGHT_THROUGHPUT),
        get(Target::TonicMtls, IN_FLIGHT_THROUGHPUT),
        get(Target::TonicH2c, IN_FLIGHT_THROUGHPUT),
    ) else {
        bail!("missing measurements");
    };
    let mesh_vs_tls = |in_flight: usize, f: fn(&Round, &Round) -> f64| {
        paired(rounds, Target::Mesh, Target::TonicMtls, in_flight, f)
    };
    let throughput_ratio = mesh_vs_tls(IN_FLIGHT_THROUGHPUT, |m, t| m.rps / t.rps);
    let added_p50 = mesh_vs_tls(1, |m, t| m.p50_us - t.p50_us);
    let cpu_ratio = mesh_vs_tls(IN_FLIGHT_THROUGHPUT, |m, t| {
        m.server_cpu_us_per_request / t.server_cpu_us_per_request
    });
    println!("\nratios (same run; the median of each run's own ratio):");
    println!(
        "  throughput  mesh / tonic mTLS = {throughput_ratio:.2}   (target >= {THROUGHPUT_RATIO_TARGET}: {})",
        verdict(throughput_ratio >= THROUGHPUT_RATIO_TARGET)
    );
    println!(
        "  throughput  mesh / tonic h2c  = {:.2};  tonic mTLS / h2c = {:.2}",
        mesh_tp.rps / h2c_tp.rps,
        tls_tp.rps / h2c_tp.rps
    );
    let haproxy_ratio = get(Target::Haproxy, IN_FLIGHT_THROUGHPUT).map(|_| {
        paired(
            rounds,
            Target::Mesh,
            Target::Haproxy,
            IN_FLIGHT_THROUGHPUT,
            |m, h| m.rps / h.rps,
        )
    });
    match haproxy_ratio {
        Some(ratio) => println!(
            "  throughput  mesh / two haproxy hops = {ratio:.2}   (target >= 2.5: {})",
            verdict(ratio >= 2.5)
        ),
        None => {
            println!("  throughput  mesh / two haproxy hops: not measured (haproxy not installed)")
        }
    }
    println!(
        "  added p50 at 1 in flight over tonic mTLS = {added_p50:+.1} µs   (target <= {ADDED_P50_TARGET_US} µs: {})",
        verdict(added_p50 <= ADDED_P50_TARGET_US)
    );
    println!(
        "  server CPU per request  mesh / tonic mTLS = {cpu_ratio:.2}   (target <= {CPU_RATIO_TARGET}: {})",
        verdict(cpu_ratio <= CPU_RATIO_TARGET)
    );
    rss.print();

    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let chart_path = json.with_file_name("latency.svg");
    let series: Vec<chart::Series> = summaries
        .iter()
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
            "ratios": {
                "throughput_mesh_over_tonic_mtls": throughput_ratio,
                "throughput_mesh_over_two_haproxy": haproxy_ratio,
                "added_p50_us_over_tonic_mtls": added_p50,
                "server_cpu_mesh_over_tonic_mtls": cpu_ratio,
                "rss_added_by_mesh_bytes": rss.added_peak(),
            },
        }),
    )
}
