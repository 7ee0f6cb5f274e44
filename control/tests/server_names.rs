//! The names of the control service's own certificate: a plain TLS client (rustls' standard
//! WebPKI verifier, as gRPC's `tls` channel credentials check the xDS server) verifies it by
//! its Service's DNS names and by `server_names`, refuses any other name; and the control
//! service accepts whatever server name (SNI) a client sends.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use mesh_control::{ConfigSource, ControlOptions, RunningControl, StartError};
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use support::*;

async fn control(server_names: &[&str]) -> Result<RunningControl, StartError> {
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(5000)));
    options.server_names = server_names.iter().map(|s| s.to_string()).collect();
    mesh_control::start(options).await
}

/// A TLS client that checks names as any TLS library does, trusting the control's roots.
fn by_name(control: &RunningControl) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for root in control.trust_bundle().roots() {
        roots.add(root.clone()).unwrap();
    }
    let provider = mesh_core::tls::crypto_provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A TLS handshake with the control service, sending `name` (as SNI when it is a DNS name).
async fn handshake(
    control: &RunningControl,
    tls: Arc<ClientConfig>,
    name: &str,
) -> Result<(), std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(control.addr()).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map(drop)
}

#[tokio::test]
async fn a_plain_tls_client_verifies_the_control_service_by_name() {
    let control = control(&["localhost", "127.0.0.1"]).await.unwrap();
    for name in [
        "mesh-control.mesh-system.svc",
        "mesh-control.mesh-system.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ] {
        handshake(&control, by_name(&control), name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let error = handshake(&control, by_name(&control), "other.example")
        .await
        .expect_err("a name the certificate does not carry");
    assert!(
        error
            .to_string()
            .contains("certificate not valid for name \"other.example\""),
        "{error}"
    );
    control.shutdown().await;
}

#[tokio::test]
async fn any_server_name_is_accepted() {
    let control = control(&[]).await.unwrap();
    // The mesh's SPIFFE verifier checks the identity, whatever the name sent.
    let spiffe = client_tls(control.trust_bundle(), control.identity(), None);
    for name in ["some.name", "greeter.default.svc", "x", "10.1.2.3"] {
        handshake(&control, spiffe.clone(), name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    control.shutdown().await;
}

#[tokio::test]
async fn a_server_name_that_is_no_name_is_refused_at_start() {
    let error = control(&["localhost", "not a name"])
        .await
        .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "server_names: \"not a name\" is neither a DNS name nor an IP address: only lowercase \
         letters, digits, '-' and '.' are allowed"
    );
}
