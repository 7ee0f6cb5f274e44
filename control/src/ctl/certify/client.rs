//! One `Certify` call, as a Rust workload makes it: a fresh P-256 key made in this process, a
//! CSR that asks for nothing (the control service decides the names), the proof token, over
//! TLS to a control service that must present its own SPIFFE ID; the reply is checked before
//! anything is written.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::SpiffeId;
use mesh_core::proto::CertifyRequest;
use mesh_core::proto::control_client::ControlClient;
use mesh_core::tls::{SpiffeServerVerifier, TrustBundle, TrustStore, Usage, verify_svid};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tonic::transport::{Channel, Endpoint};

use super::CertifyError;

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Token files larger than this are refused (a projected ServiceAccount token is about 1 KB).
pub(crate) const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Where the control service is and who it must be.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    /// `host:port` addresses, tried in turn.
    pub(crate) addrs: Vec<String>,
    /// The SPIFFE ID its certificate must carry.
    pub(crate) identity: SpiffeId,
}

/// A checked certificate and the key it was issued for.
pub(crate) struct Issued {
    /// The SPIFFE ID the certificate carries.
    pub(crate) id: SpiffeId,
    /// Leaf first.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// The key, PKCS#8 PEM; it exists only in this process and in `key.pem`.
    pub(crate) key_pem: String,
    /// The trust bundle that came with it.
    pub(crate) bundle: TrustBundle,
    /// When it was received: renewal counts the lifetime from here, not from the leaf's
    /// `notBefore`, which the CA backdates for peers whose clocks are behind.
    pub(crate) received_at: SystemTime,
    /// The leaf's expiry.
    pub(crate) not_after: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

// === impl Control ===

impl Control {
    /// A client on a fresh TLS connection that presents `client` when given (a Watch needs a
    /// certificate, Certify does not), verifying the server against `trust`.
    pub(crate) async fn connect(
        &self,
        trust: &TrustStore,
        client: Option<(&[CertificateDer<'static>], &str)>,
    ) -> Result<ControlClient<Channel>, CertifyError> {
        let tls = client_config(trust, &self.identity, client)?;
        let mut last = None;
        for host_port in &self.addrs {
            match connect_one(host_port, tls.clone()).await {
                Ok(channel) => return Ok(ControlClient::new(channel)),
                Err(error) => {
                    tracing::debug!(control = %host_port, %error, "control service unreachable");
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| CertifyError::Connect {
            control: String::new(),
            reason: "no control address given".to_owned(),
        }))
    }

    /// Obtains a certificate with the token in `token_file`, verifying the control service
    /// against `trust`.
    pub(crate) async fn certify(
        &self,
        trust: &TrustStore,
        token_file: &Path,
    ) -> Result<Issued, CertifyError> {
        let token = read_token(token_file).await?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertifyError::Key)?;
        // No names: the control service decides them from the token's identity.
        let csr = CertificateParams::new(Vec::<String>::new())
            .and_then(|params| params.serialize_request(&key))
            .map_err(CertifyError::Key)?;
        let mut grpc = self.connect(trust, None).await?;
        let mut request = tonic::Request::new(CertifyRequest {
            csr_der: csr.der().to_vec(),
            token,
        });
        request.set_timeout(CALL_TIMEOUT);
        let reply = grpc
            .certify(request)
            .await
            .map_err(|status| CertifyError::Refused {
                code: status.code(),
                message: status.message().to_owned(),
            })?
            .into_inner();
        accept(reply, &key, trust.load().trust_domain())
    }
}

/// Checks a reply: the chain verifies to the bundle it came with, for client and server use
/// (gRPC presents it both ways), names the SPIFFE ID the reply says, and is for `key`.
fn accept(
    reply: mesh_core::proto::CertifyResponse,
    key: &KeyPair,
    trust_domain: &mesh_core::TrustDomain,
) -> Result<Issued, CertifyError> {
    let bad = |reason: String| CertifyError::BadReply(reason);
    let chain: Vec<CertificateDer<'static>> = reply
        .chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let roots = reply
        .trust_bundle_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let bundle = TrustBundle::from_der(trust_domain.clone(), roots)
        .map_err(|e| bad(format!("trust bundle: {e}")))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| bad("empty certificate chain".to_owned()))?;
    let now = UnixTime::now();
    let id = verify_svid(&bundle, leaf, intermediates, now, Usage::Client)
        .and_then(|id| verify_svid(&bundle, leaf, intermediates, now, Usage::Server).map(|_| id))
        .map_err(|e| bad(e.to_string()))?;
    if id.as_str() != reply.spiffe_id {
        return Err(bad(format!(
            "certificate names {id}, the reply says {}",
            reply.spiffe_id
        )));
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad("the certificate is not for our key".to_owned()));
    }
    let unix = |t: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    let not_after = unix(parsed.validity().not_after);
    drop(parsed);
    Ok(Issued {
        id,
        chain,
        key_pem: key.serialize_pem(),
        bundle,
        received_at: SystemTime::now(),
        not_after,
    })
}

/// The token, read at every request (a projected token is rotated by the kubelet), trimmed.
async fn read_token(path: &Path) -> Result<String, CertifyError> {
    let failed = |reason: String| CertifyError::Token {
        path: path.to_owned(),
        reason,
    };
    let len = tokio::fs::metadata(path)
        .await
        .map_err(|e| failed(e.to_string()))?
        .len();
    if len > MAX_TOKEN_BYTES {
        return Err(failed(format!(
            "{len} bytes, more than the {MAX_TOKEN_BYTES} allowed"
        )));
    }
    let token = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(failed("empty".to_owned()));
    }
    Ok(token.to_owned())
}

/// TLS 1.3 to a server that must present `expected`; any server name is sent (the SPIFFE
/// verifier checks the identity, not the name).
fn client_config(
    trust: &TrustStore,
    expected: &SpiffeId,
    client: Option<(&[CertificateDer<'static>], &str)>,
) -> Result<Arc<ClientConfig>, CertifyError> {
    let verifier = SpiffeServerVerifier::new(trust.clone(), expected.clone());
    let builder = ClientConfig::builder_with_provider(mesh_core::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| CertifyError::Tls(e.to_string()))?
        .dangerous()
        // Not dangerous in fact: the SPIFFE verifier checks the chain, the URI SAN and the
        // expected identity, as Rust workloads check the control service.
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match client {
        Some((chain, key_pem)) => {
            use rustls_pki_types::PrivateKeyDer;
            use rustls_pki_types::pem::PemObject;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| CertifyError::Tls(e.to_string()))?;
            builder
                .with_client_auth_cert(chain.to_vec(), key)
                .map_err(|e| CertifyError::Tls(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A channel to `host_port`: every address it resolves to is tried in turn.
async fn connect_one(host_port: &str, tls: Arc<ClientConfig>) -> Result<Channel, CertifyError> {
    let failed = |reason: String| CertifyError::Connect {
        control: host_port.to_owned(),
        reason,
    };
    let (host, _) = host_port
        .rsplit_once(':')
        .ok_or_else(|| failed("expected host:port".to_owned()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host_port)
        .await
        .map_err(|e| failed(e.to_string()))?
        .collect();
    // A DNS name is sent as SNI, as any TLS client would; an address is not.
    let server_name =
        ServerName::try_from(host).map_err(|e| failed(format!("not a host name: {e}")))?;
    let mut last = failed("resolves to no address".to_owned());
    for addr in addrs {
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let server_name = server_name.clone();
        let endpoint = Endpoint::from_shared(format!("http://{host_port}"))
            .map_err(|e| failed(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT);
        let connected = endpoint
            .connect_with_connector(tower::service_fn(move |_uri| {
                let (connector, server_name) = (connector.clone(), server_name.clone());
                async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await?;
                    let _ = tcp.set_nodelay(true);
                    let tls = connector.connect(server_name, tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            }))
            .await;
        match connected {
            Ok(channel) => return Ok(channel),
            Err(error) => {
                last = failed(format!("{addr}: {}", error_chain(&error)));
            }
        }
    }
    Err(last)
}

/// An error and its sources on one line (tonic's transport error says only "transport error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
