//! Scenario `rate-limit`: a meshed greeter with a total limit of [`LIMIT`] calls per second,
//! driven by one meshed caller with [`IN_FLIGHT`] calls in flight, far more than the limit;
//! the rate the server admits is set against the limit (target: within ±5 %).
//!
//! The first second is a warm-up that also drains the limit's burst (one second's worth), so
//! the measured window sees the sustained rate only. Refused calls (RESOURCE_EXHAUSTED) come
//! back at once; the caller calls again at once, so the server is offered many times the
//! limit throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use examples::PlainGreeter;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::TrustDomain;
use mesh_tonic::MeshTonicExt;
use mesh_tower::Mesh;
use tokio::net::TcpListener;

use crate::{Args, median, verdict};

/// The limit, calls per second.
const LIMIT: u32 = 500;
/// Calls in flight at once.
const IN_FLIGHT: usize = 64;
/// How far the admitted rate may be from the limit.
const TOLERANCE: f64 = 0.05;

/// Runs the scenario.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let seconds = Duration::from_secs(args.seconds.clamp(2, 60));
    println!(
        "\nrate-limit benchmark: a total limit of {LIMIT}/s, {IN_FLIGHT} calls in flight, \
         {} s x {} runs",
        seconds.as_secs(),
        args.runs
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rates = Vec::new();
    let mut offered = Vec::new();
    for run in 0..args.runs {
        // A fresh control service and server per run: each starts with a full burst.
        let (admitted, refused) = rt.block_on(one_run(seconds))?;
        let secs = seconds.as_secs_f64();
        let rate = admitted as f64 / secs;
        println!(
            "  run {}: admitted {rate:>7.1}/s ({admitted} calls), refused {:>8.0}/s",
            run + 1,
            refused as f64 / secs
        );
        rates.push(rate);
        offered.push((admitted + refused) as f64 / secs);
    }
    let rate = median(rates.clone());
    let ratio = rate / f64::from(LIMIT);
    println!(
        "\nmedian: admitted {rate:.1}/s against a limit of {LIMIT}/s (offered {:.0}/s): \
         {:+.2} %; target ±{:.0} %: {}",
        median(offered.clone()),
        (ratio - 1.0) * 100.0,
        TOLERANCE * 100.0,
        verdict((ratio - 1.0).abs() <= TOLERANCE)
    );
    crate::write_json(
        &args.json("rate-limit"),
        &serde_json::json!({
            "scenario": "rate-limit",
            "limit_per_second": LIMIT,
            "in_flight": IN_FLIGHT,
            "seconds": seconds.as_secs(),
            "admitted_per_second": rates,
            "offered_per_second": offered,
            "medians": {"admitted": rate, "ratio": ratio},
        }),
    )
}

/// One run: the admitted and refused calls of the measured window.
async fn one_run(window: Duration) -> anyhow::Result<(u64, u64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let td = TrustDomain::new("mesh.local")?;
    let config = format!(
        r#"
services:
  - name: greeter
    endpoints:
      - address: "{addr}"
        identity: spiffe://mesh.local/ns/default/sa/greeter
rateLimits:
  - name: greeter-total
    target: {{service: greeter}}
    total: {{requestsPerSecond: {LIMIT}}}
bootstrapTokens:
  - {{token: greeter-bench-token, namespace: default, serviceAccount: greeter}}
  - {{token: caller-bench-token, namespace: default, serviceAccount: caller}}
"#
    );
    let control = mesh_control::start(ControlOptions::new(
        td.clone(),
        ConfigSource::Inline(config),
    ))
    .await?;
    let dir = tempfile::tempdir()?;
    let settings = crate::BenchSettings::new(&control, &td, dir.path())?;
    let server = Mesh::start(settings.for_account("greeter", Some("greeter"))?).await?;
    let server_task = bench::spawn_meshed_greeter(server, listener, PlainGreeter)?;
    let caller = Mesh::start(settings.for_account("caller", None)?).await?;
    let client = GreeterClient::new(caller.channel("greeter.default").await?);

    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        let mut client = client.clone();
        let (admitted, refused) = (admitted.clone(), refused.clone());
        let (counting, stop) = (counting.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = client
                    .say_hello(HelloRequest {
                        name: "bench".into(),
                    })
                    .await;
                // Calls that end inside the window are counted.
                if !counting.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                    continue;
                }
                match result {
                    Ok(_) => admitted.fetch_add(1, Ordering::Relaxed),
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(status) => anyhow::bail!("unexpected failure: {status}"),
                };
            }
            Ok(())
        }));
    }
    // Warm-up: connections, and the burst drained.
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let measured = started.elapsed();
    for task in tasks {
        task.await??;
    }
    server_task.abort();
    drop(caller);
    control.shutdown().await;
    // Scaled to the window asked for, should the timer have overslept.
    let scale = window.as_secs_f64() / measured.as_secs_f64();
    let scaled = |n: &AtomicU64| (n.load(Ordering::Relaxed) as f64 * scale).round() as u64;
    Ok((scaled(&admitted), scaled(&refused)))
}
