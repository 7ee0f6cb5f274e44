//! Abuse of the server side over real sockets, each beside a legitimate meshed client that
//! must see no failure, with the server's memory (this process's RSS: the servers run
//! in-process) measured before, during and after:
//!
//! - a tonic server advertises and enforces the mesh's HTTP/2 stream limit;
//! - a flood of connections that never handshake cannot take the slots of authenticated ones;
//! - an HTTP/2 client that sends only the preface and SETTINGS is closed at the header timeout;
//! - connections with no call in flight are closed at the idle timeout, pings or not, and a
//!   connection with a call in flight is kept;
//! - ALPN offers only what each server speaks;
//! - a refused client certificate is answered with a TLS alert, not a bare close.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_core::SpiffeId;
use mesh_core::testing::hostile::{self, rss_bytes};
use mesh_core::testing::{TestCa, client_tls};
use mesh_tests::rawtls::rustls_error;
use mesh_tests::{Config, Harness, Replica, TRUST_DOMAIN, listener, spiffe};
use mesh_tonic::MeshTonicExt;
use mesh_tower::{Mesh, ServerLimits};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

/// The tests of this file one at a time: each measures the whole process's memory.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: u64 = 1024 * 1024;

/// RSS before, during (the most seen) and after an abuse, in bytes.
#[derive(Debug, Default)]
struct Memory {
    before: u64,
    during: u64,
    after: u64,
}

impl Memory {
    fn start() -> Self {
        let before = rss_bytes();
        Self {
            before,
            during: before,
            after: 0,
        }
    }

    fn sample(&mut self) {
        self.during = self.during.max(rss_bytes());
    }

    /// Records the figure after the abuse, prints the abuse's report line (with what the
    /// legitimate caller `saw`: calls and failures) and asserts the growth during the abuse is
    /// within `bound_mib`.
    async fn finish(&mut self, what: &str, bound_mib: u64, saw: (usize, usize)) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.after = rss_bytes();
        let (calls, failures) = saw;
        hostile::report(
            what,
            &format!("{calls} calls through the mesh"),
            failures,
            self.before,
            self.during,
            self.after,
        );
        assert!(
            self.during.saturating_sub(self.before) <= bound_mib * MIB,
            "{what}: RSS grew from {} to {} MiB (bound +{bound_mib} MiB)",
            self.before / MIB,
            self.during / MIB
        );
    }
}

/// A legitimate meshed caller running beside an abuse: calls in a loop until stopped, counting
/// calls and failures.
struct Legit {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Legit {
    /// Calls `greeter.default` through `mesh`'s channel.
    async fn greeter(mesh: &Mesh) -> Self {
        let channel = mesh.channel("greeter.default").await.unwrap();
        Self::run(move || {
            let mut client = GreeterClient::new(channel.clone());
            async move {
                client
                    .say_hello(HelloRequest { name: "ann".into() })
                    .await
                    .map(drop)
                    .map_err(|s| s.to_string())
            }
        })
    }

    /// `GET /` on `web.default` through `mesh`'s client.
    async fn web(mesh: &Mesh) -> Self {
        let client = mesh
            .client::<axum::body::Body>("web.default")
            .await
            .unwrap();
        Self::run(move || {
            let client = client.clone();
            async move {
                let request = http::Request::get("http://web/legit")
                    .body(axum::body::Body::empty())
                    .unwrap();
                match tower::ServiceExt::oneshot(client, request).await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
    }

    fn run<F, Fut>(call: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let (stop, calls, failures) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let task = tokio::spawn({
            let (stop, calls, failures) = (stop.clone(), calls.clone(), failures.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = call().await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    if let Err(error) = result {
                        eprintln!("legitimate call failed: {error}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self {
            stop,
            calls,
            failures,
            task,
        }
    }

    /// Stops, and asserts there were calls and none failed; returns the calls and failures.
    async fn stop_and_check(self, what: &str) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let (calls, failures) = (
            self.calls.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        );
        println!("{what}: legitimate calls {calls}, failures {failures}");
        assert!(calls > 0, "{what}: no legitimate call was made");
        assert_eq!(failures, 0, "{what}: legitimate calls failed");
        (calls, failures)
    }
}

fn id(account: &str) -> SpiffeId {
    SpiffeId::parse(&spiffe(account)).unwrap()
}

/// `client`'s TLS configuration for a server running as `server`, offering `alpn`.
fn mesh_tls(client: &Mesh, server: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = (*mesh_tower::tls::client_config(
        client.identity().trust(),
        id(server),
        Some(client.identity()),
    ))
    .clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// Whether the peer closes `io` within `within`.
async fn closed_within(mut io: impl tokio::io::AsyncRead + Unpin, within: Duration) -> bool {
    let read_to_end = async {
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

// --- Raw HTTP/2 ---

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const REFUSED_STREAM: u32 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The preface and an empty SETTINGS frame: all a client must send to open HTTP/2.
fn preface_and_settings() -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    bytes
}

/// A HEADERS frame opening a `SayHello` call on `stream` whose body never comes (HPACK
/// literals without indexing, names from the static table).
fn say_hello_headers(stream: u32) -> Vec<u8> {
    fn literal(block: &mut Vec<u8>, name_index: u8, value: &str) {
        if name_index < 15 {
            block.push(name_index);
        } else {
            block.extend([0x0f, name_index - 15]);
        }
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    literal(&mut block, 4, "/helloworld.Greeter/SayHello"); // :path
    literal(&mut block, 1, "greeter"); // :authority
    literal(&mut block, 31, "application/grpc"); // content-type
    block.extend([0x00, 0x02]);
    block.extend_from_slice(b"te");
    block.push(0x08);
    block.extend_from_slice(b"trailers");
    frame(HEADERS, 0x4, stream, &block) // END_HEADERS, not END_STREAM
}

/// Reads one frame: (type, flags, stream, payload).
async fn read_frame(
    io: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut header = [0u8; 9];
    io.read_exact(&mut header).await?;
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    Ok((header[3], header[4], stream, payload))
}

/// The server's first SETTINGS frame, as (identifier, value) pairs.
async fn server_settings(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<(u16, u32)> {
    let (kind, _, _, payload) = read_frame(io).await.unwrap();
    assert_eq!(kind, SETTINGS, "the server's first frame");
    payload
        .chunks_exact(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect()
}

// --- Servers ---

/// A greeter service (tonic, served as `serve_greeter` does) and a web service (axum, by
/// `Mesh::serve`), both running as `server` with `limits`, and a client mesh.
struct Servers {
    _harness: Harness,
    greeter: Replica,
    web_addr: SocketAddr,
    web: JoinHandle<()>,
    client: Mesh,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.web.abort();
    }
}

async fn servers(limits: ServerLimits) -> Servers {
    let (gl, wl) = (listener().await.unwrap(), listener().await.unwrap());
    let web_addr = wl.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(gl.local_addr().unwrap(), "server")])
        .service("web", &[(web_addr, "server")])
        .account("server")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let greeter = harness
        .greeter_with_settings(
            gl,
            "g1",
            harness
                .settings("server", Some("greeter"))
                .with_server_limits(limits),
        )
        .await
        .unwrap();
    let web_mesh = Mesh::start(
        harness
            .settings("server", Some("web"))
            .with_server_limits(limits),
    )
    .await
    .unwrap();
    let web = tokio::spawn(async move {
        let router = axum::Router::new().fallback(|| async { "ok" });
        let _ = web_mesh.serve(wl, router).await;
    });
    let client = harness.mesh("client").await.unwrap();
    Servers {
        _harness: harness,
        greeter,
        web_addr,
        web,
        client,
    }
}

// --- The findings ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_server_advertises_and_enforces_the_mesh_stream_limit() {
    let _serial = SERIAL.lock().await;
    let s = servers(ServerLimits::default()).await;
    let legit = Legit::greeter(&s.client).await;
    let mut memory = Memory::start();
    const CONNECTIONS: usize = 16;
    const STREAMS: u32 = 2000;

    let tls = mesh_tls(&s.client, "server", &[b"h2"]);
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut io = tls_connect(s.greeter.addr, tls.clone()).await.unwrap();
        // A hostile client: opens all its streams at once, without waiting for (or
        // acknowledging) the server's SETTINGS.
        let mut bytes = preface_and_settings();
        for i in 0..STREAMS {
            bytes.extend(say_hello_headers(2 * i + 1));
        }
        io.write_all(&bytes).await.unwrap();
        let settings = server_settings(&mut io).await;
        assert!(
            settings.contains(&(0x3, 256)),
            "MAX_CONCURRENT_STREAMS: {settings:?}"
        );
        assert!(
            settings.contains(&(0x6, 64 * 1024)),
            "MAX_HEADER_LIST_SIZE: {settings:?}"
        );

        // Streams refused, and the last one the server says it may process (GOAWAY).
        let (mut refused, mut last_processed) = (0u32, u32::MAX);
        while refused < STREAMS - 256 && last_processed == u32::MAX {
            let next = tokio::time::timeout(Duration::from_secs(3), read_frame(&mut io)).await;
            let Ok(Ok((kind, _, _, payload))) = next else {
                break;
            };
            match kind {
                RST_STREAM
                    if u32::from_be_bytes(payload[..4].try_into().unwrap()) == REFUSED_STREAM =>
                {
                    refused += 1;
                }
                GOAWAY => {
                    last_processed =
                        u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff;
                }
                _ => {}
            }
        }
        // Streams 1, 3, ... up to the last the server may process, less those refused.
        let admitted = STREAMS.min(last_processed.saturating_add(1) / 2) - refused.min(STREAMS);
        assert!(
            admitted <= 256,
            "{admitted} streams admitted on one connection ({refused} refused, last processed {last_processed})"
        );
        memory.sample();
        held.push(io);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    memory.sample();
    let saw = legit.stop_and_check("stream flood").await;
    drop(held);
    // Before the limit, 16 x 2,000 pending streams took ~345 MiB.
    memory
        .finish(
            "tonic server: 16 connections x 2,000 pending streams",
            96,
            saw,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_cannot_take_the_slots_of_authenticated_connections() {
    let _serial = SERIAL.lock().await;
    let s = servers(ServerLimits::default()).await;
    let legit = Legit::web(&s.client).await;
    let mut memory = Memory::start();
    // 4,340 connections that never send a byte, from 7 source addresses (all loopback),
    // against 4,096 connection slots, 256 handshakes and 32 per source address.
    const SOURCES: u8 = 7;
    const PER_SOURCE: usize = 620;
    let mut flood = Vec::new();
    for source in 2..2 + SOURCES {
        for _ in 0..PER_SOURCE {
            let socket = TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)),
                    0,
                ))
                .unwrap();
            flood.push(socket.connect(s.web_addr).await.unwrap());
        }
        memory.sample();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    memory.sample();

    // Over budget, connections were closed at once: a read finds their end.
    let mut held = 0;
    for tcp in &flood {
        let mut byte = [0u8; 1];
        if matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            held += 1;
        }
    }
    println!("handshake flood: {} connections, {held} held", flood.len());
    assert!(held <= usize::from(SOURCES) * 32, "{held} handshakes held");

    // New authenticated connections still get in (from 127.0.0.1) while the flood is held.
    let tls = mesh_tls(&s.client, "server", &[b"http/1.1"]);
    for _ in 0..20 {
        let mut io = tls_connect(s.web_addr, tls.clone()).await.unwrap();
        io.write_all(b"GET /fresh HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        io.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    memory.sample();
    let saw = legit.stop_and_check("handshake flood").await;
    drop(flood);
    memory
        .finish(
            "4,340 connections that never finish the TLS handshake",
            48,
            saw,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_sends_only_the_preface_is_closed_at_the_header_timeout() {
    let _serial = SERIAL.lock().await;
    let limits = ServerLimits::default().with_header_timeout(Duration::from_secs(1));
    let s = servers(limits).await;
    let legit = Legit::web(&s.client).await;
    let mut memory = Memory::start();
    let tls = mesh_tls(&s.client, "server", &[b"h2"]);

    // 20 on each server: the preface and SETTINGS, then nothing.
    let mut quiet = Vec::new();
    for addr in [s.web_addr, s.greeter.addr] {
        for _ in 0..20 {
            let mut io = tls_connect(addr, tls.clone()).await.unwrap();
            io.write_all(&preface_and_settings()).await.unwrap();
            quiet.push(io);
        }
    }
    // A client that starts its first request in time keeps its connection past the timeout.
    let mut prompt = tls_connect(s.web_addr, tls.clone()).await.unwrap();
    let mut bytes = preface_and_settings();
    let mut get = vec![0x82, 0x86, 0x84]; // :method GET, :scheme http, :path /
    get.extend([0x01, 0x03]);
    get.extend_from_slice(b"web"); // :authority
    bytes.extend(frame(HEADERS, 0x5, 1, &get)); // END_STREAM | END_HEADERS
    prompt.write_all(&bytes).await.unwrap();
    memory.sample();

    let started = tokio::time::Instant::now();
    let closed = futures_util::future::join_all(
        quiet
            .into_iter()
            .map(|io| closed_within(io, Duration::from_secs(5))),
    )
    .await;
    let kept = closed.iter().filter(|c| !**c).count();
    assert_eq!(kept, 0, "{kept} of 40 preface-only connections kept");
    assert!(started.elapsed() >= Duration::from_millis(500));
    memory.sample();

    // Well past the timeout, the prompt client's connection still serves: a second request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    prompt
        .write_all(&frame(HEADERS, 0x5, 3, &get))
        .await
        .unwrap();
    let mut answered = 0;
    while answered < 2 {
        let (kind, _, stream, _) =
            tokio::time::timeout(Duration::from_secs(5), read_frame(&mut prompt))
                .await
                .unwrap()
                .unwrap();
        assert_ne!(kind, GOAWAY, "the prompt client was sent away");
        if kind == HEADERS && (stream == 1 || stream == 3) {
            answered += 1;
        }
    }
    let saw = legit.stop_and_check("preface only").await;
    memory
        .finish(
            "40 HTTP/2 clients that send only the preface (serve, tonic)",
            32,
            saw,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_offers_only_what_each_server_speaks() {
    let _serial = SERIAL.lock().await;
    let s = servers(ServerLimits::default()).await;
    let legit = Legit::greeter(&s.client).await;
    let mut memory = Memory::start();
    let http1_only = mesh_tls(&s.client, "server", &[b"http/1.1"]);
    for _ in 0..50 {
        // tonic speaks only HTTP/2: refused in the handshake, with the reason.
        let error = tls_connect(s.greeter.addr, http1_only.clone())
            .await
            .map(drop)
            .unwrap_err();
        assert!(
            matches!(
                rustls_error(&error),
                Some(rustls::Error::AlertReceived(
                    rustls::AlertDescription::NoApplicationProtocol
                ))
            ),
            "{error:?}"
        );
        // `Mesh::serve` speaks both: HTTP/1.1 is agreed, and spoken.
        let mut io = tls_connect(s.web_addr, http1_only.clone()).await.unwrap();
        assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        io.write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        io.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        memory.sample();
    }
    // HTTP/2 is agreed by both.
    let h2 = mesh_tls(&s.client, "server", &[b"h2", b"http/1.1"]);
    for addr in [s.greeter.addr, s.web_addr] {
        let io = tls_connect(addr, h2.clone()).await.unwrap();
        assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    }
    let saw = legit.stop_and_check("alpn").await;
    memory
        .finish("50 HTTP/1.1-only TLS clients (serve, tonic)", 32, saw)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_certificate_gets_a_tls_alert() {
    let _serial = SERIAL.lock().await;
    let s = servers(ServerLimits::default()).await;
    let legit = Legit::greeter(&s.client).await;
    let mut memory = Memory::start();
    // A certificate for the right identity, from a CA the servers do not trust.
    let stranger = TestCa::new(TRUST_DOMAIN);
    let bundle = (*s.client.identity().trust().load()).clone();
    let tls = client_tls(bundle, &id("server"), Some(stranger.issue(&id("client"))));
    for _ in 0..25 {
        for addr in [s.greeter.addr, s.web_addr] {
            // TLS 1.3: the client's handshake completes before the server has judged its
            // certificate; the verdict comes with the first read.
            let mut io = tls_connect(addr, tls.clone()).await.unwrap();
            // More than the server reads before it judges the certificate: a server that
            // closed with these unread would reset the connection, and the reset can destroy
            // the alert before the client reads it.
            let mut bytes = preface_and_settings();
            bytes.extend(std::iter::repeat_n(0u8, 32 * 1024));
            let _ = io.write_all(&bytes).await;
            let mut buf = [0u8; 64];
            let error = io.read(&mut buf).await.unwrap_err();
            assert!(
                matches!(rustls_error(&error), Some(rustls::Error::AlertReceived(_))),
                "not an alert: {error:?}"
            );
        }
        memory.sample();
    }
    let saw = legit.stop_and_check("refused certificates").await;
    memory
        .finish("50 clients with a certificate from another CA", 32, saw)
        .await;
}

/// `GET /` on stream 1 with END_STREAM: a whole request (tonic answers it with a gRPC error,
/// the web server with 200), after which the connection has no call in flight.
fn one_get() -> Vec<u8> {
    let mut get = vec![0x82, 0x86, 0x84]; // :method GET, :scheme http, :path /
    get.extend([0x01, 0x03]);
    get.extend_from_slice(b"web"); // :authority
    let mut bytes = preface_and_settings();
    bytes.extend(frame(HEADERS, 0x5, 1, &get)); // END_STREAM | END_HEADERS
    bytes
}

/// Keeps `io` busy with a PING every 200 ms (and reads what the server sends) until the server
/// closes it; returns how long after `since` that was, or `None` if it is open after `within`.
async fn pinged_until_closed(
    io: TlsStream<TcpStream>,
    since: tokio::time::Instant,
    within: Duration,
) -> Option<Duration> {
    let (mut read, mut write) = tokio::io::split(io);
    let pinger = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(&frame(PING, 0, 0, &[7; 8])).await.is_err() {
                return;
            }
        }
    });
    let closed = closed_within(&mut read, within).await;
    pinger.abort();
    closed.then(|| since.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_pings_or_not_and_busy_ones_kept() {
    let _serial = SERIAL.lock().await;
    const IDLE: Duration = Duration::from_secs(1);
    const PER_SERVER: usize = 100;
    let s = servers(ServerLimits::default().with_idle_timeout(Some(IDLE))).await;
    let (greeter, web) = (Legit::greeter(&s.client).await, Legit::web(&s.client).await);
    let mut memory = Memory::start();
    let tls = mesh_tls(&s.client, "server", &[b"h2"]);

    // On each server: connections that make one call, then only ping.
    let mut idle = Vec::new();
    for addr in [s.greeter.addr, s.web_addr] {
        for _ in 0..PER_SERVER {
            let mut io = tls_connect(addr, tls.clone()).await.unwrap();
            io.write_all(&one_get()).await.unwrap();
            // Its idle period starts from its own call: on a busy machine the last of these
            // connections may open well after the first went idle.
            idle.push((io, tokio::time::Instant::now()));
        }
    }
    // And one whose call never ends (its request body never comes): in flight, so kept.
    let mut busy = tls_connect(s.greeter.addr, tls.clone()).await.unwrap();
    let mut opening = preface_and_settings();
    opening.extend(say_hello_headers(1));
    busy.write_all(&opening).await.unwrap();
    memory.sample();

    let closed = futures_util::future::join_all(
        idle.into_iter()
            .map(|(io, called)| pinged_until_closed(io, called, 4 * IDLE)),
    )
    .await;
    memory.sample();
    let kept = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        kept,
        0,
        "{kept} of {} idle connections kept",
        2 * PER_SERVER
    );
    let earliest = closed.iter().flatten().min().unwrap();
    assert!(
        *earliest >= IDLE / 2,
        "closed after {earliest:?}, before the idle timeout"
    );
    // Well past two idle periods, the call in flight still holds its connection.
    assert!(
        !closed_within(&mut busy, IDLE).await,
        "a connection with a call in flight was closed"
    );

    // The legitimate callers never idled; stopped, their connections are closed in turn, and
    // their next calls reconnect and succeed.
    let saw_greeter = greeter.stop_and_check("idle connections (greeter)").await;
    let saw_web = web.stop_and_check("idle connections (web)").await;
    tokio::time::sleep(3 * IDLE).await;
    let again = Legit::greeter(&s.client).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let saw_again = again.stop_and_check("after idling").await;
    let saw = (
        saw_greeter.0 + saw_web.0 + saw_again.0,
        saw_greeter.1 + saw_web.1 + saw_again.1,
    );
    memory
        .finish("200 connections idle but for pings (serve, tonic)", 32, saw)
        .await;
}
