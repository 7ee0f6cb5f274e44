//! The control service killed under steady load, then restarted on the same address with the
//! same CA: no call fails while it is away, every workload reconnects by itself, and a config
//! change after the restart reaches them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_control::{CaSource, ConfigSource, ControlOptions};
use mesh_tests::{Config, Harness, eventually, listener};
use mesh_tonic::MeshTonicExt;

#[tokio::test]
async fn calls_survive_a_control_service_restart_and_workloads_reconnect() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let base = Config::new().account("greeter").account("client");
    let ca_dir = tempfile::tempdir().unwrap();
    // A fixed address and a CA kept on disk: what a restarted control service keeps.
    let control_addr = listener().await.unwrap().local_addr().unwrap();
    let ca = CaSource::Dev {
        state_dir: ca_dir.path().to_owned(),
    };
    let mut harness =
        Harness::start_with(&base.clone().service("greeter", &[(a1, "greeter")]), |o| {
            o.listen = control_addr;
            o.ca = ca.clone();
        })
        .await
        .unwrap();
    let _g1 = harness.greeter(l1, "g1", "greeter").await.unwrap();
    let _g2 = harness.greeter(l2, "g2", "greeter").await.unwrap();
    let client = harness.mesh("client").await.unwrap();
    let channel = client.channel("greeter.default").await.unwrap();

    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let mut greeter = GreeterClient::new(channel.clone());
        let (running, ok, failed) = (running.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                match greeter.say_hello(HelloRequest { name: "r".into() }).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    // Kill it under load; calls keep flowing from the last good snapshot.
    harness.stop_control().await;
    assert!(
        eventually(Duration::from_secs(5), || !client
            .control_status()
            .connected)
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Restart on the same address with the same CA and config file.
    let mut options = ControlOptions::new(
        harness.trust_domain.clone(),
        ConfigSource::File(harness.config_path.clone()),
    );
    options.listen = control_addr;
    options.ca = ca;
    harness.control = Some(mesh_control::start(options).await.unwrap());
    assert!(
        eventually(Duration::from_secs(15), || client
            .control_status()
            .connected)
        .await,
        "the client reconnected by itself"
    );

    // A change after the restart reaches the client: the second replica joins.
    let version = client.control_status().version;
    harness
        .write_config(&base.service("greeter", &[(a1, "greeter"), (a2, "greeter")]))
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || client.control_status().version
            > version)
        .await,
        "the new config arrived"
    );
    assert!(
        eventually(Duration::from_secs(5), || client.snapshot().destinations[0]
            .endpoints
            .len()
            == 2)
        .await
    );

    running.store(false, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} calls failed ({ok} succeeded)");
    assert!(ok > 100, "traffic flowed: {ok}");
}
