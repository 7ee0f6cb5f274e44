//! `ReplicaSubscribers`, the call replicas ask each other for their subscribers with: answered
//! only to the control service's own identity, over real mTLS.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use mesh_core::proto::ReplicaSubscribersRequest;
use support::*;
use tonic::Code;

/// The control file of [`config_yaml`] plus a bootstrap token for the control service's own
/// account (`mesh-system/mesh-control`): what a second replica holds, in a test.
fn config_with_control_token() -> String {
    config_yaml(5000)
        + "  - token: control-token-0123456789\n    namespace: mesh-system\n    serviceAccount: mesh-control\n"
}

#[tokio::test]
async fn only_the_control_identity_may_read_a_replicas_subscribers() {
    let control = start_inline(&config_with_control_token()).await;
    let client_cert = obtain_cert(&control, "client-token-0123456789").await;
    // A subscriber, so that there is a row to read.
    let mut subscriber = connect(&control, Some(&client_cert)).await;
    let mut stream = open_watch(&mut subscriber, subscribe("client-0", &["greeter"]))
        .await
        .unwrap();
    // Registered once its first snapshot is out.
    stream.next().await;

    // Without a certificate: refused, saying why.
    let mut anonymous = connect(&control, None).await;
    let status = anonymous
        .replica_subscribers(ReplicaSubscribersRequest {})
        .await
        .unwrap_err();
    assert_code(
        &status,
        Code::Unauthenticated,
        "ReplicaSubscribers requires a client certificate",
    );

    // A workload's certificate is valid, but not the control service's: refused, naming it.
    let mut workload = connect(&control, Some(&client_cert)).await;
    let status = workload
        .replica_subscribers(ReplicaSubscribersRequest {})
        .await
        .unwrap_err();
    assert_code(
        &status,
        Code::PermissionDenied,
        "ReplicaSubscribers: spiffe://mesh.local/ns/default/sa/client is not the control service",
    );

    // The control service's own identity (another replica): its rows, marked with its name.
    let replica_cert = obtain_cert(&control, "control-token-0123456789").await;
    let mut replica = connect(&control, Some(&replica_cert)).await;
    let answer = replica
        .replica_subscribers(ReplicaSubscribersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.replica, control.replica_name());
    assert_eq!(
        answer.replica,
        control.addr().to_string(),
        "by default its address"
    );
    assert_eq!(answer.config_version, control.config_version());
    assert!(!answer.instance.is_empty());
    let rows: Vec<serde_json::Value> = serde_json::from_str(&answer.subscribers_json).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["node"], "client-0");
    assert_eq!(rows[0]["replica"], control.replica_name());
    assert_eq!(
        rows[0]["identity"],
        "spiffe://mesh.local/ns/default/sa/client"
    );
}

#[tokio::test]
async fn a_bad_peer_or_peer_bound_is_a_start_error_naming_it() {
    let start = |peers: Vec<&str>, adjust: fn(&mut mesh_control::ControlOptions)| {
        let mut options = mesh_control::ControlOptions::new(
            trust_domain(),
            mesh_control::ConfigSource::Inline(config_yaml(5000)),
        );
        options.peers = peers.into_iter().map(String::from).collect();
        adjust(&mut options);
        mesh_control::start(options)
    };
    let error = start(vec!["10.0.0.2:7400", "mesh-control-peers"], |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "peers: mesh-control-peers: expected host:port"
    );
    let error = start(vec!["10.0.0.2:7400"], |o| o.peer_limits.max_peers = 0)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "peers: peer_limits.max_peers: must be at least 1"
    );
}
