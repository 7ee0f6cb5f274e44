//! The admin endpoint's readiness: `/ready` answers 503 until the workload has a certificate,
//! still 503 until its first snapshot, then 200; `/live` is 200 all along.
//!
//! The control service is reached through a gate the test opens step by step: the first
//! connection (Certify) and the later ones (Watch) separately.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mesh_tests::telemetry::admin_get;
use mesh_tests::{Config, Harness, eventually};
use mesh_tower::Mesh;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to `target`: the first once `certify` opens, the rest once `watch`
/// opens.
async fn gate(target: SocketAddr) -> (SocketAddr, watch::Sender<bool>, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (certify, certify_open) = watch::channel(false);
    let (watch_tx, watch_open) = watch::channel(false);
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut open = if seen.fetch_add(1, Ordering::Relaxed) == 0 {
                certify_open.clone()
            } else {
                watch_open.clone()
            };
            tokio::spawn(async move {
                if open.wait_for(|o| *o).await.is_err() {
                    return;
                }
                let mut outbound = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, certify, watch_tx)
}

#[tokio::test]
async fn ready_only_after_certificate_and_first_snapshot() {
    let config = Config::new().account("client");
    let harness = Harness::start(&config).await.unwrap();
    let control = harness.control.as_ref().unwrap().addr();
    let (gated, open_certify, open_watch) = gate(control).await;

    // A free port for the admin server, known before `Mesh::start` returns.
    let admin = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let mut settings = harness.settings("client", None).with_admin_addr(admin);
    settings.control_addrs = vec![gated.to_string()];
    let starting = tokio::spawn(Mesh::start(settings));

    let up = eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect(admin).is_ok()
    })
    .await;
    assert!(
        up,
        "the admin server starts before the certificate is asked for"
    );
    assert_eq!(admin_get(admin, "/live").await.unwrap().0, 200);
    let (status, body) = admin_get(admin, "/ready").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "no certificate yet\n"));

    // The certificate arrives; a workload that serves nothing does not wait for a snapshot.
    open_certify.send_replace(true);
    let mesh = tokio::time::timeout(Duration::from_secs(10), starting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(mesh.admin_addr(), Some(admin));
    let (status, body) = admin_get(admin, "/ready").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "no snapshot yet\n"));

    // The Watch stream gets through: the first snapshot makes it ready.
    open_watch.send_replace(true);
    let mut ready = false;
    for _ in 0..100 {
        if admin_get(admin, "/ready").await.unwrap().0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "ready after the first snapshot");
    assert!(mesh.control_status().version >= 1);
}

#[tokio::test]
async fn the_debug_endpoints_can_be_switched_off() {
    let config = Config::new().account("client");
    let harness = Harness::start(&config).await.unwrap();
    let settings = harness
        .settings("client", None)
        .with_admin_addr("127.0.0.1:0".parse().unwrap())
        .with_admin_debug(false);
    let mesh = Mesh::start(settings).await.unwrap();
    let admin = mesh.admin_addr().unwrap();
    for path in ["/debug/config", "/debug/endpoints"] {
        let (status, body) = admin_get(admin, path).await.unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("debug endpoints are off"), "{path}: {body}");
    }
    // The rest is served.
    assert_eq!(admin_get(admin, "/ready").await.unwrap().0, 200);
    assert_eq!(admin_get(admin, "/metrics").await.unwrap().0, 200);
}
