//! `meshctl certs`: the trust bundle's roots and when each expires; with `--workload ADDR`,
//! the chain a workload presents (read from a TLS handshake, without a client certificate: a
//! TLS 1.3 server sends its certificate before it asks for the client's) and whether it
//! verifies as an SVID of the bundle.

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::TrustDomain;
use mesh_core::tls::{TrustBundle, Usage, crypto_provider, verify_svid};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;

use super::error::CtlError;

/// How long the handshake with a workload may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `certs` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Certs {
    /// Where the bundle came from (a file, or a control replica's admin address).
    pub bundle_source: String,
    /// Its roots.
    pub roots: Vec<CertView>,
    /// The workload's chain, when asked.
    pub workload: Option<WorkloadChain>,
}

/// A workload's chain and the verdict on it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadChain {
    /// The address asked.
    pub address: String,
    /// The chain, leaf first.
    pub chain: Vec<CertView>,
    /// The leaf's SPIFFE ID when the chain verifies to the bundle, else why not.
    pub verified: Result<String, String>,
}

/// One certificate, as an operator reads it.
#[derive(Debug, Clone, Serialize)]
pub struct CertView {
    /// Its subject (distinguished name).
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
    /// Its URI SANs (a workload's SPIFFE ID).
    pub uris: Vec<String>,
    /// Its serial number, hex.
    pub serial: String,
    /// Valid from (seconds since 1970).
    pub not_before_unix: i64,
    /// Valid until (seconds since 1970).
    pub not_after_unix: i64,
    /// Seconds left at the time of the report (negative: expired).
    pub expires_in_seconds: i64,
    /// Whether it is a CA.
    pub is_ca: bool,
}

/// The roots of the PEM `bundle` (from `source`), and `workload`'s chain when given.
pub fn certs(
    bundle_pem: &str,
    source: &str,
    trust_domain: &TrustDomain,
    workload: Option<SocketAddr>,
    now: SystemTime,
) -> Result<Certs, CtlError> {
    let bundle =
        TrustBundle::from_pem(trust_domain.clone(), bundle_pem.as_bytes()).map_err(|e| {
            CtlError::Admin {
                target: source.to_owned(),
                message: format!("trust bundle: {e}"),
            }
        })?;
    let roots = bundle
        .roots()
        .iter()
        .map(|der| view(der, now))
        .collect::<Result<Vec<_>, _>>()?;
    let workload = workload
        .map(|addr| presented(addr, &bundle, now))
        .transpose()?;
    Ok(Certs {
        bundle_source: source.to_owned(),
        roots,
        workload,
    })
}

/// `der` for an operator.
fn view(der: &CertificateDer<'_>, now: SystemTime) -> Result<CertView, CtlError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| CtlError::Admin {
        target: "certificate".to_owned(),
        message: e.to_string(),
    })?;
    let uris = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let not_after = cert.validity().not_after.timestamp();
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Ok(CertView {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        uris,
        serial: cert.raw_serial_as_string(),
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: not_after,
        expires_in_seconds: not_after - now,
        is_ca: cert.is_ca(),
    })
}

/// The chain the workload at `addr` presents, and whether it verifies to `bundle`.
fn presented(
    addr: SocketAddr,
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<WorkloadChain, CtlError> {
    let fail = |message: String| CtlError::Admin {
        target: addr.to_string(),
        message,
    };
    let recorder = Arc::new(Recorder::default());
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| fail(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| fail(e.to_string()))?;
    let mut tcp = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)
        .map_err(|e| fail(format!("connect: {e}")))?;
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| fail(e.to_string()))?;
    // The handshake, until the server's certificate has been seen (the server may then refuse
    // the missing client certificate: that is expected).
    while tls.is_handshaking() && recorder.chain().is_empty() {
        if tls.wants_write() {
            tls.write_tls(&mut tcp)
                .map_err(|e| fail(format!("write: {e}")))?;
            continue;
        }
        match tls.read_tls(&mut tcp) {
            Ok(0) => break,
            Ok(_) => {
                if let Err(error) = tls.process_new_packets() {
                    if recorder.chain().is_empty() {
                        return Err(fail(format!("TLS: {error}")));
                    }
                    break;
                }
            }
            Err(e) => return Err(fail(format!("read: {e}"))),
        }
    }
    let chain = recorder.chain();
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| fail("the server presented no certificate".into()))?;
    let verified = verify_svid(
        bundle,
        leaf,
        intermediates,
        UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default()),
        Usage::Server,
    )
    .map(|id| id.to_string())
    .map_err(|e| e.to_string());
    Ok(WorkloadChain {
        address: addr.to_string(),
        chain: chain
            .iter()
            .map(|der| view(der, now))
            .collect::<Result<_, _>>()?,
        verified,
    })
}

/// A verifier that only records the chain; `meshctl` judges it afterwards against the bundle
/// and reports the verdict, rather than failing the handshake before it can show anything.
#[derive(Debug, Default)]
struct Recorder {
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl Recorder {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().unwrap_or_else(PoisonError::into_inner) = chain;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &crypto_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crypto_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
