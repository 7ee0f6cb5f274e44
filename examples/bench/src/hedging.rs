//! Scenario `hedging`: three greeter endpoints behind one destination, one of which answers
//! one call in twenty ([`SLOW_EVERY`]) twenty times slower ([`SLOW`] against [`FAST`]); the
//! latency callers see without hedging, with hedging at the backend's observed p95, and with
//! a fixed hedging delay, and the extra load hedging costs (tries the endpoints received per
//! call).
//!
//! Each endpoint has [`WORKERS`] workers (a busy one queues as a real server does) and the
//! load keeps a fixed number of calls in flight: [`IN_FLIGHT`] (two thirds of the workers)
//! and [`IN_FLIGHT_BUSY`] (eleven of the twelve). The waits are timers, not CPU, so the
//! figures hold on a 2-core machine. The three targets are three destinations over the same
//! three servers, taking turns in the same run.
//!
//! Where the slow answers land: after a slow answer P2C's peak-EWMA spares the slow endpoint
//! for a while, so without hedging it takes about a tenth of the calls rather than a third,
//! and about 0.5 % of calls are slow: beyond the p99, within the p99.9. The targets are on
//! the p99.9 therefore; the p99 is printed beside it. (With hedging a slow try is cancelled
//! early, so P2C sees no slow answer and keeps the endpoint's share.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::{Greeter, GreeterServer};
use examples::hello::{HelloReply, HelloRequest};
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::TrustDomain;
use mesh_tonic::{MeshChannel, MeshLayer, MeshTonicExt};
use mesh_tower::Mesh;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::{Args, median, verdict};

/// Time a worker spends on a call.
const FAST: Duration = Duration::from_millis(2);
/// Twenty times that: one call in [`SLOW_EVERY`] on the slow endpoint.
const SLOW: Duration = Duration::from_millis(40);
/// The slow endpoint's every 20th call (5 %) is slow.
const SLOW_EVERY: u64 = 20;
/// Calls one endpoint works on at once; more wait in its queue.
const WORKERS: usize = 4;
/// Calls the load keeps in flight: two thirds of the three endpoints' workers.
const IN_FLIGHT: usize = 8;
/// Eleven of the twelve workers: P2C cannot spare the slow endpoint.
const IN_FLIGHT_BUSY: usize = 11;
/// The fixed delay measured beside the p95 one.
const FIXED_DELAY: Duration = Duration::from_millis(10);
const WARMUP: Duration = Duration::from_secs(2);

/// Targets, at both loads: hedging at p95 brings the p99.9 to at most this share of the
/// p99.9 without hedging,
const P999_RATIO_TARGET: f64 = 0.5;
/// for at most this many extra tries per call.
const EXTRA_LOAD_TARGET: f64 = 0.10;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Target {
    /// No hedging.
    Off,
    /// `hedging: {maxAttempts: 2, delay: p95}`.
    P95,
    /// `hedging: {maxAttempts: 2, delay: 10ms}`.
    Fixed,
}

impl Target {
    const ALL: [Self; 3] = [Self::Off, Self::P95, Self::Fixed];

    fn label(self) -> &'static str {
        match self {
            Self::Off => "no hedging",
            Self::P95 => "hedging at p95",
            Self::Fixed => "hedging at 10 ms",
        }
    }

    /// The destination that has this target's route.
    fn destination(self) -> &'static str {
        match self {
            Self::Off => "greeter-plain.default",
            Self::P95 => "greeter-p95.default",
            Self::Fixed => "greeter-fixed.default",
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
    p999_ms: f64,
    /// Tries the endpoints received per call made.
    tries_per_call: f64,
    /// Share of calls whose answer came from a slow try.
    slow_answers: f64,
}

/// Runs the scenario.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    println!(
        "\nhedging benchmark: {} s x {} runs; 3 endpoints of {WORKERS} workers at {FAST:?} per call, one of them at {SLOW:?} on 1 call in {SLOW_EVERY}; {IN_FLIGHT} and {IN_FLIGHT_BUSY} calls in flight",
        args.seconds, args.runs
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rounds = rt.block_on(measure(Duration::from_secs(args.seconds), args.runs))?;
    report(&rounds, &args.json("hedging"))
}

async fn measure(seconds: Duration, runs: usize) -> anyhow::Result<Vec<Round>> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<_, _>>()?;
    let trust_domain = TrustDomain::new("mesh.local")?;
    let control = mesh_control::start(ControlOptions::new(
        trust_domain.clone(),
        ConfigSource::Inline(config(&addrs)),
    ))
    .await?;
    let dir = tempfile::tempdir()?;
    let settings = crate::BenchSettings::new(&control, &trust_domain, dir.path())?;

    // Every try any endpoint received, hedges included (cancelled ones too).
    let received = Arc::new(AtomicU64::new(0));
    // The servers serve all three destinations (their endpoints are the same); the watch
    // names one of them as the servers' own.
    let server = Mesh::start(settings.for_account("greeter", Some("greeter-plain"))?).await?;
    for (i, listener) in listeners.into_iter().enumerate() {
        let greeter = Paced {
            slow_every: (i == 2).then_some(SLOW_EVERY),
            calls: Arc::default(),
            received: received.clone(),
            workers: Arc::new(Semaphore::new(WORKERS)),
        };
        let incoming = server.tonic_incoming(listener)?;
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(MeshLayer::new())
                .add_service(GreeterServer::new(greeter))
                .serve_with_incoming(incoming),
        );
    }

    let client = Mesh::start(settings.for_account("bench-client", None)?).await?;
    let mut channels = Vec::new();
    for target in Target::ALL {
        channels.push((target, client.channel(target.destination()).await?));
    }
    let mut rounds = Vec::new();
    for run in 0..runs {
        for (in_flight, (target, channel)) in [IN_FLIGHT, IN_FLIGHT_BUSY]
            .into_iter()
            .flat_map(|n| channels.iter().map(move |c| (n, c)))
        {
            // The warm-up also fills the p95 target's latency window.
            let _ = drive(channel, in_flight, WARMUP).await;
            let before = received.load(Ordering::Relaxed);
            let driven = drive(channel, in_flight, seconds).await;
            let tries = received.load(Ordering::Relaxed) - before;
            let mut latencies = driven.latencies;
            latencies.sort_unstable();
            let at = |q: f64| {
                latencies
                    .get(((latencies.len().max(1) - 1) as f64 * q).round() as usize)
                    .map_or(f64::NAN, |&ns| ns as f64 / 1e6)
            };
            let requests = latencies.len() as u64;
            let calls = (requests + driven.errors).max(1);
            let round = Round {
                target: *target,
                in_flight,
                requests,
                errors: driven.errors,
                rps: requests as f64 / driven.elapsed.as_secs_f64(),
                p50_ms: at(0.5),
                p99_ms: at(0.99),
                p999_ms: at(0.999),
                tries_per_call: tries as f64 / calls as f64,
                slow_answers: driven.slow as f64 / calls as f64,
            };
            println!(
                "  run {} {:<17} {in_flight:>2} in flight {:>6.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  tries/call {:.3}  slow answers {:>4.2} %{}",
                run + 1,
                target.label(),
                round.rps,
                round.p50_ms,
                round.p99_ms,
                round.p999_ms,
                round.tries_per_call,
                round.slow_answers * 100.0,
                if round.errors > 0 {
                    format!("  ({} errors)", round.errors)
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

/// Three destinations over the same three endpoints: one without a route, two with a
/// hedging route.
fn config(addrs: &[SocketAddr]) -> String {
    let endpoints: String = addrs
        .iter()
        .map(|a| {
            format!(
                "      - address: \"{a}\"\n        identity: spiffe://mesh.local/ns/default/sa/greeter\n"
            )
        })
        .collect();
    let hedged = |name: &str, delay: &str| {
        format!(
            "  - name: {name}\n    endpoints:\n{endpoints}    routes:\n      - name: hedged\n        kind: grpc\n        rules:\n          - backendRefs: [{{name: {name}}}]\n            hedging: {{maxAttempts: 2, delay: {delay}}}\n"
        )
    };
    format!(
        "services:\n  - name: greeter-plain\n    endpoints:\n{endpoints}{}{}\
         bootstrapTokens:\n  - {{token: greeter-bench-token, namespace: default, serviceAccount: greeter}}\n  \
         - {{token: bench-client-bench-token, namespace: default, serviceAccount: bench-client}}\n",
        hedged("greeter-p95", "p95"),
        hedged("greeter-fixed", &format!("{}ms", FIXED_DELAY.as_millis())),
    )
}

/// A greeter with [`WORKERS`] workers that each take [`FAST`] per call, or [`SLOW`] for every
/// `slow_every`-th call when set.
#[derive(Clone)]
struct Paced {
    slow_every: Option<u64>,
    calls: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    workers: Arc<Semaphore>,
}

#[tonic::async_trait]
impl Greeter for Paced {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        self.received.fetch_add(1, Ordering::Relaxed);
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let slow = self
            .slow_every
            .is_some_and(|every| call.is_multiple_of(every));
        let _worker = self
            .workers
            .acquire()
            .await
            .map_err(|_| Status::unavailable("closed"))?;
        tokio::time::sleep(if slow { SLOW } else { FAST }).await;
        Ok(Response::new(HelloReply {
            message: if slow { "slow" } else { "fast" }.to_owned(),
        }))
    }
}

/// What [`drive`] measured.
struct Driven {
    /// Latencies of the successful calls (ns).
    latencies: Vec<u64>,
    /// Calls answered by a slow try.
    slow: u64,
    errors: u64,
    elapsed: Duration,
}

/// `in_flight` callers on `channel` for `duration`.
async fn drive(channel: &MeshChannel, in_flight: usize, duration: Duration) -> Driven {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let mut client = GreeterClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut slow, mut errors) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let request = HelloRequest {
                    name: "bench".into(),
                };
                match client.say_hello(request).await {
                    Ok(reply) => {
                        latencies.push(t0.elapsed().as_nanos() as u64);
                        slow += u64::from(reply.into_inner().message == "slow");
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, slow, errors)
        }));
    }
    let mut driven = Driven {
        latencies: Vec::new(),
        slow: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        if let Ok((latencies, slow, errors)) = task.await {
            driven.latencies.extend(latencies);
            driven.slow += slow;
            driven.errors += errors;
        }
    }
    driven.elapsed = started.elapsed();
    driven
}

#[derive(Debug, Serialize)]
struct Summary {
    target: Target,
    in_flight: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    tries_per_call: f64,
    slow_answers: f64,
}

fn report(rounds: &[Round], json: &std::path::Path) -> anyhow::Result<()> {
    let summaries: Vec<Summary> = [IN_FLIGHT, IN_FLIGHT_BUSY]
        .into_iter()
        .flat_map(|n| Target::ALL.map(move |t| (t, n)))
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
                p999_ms: pick(|r| r.p999_ms),
                tries_per_call: pick(|r| r.tries_per_call),
                slow_answers: pick(|r| r.slow_answers),
            }
        })
        .collect();
    println!("\nmedians over the runs:");
    println!(
        "  {:<17} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>12}",
        "target",
        "in flight",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "tries/call",
        "slow answers"
    );
    for s in &summaries {
        println!(
            "  {:<17} {:>9} {:>8.0} {:>8.2} {:>8.2} {:>8.2} {:>10.3} {:>11.2}%",
            s.target.label(),
            s.in_flight,
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.p999_ms,
            s.tries_per_call,
            s.slow_answers * 100.0
        );
    }
    let get = |t: Target, n: usize| summaries.iter().find(|s| s.target == t && s.in_flight == n);
    println!("\nratios (same run):");
    let mut ratios = Vec::new();
    for n in [IN_FLIGHT, IN_FLIGHT_BUSY] {
        let (Some(off), Some(p95), Some(fixed)) = (
            get(Target::Off, n),
            get(Target::P95, n),
            get(Target::Fixed, n),
        ) else {
            anyhow::bail!("missing measurements");
        };
        let p999_ratio = p95.p999_ms / off.p999_ms;
        let p99_ratio = p95.p99_ms / off.p99_ms;
        let extra = p95.tries_per_call - off.tries_per_call;
        let fixed_p999 = fixed.p999_ms / off.p999_ms;
        let fixed_p99 = fixed.p99_ms / off.p99_ms;
        let fixed_extra = fixed.tries_per_call - off.tries_per_call;
        println!(
            "  {n} in flight, hedging at p95 / no hedging: p99.9 {p999_ratio:.2} (target <= {P999_RATIO_TARGET}: {}), extra tries per call {extra:.3} (target <= {EXTRA_LOAD_TARGET}: {}); p99 {p99_ratio:.2} (slow answers without hedging: {:.2} % of calls, no target)",
            verdict(p999_ratio <= P999_RATIO_TARGET),
            verdict(extra <= EXTRA_LOAD_TARGET),
            off.slow_answers * 100.0
        );
        println!(
            "  {n} in flight, hedging at {} ms / no hedging: p99.9 {fixed_p999:.2}, extra tries per call {fixed_extra:.3}, p99 {fixed_p99:.2} (shown, no target)",
            FIXED_DELAY.as_millis()
        );
        ratios.push(serde_json::json!({
            "in_flight": n,
            "p999_p95_over_off": p999_ratio,
            "p99_p95_over_off": p99_ratio,
            "extra_tries_per_call_p95": extra,
            "p999_fixed_over_off": fixed_p999,
            "p99_fixed_over_off": fixed_p99,
            "extra_tries_per_call_fixed": fixed_extra,
        }));
    }
    crate::write_json(
        json,
        &serde_json::json!({
            "scenario": "hedging",
            "fast_ms": FAST.as_secs_f64() * 1e3,
            "slow_ms": SLOW.as_secs_f64() * 1e3,
            "slow_every": SLOW_EVERY,
            "workers_per_endpoint": WORKERS,
            "rounds": rounds,
            "medians": summaries,
            "ratios": ratios,
        }),
    )
    .context("hedging JSON")
}
