//! Server limits: oversized headers and bodies, too many streams or connections, and clients
//! that never finish their handshake or headers are refused cleanly, and the server keeps
//! serving everyone else.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::SpiffeId;
use mesh_tests::web::{WebMode, WebReplica, get, send};
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tower::server::serve;
use mesh_tower::{Mesh, MeshClient, MeshIncoming, ServerLimits};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

/// A web replica (default limits, served by `Mesh::serve`) and a client mesh calling it.
struct Setup {
    harness: Harness,
    web: WebReplica,
    client: Mesh,
    calls: MeshClient<Body>,
}

async fn setup() -> Setup {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let web = harness
        .web(l, "web-1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let client = harness.mesh("client").await.unwrap();
    let calls = client.client::<Body>("web.default").await.unwrap();
    Setup {
        harness,
        web,
        client,
        calls,
    }
}

/// A normal meshed call succeeds.
async fn still_serving(calls: &MeshClient<Body>) {
    let reply = get(calls, "/after").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
}

/// A TLS connection to `addr` (a server running as `web`) with `client`'s certificate,
/// offering `alpn`.
async fn tls_connect(addr: SocketAddr, client: &Mesh, alpn: &[u8]) -> TlsStream<TcpStream> {
    let server = SpiffeId::parse(&spiffe("web")).unwrap();
    let mut config = (*mesh_tower::tls::client_config(
        client.identity().trust(),
        server,
        Some(client.identity()),
    ))
    .clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap()
}

/// One raw HTTP/2 connection to `addr`, bypassing the mesh's client (which would spread calls
/// over connections and retry).
async fn h2(addr: SocketAddr, client: &Mesh) -> SendRequest<Full<Bytes>> {
    let tls = tls_connect(addr, client, b"h2").await;
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    send
}

fn request(path: &str) -> http::request::Builder {
    http::Request::get(format!("http://web{path}"))
}

/// Whether the peer closes `io` within `within` (after sending anything at all).
async fn closed_within(mut io: impl AsyncRead + Unpin, within: Duration) -> bool {
    let read_to_end = async {
        let mut buf = [0u8; 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

/// A server running as `web` on a fresh listener with `limits`, whose handler counts the
/// requests in flight (and the most at once) and sleeps 100 ms.
struct Tight {
    addr: SocketAddr,
    in_flight_max: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Tight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tight(harness: &Harness, limits: ServerLimits) -> Tight {
    let mesh = Mesh::start(harness.settings("web", Some("web")))
        .await
        .unwrap();
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let incoming = MeshIncoming::with_limits(l, mesh.server_tls_config(), None, limits).unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let in_flight_max = Arc::new(AtomicUsize::new(0));
    let router = axum::Router::new().fallback({
        let (in_flight, max) = (in_flight.clone(), Arc::clone(&in_flight_max));
        move || async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            "ok"
        }
    });
    let task = tokio::spawn(async move {
        let _mesh = mesh;
        serve(incoming, router).await;
    });
    Tight {
        addr,
        in_flight_max,
        task,
    }
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_server_keeps_serving() {
    let s = setup().await;

    // HTTP/2: 2 000 copies of one header, cheap to send (HPACK indexes it) but ~130 KB
    // decoded, over the 64 KiB limit.
    let mut send = h2(s.web.addr, &s.client).await;
    let mut big = request("/big");
    for _ in 0..2000 {
        big = big.header("x-padding", "a-value-of-thirty-bytes-long..");
    }
    let response = send
        .send_request(big.body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // The same connection still serves a normal request.
    let response = send
        .send_request(request("/small").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // HTTP/1.1: a 100 KiB header.
    let mut tls = tls_connect(s.web.addr, &s.client, b"http/1.1").await;
    let head = format!(
        "GET /big HTTP/1.1\r\nhost: web\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    // The server may answer and close before it has read it all.
    let _ = tls.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    assert_eq!(s.web.log.count_path("/big"), 0, "the app never saw them");
    still_serving(&s.calls).await;
}

#[tokio::test]
async fn an_oversized_body_gets_413_before_the_app_sees_it() {
    let s = setup().await;
    let body = vec![0u8; 17 * 1024 * 1024];
    let reply = send(
        &s.calls,
        http::Request::post("/upload")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{reply:?}");
    assert!(reply.mesh_error().is_some());
    assert_eq!(s.web.log.count_path("/upload"), 0);

    // Under the limit it goes through.
    let reply = send(
        &s.calls,
        http::Request::post("/upload")
            .body(Body::from(vec![0u8; 1024 * 1024]))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.echo().body_len, 1024 * 1024);
    still_serving(&s.calls).await;
}

#[tokio::test]
async fn an_oversized_body_streamed_without_a_length_gets_413_and_the_server_keeps_serving() {
    let s = setup().await;
    // 17 MiB in 64 KiB chunks, with no content-length: the server learns the size only by
    // reading, and must stop at its 16 MiB limit.
    const CHUNK: usize = 64 * 1024;
    let chunks = (0..17 * 16).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; CHUNK])));
    let request = http::Request::post("/upload")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    assert!(
        request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_none()
    );
    let reply = send(&s.calls, request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{reply:?}");
    assert!(reply.mesh_error().is_some(), "{reply:?}");

    // A streamed body under the limit goes through whole, and so do other calls.
    let chunks = (0..16).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; CHUNK])));
    let reply = send(
        &s.calls,
        http::Request::post("/upload")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.echo().body_len, 16 * CHUNK);
    still_serving(&s.calls).await;
}

/// `n` concurrent `GET path` on one HTTP/2 connection: each call's status, or the error's text.
async fn burst(
    send: &SendRequest<Full<Bytes>>,
    n: usize,
    path: &str,
) -> Vec<Result<StatusCode, String>> {
    let calls = (0..n).map(|_| {
        let mut send = send.clone();
        async move {
            let response = send
                .send_request(request(path).body(Full::default()).unwrap())
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = response.status();
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{e:?}"))?;
            Ok(status)
        }
    });
    futures_util::future::join_all(calls).await
}

#[tokio::test]
async fn streams_over_the_limit_are_refused_or_wait_for_a_free_one() {
    let s = setup().await;
    let server = tight(
        &s.harness,
        ServerLimits::default().with_max_concurrent_streams(4),
    )
    .await;

    // Sent before the client has the server's SETTINGS: streams over the limit are refused
    // (REFUSED_STREAM, which tells the client they were not processed and are safe to retry).
    let send = h2(server.addr, &s.client).await;
    let first = burst(&send, 20, "/").await;
    for result in &first {
        match result {
            Ok(status) => assert_eq!(*status, StatusCode::OK),
            Err(error) => assert!(error.contains("REFUSED_STREAM"), "{error}"),
        }
    }
    // Once it knows the limit, the client queues: every call succeeds, 4 at a time at most.
    let second = burst(&send, 20, "/").await;
    assert!(
        second.iter().all(|r| r == &Ok(StatusCode::OK)),
        "{second:?}"
    );
    let most = server.in_flight_max.load(Ordering::SeqCst);
    assert!((1..=4).contains(&most), "{most} requests at once");

    // The default server (256 streams) the same way, on one connection.
    let send = h2(s.web.addr, &s.client).await;
    let _ = send
        .clone()
        .send_request(request("/").body(Full::default()).unwrap())
        .await
        .unwrap();
    let results = burst(&send, 300, "/sleep/50").await;
    assert!(results.iter().all(|r| r == &Ok(StatusCode::OK)));
    still_serving(&s.calls).await;
}

#[tokio::test]
async fn clients_that_never_finish_their_handshake_or_headers_are_dropped() {
    let s = setup().await;
    let limits = ServerLimits::default()
        .with_handshake_timeout(Duration::from_millis(500))
        .with_header_timeout(Duration::from_millis(500));
    let server = tight(&s.harness, limits).await;

    // Silent after connecting; half a ClientHello; a finished handshake and then nothing
    // (HTTP/2), or half a request head (HTTP/1.1).
    let silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half_hello = TcpStream::connect(server.addr).await.unwrap();
    half_hello
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let quiet_h2 = tls_connect(server.addr, &s.client, b"h2").await;
    let mut half_head = tls_connect(server.addr, &s.client, b"http/1.1").await;
    half_head
        .write_all(b"GET / HTTP/1.1\r\nhost: web\r\n")
        .await
        .unwrap();

    // Meanwhile everyone else is served at once, by the default server and this one.
    let started = tokio::time::Instant::now();
    still_serving(&s.calls).await;
    let mut send = h2(server.addr, &s.client).await;
    let response = send
        .send_request(request("/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(2));

    let within = Duration::from_secs(5);
    assert!(closed_within(silent, within).await, "silent client kept");
    assert!(
        closed_within(half_hello, within).await,
        "half handshake kept"
    );
    assert!(
        closed_within(quiet_h2, within).await,
        "quiet HTTP/2 client kept"
    );
    assert!(
        closed_within(half_head, within).await,
        "half request head kept"
    );

    // The default server (10 s handshake limit) is not blocked by a silent client either.
    let _silent = TcpStream::connect(s.web.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let fresh = s.client.client::<Body>("web.default").await.unwrap();
    still_serving(&fresh).await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_slots_come_back() {
    let s = setup().await;
    let limits = ServerLimits::default().with_max_connections(2);
    let server = tight(&s.harness, limits).await;

    let first = TcpStream::connect(server.addr).await.unwrap();
    let second = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(third, Duration::from_secs(2)).await,
        "a third connection was kept"
    );

    // Closing the two frees their slots.
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut send = h2(server.addr, &s.client).await;
    let response = send
        .send_request(request("/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    still_serving(&s.calls).await;
}
