//! Automatic trust-anchor rotation under load: the control service's in-memory CA rotates its
//! own root on a short schedule (roots of 20 s, rotated at half their life, certificates of
//! 2 s) while a client calls a greeter continuously. The rotation passes overlap, issuing from
//! the new root and steady again, in that order, as `/subscribers` and `/metrics` show; no
//! call fails; at the end the bundle holds the new root alone and every certificate in use
//! chains to it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_core::anchor_rotation::RotationSchedule;
use mesh_core::tls::{Usage, verify_svid};
use mesh_tests::telemetry::admin_get;
use mesh_tests::{Config, Harness, eventually, listener};
use mesh_tonic::MeshTonicExt;
use rustls_pki_types::UnixTime;
use serde_json::Value;

/// `/subscribers` as JSON.
async fn subscribers(admin: std::net::SocketAddr) -> Value {
    let (status, body) = admin_get(admin, "/subscribers").await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Whether `mesh`'s certificate verifies against its own trust bundle.
fn chains_to_own_bundle(mesh: &mesh_tower::Mesh) -> bool {
    let svid = mesh.identity().svid();
    let chain = &svid.certified.cert;
    verify_svid(
        &mesh.identity().trust().load(),
        &chain[0],
        &chain[1..],
        UnixTime::now(),
        Usage::Client,
    )
    .is_ok()
}

#[tokio::test]
async fn the_root_rotates_by_itself_without_a_failed_call() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .account("greeter")
        .account("client");
    let harness = Harness::start_with(&config, |options| {
        options.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        options.cert_lifetime = Duration::from_secs(2);
        options.root_rotation = Some(RotationSchedule {
            root_lifetime: Duration::from_secs(20),
            rotate_at_percent: 50,
            ack_timeout: Duration::from_secs(3),
        });
    })
    .await
    .unwrap();
    let control = harness.control.as_ref().unwrap();
    let admin = control.admin_addr().unwrap();
    let server = harness.greeter(l, "g1", "greeter").await.unwrap();
    let client = harness.mesh("client").await.unwrap();
    let first_root = client.identity().trust().load().roots().to_vec();
    assert_eq!(first_root.len(), 1);
    let start = subscribers(admin).await;
    assert_eq!(start["rootRotation"]["phase"], "steady", "{start}");
    let root_a = start["rootRotation"]["rootKeyId"]
        .as_str()
        .unwrap()
        .to_owned();

    // Load all along: eight callers back to back.
    let channel = client.channel("greeter.default").await.unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let mut greeter = GreeterClient::new(channel.clone());
        let (running, ok, failed) = (running.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                match greeter.say_hello(HelloRequest { name: "r".into() }).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        eprintln!("call failed: {status:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }

    // Mid-rotation, `/subscribers` shows both roots and who ACKed them.
    let mut seen_overlap = None;
    for _ in 0..600 {
        let view = subscribers(admin).await;
        if view["rootRotation"]["nextRootKeyId"].is_string() {
            seen_overlap = Some(view);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let overlap = seen_overlap.expect("a rotation started within 30 s");
    assert_eq!(overlap["rootRotation"]["rootKeyId"], root_a.as_str());
    assert!(
        overlap["subscribers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["bundleAcked"].is_boolean() && s["certificateIssuerKeyId"].is_string()),
        "{overlap}"
    );

    // The whole rotation: back to steady on the next root.
    let mut done = Value::Null;
    for _ in 0..300 {
        let view = subscribers(admin).await;
        if view["rootRotation"]["phase"] == "steady"
            && view["rootRotation"]["rootKeyId"] != root_a.as_str()
        {
            done = view;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rotation = &done["rootRotation"];
    assert!(rotation.is_object(), "the rotation did not finish");
    let root_b = rotation["rootKeyId"].as_str().unwrap().to_owned();
    let steps: Vec<(String, String)> = rotation["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["phase"].as_str().unwrap().to_owned(),
                t["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    println!("rotation steps: {steps:?}");
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0], ("overlap".to_owned(), "scheduled".to_owned()));
    assert_eq!(steps[1], ("issuing_next".to_owned(), "acked".to_owned()));
    assert_eq!(steps[2].0, "steady");
    assert!(
        ["old_leaves_expired", "all_on_next"].contains(&steps[2].1.as_str()),
        "{steps:?}"
    );

    // Every workload drops A and holds a certificate from B (renewed within 2 s).
    assert!(
        eventually(Duration::from_secs(10), || {
            client.identity().trust().load().roots().len() == 1
                && client.identity().trust().load().roots() != first_root.as_slice()
                && chains_to_own_bundle(&client)
        })
        .await,
        "the client holds B alone and a certificate from B"
    );
    // Calls go on after A is gone, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.store(false, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }

    // A fresh workload starts on B alone: its handshake with the greeter needs the greeter's
    // certificate to be from B too.
    let fresh = harness.mesh("client").await.unwrap();
    assert_eq!(fresh.identity().trust().load().roots().len(), 1);
    let mut greeter = GreeterClient::new(fresh.channel("greeter.default").await.unwrap());
    greeter
        .say_hello(HelloRequest {
            name: "after".into(),
        })
        .await
        .unwrap();

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("calls through the rotation: {ok} succeeded, {failed} failed");
    assert_eq!(failed, 0, "{failed} calls failed ({ok} succeeded)");
    assert!(ok > 500, "traffic flowed: {ok}");
    assert!(server.greeter.served() > ok);

    // The metrics agree: one rotation completed, steady, the root in force B.
    let (_, metrics) = admin_get(admin, "/metrics").await.unwrap();
    let samples = mesh_tests::telemetry::parse(&metrics);
    let value = |name: &str| {
        samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
            .unwrap_or_else(|| panic!("{name} missing in {metrics}"))
    };
    assert_eq!(value("mesh_control_root_rotations_total"), 1.0);
    assert_eq!(value("mesh_control_root_rotation_phase"), 0.0);
    assert!(value("mesh_control_root_expiry_timestamp_seconds") > 0.0);
    let end = subscribers(admin).await;
    assert_eq!(end["rootRotation"]["rootKeyId"], root_b.as_str(), "{end}");
}
