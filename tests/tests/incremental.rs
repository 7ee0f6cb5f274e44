//! Incremental Watch, end to end: a real control service and real meshes.
//!
//! - An endpoint added, then one removed, reach a meshed client as increments (the control
//!   service's record of the subscriber counts one full snapshot and then increments) and the
//!   client routes by them.
//! - A lost increment (the control service's `dropping` test hook) leaves a gap that the
//!   client detects at the next increment: it asks for a resync, gets a full snapshot and
//!   converges.
//! - Version skew both ways: a control service that predates increments (`full_only`) keeps
//!   a new client on full snapshots; a client that predates them (a raw Watch client that does
//!   not announce them) gets only full snapshots from this control service.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use examples::hello::greeter_client::GreeterClient;
use mesh_control::skew::WireTransform;
use mesh_core::proto::control_client::ControlClient;
use mesh_core::proto::{self, CertifyRequest, Subscribe, WatchRequest, watch_request};
use mesh_core::tls::TrustBundle;
use mesh_tests::greeter::replicas_answering;
use mesh_tests::rawtls::{client_tls, raw_channel};
use mesh_tests::{Config, Harness, eventually, listener, token_for};
use mesh_tonic::MeshTonicExt;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn config(endpoints: &[(SocketAddr, &str)]) -> Config {
    Config::new()
        .service("greeter", endpoints)
        .account("greeter")
        .account("client")
}

/// Calls until exactly `want` answer (a new endpoint's connection comes up in the background).
async fn until_answering(client: &GreeterClient<mesh_tonic::MeshChannel>, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answered = replicas_answering(client, 40).await;
        if answered == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "answered by {answered:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn subscriber(harness: &Harness, node: &str) -> mesh_control::SubscriberStatus {
    harness
        .control
        .as_ref()
        .unwrap()
        .subscribers()
        .into_iter()
        .find(|s| s.node == node)
        .unwrap()
}

#[tokio::test]
async fn endpoints_added_and_removed_arrive_as_increments_and_are_routed_to() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let harness = Harness::start(&config(&[(a1, "greeter")])).await.unwrap();
    let _greeters = harness.greeters([(l1, "g1"), (l2, "g2")]).await.unwrap();
    let mesh = harness.mesh("client").await.unwrap();
    let client = GreeterClient::new(mesh.channel("greeter").await.unwrap());
    assert_eq!(replicas_answering(&client, 40).await, ["g1"]);
    let first = subscriber(&harness, "client-test");
    assert!(first.incremental, "the client announced increments");
    assert_eq!((first.full_snapshots_sent, first.increments_sent), (1, 0));

    // g2 joins: an increment.
    harness
        .reconfigure(&mesh, &config(&[(a1, "greeter"), (a2, "greeter")]))
        .await
        .unwrap();
    until_answering(&client, &["g1", "g2"]).await;
    // g1 leaves: another increment.
    harness
        .reconfigure(&mesh, &config(&[(a2, "greeter")]))
        .await
        .unwrap();
    until_answering(&client, &["g2"]).await;
    let version = mesh.control_status().version;
    assert!(
        eventually(Duration::from_secs(5), || subscriber(
            &harness,
            "client-test"
        )
        .last_acked_version
            == Some(version))
        .await,
        "the client acknowledged the last increment"
    );
    let after = subscriber(&harness, "client-test");
    assert_eq!(after.full_snapshots_sent, 1, "{after:?}");
    assert!(after.increments_sent >= 2, "{after:?}");
    assert_eq!(after.resyncs, 0);
    // The state the increments built is the one a full snapshot carries.
    let endpoints: Vec<_> = mesh.snapshot().destinations[0]
        .endpoints
        .iter()
        .map(|e| e.address)
        .collect();
    assert_eq!(endpoints, [a2]);
}

#[tokio::test]
async fn a_lost_increment_is_detected_and_the_client_resyncs() {
    let (l1, l2, l3) = (
        listener().await.unwrap(),
        listener().await.unwrap(),
        listener().await.unwrap(),
    );
    let (a1, a2, a3) = (
        l1.local_addr().unwrap(),
        l2.local_addr().unwrap(),
        l3.local_addr().unwrap(),
    );
    // The version whose increments are lost, to every subscriber (the greeters watch their
    // own service too); 0 for none.
    let lose = Arc::new(AtomicU64::new(0));
    let transform = {
        let lose = lose.clone();
        WireTransform::default().dropping(move |message| {
            message.base_version != 0 && message.version == lose.load(Ordering::Relaxed)
        })
    };
    let harness = Harness::start_with(&config(&[(a1, "greeter")]), |options| {
        options.wire_transform = transform;
    })
    .await
    .unwrap();
    let _greeters = harness
        .greeters([(l1, "g1"), (l2, "g2"), (l3, "g3")])
        .await
        .unwrap();
    let mesh = harness.mesh("client").await.unwrap();
    let client = GreeterClient::new(mesh.channel("greeter").await.unwrap());
    assert_eq!(replicas_answering(&client, 40).await, ["g1"]);
    let held = mesh.control_status().version;

    // g2 joins in an increment that is lost on the way.
    let control = harness.control.as_ref().unwrap();
    let before = control.config_version();
    lose.store(before + 1, Ordering::Relaxed);
    harness
        .write_config(&config(&[(a1, "greeter"), (a2, "greeter")]))
        .unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(5), control.version_after(before))
        .await
        .unwrap();
    assert_eq!(lost, before + 1, "the edit is the next version");
    assert!(
        eventually(Duration::from_secs(5), || subscriber(
            &harness,
            "client-test"
        )
        .last_sent_version
            == lost)
        .await
    );
    assert_eq!(
        mesh.control_status().version,
        held,
        "the client never saw it"
    );

    // g3 joins: the increment is over the lost version, the client asks for a resync and the
    // full snapshot brings both g2 and g3.
    harness
        .reconfigure(
            &mesh,
            &config(&[(a1, "greeter"), (a2, "greeter"), (a3, "greeter")]),
        )
        .await
        .unwrap();
    until_answering(&client, &["g1", "g2", "g3"]).await;
    let after = subscriber(&harness, "client-test");
    assert_eq!(after.resyncs, 1, "{after:?}");
    assert_eq!(
        after.full_snapshots_sent, 2,
        "the first and the resync: {after:?}"
    );
    assert!(after.last_nack.is_none(), "a resync is not a refusal");
}

#[tokio::test]
async fn a_control_service_without_increments_keeps_a_new_client_on_full_snapshots() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let harness = Harness::start_with(&config(&[(a1, "greeter")]), |options| {
        options.wire_transform = WireTransform::default().full_only();
    })
    .await
    .unwrap();
    let _greeters = harness.greeters([(l1, "g1"), (l2, "g2")]).await.unwrap();
    let mesh = harness.mesh("client").await.unwrap();
    let client = GreeterClient::new(mesh.channel("greeter").await.unwrap());
    assert_eq!(replicas_answering(&client, 40).await, ["g1"]);
    harness
        .reconfigure(&mesh, &config(&[(a1, "greeter"), (a2, "greeter")]))
        .await
        .unwrap();
    until_answering(&client, &["g1", "g2"]).await;
    let after = subscriber(&harness, "client-test");
    assert!(after.incremental);
    assert_eq!(after.increments_sent, 0, "{after:?}");
    assert!(after.full_snapshots_sent >= 2, "{after:?}");
}

/// A client certificate from the control service (a bootstrap token, as a workload gets one),
/// and TLS to the control service presenting it.
async fn raw_control_tls(harness: &Harness, account: &str) -> Arc<rustls::ClientConfig> {
    let control = harness.control.as_ref().unwrap();
    let bundle: TrustBundle = control.trust_bundle();
    let anonymous = client_tls(bundle.clone(), control.identity(), None);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr_der = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    let channel = raw_channel(control.addr(), Some(anonymous)).await.unwrap();
    let reply = ControlClient::new(channel)
        .certify(CertifyRequest {
            csr_der,
            token: token_for(account),
        })
        .await
        .unwrap()
        .into_inner();
    let chain: Vec<CertificateDer<'static>> = reply
        .chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut tls = rustls::ClientConfig::builder_with_provider(mesh_core::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(mesh_core::tls::SpiffeServerVerifier::new(
            mesh_core::tls::TrustStore::new(bundle),
            control.identity().clone(),
        )))
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(tls)
}

#[tokio::test]
async fn a_client_that_predates_increments_gets_full_snapshots() {
    let (a1, a2): (SocketAddr, SocketAddr) = (
        "127.0.0.1:9001".parse().unwrap(),
        "127.0.0.1:9002".parse().unwrap(),
    );
    let harness = Harness::start(&config(&[(a1, "greeter")])).await.unwrap();
    let tls = raw_control_tls(&harness, "client").await;
    let channel = raw_channel(harness.control.as_ref().unwrap().addr(), Some(tls))
        .await
        .unwrap();
    let (requests, outbound) = mpsc::channel(4);
    // An older client's subscribe: it says nothing of increments.
    requests
        .send(WatchRequest {
            kind: Some(watch_request::Kind::Subscribe(Subscribe {
                node: "old-client".into(),
                destinations: vec![proto::ServiceRef {
                    namespace: "default".into(),
                    name: "greeter".into(),
                    port: 0,
                }],
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    let mut snapshots = ControlClient::new(channel)
        .watch(ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let ack = |version| WatchRequest {
        kind: Some(watch_request::Kind::Ack(proto::Ack {
            version,
            ..Default::default()
        })),
    };
    let first = snapshots.message().await.unwrap().unwrap();
    assert_eq!(first.base_version, 0);
    assert_eq!(first.destinations[0].endpoints.len(), 1);
    requests.send(ack(first.version)).await.unwrap();

    harness
        .write_config(&config(&[(a1, "greeter"), (a2, "greeter")]))
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), snapshots.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.base_version, 0, "a full snapshot");
    assert!(second.changes.is_empty());
    let addresses: Vec<_> = second.destinations[0]
        .endpoints
        .iter()
        .map(|e| e.address.clone())
        .collect();
    assert_eq!(addresses, [a1.to_string(), a2.to_string()]);
    requests.send(ack(second.version)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || subscriber(
            &harness,
            "old-client"
        )
        .last_acked_version
            == Some(second.version))
        .await
    );
    let recorded = subscriber(&harness, "old-client");
    assert!(!recorded.incremental);
    assert_eq!(
        (recorded.full_snapshots_sent, recorded.increments_sent),
        (2, 0)
    );
}
