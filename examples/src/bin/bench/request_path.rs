//! Scenario `request-path`: `helloworld.Greeter/SayHello` through the mesh against plain
//! tonic (h2c, and rustls mTLS), measured in the same run so that the ratios hold on a noisy
//! machine even when the absolute numbers move.
//!
//! The servers run on one thread (a current-thread runtime pinned to core 0 where the OS
//! allows) and the load generator on another (pinned to core 1); the control service runs on
//! the main thread. Each target is measured at 1 call in flight (latency) and at 64 in flight
//! (throughput; plain tonic over 4 connections, the mesh over its one connection per
//! endpoint), for `--runs` rounds of `--seconds` each after a warm-up; the table shows medians
//! over the rounds. Server CPU per request comes from the server thread's own CPU time
//! (`/proc/thread-self/schedstat`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::Args;
use examples::GreeterReplica;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use futures_util::StreamExt;
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::TrustDomain;
use mesh_core::snapshot::ServiceName;
use mesh_tonic::{MeshChannel, MeshLayer, MeshTonicExt};
use mesh_tower::{Mesh, MeshSettings, TokenSource};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint, Uri};

const IN_FLIGHT_THROUGHPUT: usize = 64;
const CONNECTIONS_THROUGHPUT: usize = 4;
const WARMUP: Duration = Duration::from_secs(1);

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Target {
    /// Plain tonic over cleartext HTTP/2.
    TonicH2c,
    /// Plain tonic over rustls with client certificates.
    TonicMtls,
    /// The mesh: mTLS with SPIFFE identities, discovery, routing, retries, balancing.
    Mesh,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::TonicH2c => "tonic h2c",
            Self::TonicMtls => "tonic mTLS",
            Self::Mesh => "mesh",
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
    let trust_domain = TrustDomain::new("mesh.local")?;
    let control = main_rt.block_on(mesh_control::start(ControlOptions::new(
        trust_domain.clone(),
        ConfigSource::Inline(mesh_config(mesh_addr)),
    )))?;
    let dir = tempfile::tempdir()?;
    let anchors = dir.path().join("trust-bundle.pem");
    std::fs::write(&anchors, control.trust_bundle_pem())?;
    let settings = |account: &str, service: Option<&str>| -> anyhow::Result<MeshSettings> {
        let mut s = MeshSettings::new(
            control.addr().to_string(),
            trust_domain.clone(),
            &anchors,
            TokenSource::Inline(format!("{account}-bench-token")),
        )
        .with_node(account);
        s.service_account = account.to_owned();
        s.service = service
            .map(|n| ServiceName::new("default", n))
            .transpose()?;
        Ok(s)
    };
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
                client_tls,
                client_settings,
                cpu_tx,
                seconds,
                runs,
            ))
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;

    report(&rounds, &args.json("request-path"))?;
    main_rt.block_on(control.shutdown());
    Ok(())
}

fn mesh_config(addr: SocketAddr) -> String {
    format!(
        r#"
services:
  - name: greeter
    endpoints:
      - address: "{addr}"
        identity: spiffe://mesh.local/ns/default/sa/greeter
bootstrapTokens:
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
        let greeter = GreeterServer::new(GreeterReplica::new("bench", "none"));

        let incoming = tokio_stream::wrappers::TcpListenerStream::new(h2c);
        let service = greeter.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
        });

        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let incoming =
            tokio_stream::wrappers::TcpListenerStream::new(plain_tls).filter_map(move |tcp| {
                let acceptor = acceptor.clone();
                async move {
                    let tcp = tcp.ok()?;
                    let _ = tcp.set_nodelay(true);
                    acceptor
                        .accept(tcp)
                        .await
                        .ok()
                        .map(|s| Ok::<_, std::io::Error>(TlsIo(s)))
                }
            });
        let service = greeter.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(Box::pin(incoming))
                .await
        });

        let mesh = Mesh::start(settings).await?;
        let greeter = GreeterServer::new(GreeterReplica::new(
            "bench",
            mesh.identity().id().to_string(),
        ));
        let incoming = mesh.tonic_incoming(meshed)?;
        tokio::spawn(async move {
            let _mesh = mesh;
            tonic::transport::Server::builder()
                .layer(MeshLayer::new())
                .add_service(greeter)
                .serve_with_incoming(incoming)
                .await
        });
        Ok(())
    };
    let result = started.await;
    let failed = result.is_err();
    let _ = ready.send(result);
    if failed {
        return;
    }
    while let Some(reply) = cpu_queries.recv().await {
        let _ = reply.send(thread_cpu_time());
    }
}

/// This thread's CPU time so far (nanoseconds from `/proc/thread-self/schedstat`).
fn thread_cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
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
        match self {
            Self::Tonic(c) => c.say_hello(request).await.is_ok(),
            Self::Mesh(c) => c.say_hello(request).await.is_ok(),
        }
    }
}

async fn load(
    h2c: SocketAddr,
    tls: SocketAddr,
    tls_config: Arc<rustls::ClientConfig>,
    settings: MeshSettings,
    cpu: mpsc::Sender<oneshot::Sender<Duration>>,
    seconds: Duration,
    runs: usize,
) -> anyhow::Result<Vec<Round>> {
    let mesh = Mesh::start(settings).await?;
    let mut rounds = Vec::new();
    for run in 0..runs {
        for target in [Target::TonicH2c, Target::TonicMtls, Target::Mesh] {
            for (in_flight, connections) in [(1, 1), (IN_FLIGHT_THROUGHPUT, CONNECTIONS_THROUGHPUT)]
            {
                let clients = match target {
                    Target::TonicH2c => {
                        let mut v = Vec::new();
                        for _ in 0..connections {
                            let channel = Endpoint::from_shared(format!("http://{h2c}"))?
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
                                tls_channel(tls, tls_config.clone()).await?,
                            ));
                        }
                        Clients::Tonic(v)
                    }
                    Target::Mesh => {
                        Clients::Mesh(GreeterClient::new(mesh.channel("greeter.default").await?))
                    }
                };
                let _ = drive(&clients, in_flight, WARMUP).await;
                let before = server_cpu(&cpu).await?;
                let (latencies, errors, elapsed) = drive(&clients, in_flight, seconds).await;
                let after = server_cpu(&cpu).await?;
                let round = summarize(
                    target,
                    in_flight,
                    latencies,
                    errors,
                    elapsed,
                    after - before,
                );
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
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
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
}

fn report(rounds: &[Round], json: &PathBuf) -> anyhow::Result<()> {
    let mut summaries = Vec::new();
    for target in [Target::TonicH2c, Target::TonicMtls, Target::Mesh] {
        for in_flight in [1, IN_FLIGHT_THROUGHPUT] {
            let mine: Vec<&Round> = rounds
                .iter()
                .filter(|r| r.target == target && r.in_flight == in_flight)
                .collect();
            let pick = |f: fn(&Round) -> f64| median(mine.iter().map(|r| f(r)).collect());
            summaries.push(Summary {
                target,
                in_flight,
                rps: pick(|r| r.rps),
                p50_us: pick(|r| r.p50_us),
                p99_us: pick(|r| r.p99_us),
                p999_us: pick(|r| r.p999_us),
                server_cpu_us_per_request: pick(|r| r.server_cpu_us_per_request),
            });
        }
    }
    println!("\nmedians over the runs:");
    println!(
        "  {:<11} {:>9} {:>11} {:>9} {:>9} {:>10} {:>14}",
        "target", "in flight", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "server µs/req"
    );
    for s in &summaries {
        println!(
            "  {:<11} {:>9} {:>11.0} {:>9.1} {:>9.1} {:>10.1} {:>14.2}",
            s.target.label(),
            s.in_flight,
            s.rps,
            s.p50_us,
            s.p99_us,
            s.p999_us,
            s.server_cpu_us_per_request
        );
    }
    let get = |target: Target, in_flight: usize| {
        summaries
            .iter()
            .find(|s| s.target == target && s.in_flight == in_flight)
    };
    let (Some(mesh_tp), Some(tls_tp), Some(h2c_tp), Some(mesh_lat), Some(tls_lat)) = (
        get(Target::Mesh, IN_FLIGHT_THROUGHPUT),
        get(Target::TonicMtls, IN_FLIGHT_THROUGHPUT),
        get(Target::TonicH2c, IN_FLIGHT_THROUGHPUT),
        get(Target::Mesh, 1),
        get(Target::TonicMtls, 1),
    ) else {
        bail!("missing measurements");
    };
    let throughput_ratio = mesh_tp.rps / tls_tp.rps;
    let added_p50 = mesh_lat.p50_us - tls_lat.p50_us;
    let cpu_ratio = mesh_tp.server_cpu_us_per_request / tls_tp.server_cpu_us_per_request;
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    println!("\nratios (same run):");
    println!(
        "  throughput  mesh / tonic mTLS = {throughput_ratio:.2}   (target >= 0.95: {})",
        verdict(throughput_ratio >= 0.95)
    );
    println!(
        "  throughput  mesh / tonic h2c  = {:.2};  tonic mTLS / h2c = {:.2}",
        mesh_tp.rps / h2c_tp.rps,
        tls_tp.rps / h2c_tp.rps
    );
    println!(
        "  added p50 at 1 in flight over tonic mTLS = {added_p50:+.1} µs   (target <= 10 µs: {})",
        verdict(added_p50 <= 10.0)
    );
    println!(
        "  server CPU per request  mesh / tonic mTLS = {cpu_ratio:.2}   (target <= 1.1: {})",
        verdict(cpu_ratio <= 1.1)
    );
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let document = serde_json::json!({
        "scenario": "request-path",
        "rounds": rounds,
        "medians": summaries,
        "ratios": {
            "throughput_mesh_over_tonic_mtls": throughput_ratio,
            "added_p50_us_over_tonic_mtls": added_p50,
            "server_cpu_mesh_over_tonic_mtls": cpu_ratio,
        },
    });
    std::fs::write(json, serde_json::to_vec_pretty(&document)?)?;
    println!("\nraw figures: {}", json.display());
    Ok(())
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, for the plain-tonic
/// mTLS baseline (rustls with its standard WebPKI verifiers).
struct PlainTls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl PlainTls {
    fn generate() -> anyhow::Result<Self> {
        let provider = mesh_core::tls::crypto_provider();
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |sans: Vec<SanType>| -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.subject_alt_names = sans;
            let cert = params.signed_by(&key, &issuer)?;
            Ok((
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            ))
        };
        let (server_chain, server_key) = leaf(vec![SanType::IpAddress([127, 0, 0, 1].into())])?;
        let (client_chain, client_key) = leaf(vec![SanType::DnsName("bench-client".try_into()?)])?;
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone())?;
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(server_chain, server_key)?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(client_chain, client_key)?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// A tonic channel over rustls mTLS to `addr`.
async fn tls_channel(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Channel> {
    let connector = tower::service_fn(move |_: Uri| {
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(connector)
        .await?)
}

/// A server-side TLS stream for tonic's `serve_with_incoming`.
struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
