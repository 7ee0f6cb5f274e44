//! Shared by the control service's integration tests: a real TLS client for the control
//! service (TCP, tokio-rustls, the mesh's SPIFFE server verifier), Certify, and Watch stream
//! helpers. What every crate's tests share (the trust domain, CSRs, the test CA, `eventually`)
//! is in `mesh_core::testing`, re-exported here.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_control::{ConfigSource, ControlOptions, RunningControl};
use mesh_core::SpiffeId;
use mesh_core::proto::control_client::ControlClient;
use mesh_core::proto::{self, CertifyRequest, CertifyResponse, WatchRequest, watch_request};
use mesh_core::tls::TrustBundle;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use mesh_core::testing::csr::{csr_with, key_and_csr};
#[allow(unused_imports)]
pub use mesh_core::testing::{TestCert, assert_eventually, client_tls, spiffe_id, trust_domain};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(3);

/// A control file with `greeter` (one endpoint on `port`), `other`, and `client` (which
/// [`subscribe`] names as the subscriber's own service: a subscriber may name only a service
/// its identity serves), and tokens for `greeter` and `client`.
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
  - name: client
    namespace: default
    endpoints:
      - address: 127.0.0.1:9997
        identity: spiffe://mesh.local/ns/default/sa/client
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
    let options = ControlOptions::new(trust_domain(), ConfigSource::Inline(yaml.to_owned()));
    mesh_control::start(options).await.expect("control starts")
}

/// A tonic client over TLS that accepts only `expected` as the server, presenting `cert` when
/// given.
pub async fn connect_to(
    addr: SocketAddr,
    bundle: TrustBundle,
    expected: SpiffeId,
    cert: Option<&TestCert>,
) -> Result<ControlClient<Channel>, tonic::transport::Error> {
    channel_to(addr, bundle, expected, cert)
        .await
        .map(ControlClient::new)
}

/// The channel of [`connect_to`], for tests that send what the generated client cannot.
pub async fn channel_to(
    addr: SocketAddr,
    bundle: TrustBundle,
    expected: SpiffeId,
    cert: Option<&TestCert>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = TlsConnector::from(client_tls(bundle, &expected, cert.cloned()));
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
    Ok(channel)
}

pub async fn connect(control: &RunningControl, cert: Option<&TestCert>) -> ControlClient<Channel> {
    connect_to(
        control.addr(),
        control.trust_bundle(),
        control.identity().clone(),
        cert,
    )
    .await
    .expect("connects")
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
pub async fn obtain_cert(control: &RunningControl, token: &str) -> TestCert {
    let mut client = connect(control, None).await;
    let (key, csr) = key_and_csr();
    let response = certify(&mut client, token, csr).await.expect("certified");
    TestCert {
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
            grpc_services: Vec::new(),
            // A client that predates increments: full snapshots only.
            incremental: false,
        })),
    }
}

pub fn ack(version: u64, error: &str) -> WatchRequest {
    WatchRequest {
        kind: Some(watch_request::Kind::Ack(proto::Ack {
            version,
            error: error.to_owned(),
            details: Vec::new(),
            resync: false,
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

pub fn assert_code(status: &Status, code: Code, message_starts: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().starts_with(message_starts),
        "message {:?} should start with {message_starts:?}",
        status.message()
    );
}
