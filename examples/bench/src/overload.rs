//! Scenario `overload`: three greeter endpoints, one of them rate-limited (it admits
//! [`LIMIT_PER_SECOND`] calls a second and answers the rest RESOURCE_EXHAUSTED with
//! `grpc-retry-pushback-ms`, as a server that sheds load does); how many calls succeed and what
//! share is offered to the limited endpoint, with the mesh's overload-aware P2C against a plain
//! round robin over the same three kinds of endpoint.
//!
//! The limit is GCRA arithmetic from `mesh_core::rate`, so the shedding endpoint behaves as
//! the mesh's own local rate limit does. The endpoints work with timers, not CPU, so the
//! figures hold on a 2-core machine.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::hello::greeter_server::{Greeter, GreeterServer};
use examples::hello::{HelloReply, HelloRequest};
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::TrustDomain;
use mesh_core::rate::{TokenBucket, TokenBucketConfig};
use mesh_tonic::{MeshLayer, MeshTonicExt};
use mesh_tower::Mesh;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::callers::{Caller, RoundRobin};
use crate::plain_tls::{self, PlainTls};
use crate::{Args, median, verdict};

/// Time each endpoint spends on a call.
const WORK: Duration = Duration::from_millis(2);
/// What the limited endpoint admits per second.
const LIMIT_PER_SECOND: u32 = 100;
/// How long the limited endpoint asks to be spared when it refuses.
const PUSHBACK: Duration = Duration::from_millis(500);
/// Calls kept in flight.
const IN_FLIGHT: usize = 8;
const WARMUP: Duration = Duration::from_secs(1);
const LIMITED: &str = "limited";
/// Targets: the mesh's success rate, and the share of calls it offers the limited endpoint.
const MIN_SUCCESS: f64 = 0.99;
const MAX_LIMITED_SHARE: f64 = 0.05;

/// One measured round.
#[derive(Debug, Clone, Copy)]
struct Round {
    calls: u64,
    ok: u64,
    /// Calls that reached the limited endpoint (admitted or refused).
    offered_limited: u64,
    rps: f64,
}

impl Round {
    fn success(&self) -> f64 {
        self.ok as f64 / self.calls.max(1) as f64
    }

    fn limited_share(&self) -> f64 {
        self.offered_limited as f64 / self.calls.max(1) as f64
    }
}

/// Runs the scenario.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    println!(
        "\noverload benchmark: {} s x {} runs; three endpoints at {WORK:?} per call, one admitting {LIMIT_PER_SECOND} calls/s (RESOURCE_EXHAUSTED, pushback {PUSHBACK:?}); {IN_FLIGHT} calls in flight",
        args.seconds, args.runs
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (mesh, plain) = rt.block_on(measure(Duration::from_secs(args.seconds), args.runs))?;
    let med = |rounds: &[Round], f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    println!("| balancer | req/s | success | offered to the limited endpoint |\n|---|---|---|---|");
    for (label, rounds) in [
        ("mesh (overload-aware P2C)", &mesh),
        ("round robin", &plain),
    ] {
        println!(
            "| {label} | {:.0} | {:.2} % | {:.1} % |",
            med(rounds, |r| r.rps),
            med(rounds, Round::success) * 100.0,
            med(rounds, Round::limited_share) * 100.0
        );
    }
    let success = med(&mesh, Round::success);
    let share = med(&mesh, Round::limited_share);
    println!(
        "mesh success {:.2} % (target >= {:.0} %): {}",
        success * 100.0,
        MIN_SUCCESS * 100.0,
        verdict(success >= MIN_SUCCESS)
    );
    println!(
        "mesh share offered to the limited endpoint {:.1} % (target <= {:.0} %; round robin {:.1} %): {}",
        share * 100.0,
        MAX_LIMITED_SHARE * 100.0,
        med(&plain, Round::limited_share) * 100.0,
        verdict(share <= MAX_LIMITED_SHARE)
    );
    let json = |rounds: &[Round]| -> Vec<serde_json::Value> {
        rounds
            .iter()
            .map(|r| {
                serde_json::json!({
                    "calls": r.calls, "ok": r.ok, "offered_limited": r.offered_limited, "rps": r.rps
                })
            })
            .collect()
    };
    crate::write_json(
        &args.json("overload"),
        &serde_json::json!({ "mesh": json(&mesh), "round_robin": json(&plain) }),
    )
}

async fn measure(seconds: Duration, runs: usize) -> anyhow::Result<(Vec<Round>, Vec<Round>)> {
    let mut meshed = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..3 {
        meshed.push(TcpListener::bind("127.0.0.1:0").await?);
        plain.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let meshed_addrs: Vec<SocketAddr> = meshed
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<_, _>>()?;
    let plain_addrs: Vec<SocketAddr> = plain
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<_, _>>()?;
    let trust_domain = TrustDomain::new("mesh.local")?;
    let control = mesh_control::start(ControlOptions::new(
        trust_domain.clone(),
        ConfigSource::Inline(config(&meshed_addrs)),
    ))
    .await?;
    let dir = tempfile::tempdir()?;
    let settings = crate::BenchSettings::new(&control, &trust_domain, dir.path())?;

    // The servers: the last of each set is the limited one.
    let meshed_limited = Shedding::new(LIMITED, Some(LIMIT_PER_SECOND));
    let plain_limited = Shedding::new(LIMITED, Some(LIMIT_PER_SECOND));
    let server = Mesh::start(settings.for_account("greeter", Some("greeter"))?).await?;
    for (i, listener) in meshed.into_iter().enumerate() {
        let greeter = if i == 2 {
            meshed_limited.clone()
        } else {
            Shedding::new("open", None)
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
            plain_limited.clone()
        } else {
            Shedding::new("open", None)
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(GreeterServer::new(greeter))
                .serve_with_incoming(plain_tls::incoming(listener, tls.server.clone())),
        );
    }

    let client = Mesh::start(settings.for_account("bench-client", None)?).await?;
    let mesh_channel = client.channel("greeter.default").await?;
    let mut channels = Vec::new();
    for addr in plain_addrs {
        channels.push(plain_tls::tls_channel(addr, tls.client.clone()).await?);
    }
    let round_robin = RoundRobin::new(channels);
    let (mut mesh_rounds, mut plain_rounds) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        for meshed in [true, false] {
            let (caller, limited) = if meshed {
                (Caller::Mesh(mesh_channel.clone()), &meshed_limited)
            } else {
                (Caller::RoundRobin(round_robin.clone()), &plain_limited)
            };
            let _ = drive(&caller, WARMUP).await;
            let before = limited.offered.load(Ordering::Relaxed);
            let (calls, ok, elapsed) = drive(&caller, seconds).await;
            let round = Round {
                calls,
                ok,
                offered_limited: limited.offered.load(Ordering::Relaxed) - before,
                rps: calls as f64 / elapsed.as_secs_f64(),
            };
            println!(
                "  run {run} {:<26} {:>6.0} req/s  success {:>6.2} %  offered to the limited endpoint {:>5.1} %",
                if meshed {
                    "mesh (overload-aware P2C)"
                } else {
                    "round robin"
                },
                round.rps,
                round.success() * 100.0,
                round.limited_share() * 100.0
            );
            if meshed {
                mesh_rounds.push(round);
            } else {
                plain_rounds.push(round);
            }
        }
    }
    drop(client);
    drop(server);
    control.shutdown().await;
    Ok((mesh_rounds, plain_rounds))
}

fn config(addrs: &[SocketAddr]) -> String {
    let endpoints: String = addrs
        .iter()
        .map(|a| {
            format!(
                "      - address: \"{a}\"\n        identity: spiffe://mesh.local/ns/default/sa/greeter\n"
            )
        })
        .collect();
    format!(
        "services:\n  - name: greeter\n    endpoints:\n{endpoints}\
         bootstrapTokens:\n  - {{token: greeter-bench-token, namespace: default, serviceAccount: greeter}}\n  \
         - {{token: bench-client-bench-token, namespace: default, serviceAccount: bench-client}}\n"
    )
}

/// A greeter that takes [`WORK`] per call and, when limited, admits only so many calls a
/// second, refusing the others at once.
#[derive(Clone)]
struct Shedding {
    name: &'static str,
    limit: Option<(TokenBucketConfig, Arc<Mutex<TokenBucket>>)>,
    /// Calls received (admitted or not).
    offered: Arc<AtomicU64>,
}

impl Shedding {
    fn new(name: &'static str, per_second: Option<u32>) -> Self {
        let limit = per_second.map(|n| {
            let config = TokenBucketConfig {
                burst: (n / 10).max(1),
                refill: Duration::from_secs(1) / n.max(1),
            };
            (
                config,
                Arc::new(Mutex::new(TokenBucket::new(Instant::now()))),
            )
        });
        Self {
            name,
            limit,
            offered: Arc::new(AtomicU64::new(0)),
        }
    }
}

#[tonic::async_trait]
impl Greeter for Shedding {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        self.offered.fetch_add(1, Ordering::Relaxed);
        if let Some((config, bucket)) = &self.limit {
            let admitted = bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .try_take(*config, Instant::now());
            if admitted.is_err() {
                let mut status = Status::resource_exhausted("over the limit");
                status.metadata_mut().insert(
                    "grpc-retry-pushback-ms",
                    PUSHBACK
                        .as_millis()
                        .to_string()
                        .parse()
                        .map_err(|_| Status::internal("pushback"))?,
                );
                return Err(status);
            }
        }
        tokio::time::sleep(WORK).await;
        Ok(Response::new(HelloReply {
            message: self.name.to_owned(),
        }))
    }
}

/// [`IN_FLIGHT`] callers for `duration`: calls, successes, time taken.
async fn drive(caller: &Caller, duration: Duration) -> (u64, u64, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let caller = caller.clone_handle();
        tasks.push(tokio::spawn(async move {
            let (mut calls, mut ok) = (0u64, 0u64);
            while Instant::now() < deadline {
                calls += 1;
                ok += u64::from(caller.say_hello().await.is_ok());
            }
            (calls, ok)
        }));
    }
    let (mut calls, mut ok) = (0, 0);
    for task in tasks {
        if let Ok((c, o)) = task.await {
            calls += c;
            ok += o;
        }
    }
    (calls, ok, started.elapsed())
}
