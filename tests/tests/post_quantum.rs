//! Post-quantum hybrid key exchange (X25519MLKEM768) on every mesh connection, with classical
//! fallback: two meshed services agree on the hybrid group (the server's handler reads it from
//! `MeshConnectInfo`); a classical-only client (rustls with ring's own groups) gets X25519 from
//! the same server; a client of the mesh's configuration gets X25519 from a classical-only
//! server in one round trip (its X25519 share goes along with the hybrid one); the control
//! service's listener (Watch, Certify) negotiates the hybrid group.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_core::SpiffeId;
use mesh_core::tls::{SpiffeServerVerifier, TrustStore, crypto_provider};
use mesh_tests::web::get;
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tower::{Identity, Mesh, MeshConnectInfo};
use rustls::client::danger::ServerCertVerifier;
use rustls::{ClientConfig, HandshakeKind, NamedGroup};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The key exchange the server saw, as its handler reads it.
async fn key_exchange(request: Request) -> String {
    let info = request.extensions().get::<MeshConnectInfo>().unwrap();
    format!("{:?}", info.key_exchange())
}

/// A client config trusting `verifier`, presenting `identity`, with `provider`'s groups.
fn raw_client(
    provider: rustls::crypto::CryptoProvider,
    verifier: Arc<dyn ServerCertVerifier>,
    identity: &Identity,
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(identity.clone()));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// One HTTP/2 GET of `/` over a fresh TLS connection: the body, the group the client saw and
/// whether the handshake took a second round trip.
async fn get_over(addr: SocketAddr, tls: Arc<ClientConfig>) -> (String, NamedGroup, HandshakeKind) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = TlsConnector::from(tls)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let (_, connection) = stream.get_ref();
    let group = connection.negotiated_key_exchange_group().unwrap().name();
    let kind = connection.handshake_kind().unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(format!("https://{addr}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (String::from_utf8(body.to_vec()).unwrap(), group, kind)
}

#[tokio::test]
async fn meshed_services_agree_on_the_hybrid_group_and_classical_peers_fall_back() {
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = Config::new()
        .service("web", &[(addr, "web")])
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let server = Mesh::start(harness.settings("web", Some("web")))
        .await
        .unwrap();
    let router = axum::Router::new().fallback(key_exchange);
    tokio::spawn(async move { server.serve(l, router).await });

    // Two meshed services.
    let client = harness.mesh("client").await.unwrap();
    let web = client.client::<Body>("web").await.unwrap();
    assert_eq!(get(&web, "/").await.body, "Some(X25519MLKEM768)");

    // A classical-only client: X25519, in one round trip.
    let bundle = harness.control.as_ref().unwrap().trust_bundle();
    let verifier = Arc::new(SpiffeServerVerifier::new(
        TrustStore::new(bundle.clone()),
        SpiffeId::parse(&spiffe("web")).unwrap(),
    ));
    let classical = raw_client(
        rustls::crypto::ring::default_provider(),
        verifier.clone(),
        client.identity(),
    );
    let (body, group, kind) = get_over(addr, classical).await;
    assert_eq!(body, "Some(X25519)");
    assert_eq!((group, kind), (NamedGroup::X25519, HandshakeKind::Full));

    // The mesh's own provider, raw: the hybrid group, no second round trip.
    let hybrid = raw_client((*crypto_provider()).clone(), verifier, client.identity());
    let (body, group, kind) = get_over(addr, hybrid).await;
    assert_eq!(body, "Some(X25519MLKEM768)");
    assert_eq!(
        (group, kind),
        (NamedGroup::X25519MLKEM768, HandshakeKind::Full)
    );
}

#[tokio::test]
async fn the_mesh_falls_back_to_x25519_with_a_classical_server_in_one_round_trip() {
    // A classical-only TLS server (ring's own groups) with a mesh certificate.
    let config = Config::new().account("web").account("client");
    let harness = Harness::start(&config).await.unwrap();
    let web = harness.mesh("web").await.unwrap();
    let client = harness.mesh("client").await.unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(web.identity().clone()));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let stream = acceptor.accept(tcp).await.unwrap();
        stream
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .unwrap()
            .name()
    });

    let bundle = harness.control.as_ref().unwrap().trust_bundle();
    let verifier = Arc::new(SpiffeServerVerifier::new(
        TrustStore::new(bundle),
        SpiffeId::parse(&spiffe("web")).unwrap(),
    ));
    let tls = raw_client((*crypto_provider()).clone(), verifier, client.identity());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = TlsConnector::from(tls)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let (_, connection) = stream.get_ref();
    assert_eq!(
        connection.negotiated_key_exchange_group().unwrap().name(),
        NamedGroup::X25519
    );
    assert_eq!(connection.handshake_kind(), Some(HandshakeKind::Full));
    assert_eq!(accepted.await.unwrap(), NamedGroup::X25519);
}

#[tokio::test]
async fn the_control_service_negotiates_the_hybrid_group() {
    let config = Config::new().account("client");
    let harness = Harness::start(&config).await.unwrap();
    let control = harness.control.as_ref().unwrap();
    let control_id = mesh_tower::settings::default_control_identity(&harness.trust_domain);
    let tls = mesh_core::testing::client_tls(control.trust_bundle(), &control_id, None);
    let tcp = TcpStream::connect(control.addr()).await.unwrap();
    let stream = TlsConnector::from(tls)
        .connect(ServerName::IpAddress(control.addr().ip().into()), tcp)
        .await
        .unwrap();
    assert_eq!(
        stream
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .unwrap()
            .name(),
        NamedGroup::X25519MLKEM768
    );
}
