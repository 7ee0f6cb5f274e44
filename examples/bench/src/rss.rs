//! The memory the mesh adds to a service: the same greeter served by two processes of their
//! own (`bench __server plain|mesh`), one with plain tonic over rustls mTLS and one meshed,
//! under the same load (64 calls in flight for a few seconds); their RSS is read from
//! `/proc/PID/status` idle, after the load (steady, `VmRSS`) and at its peak (`VmHWM`). The
//! steady RSS is also split into anonymous pages (`RssAnon`: the heap, stacks, relocated data;
//! memory of the process's own) and file-backed ones (`RssFile`: the pages of the binary's code
//! and read-only data that ran, which the kernel may drop and read again), since the two
//! servers are the same binary and most of what the mesh adds is its code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use examples::GreeterReplica;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use mesh_core::TrustDomain;
use mesh_core::snapshot::ServiceName;
use mesh_tonic::{MeshLayer, MeshTonicExt};
use mesh_tower::{Mesh, MeshSettings, TokenSource};
use serde::Serialize;
use tonic::transport::Channel;

use crate::plain_tls::{self, Material, PlainTls};
use crate::procs::{self, ChildProcess};
use crate::verdict;

const IN_FLIGHT: usize = 64;
const CONNECTIONS: usize = 4;
/// The target: what the mesh may add to a service's memory.
const TARGET_BYTES: i64 = 2 * 1024 * 1024;

/// What the measurement needs from the request-path scenario.
pub(crate) struct Setup {
    /// The control service.
    pub(crate) control: SocketAddr,
    /// Its trust bundle (PEM file).
    pub(crate) anchors: PathBuf,
    /// Where the meshed server listens (the control config's `greeter-rss` endpoint).
    pub(crate) addr: SocketAddr,
    /// The plain mTLS baseline's certificates.
    pub(crate) material: Material,
    /// The load generator's mesh settings.
    pub(crate) client: MeshSettings,
    /// How long the load runs.
    pub(crate) seconds: Duration,
}

/// The memory of one server process, in bytes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Process {
    idle_bytes: u64,
    steady_bytes: u64,
    /// Of the steady RSS, anonymous pages (`RssAnon`) and file-backed ones (`RssFile`).
    steady_anon_bytes: u64,
    steady_file_bytes: u64,
    peak_bytes: u64,
    requests: u64,
}

/// Both server processes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figures {
    plain_mtls: Process,
    mesh: Process,
}

impl Figures {
    /// Peak RSS of the meshed server less the plain one.
    pub(crate) fn added_peak(&self) -> i64 {
        self.mesh.peak_bytes as i64 - self.plain_mtls.peak_bytes as i64
    }

    /// Prints the figures and the target.
    pub(crate) fn print(&self) {
        let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!("\nserver process RSS (same load: {IN_FLIGHT} in flight):");
        println!(
            "  {:<11} {:>9} {:>10} {:>9} {:>10}",
            "server", "idle MB", "steady MB", "peak MB", "requests"
        );
        for (label, p) in [("tonic mTLS", &self.plain_mtls), ("mesh", &self.mesh)] {
            println!(
                "  {label:<11} {:>9.1} {:>10.1} {:>9.1} {:>10}",
                mb(p.idle_bytes),
                mb(p.steady_bytes),
                mb(p.peak_bytes),
                p.requests
            );
        }
        let added = self.added_peak();
        let steady = self.mesh.steady_bytes as i64 - self.plain_mtls.steady_bytes as i64;
        println!(
            "  the mesh adds {:+.2} MB peak RSS ({:+.2} MB steady)   (target <= 2 MB: {})",
            added as f64 / (1024.0 * 1024.0),
            steady as f64 / (1024.0 * 1024.0),
            verdict(added <= TARGET_BYTES)
        );
        let diff = |f: fn(&Process) -> u64| {
            (f(&self.mesh) as i64 - f(&self.plain_mtls) as i64) as f64 / (1024.0 * 1024.0)
        };
        println!(
            "  of the steady RSS added: {:+.2} MB anonymous (heap, stacks), {:+.2} MB file-backed (the code that ran)",
            diff(|p| p.steady_anon_bytes),
            diff(|p| p.steady_file_bytes),
        );
    }
}

/// Runs both servers in turn under the same load.
pub(crate) fn measure(setup: &Setup) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    setup.material.write(dir.path())?;
    let plain_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let dir_arg = dir.path().to_string_lossy().into_owned();
    let plain = ChildProcess::bench(&["__server", "plain", &dir_arg, &plain_addr.to_string()])?;
    let tls = PlainTls::from_material(setup.material.clone())?.client;
    let plain_mtls = measure_one(&plain, setup.seconds, async move {
        let mut channels = Vec::new();
        for _ in 0..CONNECTIONS {
            channels.push(plain_tls::tls_channel(plain_addr, tls.clone()).await?);
        }
        Ok(Load::Tonic(channels))
    })?;
    drop(plain);

    let anchors = setup.anchors.to_string_lossy().into_owned();
    let mesh = ChildProcess::bench(&[
        "__server",
        "mesh",
        &setup.control.to_string(),
        &anchors,
        &setup.addr.to_string(),
    ])?;
    let client = setup.client.clone();
    let meshed = measure_one(&mesh, setup.seconds, async move {
        let mesh = Mesh::start(client.with_connections_per_endpoint(CONNECTIONS)).await?;
        let channel = mesh.channel("greeter-rss.default").await?;
        Ok(Load::Mesh {
            _mesh: mesh,
            channel,
        })
    })?;
    Ok(Figures {
        plain_mtls,
        mesh: meshed,
    })
}

/// The clients of one server.
enum Load {
    Tonic(Vec<Channel>),
    Mesh {
        /// Held for the channel: dropping the handle stops the mesh.
        _mesh: Mesh,
        channel: mesh_tonic::MeshChannel,
    },
}

/// Loads the server `child` from a thread pinned to core 1 and reads its memory.
fn measure_one(
    child: &ChildProcess,
    seconds: Duration,
    connect: impl Future<Output = anyhow::Result<Load>> + Send + 'static,
) -> anyhow::Result<Process> {
    child.expect_line("ready", Duration::from_secs(30))?;
    let pid = child.pid();
    std::thread::sleep(Duration::from_millis(300));
    let idle_bytes = procs::status_bytes(pid, "VmRSS");
    let requests = std::thread::Builder::new()
        .name("rss-load".into())
        .spawn(move || -> anyhow::Result<u64> {
            procs::pin_to_core(1);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let load = connect.await?;
                Ok(drive(&load, seconds).await)
            })
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    if requests == 0 {
        bail!("no call succeeded against server process {pid}");
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(Process {
        idle_bytes,
        steady_bytes: procs::status_bytes(pid, "VmRSS"),
        steady_anon_bytes: procs::status_bytes(pid, "RssAnon"),
        steady_file_bytes: procs::status_bytes(pid, "RssFile"),
        peak_bytes: procs::status_bytes(pid, "VmHWM"),
        requests,
    })
}

/// [`IN_FLIGHT`] callers for `duration`; returns the calls that succeeded.
async fn drive(load: &Load, duration: Duration) -> u64 {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for i in 0..IN_FLIGHT {
        let request = || HelloRequest {
            name: "bench".into(),
        };
        match load {
            Load::Tonic(channels) => {
                let mut client = GreeterClient::new(channels[i % channels.len()].clone());
                tasks.push(tokio::spawn(async move {
                    let mut ok = 0u64;
                    while Instant::now() < deadline {
                        ok += u64::from(client.say_hello(request()).await.is_ok());
                    }
                    ok
                }));
            }
            Load::Mesh { channel, .. } => {
                let mut client = GreeterClient::new(channel.clone());
                tasks.push(tokio::spawn(async move {
                    let mut ok = 0u64;
                    while Instant::now() < deadline {
                        ok += u64::from(client.say_hello(request()).await.is_ok());
                    }
                    ok
                }));
            }
        }
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or(0);
    }
    total
}

/// `bench __server plain DIR ADDR` or `bench __server mesh CONTROL ANCHORS ADDR`: the greeter
/// on one thread pinned to core 0, until killed.
pub(crate) fn server_main(args: &[String]) -> anyhow::Result<()> {
    const USAGE: &str = "usage: __server plain DIR ADDR | __server mesh CONTROL ANCHORS ADDR";
    procs::pin_to_core(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rt.block_on(async {
        match args.as_slice() {
            ["plain", dir, addr] => {
                let tls = PlainTls::from_material(Material::read(dir.as_ref())?)?.server;
                let listener = tokio::net::TcpListener::bind(addr).await?;
                println!("ready");
                tonic::transport::Server::builder()
                    .add_service(GreeterServer::new(GreeterReplica::new("rss", "none")))
                    .serve_with_incoming(plain_tls::incoming(listener, tls))
                    .await?;
            }
            ["mesh", control, anchors, addr] => {
                let mut settings = MeshSettings::new(
                    control.to_string(),
                    TrustDomain::new("mesh.local")?,
                    std::path::Path::new(anchors),
                    TokenSource::Inline("greeter-bench-token".into()),
                )
                .with_node("greeter-rss");
                settings.service_account = "greeter".into();
                settings.service = Some(ServiceName::new("default", "greeter")?);
                let mesh = Mesh::start(settings).await?;
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let greeter = GreeterReplica::new("rss", mesh.identity().id().to_string());
                let incoming = mesh.tonic_incoming(listener)?;
                println!("ready");
                tonic::transport::Server::builder()
                    .layer(MeshLayer::new())
                    .add_service(GreeterServer::new(greeter))
                    .serve_with_incoming(incoming)
                    .await?;
            }
            _ => bail!("{USAGE}"),
        }
        Ok(())
    })
    .context("__server")
}
