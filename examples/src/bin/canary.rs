//! A canary release, live: v1 and v2 of the greeter behind one service, 90/10 by a weighted
//! GRPCRoute, with `x-canary: true` pinning a request to v2. Traffic runs all the time and the
//! split is printed every second; edit the weights in the config file and the split follows.
//!
//! Usage: `canary [--config PATH] [--seconds N] [--auto]`. `--auto` edits the file itself
//! (90/10, then 50/50, then 0/100) and checks that the split followed each edit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use examples::{GreeterReplica, init_logging};
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::TrustDomain;
use mesh_core::snapshot::ServiceName;
use mesh_tonic::{MeshChannel, MeshLayer, MeshTonicExt};
use mesh_tower::{Mesh, MeshSettings, TokenSource};
use tokio::net::TcpListener;

/// Callers running at once.
const CALLERS: usize = 8;

struct Args {
    config: PathBuf,
    seconds: u64,
    auto: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        config: PathBuf::from("canary.yaml"),
        seconds: 60,
        auto: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => args.config = it.next().context("--config needs a path")?.into(),
            "--seconds" => {
                args.seconds = it.next().context("--seconds needs a number")?.parse()?;
            }
            "--auto" => args.auto = true,
            other => bail!(
                "unknown argument {other:?}; usage: canary [--config PATH] [--seconds N] [--auto]"
            ),
        }
    }
    if args.auto {
        args.seconds = args.seconds.min(9);
    }
    Ok(args)
}

fn config(v1: &str, v2: &str, weights: (u32, u32)) -> String {
    let (w1, w2) = weights;
    format!(
        r#"# The canary: edit the weights below while `canary` runs.
services:
  - name: greeter
    namespace: default
    routes:
      - name: greeter-canary
        kind: grpc
        rules:
          - name: pinned            # x-canary: true always goes to v2
            matches:
              - headers: [{{name: x-canary, value: "true"}}]
            backendRefs: [{{name: greeter-v2}}]
          - name: split
            backendRefs:
              - {{name: greeter-v1, weight: {w1}}}
              - {{name: greeter-v2, weight: {w2}}}
  - name: greeter-v1
    endpoints:
      - address: "{v1}"
        labels: {{version: v1}}
        identity: spiffe://mesh.local/ns/default/sa/greeter
  - name: greeter-v2
    endpoints:
      - address: "{v2}"
        labels: {{version: v2}}
        identity: spiffe://mesh.local/ns/default/sa/greeter
bootstrapTokens:
  - token: greeter-canary-token
    namespace: default
    serviceAccount: greeter
  - token: client-canary-token
    namespace: default
    serviceAccount: canary-client
"#
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging("warn");
    let args = parse_args()?;
    let trust_domain = TrustDomain::new("mesh.local")?;
    let listeners = [
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    ];
    let (v1, v2) = (
        listeners[0].local_addr()?.to_string(),
        listeners[1].local_addr()?.to_string(),
    );
    std::fs::write(&args.config, config(&v1, &v2, (90, 10)))
        .with_context(|| format!("writing {}", args.config.display()))?;

    let control = mesh_control::start(ControlOptions::new(
        trust_domain.clone(),
        ConfigSource::File(args.config.clone()),
    ))
    .await?;
    let state = tempfile::tempdir()?;
    let anchors = state.path().join("trust-bundle.pem");
    std::fs::write(&anchors, control.trust_bundle_pem())?;
    let settings = |account: &str, token: &str, service: Option<ServiceName>| {
        let mut s = MeshSettings::new(
            control.addr().to_string(),
            trust_domain.clone(),
            &anchors,
            TokenSource::Inline(token.to_owned()),
        )
        .with_node(account);
        s.service_account = account.to_owned();
        s.service = service;
        s
    };

    let mut servers = Vec::new();
    for (listener, version) in listeners.into_iter().zip(["greeter-v1", "greeter-v2"]) {
        let service = Some(ServiceName::new("default", version)?);
        let mesh = Mesh::start(settings("greeter", "greeter-canary-token", service)).await?;
        let replica = GreeterReplica::new(version, mesh.identity().id().to_string());
        let incoming = mesh.tonic_incoming(listener)?;
        servers.push(tokio::spawn(async move {
            let server = mesh.tonic_server();
            let _mesh = mesh;
            server
                .layer(MeshLayer::new())
                .add_service(GreeterServer::new(replica))
                .serve_with_incoming(incoming)
                .await
        }));
    }

    let client_mesh = Mesh::start(settings("canary-client", "client-canary-token", None)).await?;
    let channel = client_mesh.channel("greeter.default").await?;

    println!("greeter.default: greeter-v1 at {v1}, greeter-v2 at {v2}");
    if args.auto {
        println!("--auto: the weights go 90/10, then 50/50, then 0/100\n");
    } else {
        println!(
            "edit {} (the weights under `split`) and watch the split follow; Ctrl-C stops\n",
            args.config.display()
        );
    }

    let counts = Arc::new(Counts::default());
    let running = Arc::new(AtomicBool::new(true));
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        callers.push(tokio::spawn(call_forever(
            channel.clone(),
            counts.clone(),
            running.clone(),
        )));
    }

    let plan: [(u64, (u32, u32)); 2] = [(3, (50, 50)), (6, (0, 100))];
    let mut expected_v2 = 10.0;
    let mut failures = Vec::new();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    for second in 1..=args.seconds {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let (v1_calls, v2_calls, failed) = counts.take();
        let total = (v1_calls + v2_calls).max(1) as f64;
        let pinned = pinned_share(&channel).await;
        let v2_share = 100.0 * v2_calls as f64 / total;
        println!(
            "{:>4.1}s  v1 {:>5.1}%  v2 {:>5.1}%  ({} calls, {} failed)   x-canary: true -> v2 {:>3.0}%",
            started.elapsed().as_secs_f64(),
            100.0 * v1_calls as f64 / total,
            v2_share,
            v1_calls + v2_calls,
            failed,
            pinned
        );
        if args.auto {
            // Each edit is checked one full second after it was made.
            if second % 3 == 2 && (v2_share - expected_v2).abs() > 10.0 {
                failures.push(format!(
                    "at {second}s v2 had {v2_share:.1}%, expected about {expected_v2}%"
                ));
            }
            if failed > 0 {
                failures.push(format!("{failed} calls failed at {second}s"));
            }
            if pinned < 100.0 {
                failures.push(format!(
                    "x-canary: true reached v2 only {pinned:.0}% at {second}s"
                ));
            }
            if let Some((_, weights)) = plan.iter().find(|(at, _)| *at == second) {
                println!("        -> editing the config: {}/{}", weights.0, weights.1);
                std::fs::write(&args.config, config(&v1, &v2, *weights))?;
                expected_v2 = f64::from(weights.1);
            }
        }
    }
    running.store(false, Ordering::Relaxed);
    for caller in callers {
        let _ = caller.await;
    }
    drop(client_mesh);
    for server in servers {
        server.abort();
    }
    control.shutdown().await;
    if !failures.is_empty() {
        bail!(
            "the split did not follow the config:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    v1: AtomicU64,
    v2: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn take(&self) -> (u64, u64, u64) {
        (
            self.v1.swap(0, Ordering::Relaxed),
            self.v2.swap(0, Ordering::Relaxed),
            self.failed.swap(0, Ordering::Relaxed),
        )
    }
}

async fn call_forever(channel: MeshChannel, counts: Arc<Counts>, running: Arc<AtomicBool>) {
    let mut client = GreeterClient::new(channel);
    while running.load(Ordering::Relaxed) {
        let reply = client
            .say_hello(HelloRequest {
                name: "canary".into(),
            })
            .await;
        let message = reply.map(|r| r.into_inner().message);
        match message.as_deref().map(version_of) {
            Ok(Some("greeter-v1")) => counts.v1.fetch_add(1, Ordering::Relaxed),
            Ok(Some("greeter-v2")) => counts.v2.fetch_add(1, Ordering::Relaxed),
            _ => counts.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The share of 20 `x-canary: true` calls that v2 served, in percent.
async fn pinned_share(channel: &MeshChannel) -> f64 {
    let mut client = GreeterClient::new(channel.clone());
    let mut by_version: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..20 {
        let mut request = tonic::Request::new(HelloRequest {
            name: "pinned".into(),
        });
        request.metadata_mut().insert(
            "x-canary",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        if let Ok(reply) = client.say_hello(request).await
            && let Some(version) = version_of(&reply.into_inner().message)
        {
            *by_version.entry(version.to_owned()).or_default() += 1;
        }
    }
    f64::from(by_version.get("greeter-v2").copied().unwrap_or(0)) * 5.0
}

/// `greeter-v1` from `Hello, x! from greeter-v1 (...) to ...`.
fn version_of(message: &str) -> Option<&str> {
    message.split(" from ").nth(1)?.split(' ').next()
}
