//! A profiling harness for the per-call path: `N` greeter calls through the mesh, or through
//! plain tonic over the mesh's own mTLS (same certificates, same verifiers, no mesh layers),
//! so that `perf record` or `valgrind --tool=callgrind` sees only the cost of the layers.
//!
//! Usage: `cargo run --profile profiling -p bench --bin profile_call --
//! [mesh|mesh-clients|tonic] [--calls N] [--in-flight K] [--connections C] [--crossed]
//! [--rate-limit]` (`mesh`: one client with a pool of C connections; `mesh-clients`: C clients of
//! one connection each, callers spread over them as over tonic's C channels; `--crossed`: the
//! mesh's clients call the plain tonic server and plain tonic calls the meshed one, which
//! tells the client's share of a difference from the server's).
//!
//! The server runs on one thread and the caller on another (each a current-thread runtime,
//! pinned to cores 0 and 1 where the OS allows), as in the `bench` program. It prints calls
//! per second and each side's CPU time per call. Under callgrind, run it twice with different
//! `--calls` and divide the difference in instructions by the difference in calls: start-up
//! (certificates, handshakes) cancels out. The `profiling` profile is the release profile with
//! line tables, so that profiles name source lines; the binary is then
//! `target/profiling/profile_call`.
//!
//! `profile_call instructions` runs the rest under callgrind itself and prints instructions
//! per call for the server and the client separately (see [`instructions`]); with `--check
//! FILE` it is the CI guard against a committed baseline.

mod callgrind;
mod instructions;
mod window;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use examples::PlainGreeter;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::snapshot::ServiceName;
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tonic::MeshTonicExt;
use mesh_tower::{Mesh, MeshSettings, TokenSource};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// What the calls go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Mesh,
    /// One mesh client per connection, callers spread over them as over tonic's channels.
    MeshClients,
    Tonic,
}

struct Args {
    target: Target,
    calls: usize,
    in_flight: usize,
    connections: usize,
    crossed: bool,
    /// The greeter has a total and a per-identity rate limit (never reached), to measure
    /// what checking them costs a call.
    rate_limit: bool,
}

const USAGE: &str = "usage: cargo run --profile profiling -p bench --bin profile_call -- [mesh|mesh-clients|tonic] [--calls N] [--in-flight K] [--connections C] [--crossed] [--rate-limit]
       cargo run --profile profiling -p bench --bin profile_call -- instructions [--check FILE] [--write FILE] (--help after it for more)";

const HELP: &str = "\
N greeter calls through the mesh, or through plain tonic over the mesh's own mTLS, for perf or
callgrind (the `profiling` profile is the release build with line tables). Prints calls per
second and each side's CPU time per call.

  mesh            one mesh client with a pool of C connections (default)
  mesh-clients    C mesh clients of one connection each
  tonic           plain tonic over C channels
  --calls N       calls to make (default 20000)
  --in-flight K   calls in flight at once (default 1)
  --connections C connections (default 1)
  --crossed       the mesh's clients call the plain tonic server and plain tonic the meshed one
  --rate-limit    the greeter has a total and a per-identity rate limit, never reached (what
                  checking them costs; compare with a run without)
  -h, --help      this text

`profile_call instructions` runs this program under callgrind itself and prints instructions
per call for the server and for the client apart, the mesh against plain tonic, at 1 and at 64
in flight; with --check FILE it fails when the mesh's figures exceed a committed baseline (the
CI guard). By hand: each side marks the measured calls by calling `profile_window_start_server`
/ `_client` and `profile_window_end_*`; run valgrind --tool=callgrind --separate-threads=yes
--zero-before='*profile_window_start_*' --dump-before='*profile_window_end_*' and divide each
side's window dump by --calls.
";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        target: Target::Mesh,
        calls: 20_000,
        in_flight: 1,
        connections: 1,
        crossed: false,
        rate_limit: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "mesh" => args.target = Target::Mesh,
            "mesh-clients" => args.target = Target::MeshClients,
            "tonic" => args.target = Target::Tonic,
            "--calls" => args.calls = it.next().context("--calls N")?.parse()?,
            "--in-flight" => args.in_flight = it.next().context("--in-flight K")?.parse()?,
            "--connections" => args.connections = it.next().context("--connections C")?.parse()?,
            "--crossed" => args.crossed = true,
            "--rate-limit" => args.rate_limit = true,
            "-h" | "--help" => {
                println!("{USAGE}\n\n{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    args.in_flight = args.in_flight.max(1);
    args.connections = args.connections.max(1);
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    examples::init_logging("warn");
    if std::env::args().nth(1).as_deref() == Some("instructions") {
        return instructions::run(std::env::args().skip(2));
    }
    let args = parse_args()?;
    let main_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();

    let meshed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let plain = std::net::TcpListener::bind("127.0.0.1:0")?;
    let (mesh_addr, plain_addr) = (meshed.local_addr()?, plain.local_addr()?);
    let trust_domain = TrustDomain::new("mesh.local")?;
    let control = main_rt.block_on(mesh_control::start(ControlOptions::new(
        trust_domain.clone(),
        ConfigSource::Inline(config(mesh_addr, plain_addr, args.rate_limit)),
    )))?;
    let dir = tempfile::tempdir()?;
    let anchors = dir.path().join("trust-bundle.pem");
    std::fs::write(&anchors, control.trust_bundle_pem())?;
    let per_endpoint = if args.target == Target::Mesh {
        args.connections
    } else {
        1
    };
    let settings = |account: &str| -> MeshSettings {
        let mut s = MeshSettings::new(
            control.addr().to_string(),
            trust_domain.clone(),
            &anchors,
            TokenSource::Inline(format!("{account}-profile-token")),
        )
        .with_node(account)
        .with_connections_per_endpoint(per_endpoint);
        s.service_account = account.to_owned();
        s
    };
    let server_settings = settings("greeter").with_service(ServiceName::new("default", "greeter")?);
    let client_settings = settings("caller");

    // The servers, on their own thread; they report their thread's CPU time on request, and
    // mark the edges of the measured window there (see `window`).
    let (cpu_tx, cpu_rx) = std::sync::mpsc::channel::<(window::Edge, oneshot::Sender<Duration>)>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_core = cores.first().copied();
    std::thread::Builder::new()
        .name("profile-server".into())
        .spawn(move || {
            if let Some(core) = server_core {
                core_affinity::set_for_current(core);
            }
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let started = serve(meshed, plain, server_settings).await;
                let failed = started.is_err();
                let _ = ready_tx.send(started.map(|_| ()));
                if failed {
                    return;
                }
                // Answer CPU-time queries from this (the server's) thread.
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                std::thread::spawn(move || {
                    while let Ok(reply) = cpu_rx.recv() {
                        if tx.send(reply).is_err() {
                            return;
                        }
                    }
                });
                while let Some((edge, reply)) = rx.recv().await {
                    window::server(edge);
                    let _ = reply.send(bench::thread_cpu_time());
                }
            });
        })?;
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .context("the server did not start")??;

    let client_core = cores.get(1).copied();
    let Args {
        target,
        calls,
        in_flight,
        connections,
        crossed,
        ..
    } = args;
    // Which server each kind of client calls.
    let (mesh_destination, tonic_addr) = if crossed {
        ("greeter-plain.default", mesh_addr)
    } else {
        ("greeter.default", plain_addr)
    };
    let report = std::thread::Builder::new()
        .name("profile-caller".into())
        .spawn(move || -> anyhow::Result<String> {
            if let Some(core) = client_core {
                core_affinity::set_for_current(core);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mesh = Mesh::start(client_settings).await?;
                let clients = match target {
                    Target::Mesh => {
                        let channel = mesh.channel(mesh_destination).await?;
                        Clients::Mesh(vec![GreeterClient::new(channel)])
                    }
                    Target::MeshClients => {
                        let mut v = Vec::new();
                        for _ in 0..connections {
                            v.push(GreeterClient::new(mesh.channel(mesh_destination).await?));
                        }
                        Clients::Mesh(v)
                    }
                    Target::Tonic => {
                        let expected =
                            SpiffeId::parse("spiffe://mesh.local/ns/default/sa/greeter")?;
                        let tls = mesh_tower::tls::client_config(
                            mesh.identity().trust(),
                            expected,
                            Some(mesh.identity()),
                        );
                        let mut v = Vec::new();
                        for _ in 0..connections {
                            v.push(GreeterClient::new(bench::tls_channel(tonic_addr, tls.clone()).await?));
                        }
                        Clients::Tonic(v)
                    }
                };
                // Warm up: connections, handles filled on first use, allocator pools, every
                // connection of the pool busy at least once.
                drive(&clients, in_flight, warm_up(in_flight)).await;
                window::client(window::Edge::Start);
                let server_before = server_cpu(&cpu_tx, window::Edge::Start).await?;
                let client_before = bench::thread_cpu_time();
                let started = Instant::now();
                let failed = drive(&clients, in_flight, calls).await;
                let elapsed = started.elapsed();
                let client_cpu = bench::thread_cpu_time() - client_before;
                let server_cpu = server_cpu(&cpu_tx, window::Edge::End).await? - server_before;
                window::client(window::Edge::End);
                let per_call = |d: Duration| d.as_secs_f64() * 1e6 / calls.max(1) as f64;
                Ok(format!(
                    "{target:?}{}: {calls} calls, {in_flight} in flight, {connections} connection(s): {:.0} calls/s, client CPU {:.1} µs/call, server CPU {:.1} µs/call, {failed} failed",
                    if crossed { " (crossed)" } else { "" },
                    calls as f64 / elapsed.as_secs_f64(),
                    per_call(client_cpu),
                    per_call(server_cpu),
                ))
            })
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the caller thread panicked"))??;
    println!("{report}");
    main_rt.block_on(control.shutdown());
    Ok(())
}

fn config(addr: SocketAddr, plain_addr: SocketAddr, rate_limit: bool) -> String {
    let (greeter, mut policies) = examples::everything_on_greeter(addr, "caller");
    if rate_limit {
        // Limits far above any call rate here: every call is checked and admitted.
        policies.push_str(
            "rateLimits:\n  - name: greeter-limits\n    target: {service: greeter}\n    \
             total: {requestsPerSecond: 1000000}\n    identity: {requestsPerSecond: 1000000}\n",
        );
    }
    format!(
        r#"
services:
{greeter}  - name: greeter-plain
    endpoints:
      - address: "{plain_addr}"
        identity: spiffe://mesh.local/ns/default/sa/greeter
{policies}bootstrapTokens:
  - {{token: greeter-profile-token, namespace: default, serviceAccount: greeter}}
  - {{token: caller-profile-token, namespace: default, serviceAccount: caller}}
"#
    )
}

/// Serves the greeter through the mesh on `meshed`, and with plain tonic over the same mTLS
/// configuration (no mesh layers) on `plain`.
async fn serve(
    meshed: std::net::TcpListener,
    plain: std::net::TcpListener,
    settings: MeshSettings,
) -> anyhow::Result<()> {
    meshed.set_nonblocking(true)?;
    plain.set_nonblocking(true)?;
    let mesh = Mesh::start(settings).await?;
    // The same handler behind both targets.
    let incoming =
        bench::tls_server::incoming(TcpListener::from_std(plain)?, mesh.server_tls_config());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(GreeterServer::new(PlainGreeter))
            .serve_with_incoming(incoming)
            .await
    });
    bench::spawn_meshed_greeter(mesh, TcpListener::from_std(meshed)?, PlainGreeter)?;
    Ok(())
}

/// The server thread's CPU time, asked at `edge` of the measured window.
async fn server_cpu(
    cpu: &std::sync::mpsc::Sender<(window::Edge, oneshot::Sender<Duration>)>,
    edge: window::Edge,
) -> anyhow::Result<Duration> {
    let (tx, rx) = oneshot::channel();
    cpu.send((edge, tx)).context("server thread gone")?;
    Ok(rx.await?)
}

/// Calls made before the measured ones: 200, and at least four per call in flight.
fn warm_up(in_flight: usize) -> usize {
    200.max(4 * in_flight)
}

enum Clients {
    Mesh(Vec<GreeterClient<mesh_tonic::MeshChannel>>),
    Tonic(Vec<GreeterClient<Channel>>),
}

/// Makes `calls` calls, `in_flight` at a time; gives how many failed.
async fn drive(clients: &Clients, in_flight: usize, calls: usize) -> usize {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(in_flight);
    for i in 0..in_flight {
        let next = next.clone();
        let mut client = match clients {
            Clients::Mesh(v) => Clients::Mesh(vec![v[i % v.len()].clone()]),
            Clients::Tonic(v) => Clients::Tonic(vec![v[i % v.len()].clone()]),
        };
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < calls {
                let request = HelloRequest {
                    name: "profile".into(),
                };
                let ok = match &mut client {
                    Clients::Mesh(v) => v[0].say_hello(request).await.is_ok(),
                    Clients::Tonic(v) => v[0].say_hello(request).await.is_ok(),
                };
                failed += usize::from(!ok);
            }
            failed
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await.unwrap_or(1);
    }
    failed
}
