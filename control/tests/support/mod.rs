//! Shared by the integration tests: a real TLS client for the control service (TCP,
//! tokio-rustls, the mesh's SPIFFE server verifier), CSRs, and Watch stream helpers.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_control::{ConfigSource, ControlOptions, RunningControl};
use mesh_core::proto::control_client::ControlClient;
use mesh_core::proto::{self, CertifyRequest, CertifyResponse, WatchRequest, watch_request};
use mesh_core::tls::{SpiffeServerVerifier, TrustBundle, TrustStore, crypto_provider};
use mesh_core::{SpiffeId, TrustDomain};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(3);

pub fn td() -> TrustDomain {
    TrustDomain::new("mesh.local").expect("valid trust domain")
}

pub fn id(namespace: &str, sa: &str) -> SpiffeId {
    SpiffeId::from_service_account(&td(), namespace, sa).expect("valid id")
}

/// A control file with `greeter` (one endpoint on `port`) and tokens for `greeter` and
/// `client`.
pub fn config_yaml(port: u16) -> String {
    format!(
        "\
services:
  - name: greeter
    namespace: default
    endpoints:
      - address: 127.0.0.1:{port}
        identity: spiffe://mesh.local/ns/default/sa/greeter
  - name: other
    namespace: default
    endpoints:
      - address: 127.0.0.1:9999
        identity: spiffe://mesh.local/ns/default/sa/other
bootstrapTokens:
  - token: greeter-token-0123456789
    namespace: default
    serviceAccount: greeter
  - token: client-token-0123456789
    namespace: default
    serviceAccount: client
"
    )
}

pub async fn start_inline(yaml: &str) -> RunningControl {
    let options = ControlOptions::new(td(), ConfigSource::Inline(yaml.to_owned()));
    mesh_control::start(options).await.expect("control starts")
}

/// A workload's certificate and key.
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A tonic client over TLS that accepts only `expected` as the server, presenting `cert` when
/// given.
pub async fn connect_to(
    addr: SocketAddr,
    bundle: TrustBundle,
    expected: SpiffeId,
    cert: Option<&ClientCert>,
) -> Result<ControlClient<Channel>, tonic::transport::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            TrustStore::new(bundle),
            expected,
        )));
    let mut config = match cert {
        Some(cert) => builder
            .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(WAIT)
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                // Any server name will do: the SPIFFE verifier checks the identity.
                let tls = connector
                    .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                    .await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(ControlClient::new(channel))
}

pub async fn connect(
    control: &RunningControl,
    cert: Option<&ClientCert>,
) -> ControlClient<Channel> {
    connect_to(
        control.addr(),
        control.trust_bundle(),
        control.identity().clone(),
        cert,
    )
    .await
    .expect("connects")
}

/// A fresh P-256 key and a CSR for it, as a well-behaved client makes them.
pub fn key_and_csr() -> (KeyPair, Vec<u8>) {
    csr_with(|_| {})
}

/// A CSR whose parameters `edit` chose.
pub fn csr_with(edit: impl FnOnce(&mut CertificateParams)) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    edit(&mut params);
    let csr = params.serialize_request(&key).expect("CSR").der().to_vec();
    (key, csr)
}

pub async fn certify(
    client: &mut ControlClient<Channel>,
    token: &str,
    csr_der: Vec<u8>,
) -> Result<CertifyResponse, Status> {
    client
        .certify(CertifyRequest {
            csr_der,
            token: token.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Gets a certificate through Certify, as a workload does on start-up.
pub async fn obtain_cert(control: &RunningControl, token: &str) -> ClientCert {
    let mut client = connect(control, None).await;
    let (key, csr) = key_and_csr();
    let response = certify(&mut client, token, csr).await.expect("certified");
    ClientCert {
        chain: response
            .chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// One Watch stream: what the client sends and what it receives.
pub struct WatchStream {
    pub tx: mpsc::Sender<WatchRequest>,
    pub rx: Streaming<proto::Snapshot>,
}

pub fn service_ref(namespace: &str, name: &str) -> proto::ServiceRef {
    proto::ServiceRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port: 0,
    }
}

pub fn subscribe(node: &str, destinations: &[&str]) -> WatchRequest {
    WatchRequest {
        kind: Some(watch_request::Kind::Subscribe(proto::Subscribe {
            node: node.to_owned(),
            own_service: Some(service_ref("default", "client")),
            destinations: destinations
                .iter()
                .map(|name| service_ref("default", name))
                .collect(),
        })),
    }
}

pub fn ack(version: u64, error: &str) -> WatchRequest {
    WatchRequest {
        kind: Some(watch_request::Kind::Ack(proto::Ack {
            version,
            error: error.to_owned(),
        })),
    }
}

/// Opens a Watch stream and sends `first`.
pub async fn open_watch(
    client: &mut ControlClient<Channel>,
    first: WatchRequest,
) -> Result<WatchStream, Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.expect("queued");
    let response = client.watch(ReceiverStream::new(rx)).await?;
    Ok(WatchStream {
        tx,
        rx: response.into_inner(),
    })
}

impl WatchStream {
    /// The next snapshot, failing the test if none comes within [`WAIT`].
    pub async fn next(&mut self) -> proto::Snapshot {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(snapshot))) => snapshot,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for `quiet`.
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        if let Ok(got) = tokio::time::timeout(quiet, self.rx.message()).await {
            panic!("expected nothing, got {got:?}");
        }
    }

    /// The status that ends the stream.
    pub async fn end_status(&mut self) -> Status {
        loop {
            match tokio::time::timeout(WAIT, self.rx.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return Status::ok(""),
                Ok(Err(status)) => return status,
                Err(_) => panic!("the stream did not end"),
            }
        }
    }

    pub async fn send(&self, request: WatchRequest) {
        self.tx.send(request).await.expect("stream open");
    }
}

/// The status of a Watch that fails either at once or as its first message.
pub async fn watch_error(client: &mut ControlClient<Channel>, first: WatchRequest) -> Status {
    match open_watch(client, first).await {
        Err(status) => status,
        Ok(mut stream) => stream.end_status().await,
    }
}

/// Polls `check` until it holds or [`WAIT`] passes.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn assert_code(status: &Status, code: Code, message_starts: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().starts_with(message_starts),
        "message {:?} should start with {message_starts:?}",
        status.message()
    );
}
