//! Version skew: a control service newer than its client sends a snapshot the client cannot
//! read (here a route filter kind this client does not know). The client refuses it with a
//! NACK naming the field, keeps serving from its last good snapshot, and the control service
//! records the NACK against that subscriber; once the control sends something the client
//! understands again, the client ACKs and applies it.
//!
//! Control and client share mesh-core's validation, so the newer control service is played by
//! `ControlOptions::wire_transform` (mesh-control's `testing` feature), which rewrites each
//! snapshot on its way out.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use examples::hello::greeter_client::GreeterClient;
use mesh_control::skew::WireTransform;
use mesh_core::proto;
use mesh_tests::greeter::replicas_answering;
use mesh_tests::{Config, Harness, eventually, listener};
use mesh_tonic::MeshTonicExt;

/// The kind of filter the "newer" control service adds to every rule.
const UNKNOWN_FILTER: &str = "URLRewrite";

/// `greeter` on `endpoints`, with a gRPC route called `route`.
fn config(endpoints: &[(std::net::SocketAddr, &str)], route: &str) -> Config {
    Config::new()
        .service("greeter", endpoints)
        .routes(
            "greeter",
            &format!(
                r#"
                - name: {route}
                  kind: grpc
                  rules:
                    - backendRefs: [{{name: greeter}}]
                "#
            ),
        )
        .account("greeter")
        .account("client")
}

/// Adds a filter of a kind the client does not know to every route rule.
fn newer_control(mut snapshot: proto::Snapshot) -> proto::Snapshot {
    for destination in &mut snapshot.destinations {
        for route in &mut destination.routes {
            for rule in &mut route.rules {
                rule.filters.push(proto::RouteFilter {
                    r#type: UNKNOWN_FILTER.into(),
                    ..Default::default()
                });
            }
        }
    }
    snapshot
}

#[tokio::test]
async fn a_snapshot_the_client_cannot_read_is_nacked_and_the_last_good_one_keeps_serving() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let skewed = Arc::new(AtomicBool::new(false));
    let transform = {
        let skewed = skewed.clone();
        WireTransform::new(move |snapshot| {
            if skewed.load(Ordering::Relaxed) {
                newer_control(snapshot)
            } else {
                snapshot
            }
        })
    };
    let harness = Harness::start_with(&config(&[(a1, "greeter")], "api"), |options| {
        options.wire_transform = transform;
    })
    .await
    .unwrap();
    let _greeters = harness.greeters([(l1, "g1"), (l2, "g2")]).await.unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());
    assert_eq!(replicas_answering(&client, 60).await, ["g1"]);
    let good = client_mesh.control_status().version;
    let subscriber = || {
        harness
            .control
            .as_ref()
            .unwrap()
            .subscribers()
            .into_iter()
            .find(|s| s.node == "client-test")
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(5), || subscriber().last_acked_version
            == Some(good))
        .await,
        "the first snapshot was acknowledged"
    );

    // The newer control service: g2 joins, in a snapshot the client cannot read.
    skewed.store(true, Ordering::Relaxed);
    harness
        .write_config(&config(&[(a1, "greeter"), (a2, "greeter")], "api"))
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || client_mesh
            .control_status()
            .last_nack
            .is_some())
        .await,
        "the client never refused the skewed snapshot"
    );
    let (nacked, reason) = client_mesh.control_status().last_nack.unwrap();
    println!("the client NACKed version {nacked}: {reason}");
    assert!(nacked > good, "NACK of version {nacked}, after {good}");
    assert!(
        reason.contains("filters[0]") && reason.contains(UNKNOWN_FILTER),
        "the reason names the field and the value: {reason}"
    );
    // Still on the last good snapshot: the same version, and only g1 answers.
    assert_eq!(client_mesh.control_status().version, good);
    assert_eq!(replicas_answering(&client, 60).await, ["g1"]);
    // The control service recorded the NACK, with the client's reason.
    assert!(
        eventually(Duration::from_secs(5), || subscriber().last_nack.is_some()).await,
        "the control service did not record the NACK"
    );
    let recorded = subscriber();
    let nack = recorded.last_nack.clone().unwrap();
    assert_eq!(nack.version, nacked);
    assert!(nack.error.contains(UNKNOWN_FILTER), "{}", nack.error);
    // And by field: the path of the filter the client could not read, typed.
    let detail = &nack.details[0];
    assert!(
        detail.field.starts_with("destinations[0].")
            && detail.field.ends_with("filters[0].type")
            && detail.message.contains(UNKNOWN_FILTER)
            && detail.code == "invalid_field",
        "{detail:?}"
    );
    assert_eq!(recorded.last_acked_version, Some(good));
    assert_eq!(recorded.last_sent_version, nacked);

    // The skew ends; the next version (the route renamed: a change to send) is one the client
    // reads: ACKed and applied.
    skewed.store(false, Ordering::Relaxed);
    harness
        .reconfigure(
            &client_mesh,
            &config(&[(a1, "greeter"), (a2, "greeter")], "api-next"),
        )
        .await
        .unwrap();
    let applied = client_mesh.control_status().version;
    assert!(applied > nacked);
    assert!(
        eventually(Duration::from_secs(5), || subscriber().last_acked_version
            == Some(applied))
        .await,
        "the client acknowledged the version after the skew"
    );
    assert!(
        eventually(Duration::from_secs(5), || client_mesh
            .snapshot()
            .destinations
            .iter()
            .any(|d| d.endpoints.len() == 2))
        .await
    );
    // g2, which joined in the version after the skew, answers once its connection is up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut answered = replicas_answering(&client, 60).await;
    while answered != ["g1", "g2"] && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        answered = replicas_answering(&client, 60).await;
    }
    assert_eq!(answered, ["g1", "g2"]);
}
