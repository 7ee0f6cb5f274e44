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
use mesh_core::SpiffeId;
use mesh_core::tls::TrustBundle;
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

/// A control service to call: one started in this process, or the binary in a child process.
trait Control {
    fn addr(&self) -> SocketAddr;
    fn trust_bundle(&self) -> TrustBundle;
    fn identity(&self) -> &SpiffeId;
}

impl Control for RunningControl {
    fn addr(&self) -> SocketAddr {
        RunningControl::addr(self)
    }
    fn trust_bundle(&self) -> TrustBundle {
        RunningControl::trust_bundle(self)
    }
    fn identity(&self) -> &SpiffeId {
        RunningControl::identity(self)
    }
}

/// What a workload does at start-up, from 127.0.0.1: Certify over a fresh connection, then
/// Watch with the certificate until the first snapshot. Every step within [`WAIT`].
async fn legitimate_round(control: &impl Control) -> Result<(), String> {
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
async fn legitimate_rounds(control: &impl Control, rounds: usize) -> Vec<String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_give_back_their_slots() {
    use tokio::io::AsyncWriteExt;
    const IDLE: Duration = Duration::from_secs(1);
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(5000)));
    options.connection_limits = ConnectionLimits {
        max_connections: 40,
        idle_timeout: IDLE,
        ..ConnectionLimits::default()
    };
    let control = mesh_control::start(options).await.expect("control starts");
    assert_eq!(legitimate_rounds(&control, 1).await, Vec::<String>::new());
    let before = rss_kb();

    // A subscriber whose Watch stream stays open: its connection is never idle.
    let bundle = control.trust_bundle();
    let mut subscriber = connect_to(control.addr(), bundle, control.identity().clone(), None)
        .await
        .expect("connects");
    let (key, csr) = key_and_csr();
    let issued = certify(&mut subscriber, CLIENT_TOKEN, csr)
        .await
        .expect("certified");
    let cert = TestCert {
        chain: issued
            .chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    };
    let mut subscriber = connect_to(
        control.addr(),
        control.trust_bundle(),
        control.identity().clone(),
        Some(&cert),
    )
    .await
    .expect("connects with a certificate");
    let mut watch = open_watch(&mut subscriber, subscribe("n", &["greeter"]))
        .await
        .expect("watch opens");
    assert!(watch.rx.message().await.expect("snapshot").is_some());

    // 30 of the 40 slots: 15 connections that finish TLS and say nothing, 15 that open
    // HTTP/2 and then only ping.
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let ping = [0, 0, 8, 0x6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let started = tokio::time::Instant::now();
    let mut held = Vec::new();
    for i in 0..30 {
        let mut tls = tls_from(&control, loopback(0, 0, 3))
            .await
            .expect("TLS completes");
        let pings = i % 2 == 1;
        if pings {
            let mut opening = PREFACE.to_vec();
            opening.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // empty SETTINGS
            tls.write_all(&opening).await.expect("preface");
        }
        held.push(tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(tls);
            let pinger = tokio::spawn(async move {
                if !pings {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if write.write_all(&ping).await.is_err() {
                        return;
                    }
                }
            });
            let mut buf = [0u8; 1024];
            let closed = tokio::time::timeout(4 * IDLE, async {
                while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
            pinger.abort();
            closed.ok().map(|()| started.elapsed())
        }));
    }
    // Beside them, workload start-ups on the 10 slots left.
    let failures = legitimate_rounds(&control, 5).await;
    let during = rss_kb();
    let mut closed_after = Vec::new();
    for held in held {
        closed_after.push(held.await.expect("joins"));
    }
    let kept = closed_after.iter().filter(|c| c.is_none()).count();
    assert_eq!(kept, 0, "{kept} of 30 idle connections kept");
    let earliest = closed_after.iter().flatten().min().expect("some closed");
    assert!(*earliest >= IDLE / 2, "closed after {earliest:?}");

    // Their slots came back: 38 connections fit beside the subscriber's.
    let mut again = Vec::new();
    for _ in 0..38 {
        again.push(
            tls_from(&control, loopback(0, 0, 4))
                .await
                .expect("TLS completes"),
        );
    }
    drop(again);
    // Past two idle periods, the subscriber's stream is still open.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), watch.rx.message())
            .await
            .is_err(),
        "the Watch stream ended"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_failures = legitimate_rounds(&control, 2).await;
    let after = rss_kb();
    hostile::report(
        "control: 30 idle connections (15 silent, 15 pinging) on a 40-connection cap",
        "5 workload start-ups, and a Watch stream held throughout",
        failures.len() + after_failures.len(),
        before * 1024,
        during * 1024,
        after * 1024,
    );
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "beside the idle connections"
    );
    assert_eq!(after_failures, Vec::<String>::new(), "after them");
    assert!(during.saturating_sub(before) < RSS_BOUND_KB);
    control.shutdown().await;
}

/// The `mesh-control` binary in a child process, killed when dropped.
struct ChildControl {
    child: std::process::Child,
    addr: SocketAddr,
    bundle: TrustBundle,
    identity: SpiffeId,
    /// What it logged before it said where it listens.
    log: String,
    _dir: tempfile::TempDir,
}

impl Control for ChildControl {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn trust_bundle(&self) -> TrustBundle {
        self.bundle.clone()
    }
    fn identity(&self) -> &SpiffeId {
        &self.identity
    }
}

impl Drop for ChildControl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `open_files` as its soft and hard open-file limit (as a shell's
/// `ulimit -n` sets both), serving `config_yaml(5000)`.
fn spawn_binary(open_files: u64) -> ChildControl {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("control.yaml");
    std::fs::write(&config, config_yaml(5000)).unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_mesh-control"))
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Both pipes are read to the end on their own threads, so neither ever fills.
    let (log_tx, log_rx) = std::sync::mpsc::channel::<String>();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let (out_tx, out_rx) = std::sync::mpsc::channel::<String>();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    // Its log comes first (on standard output too), then the line that says where it listens.
    let mut log: String = String::new();
    let line = loop {
        let line = out_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the binary did not say where it listens:\n{log}"));
        if line.contains(" listening on ") {
            break line;
        }
        log.push_str(&line);
        log.push('\n');
    };
    // "mesh-control 0.1.0 listening on 127.0.0.1:PORT (admin http://...)"
    let addr: SocketAddr = line
        .split_whitespace()
        .skip_while(|word| *word != "on")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();
    log.extend(log_rx.try_iter().map(|line| line + "\n"));
    let pem = std::fs::read(dir.path().join("trust-bundle.pem")).unwrap();
    ChildControl {
        child,
        addr,
        bundle: TrustBundle::from_pem(trust_domain(), &pem).unwrap(),
        identity: SpiffeId::parse("spiffe://mesh.local/ns/mesh-system/sa/mesh-control").unwrap(),
        log,
        _dir: dir,
    }
}

/// The finding: with a 1,024 open-file limit (soft and hard), 2,000 stalled connections
/// delayed a fresh Certify by 7-11 s. The handshake budget holds at most 256 of them (32 per
/// source), the binary fits its connection cap to the descriptors it has, and the workload is
/// served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_at_a_1024_open_file_limit_serves_a_workload_beside_2000_stalled_connections() {
    // This process opens the 2,000 connections: it needs the descriptors itself.
    let own = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: own.maximum,
            maximum: own.maximum,
        },
    );
    let control = spawn_binary(1024);
    assert!(
        control
            .log
            .contains("open-file limit already at its hard limit")
            && control.log.contains("the cap is lowered to fit"),
        "the binary says what it did with its limit:\n{}",
        control.log
    );
    assert_eq!(legitimate_rounds(&control, 1).await, Vec::<String>::new());

    let mut stalled = Vec::new();
    for i in 0..2000u16 {
        let source = loopback(0, 2, u8::try_from(1 + i % 16).unwrap());
        match tcp_from(source, control.addr()).await {
            Ok(tcp) => stalled.push(tcp),
            Err(error) => panic!("connection {i}: {error}"),
        }
    }
    let before = rss_of(control.child.id());
    let started = std::time::Instant::now();
    let failures = legitimate_rounds(&control, 10).await;
    let during = rss_of(control.child.id());
    let took = started.elapsed();
    println!("10 workload start-ups beside 2,000 stalled connections at 1,024 files: {took:?}");
    hostile::report(
        "control binary at a 1,024 open-file limit: 2,000 stalled connections from 16 addresses",
        "10 workload start-ups (Certify, then Watch)",
        failures.len(),
        before,
        during,
        {
            drop(stalled);
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss_of(control.child.id())
        },
    );
    assert_eq!(failures, Vec::<String>::new(), "legitimate rounds");
    assert!(
        during.saturating_sub(before) < RSS_BOUND_KB * 1024,
        "the binary's RSS grew from {before} to {during} bytes"
    );
}

/// Resident memory of process `pid`, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}
