//! mTLS end to end: both identities verified and visible, and every kind of caller or server
//! without the right certificate refused.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_core::SpiffeId;
use mesh_core::testing::TestCa;
use mesh_core::tls::{SpiffeServerVerifier, TrustBundle, TrustStore, crypto_provider};
use mesh_tests::rawtls::raw_hello;
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tonic::MeshTonicExt;
use rustls::ClientConfig;

fn tls_trusting(
    bundle: TrustBundle,
    server: &str,
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    let verifier = SpiffeServerVerifier::new(
        TrustStore::new(bundle),
        SpiffeId::parse(server).expect("valid id"),
    );
    ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
}

fn finish(mut config: ClientConfig) -> Option<Arc<ClientConfig>> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Some(Arc::new(config))
}

#[tokio::test]
async fn a_tonic_call_verifies_both_identities_and_the_handler_sees_the_caller() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness.greeter(l, "g1", "greeter").await.unwrap();
    let client = harness.mesh("client").await.unwrap();
    assert_eq!(client.identity().id().as_str(), spiffe("client"));

    let mut greeter = GreeterClient::new(client.channel("greeter.default").await.unwrap());
    let reply = greeter
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .unwrap()
        .into_inner()
        .message;
    assert_eq!(
        reply,
        format!(
            "Hello, ann! from g1 ({}) to {}",
            spiffe("greeter"),
            spiffe("client")
        )
    );
    assert_eq!(replica.greeter.served(), 1);
}

#[tokio::test]
async fn callers_without_a_valid_mesh_certificate_are_refused() {
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(addr, "greeter")])
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness.greeter(l, "g1", "greeter").await.unwrap();
    let bundle = harness.control.as_ref().unwrap().trust_bundle();
    let greeter_id = spiffe("greeter");

    // The harness itself works: a caller with a real mesh certificate gets through.
    let client = harness.mesh("client").await.unwrap();
    let good = finish(
        tls_trusting(bundle.clone(), &greeter_id)
            .with_client_cert_resolver(Arc::new(client.identity().clone())),
    );
    raw_hello(addr, good).await.unwrap();
    assert_eq!(replica.greeter.served(), 1);

    // Plaintext.
    let plaintext = raw_hello(addr, None).await;
    assert!(plaintext.is_err(), "plaintext call succeeded");

    // TLS, but no client certificate.
    let no_cert = finish(tls_trusting(bundle.clone(), &greeter_id).with_no_client_auth());
    let refused = raw_hello(addr, no_cert).await;
    assert!(
        refused.is_err(),
        "call without a client certificate succeeded"
    );

    // A certificate for a mesh identity, but from another CA; and one from another trust domain.
    let other_ca = TestCa::new("mesh.local");
    let other_domain = TestCa::new("other.local");
    let forged = [
        other_ca.issue(&SpiffeId::parse(&spiffe("client")).unwrap()),
        other_domain.issue(&SpiffeId::parse("spiffe://other.local/ns/default/sa/client").unwrap()),
    ];
    for cert in forged {
        let tls = finish(
            tls_trusting(bundle.clone(), &greeter_id)
                .with_client_auth_cert(cert.chain, cert.key)
                .unwrap(),
        );
        let refused = raw_hello(addr, tls).await;
        assert!(refused.is_err(), "call with a forged certificate succeeded");
    }
    assert_eq!(
        replica.greeter.served(),
        1,
        "a refused caller reached the handler"
    );
}

#[tokio::test]
async fn a_server_with_another_identity_than_discovery_expects_is_refused() {
    let l = listener().await.unwrap();
    // Discovery says the endpoint is the greeter, but what listens there runs as an impostor
    // (with a perfectly valid certificate of the mesh for its own identity).
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .account("impostor")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    // It cannot name greeter as its own service (the control service allows that only to an
    // identity of greeter's endpoints), so it serves none; what it answers on is all it takes.
    let impostor = harness
        .greeter_with_settings(l, "evil", harness.settings("impostor", None))
        .await
        .unwrap();
    let client = harness.mesh("client").await.unwrap();

    let channel = client.channel("greeter.default").await.unwrap();
    let status = GreeterClient::new(channel)
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("greeter.default"),
        "the error names the destination: {status:?}"
    );
    assert_eq!(impostor.greeter.served(), 0);
}
