//! The gRPC port under a connection flood, over real sockets: stalled TCP connections (open,
//! then silent: a TLS handshake that never starts), connections that finish TLS and then say
//! nothing, and connections over the cap. Beside them a legitimate client keeps doing what a
//! workload does at start-up, Certify then Watch, and every one of its rounds must succeed;
//! the process's memory (the control service runs in this process) stays within a stated
//! bound before, during and after.
//!
//! Sources are told apart by loopback address (127.0.0.0/8 is all local on Linux), so the
//! per-source handshake budget sees several "hosts".

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use mesh_core::testing::hostile;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mesh_control::{ConfigSource, ConnectionLimits, ControlOptions, RunningControl};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const CLIENT_TOKEN: &str = "client-token-0123456789";

/// How much the process's resident memory may grow while the flood is held (and still be
/// above the baseline after it): a few hundred connections' TLS and socket state is a few
/// megabytes; 64 MiB leaves room for the allocator and the test's own clients, and still
/// catches per-connection costs gone wrong (or unbounded connections).
const RSS_BOUND_KB: u64 = 64 * 1024;

/// The process's resident set size, in kB.
fn rss_kb() -> u64 {
    hostile::rss_bytes() / 1024
}

fn loopback(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

/// A TCP connection to `to` from `source`.
async fn tcp_from(source: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// A connection from `source` that completes TLS (no client certificate) and then idles.
async fn tls_from(control: &RunningControl, source: IpAddr) -> io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(source, control.addr()).await?;
    let connector =
        TlsConnector::from(client_tls(control.trust_bundle(), control.identity(), None));
    connector
        .connect(ServerName::IpAddress(control.addr().ip().into()), tcp)
        .await
}

/// Whether the server closes `tcp` within `wait` (end of stream or a reset).
async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, tcp.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// What a workload does at start-up, from 127.0.0.1: Certify over a fresh connection, then
/// Watch with the certificate until the first snapshot. Every step within [`WAIT`].
async fn legitimate_round(control: &RunningControl) -> Result<(), String> {
    let within = |what: &'static str| move |_| format!("{what}: no answer within {WAIT:?}");
    let mut client = tokio::time::timeout(
        WAIT,
        connect_to(
            control.addr(),
            control.trust_bundle(),
            control.identity().clone(),
            None,
        ),
    )
    .await
    .map_err(within("connect"))?
    .map_err(|e| format!("connect: {e}"))?;
    let (key, csr) = key_and_csr();
    let response = tokio::time::timeout(WAIT, certify(&mut client, CLIENT_TOKEN, csr))
        .await
        .map_err(within("certify"))?
        .map_err(|e| format!("certify: {e}"))?;
    let cert = TestCert {
        chain: response
            .chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    };
    let mut client = tokio::time::timeout(
        WAIT,
        connect_to(
            control.addr(),
            control.trust_bundle(),
            control.identity().clone(),
            Some(&cert),
        ),
    )
    .await
    .map_err(within("connect with a certificate"))?
    .map_err(|e| format!("connect with a certificate: {e}"))?;
    let mut watch =
        tokio::time::timeout(WAIT, open_watch(&mut client, subscribe("n", &["greeter"])))
            .await
            .map_err(within("watch"))?
            .map_err(|e| format!("watch: {e}"))?;
    match tokio::time::timeout(WAIT, watch.rx.message()).await {
        Ok(Ok(Some(snapshot))) if snapshot.version >= 1 => Ok(()),
        other => Err(format!("first snapshot: {other:?}")),
    }
}

/// Runs `rounds` legitimate rounds one after another; returns the failures.
async fn legitimate_rounds(control: &RunningControl, rounds: usize) -> Vec<String> {
    let mut failures = Vec::new();
    for _ in 0..rounds {
        if let Err(error) = legitimate_round(control).await {
            failures.push(error);
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_is_served_beside_a_flood_of_stalled_connections() {
    // The defaults: 10,000 connections, 256 handshakes, 32 per source, 10 s per handshake.
    let control = start_inline(&config_yaml(5000)).await;
    let addr = control.addr();
    // One round first, so that what the first use allocates is in the baseline.
    assert_eq!(legitimate_rounds(&control, 1).await, Vec::<String>::new());
    let before = rss_kb();

    // 200 stalled connections from one source: it gets its 32 handshakes, the other 168 are
    // closed at once.
    let one_source = loopback(0, 0, 2);
    let mut single = Vec::new();
    for _ in 0..200 {
        single.push(tcp_from(one_source, addr).await.expect("connects"));
    }
    let closed =
        futures_util::future::join_all(single.iter_mut().map(|tcp| closed_within(tcp, WAIT)))
            .await
            .into_iter()
            .filter(|closed| *closed)
            .count();
    assert_eq!(
        closed,
        200 - 32,
        "closed of 200 stalled connections from one source"
    );

    // 300 stalled connections from 15 sources (20 each, within their share): more than the
    // total of 256, so the oldest handshakes are abandoned for newer ones.
    let mut spread = Vec::new();
    for i in 0..300u16 {
        let source = loopback(0, 1, u8::try_from(1 + i % 15).unwrap());
        spread.push(tcp_from(source, addr).await.expect("connects"));
    }
    // 100 connections that finish TLS and then never speak HTTP/2: established, idle.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(
            tls_from(&control, loopback(0, 0, 3))
                .await
                .expect("TLS completes"),
        );
    }

    // Beside all that, a workload's start-up, twenty times over.
    let failures = legitimate_rounds(&control, 20).await;
    let during = rss_kb();
    drop((single, spread, idle));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_failures = legitimate_rounds(&control, 2).await;
    let after = rss_kb();
    println!(
        "RSS: before {before} kB, during {during} kB (+{} kB), after {after} kB (+{} kB)",
        during.saturating_sub(before),
        after.saturating_sub(before),
    );
    hostile::report(
        "control: 500 stalled TLS handshakes from 16 addresses, 100 idle connections",
        "20 workload start-ups (Certify, then Watch to its first snapshot)",
        failures.len() + after_failures.len(),
        before * 1024,
        during * 1024,
        after * 1024,
    );
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "legitimate rounds beside the flood"
    );
    assert_eq!(
        after_failures,
        Vec::<String>::new(),
        "legitimate rounds after the flood"
    );
    assert!(
        during.saturating_sub(before) < RSS_BOUND_KB,
        "RSS grew by {} kB during the flood (bound {RSS_BOUND_KB} kB)",
        during - before
    );
    assert!(
        after.saturating_sub(before) < RSS_BOUND_KB,
        "RSS {} kB above the baseline after the flood (bound {RSS_BOUND_KB} kB)",
        after - before
    );
    control.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_slots_come_back() {
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(5000)));
    options.connection_limits = ConnectionLimits {
        max_connections: 40,
        handshake_timeout: Duration::from_millis(500),
        ..ConnectionLimits::default()
    };
    let control = mesh_control::start(options).await.expect("control starts");
    let addr = control.addr();

    // 40 established connections take every slot.
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(
            tls_from(&control, loopback(0, 0, 3))
                .await
                .expect("TLS completes"),
        );
    }
    // Over the cap, a connection is closed as soon as it is accepted.
    let mut closed = 0;
    for _ in 0..20 {
        let mut tcp = tcp_from(loopback(0, 0, 4), addr).await.expect("connects");
        if closed_within(&mut tcp, WAIT).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 20, "connections over the cap closed at once");
    assert!(
        legitimate_round(&control).await.is_err(),
        "no slot for anyone"
    );

    // Slots come back as connections close: the workload gets in.
    held.truncate(30);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(legitimate_rounds(&control, 3).await, Vec::<String>::new());

    // A handshake that never starts is abandoned after the handshake time limit (500 ms
    // here), and its slot comes back.
    let mut stalled = tcp_from(loopback(0, 0, 5), addr).await.expect("connects");
    assert!(
        closed_within(&mut stalled, WAIT).await,
        "a stalled handshake is closed after the time limit"
    );
    control.shutdown().await;
}
