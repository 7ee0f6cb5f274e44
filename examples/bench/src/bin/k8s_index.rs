//! The Kubernetes index at size: a fake API server (kube's real list/watch protocol, the same
//! one `control/tests/k8s.rs` runs against) holding clusters of 50, 500 and 5,000 Services of
//! 10 endpoints each (one EndpointSlice and ten Pods per Service), and the real control
//! service syncing from it.
//!
//! Usage: `cargo run --release -p bench --bin k8s_index -- [--runs N] [--events N]
//! [--json-dir DIR]`
//!
//! For each cluster size it prints:
//! - **time to the first full config**: `mesh_control::start` returning, which is after every
//!   kind is listed and the first config is built, validated and published;
//! - **control heap per endpoint**: live heap bytes (this binary's counting allocator) after
//!   the control service synced, less the heap before it started (the fake API server's objects
//!   are already loaded then), divided by the endpoints. It counts the index, the config built
//!   from it and the published state, and the kube client's buffers: all the control service
//!   holds because of the cluster;
//! - **one EndpointSlice change**: one endpoint of one slice gets a new address; the time until
//!   a new config version is in force, the process CPU time (all threads) and the heap bytes
//!   allocated in between (median of `--events` changes, with min and max). The fake API
//!   server's share (serializing one slice of 10 endpoints) is the same at every size, so
//!   growth with the cluster is the control service's. The last lines judge the target: the
//!   CPU and heap allocated by one change at 50,000 endpoints at most [`MAX_RATIO`] times
//!   those at 500 (proportional to the slice, not the cluster).
//!
//! A separate binary rather than a `bench` scenario because it counts the heap with a global
//! allocator, which the request-path scenarios should not pay.

#[path = "../../../../control/tests/k8s_support/mod.rs"]
mod k8s_support;

use std::alloc::System;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cap::Cap;
use k8s_support::{FakeApi, PODS, SERVICES, SLICES, pod, service, slice};
use mesh_control::k8s::KubernetesSource;
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::TrustDomain;

/// Counts live and total heap bytes (no limit: `cap` is used for its counters).
#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

/// Endpoints per EndpointSlice (and per Service).
const PER_SLICE: usize = 10;
/// Services per namespace.
const PER_NAMESPACE: usize = 100;
/// Cluster sizes, in Services.
const SIZES: [usize; 3] = [50, 500, 5_000];
/// The most one slice change may cost at the largest cluster against the smallest (CPU and
/// heap allocated, medians) for its cost to count as proportional to the slice: 100 times
/// the endpoints, at most twice the cost.
const MAX_RATIO: f64 = 2.0;

struct Args {
    runs: usize,
    events: usize,
    json_dir: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        runs: 3,
        events: 20,
        json_dir: PathBuf::from("target/bench"),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => args.runs = it.next().context("--runs N")?.parse()?,
            "--events" => args.events = it.next().context("--events N")?.parse()?,
            "--json-dir" => args.json_dir = it.next().context("--json-dir DIR")?.into(),
            "-h" | "--help" => {
                println!(
                    "usage: k8s_index [--runs N (default 3)] [--events N per run (default 20)] \
                     [--json-dir DIR]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if args.runs == 0 || args.events == 0 {
        bail!("--runs and --events must be at least 1");
    }
    // Past 99 rounds over the smallest cluster a change would repeat an address (see
    // `measure`).
    if args.events > 99 * SIZES[0] {
        bail!("--events must be at most {}", 99 * SIZES[0]);
    }
    Ok(args)
}

/// What one run at one size measured.
#[derive(Debug, Clone, serde::Serialize)]
struct Run {
    services: usize,
    endpoints: usize,
    first_config_ms: f64,
    heap_bytes_per_endpoint: f64,
    /// Per change: wall time (µs), process CPU (µs), heap bytes allocated (KiB).
    event_wall_us: Vec<f64>,
    event_cpu_us: Vec<f64>,
    event_alloc_kib: Vec<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "Kubernetes index at size: Services of {PER_SLICE} endpoints (one EndpointSlice, \
         {PER_SLICE} Pods each), {} runs, {} slice changes per run",
        args.runs, args.events
    );
    let mut runs = Vec::new();
    for run in 0..args.runs {
        for services in SIZES {
            let measured = runtime.block_on(measure(services, args.events))?;
            println!(
                "  run {} {:>6} endpoints: first config {:>8.0} ms, heap {:>6.0} B/endpoint, \
                 one slice change: {:>8.0} µs wall, {:>8.0} µs CPU, {:>8.0} KiB allocated",
                run + 1,
                measured.endpoints,
                measured.first_config_ms,
                measured.heap_bytes_per_endpoint,
                median(&measured.event_wall_us),
                median(&measured.event_cpu_us),
                median(&measured.event_alloc_kib),
            );
            runs.push(measured);
        }
    }
    print_table(&runs);
    let path = args.json_dir.join("k8s-index.json");
    std::fs::create_dir_all(&args.json_dir)?;
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&serde_json::json!({
            "scenario": "k8s-index",
            "per_slice": PER_SLICE,
            "runs": runs,
        }))?,
    )?;
    println!("raw figures: {}", path.display());
    Ok(())
}

fn print_table(runs: &[Run]) {
    println!(
        "\n| endpoints | first config (ms) | heap per endpoint (B) | one slice change: wall (µs) | CPU (µs) | allocated (KiB) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut per_size = Vec::new();
    for services in SIZES {
        let of_size: Vec<&Run> = runs.iter().filter(|r| r.services == services).collect();
        let spread = |f: &dyn Fn(&Run) -> f64| {
            let values: Vec<f64> = of_size.iter().map(|r| f(r)).collect();
            format!(
                "{:.0} ({:.0}–{:.0})",
                median(&values),
                values.iter().copied().fold(f64::INFINITY, f64::min),
                values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            )
        };
        let cpu = median(
            &of_size
                .iter()
                .map(|r| median(&r.event_cpu_us))
                .collect::<Vec<_>>(),
        );
        let allocs = median(
            &of_size
                .iter()
                .map(|r| median(&r.event_alloc_kib))
                .collect::<Vec<_>>(),
        );
        let wall = median(
            &of_size
                .iter()
                .map(|r| median(&r.event_wall_us))
                .collect::<Vec<_>>(),
        );
        per_size.push((services * PER_SLICE, cpu, allocs, wall));
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            services * PER_SLICE,
            spread(&|r| r.first_config_ms),
            spread(&|r| r.heap_bytes_per_endpoint),
            spread(&|r| median(&r.event_wall_us)),
            spread(&|r| median(&r.event_cpu_us)),
            spread(&|r| median(&r.event_alloc_kib)),
        );
    }
    println!("(median of the runs' medians, min–max over runs in brackets)");
    if let (Some(small), Some(large)) = (per_size.first(), per_size.last()) {
        let cluster = large.0 as f64 / small.0 as f64;
        let (cpu, allocated, wall) = (large.1 / small.1, large.2 / small.2, large.3 / small.3);
        let verdict = |ratio: f64| {
            if ratio <= MAX_RATIO { "met" } else { "NOT met" }
        };
        println!(
            "one slice change at {} against {} endpoints ({cluster:.0}x the cluster), target: \
             proportional to the slice, at most {MAX_RATIO:.0}x:",
            large.0, small.0,
        );
        println!("  CPU {cpu:.2}x: {}", verdict(cpu));
        println!("  heap allocated {allocated:.2}x: {}", verdict(allocated));
        println!(
            "  latency {wall:.2}x (not judged: it includes the fake API server's and the watch's \
             scheduling on a shared machine)"
        );
        println!(
            "proportional to the slice: {}",
            if cpu <= MAX_RATIO && allocated <= MAX_RATIO {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}

/// One cluster of `services` Services: sync, then `events` slice changes.
async fn measure(services: usize, events: usize) -> anyhow::Result<Run> {
    // The previous cluster's tasks finish freeing their memory first: what they free after
    // the baseline would be taken off this cluster's figure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let api = FakeApi::start().await;
    for s in 0..services {
        let (ns, name) = names(s);
        api.apply(SERVICES, service(&ns, &name));
        let pods: Vec<(String, String)> = (0..PER_SLICE)
            .map(|e| (ip(s, e, 0), format!("{name}-{e}")))
            .collect();
        for (_, pod_name) in &pods {
            api.apply(PODS, pod(&ns, pod_name, &name));
        }
        api.apply(SLICES, slice_of(&ns, &name, &pods));
    }
    // Settle what loading left behind before the baseline.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let heap_before = HEAP.allocated();
    let started = Instant::now();
    let mut source = KubernetesSource::new(api.client());
    source.write_status = false;
    source.sync_timeout = Duration::from_secs(600);
    let options = ControlOptions::new(
        TrustDomain::new("mesh.local")?,
        ConfigSource::Kubernetes(source),
    );
    let control = mesh_control::start(options).await?;
    let first_config = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heap = HEAP.allocated().saturating_sub(heap_before);
    let endpoints = services * PER_SLICE;

    let mut run = Run {
        services,
        endpoints,
        first_config_ms: first_config.as_secs_f64() * 1e3,
        heap_bytes_per_endpoint: heap as f64 / endpoints as f64,
        event_wall_us: Vec::new(),
        event_cpu_us: Vec::new(),
        event_alloc_kib: Vec::new(),
    };
    for i in 0..events {
        // A different Service each time, spread over the cluster; its first endpoint moves.
        let s = (i * 7919) % services;
        let (ns, name) = names(s);
        // 7919 is prime: each Service is changed once per `services` changes, each time to
        // the next address (the round), so every change is a change (the address of an
        // earlier round would publish nothing and the wait below would never end) until
        // round 100, past any `--events` used.
        let round = 1 + i / services;
        let pods: Vec<(String, String)> = (0..PER_SLICE)
            .map(|e| {
                let generation = if e == 0 { round } else { 0 };
                (ip(s, e, generation), format!("{name}-{e}"))
            })
            .collect();
        let object = slice_of(&ns, &name, &pods);
        let version = control.config_version();
        let (cpu, allocated, wall) = (process_cpu(), HEAP.total_allocated(), Instant::now());
        api.apply(SLICES, object);
        control.version_after(version).await;
        let allocated = HEAP.total_allocated() - allocated;
        let wall = wall.elapsed();
        let cpu = process_cpu().saturating_sub(cpu);
        run.event_wall_us.push(wall.as_secs_f64() * 1e6);
        run.event_cpu_us.push(cpu.as_secs_f64() * 1e6);
        run.event_alloc_kib.push(allocated as f64 / 1024.0);
        // Let the change's tail (the kube client, the fake server) finish before the next.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    control.shutdown().await;
    drop(api);
    Ok(run)
}

/// The namespace and name of Service `s` (also its service account's name).
fn names(s: usize) -> (String, String) {
    (format!("ns-{}", s / PER_NAMESPACE), format!("svc-{s}"))
}

/// Endpoint `e` of Service `s`; `generation` moves it to another address.
fn ip(s: usize, e: usize, generation: usize) -> String {
    let n = s * PER_SLICE + e;
    format!(
        "{}.{}.{}.{}",
        10 + generation % 100,
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

fn slice_of(ns: &str, name: &str, pods: &[(String, String)]) -> serde_json::Value {
    let endpoints: Vec<(&str, &str)> = pods
        .iter()
        .map(|(ip, pod)| (ip.as_str(), pod.as_str()))
        .collect();
    slice(ns, &format!("{name}-a"), name, 50051, &endpoints)
}

/// CPU time of every thread of this process so far (from `/proc/self/task/*/schedstat`).
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
