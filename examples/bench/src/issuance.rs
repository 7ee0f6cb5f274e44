//! Scenario `issuance`: `Certify` calls per second against the control service, over reused
//! connections, next to the raw rate of what each call must do at least (parse and check a CSR,
//! sign a certificate with rcgen) measured in the same run.
//!
//! The control service runs on one worker thread, and its rate per core is the calls it
//! answered over the CPU time its threads spent (their `schedstat`): on this 2-core machine the
//! callers share the cores with it, so its thread is not always running, and calls per second
//! of wall-clock time (printed too) would count the callers' share against it. The raw rate
//! is measured on one thread that runs throughout, so it is per core as well.
//!
//! The caller's identity serves a service, so its certificates carry the DNS names a
//! workload's do (`bench.default.svc`, `bench.default.svc.cluster.local`), and the raw rate
//! signs the same names; a third figure, raw signing without names, shows what the names
//! cost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mesh_control::{Ca, ConfigSource, ControlOptions};
use mesh_core::proto::CertifyRequest;
use mesh_core::proto::control_client::ControlClient;
use mesh_core::tls::{SpiffeServerVerifier, TrustStore, crypto_provider};
use mesh_core::{SpiffeId, TrustDomain};
use rcgen::{CertificateParams, KeyPair};
use tonic::transport::Channel;

use crate::Args;

/// Calls in flight, over this many connections.
const IN_FLIGHT: usize = 16;
const CONNECTIONS: usize = 2;
/// The DNS names the control service gives the bench identity (it serves `bench.default`).
const NAMES: [&str; 2] = ["bench.default.svc", "bench.default.svc.cluster.local"];
/// Distinct CSRs cycled through (the control service treats each call on its own).
const CSRS: usize = 256;
/// The target: Certify's rate per core at least this share of the raw parse + sign rate.
const CERTIFY_RATIO_TARGET: f64 = 0.9;
/// The name of the control service's runtime threads, whose CPU time is read.
const CONTROL_THREADS: &str = "bench-control";

const CONFIG: &str = r#"
services:
  - name: bench
    namespace: default
    endpoints:
      - {address: "127.0.0.1:9", identity: "spiffe://mesh.local/ns/default/sa/bench"}
bootstrapTokens:
  - {token: bench-issuance-token, namespace: default, serviceAccount: bench}
"#;

/// Runs the scenario.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let seconds = Duration::from_secs(args.seconds.clamp(1, 30));
    println!(
        "\nissuance benchmark: {} s x {} runs",
        seconds.as_secs(),
        args.runs
    );
    let td = TrustDomain::new("mesh.local")?;
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..CSRS)
            .map(|_| csr())
            .collect::<anyhow::Result<Vec<_>>>()?,
    );

    // The control service on a single worker thread: its rate is per core.
    let control_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(CONTROL_THREADS)
        .enable_all()
        .build()?;
    let mut options = ControlOptions::new(td.clone(), ConfigSource::Inline(CONFIG.to_owned()));
    // The per-identity issuance limit is not what is measured.
    options.certify_rate = mesh_control::CertifyRateLimit {
        burst: u32::MAX,
        refill: Duration::from_millis(1),
        ..Default::default()
    };
    let control = control_rt.block_on(mesh_control::start(options))?;
    let bundle = control.trust_bundle();
    let control_id = control.identity().clone();
    let addr = control.addr();

    let load_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut certify_rates = Vec::new();
    let mut wall_rates = Vec::new();
    let mut raw_rates = Vec::new();
    let mut bare_rates = Vec::new();
    for run in 0..args.runs {
        let measured = load_rt.block_on(certify_rate(
            addr,
            TrustStore::new(bundle.clone()),
            control_id.clone(),
            csrs.clone(),
            seconds,
        ))?;
        let rate = measured.per_core();
        let raw = raw_rate(&td, &csrs, &NAMES.map(String::from), seconds)?;
        let bare = raw_rate(&td, &csrs, &[], seconds)?;
        println!(
            "  run {}: Certify {rate:>8.0}/s per core ({:.0}/s wall, the control's threads busy {:.0} % of a core); \
             raw parse + sign {raw:>8.0}/s on one core; raw without DNS names {bare:>8.0}/s",
            run + 1,
            measured.per_second(),
            measured.busy() * 100.0,
        );
        certify_rates.push(rate);
        wall_rates.push(measured.per_second());
        raw_rates.push(raw);
        bare_rates.push(bare);
    }
    // The clients' connection tasks live on the load runtime: dropped with it, so that the
    // control service's shutdown has no open connection to wait for.
    drop(load_rt);
    control_rt.block_on(control.shutdown());

    let certify = crate::median(certify_rates.clone());
    let raw = crate::median(raw_rates.clone());
    let bare = crate::median(bare_rates.clone());
    println!("\nmedians: Certify {certify:.0}/s per core, raw {raw:.0}/s per core");
    println!(
        "DNS names: raw signing with two names / without = {:.2}",
        raw / bare
    );
    println!(
        "ratio: Certify / raw = {:.2} per core  (what TLS, HTTP/2, gRPC and token checks cost around the signature; target >= {CERTIFY_RATIO_TARGET}: {})",
        certify / raw,
        crate::verdict(certify / raw >= CERTIFY_RATIO_TARGET)
    );
    crate::write_json(
        &args.json("issuance"),
        &serde_json::json!({
            "scenario": "issuance",
            "in_flight": IN_FLIGHT,
            "connections": CONNECTIONS,
            "certify_per_core_second": certify_rates,
            "certify_per_second": wall_rates,
            "raw_per_second": raw_rates,
            "raw_without_names_per_second": bare_rates,
            "medians": {
                "certify": certify,
                "raw": raw,
                "raw_without_names": bare,
                "ratio": certify / raw,
                "names_ratio": raw / bare,
            },
        }),
    )
}

fn csr() -> anyhow::Result<Vec<u8>> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    Ok(CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .der()
        .to_vec())
}

/// What one Certify run did.
struct Measured {
    calls: u64,
    elapsed: Duration,
    /// CPU time of the control service's threads meanwhile.
    control_cpu: Duration,
}

impl Measured {
    /// Calls per second of the control service's CPU time.
    fn per_core(&self) -> f64 {
        self.calls as f64 / self.control_cpu.as_secs_f64().max(1e-9)
    }

    /// Calls per second of wall-clock time.
    fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// The share of one core the control service's threads used.
    fn busy(&self) -> f64 {
        self.control_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// CPU time so far of this process's threads named [`CONTROL_THREADS`].
fn control_cpu() -> Duration {
    crate::procs::threads_cpu(std::process::id(), Some(CONTROL_THREADS))
}

/// `Certify` calls with [`IN_FLIGHT`] callers over [`CONNECTIONS`] connections.
async fn certify_rate(
    addr: SocketAddr,
    trust: TrustStore,
    control: SpiffeId,
    csrs: Arc<Vec<Vec<u8>>>,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(channel(addr, trust.clone(), control.clone()).await?);
    }
    // A warm-up call per connection: handshakes are not what is measured.
    for channel in &channels {
        call(channel.clone(), &csrs[0]).await?;
    }
    let cpu_before = control_cpu();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for i in 0..IN_FLIGHT {
        let channel = channels[i % CONNECTIONS].clone();
        let csrs = csrs.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut n = i;
            while Instant::now() < deadline {
                if call(channel.clone(), &csrs[n % csrs.len()]).await.is_ok() {
                    done += 1;
                }
                n += IN_FLIGHT;
            }
            done
        }));
    }
    let mut calls = 0;
    for task in tasks {
        calls += task.await?;
    }
    Ok(Measured {
        calls,
        elapsed: started.elapsed(),
        control_cpu: control_cpu().saturating_sub(cpu_before),
    })
}

async fn call(channel: Channel, csr: &[u8]) -> anyhow::Result<()> {
    ControlClient::new(channel)
        .certify(CertifyRequest {
            csr_der: csr.to_vec(),
            token: "bench-issuance-token".into(),
        })
        .await
        .context("Certify")?;
    Ok(())
}

/// Parse-and-sign operations per second on this thread, with the same CA code the control
/// service runs.
fn raw_rate(
    td: &TrustDomain,
    csrs: &[Vec<u8>],
    names: &[String],
    duration: Duration,
) -> anyhow::Result<f64> {
    let ca = Ca::ephemeral(td)?;
    let id = SpiffeId::from_service_account(td, "default", "bench")?;
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < duration {
        ca.sign_with_names(
            &csrs[done as usize % csrs.len()],
            &id,
            names,
            Duration::from_secs(3600),
        )?;
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// A channel to the control service over TLS, verifying its identity, without a client
/// certificate (as a workload asking for its first one).
async fn channel(
    addr: SocketAddr,
    trust: TrustStore,
    control: SpiffeId,
) -> anyhow::Result<Channel> {
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(trust, control)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    bench::tls_channel(addr, Arc::new(tls)).await
}
