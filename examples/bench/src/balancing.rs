//! Scenario `balancing`: three greeter endpoints behind one destination, one of them ten times
//! slower; the latency callers see with the mesh's P2C peak-EWMA balancer, with a plain round
//! robin over the same three kinds of endpoint, and with the mesh over three fast endpoints.
//!
//! Each endpoint is a server with [`WORKERS`] workers that each take [`FAST`] (or [`SLOW`])
//! per call, so a busy endpoint queues as a real one does and the balancer's choice shows in
//! the latency; the waits are timers, not CPU, so the figures hold on a 2-core machine. The
//! load keeps a fixed number of calls in flight: [`IN_FLIGHT`] (the fast endpoints about half
//! busy: the target applies there) and [`IN_FLIGHT_SATURATED`] (the fast endpoints' workers all
//! busy, where the slow endpoint is worth some calls; shown, without a target). Round robin
//! runs over three plain tonic mTLS channels to servers paced the same way (the mesh's servers
//! require the mesh's identities).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use examples::hello::greeter_server::{Greeter, GreeterServer};
use examples::hello::{HelloReply, HelloRequest};
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::TrustDomain;
use mesh_tonic::{MeshLayer, MeshTonicExt};
use mesh_tower::Mesh;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::callers::{Caller, RoundRobin};
use crate::plain_tls::{self, PlainTls};
use crate::{Args, median, verdict};

/// Time a fast endpoint's worker spends on a call.
const FAST: Duration = Duration::from_millis(2);
/// Ten times that: the slow endpoint.
const SLOW: Duration = Duration::from_millis(20);
/// Calls one endpoint works on at once; more wait in its queue.
const WORKERS: usize = 2;
/// Calls the load keeps in flight: half the two fast endpoints' workers, so a balancer that
/// avoids the slow endpoint never needs it.
const IN_FLIGHT: usize = 2;
/// As many calls in flight as the two fast endpoints have workers.
const IN_FLIGHT_SATURATED: usize = 2 * WORKERS;
const WARMUP: Duration = Duration::from_secs(1);
const SLOW_NAME: &str = "slow";

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Target {
    /// The mesh over two fast endpoints and the slow one.
    P2cEwma,
    /// Round robin over two fast endpoints and the slow one.
    RoundRobin,
    /// The mesh over three fast endpoints.
    AllFast,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::P2cEwma => "mesh P2C-EWMA, 1 slow",
            Self::RoundRobin => "round robin, 1 slow",
            Self::AllFast => "mesh, all fast",
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
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Share of calls the slow endpoint answered.
    slow_share: f64,
}

/// Runs the scenario.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    println!(
        "\nbalancing benchmark: {} s x {} runs; endpoints of {WORKERS} workers at {FAST:?} per call, one at {SLOW:?}; {IN_FLIGHT} and {IN_FLIGHT_SATURATED} calls in flight",
        args.seconds, args.runs
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rounds = rt.block_on(measure(Duration::from_secs(args.seconds), args.runs))?;
    report(&rounds, &args.json("balancing"))
}

async fn measure(seconds: Duration, runs: usize) -> anyhow::Result<Vec<Round>> {
    let mut mixed = Vec::new();
    let mut fast = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..3 {
        mixed.push(TcpListener::bind("127.0.0.1:0").await?);
        fast.push(TcpListener::bind("127.0.0.1:0").await?);
        plain.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs = |ls: &[TcpListener]| -> std::io::Result<Vec<SocketAddr>> {
        ls.iter().map(TcpListener::local_addr).collect()
    };
    let plain_addrs = addrs(&plain)?;
    let trust_domain = TrustDomain::new("mesh.local")?;
    let control = mesh_control::start(ControlOptions::new(
        trust_domain.clone(),
        ConfigSource::Inline(config(&addrs(&mixed)?, &addrs(&fast)?)),
    ))
    .await?;
    let dir = tempfile::tempdir()?;
    let settings = crate::BenchSettings::new(&control, &trust_domain, dir.path())?;
    let settings = |account: &str, service: Option<&str>| settings.for_account(account, service);

    // The servers: the last of each mixed set is the slow one.
    // One process serves both services; it subscribes as the first (the control service lets
    // a workload name only a service its identity serves).
    let server = Mesh::start(settings("greeter", Some("greeter-mixed"))?).await?;
    for (i, listener) in mixed.into_iter().chain(fast).enumerate() {
        let greeter = if i == 2 {
            Paced::new(SLOW_NAME, SLOW)
        } else {
            Paced::new("fast", FAST)
        };
        let incoming = server.tonic_incoming(listener)?;
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(MeshLayer::new())
                .add_service(GreeterServer::new(greeter))
                .serve_with_incoming(incoming),
        );
    }
    let tls = PlainTls::generate()?;
    for (i, listener) in plain.into_iter().enumerate() {
        let greeter = if i == 2 {
            Paced::new(SLOW_NAME, SLOW)
        } else {
            Paced::new("fast", FAST)
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(GreeterServer::new(greeter))
                .serve_with_incoming(plain_tls::incoming(listener, tls.server.clone())),
        );
    }

    let client = Mesh::start(settings("bench-client", None)?).await?;
    let mixed_channel = client.channel("greeter-mixed.default").await?;
    let fast_channel = client.channel("greeter-fast.default").await?;
    let mut plain_channels = Vec::new();
    for addr in plain_addrs {
        plain_channels.push(plain_tls::tls_channel(addr, tls.client.clone()).await?);
    }
    let mut rounds = Vec::new();
    for run in 0..runs {
        for (target, in_flight) in [Target::P2cEwma, Target::RoundRobin, Target::AllFast]
            .into_iter()
            .flat_map(|t| [(t, IN_FLIGHT), (t, IN_FLIGHT_SATURATED)])
        {
            let caller = match target {
                Target::P2cEwma => Caller::Mesh(mixed_channel.clone()),
                Target::AllFast => Caller::Mesh(fast_channel.clone()),
                Target::RoundRobin => Caller::RoundRobin(RoundRobin::new(plain_channels.clone())),
            };
            let _ = drive(&caller, in_flight, WARMUP).await;
            let (mut latencies, slow, errors, elapsed) = drive(&caller, in_flight, seconds).await;
            latencies.sort_unstable();
            let at = |q: f64| {
                latencies
                    .get(((latencies.len().max(1) - 1) as f64 * q).round() as usize)
                    .map_or(f64::NAN, |&ns| ns as f64 / 1e6)
            };
            let requests = latencies.len() as u64;
            let round = Round {
                target,
                in_flight,
                requests,
                errors,
                rps: requests as f64 / elapsed.as_secs_f64(),
                p50_ms: at(0.5),
                p99_ms: at(0.99),
                slow_share: slow as f64 / requests.max(1) as f64,
            };
            println!(
                "  run {} {:<22} {in_flight} in flight: {:>6.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  slow endpoint {:>5.1} %{}",
                run + 1,
                target.label(),
                round.rps,
                round.p50_ms,
                round.p99_ms,
                round.slow_share * 100.0,
                if errors > 0 {
                    format!("  ({errors} errors)")
                } else {
                    String::new()
                }
            );
            rounds.push(round);
        }
    }
    drop(client);
    drop(server);
    control.shutdown().await;
    Ok(rounds)
}

fn config(mixed: &[SocketAddr], fast: &[SocketAddr]) -> String {
    let endpoints = |addrs: &[SocketAddr]| -> String {
        addrs
            .iter()
            .map(|a| {
                format!(
                    "      - address: \"{a}\"\n        identity: spiffe://mesh.local/ns/default/sa/greeter\n"
                )
            })
            .collect()
    };
    format!(
        "services:\n  - name: greeter-mixed\n    endpoints:\n{}  - name: greeter-fast\n    endpoints:\n{}\
         bootstrapTokens:\n  - {{token: greeter-bench-token, namespace: default, serviceAccount: greeter}}\n  \
         - {{token: bench-client-bench-token, namespace: default, serviceAccount: bench-client}}\n",
        endpoints(mixed),
        endpoints(fast)
    )
}

/// A greeter with [`WORKERS`] workers that each take `delay` per call.
#[derive(Clone)]
struct Paced {
    name: &'static str,
    delay: Duration,
    workers: Arc<Semaphore>,
}

impl Paced {
    fn new(name: &'static str, delay: Duration) -> Self {
        Self {
            name,
            delay,
            workers: Arc::new(Semaphore::new(WORKERS)),
        }
    }
}

#[tonic::async_trait]
impl Greeter for Paced {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let _worker = self
            .workers
            .acquire()
            .await
            .map_err(|_| Status::unavailable("closed"))?;
        tokio::time::sleep(self.delay).await;
        Ok(Response::new(HelloReply {
            message: self.name.to_owned(),
        }))
    }
}

/// `in_flight` callers for `duration`: latencies (ns), calls the slow endpoint answered,
/// errors, time taken.
async fn drive(
    caller: &Caller,
    in_flight: usize,
    duration: Duration,
) -> (Vec<u64>, u64, u64, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let caller = caller.clone_handle();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut slow, mut errors) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match caller.say_hello().await {
                    Ok(name) => {
                        latencies.push(t0.elapsed().as_nanos() as u64);
                        slow += u64::from(name == SLOW_NAME);
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, slow, errors)
        }));
    }
    let (mut all, mut slow, mut errors) = (Vec::new(), 0, 0);
    for task in tasks {
        if let Ok((l, s, e)) = task.await {
            all.extend(l);
            slow += s;
            errors += e;
        }
    }
    (all, slow, errors, started.elapsed())
}

#[derive(Debug, Serialize)]
struct Summary {
    target: Target,
    in_flight: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    slow_share: f64,
}

fn report(rounds: &[Round], json: &std::path::Path) -> anyhow::Result<()> {
    let summaries: Vec<Summary> = [IN_FLIGHT, IN_FLIGHT_SATURATED]
        .into_iter()
        .flat_map(|n| [Target::P2cEwma, Target::RoundRobin, Target::AllFast].map(move |t| (t, n)))
        .map(|(target, in_flight)| {
            let mine: Vec<&Round> = rounds
                .iter()
                .filter(|r| r.target == target && r.in_flight == in_flight)
                .collect();
            let pick = |f: fn(&Round) -> f64| median(mine.iter().map(|r| f(r)).collect());
            Summary {
                target,
                in_flight,
                rps: pick(|r| r.rps),
                p50_ms: pick(|r| r.p50_ms),
                p99_ms: pick(|r| r.p99_ms),
                slow_share: pick(|r| r.slow_share),
            }
        })
        .collect();
    println!("\nmedians over the runs:");
    println!(
        "  {:<22} {:>9} {:>8} {:>8} {:>8} {:>10}",
        "target", "in flight", "req/s", "p50 ms", "p99 ms", "slow share"
    );
    for s in &summaries {
        println!(
            "  {:<22} {:>9} {:>8.0} {:>8.2} {:>8.2} {:>9.1}%",
            s.target.label(),
            s.in_flight,
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.slow_share * 100.0
        );
    }
    let get = |t: Target, n: usize| summaries.iter().find(|s| s.target == t && s.in_flight == n);
    println!("\nratios (same run):");
    let mut ratios = Vec::new();
    for n in [IN_FLIGHT, IN_FLIGHT_SATURATED] {
        let (Some(p2c), Some(rr), Some(fast)) = (
            get(Target::P2cEwma, n),
            get(Target::RoundRobin, n),
            get(Target::AllFast, n),
        ) else {
            anyhow::bail!("missing measurements");
        };
        let p2c_over_fast = p2c.p99_ms / fast.p99_ms;
        let rr_over_fast = rr.p99_ms / fast.p99_ms;
        let target = if n == IN_FLIGHT {
            format!("(target <= 1.3: {})", verdict(p2c_over_fast <= 1.3))
        } else {
            "(fast endpoints saturated: no target)".to_owned()
        };
        println!(
            "  {n} in flight: p99 P2C-EWMA with 1 slow / all fast = {p2c_over_fast:.2} {target};  round robin / all fast = {rr_over_fast:.2}"
        );
        ratios.push(serde_json::json!({
            "in_flight": n,
            "p99_p2c_over_all_fast": p2c_over_fast,
            "p99_round_robin_over_all_fast": rr_over_fast,
        }));
    }
    crate::write_json(
        json,
        &serde_json::json!({
            "scenario": "balancing",
            "fast_ms": FAST.as_secs_f64() * 1e3,
            "slow_ms": SLOW.as_secs_f64() * 1e3,
            "workers_per_endpoint": WORKERS,
            "rounds": rounds,
            "medians": summaries,
            "ratios": ratios,
        }),
    )
    .context("balancing JSON")
}
