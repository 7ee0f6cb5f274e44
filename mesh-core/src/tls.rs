//! SPIFFE certificate verification for rustls, shared by the services and the control service.
//!
//! rustls checks DNS names, not URI SANs, so the mesh brings its own verifiers: the chain is
//! verified to the trust bundle with rustls-webpki, then the leaf must carry exactly one URI SAN
//! that is a valid SPIFFE ID in the bundle's trust domain, must not be a CA, must allow
//! digitalSignature when it has a keyUsage, and (client side) must be the identity that
//! discovery expects. DNS and IP SANs are neither required nor checked.
//!
//! Refusals reach rustls as `CertificateError::Other` wrapping the [`VerifyError`], so the
//! message (which names the peer) survives into handshake errors and logs
//! (`invalid peer certificate: Other(OtherError(<message>))`), and
//! [`VerifyError::from_rustls`] gets the typed error back (it is also the `source()` of the
//! `OtherError`). The price is that the peer receives the generic `certificate_unknown` alert
//! rather than, say, `certificate_expired`.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, ServerName, SignatureVerificationAlgorithm, TrustAnchor, UnixTime,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// Why a certificate or bundle was refused. Each variant says what was wrong, and names the
/// peer (its URI SAN, or its subject when it has no single URI SAN) where that is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The certificate is not parseable DER X.509.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// A trust bundle that cannot be used: empty, bad PEM, or a root that is not a trust anchor.
    #[error("invalid trust bundle: {0}")]
    BadBundle(String),
    /// The chain does not verify to the bundle: what rustls-webpki found (expired, not yet
    /// valid, unknown issuer, bad signature, wrong extended key usage, ...), naming the peer.
    #[error("invalid certificate chain: {0}")]
    ChainInvalid(String),
    /// The leaf has no URI SAN, so no SPIFFE ID.
    #[error("certificate of {peer} has no URI SAN; an SVID carries exactly one SPIFFE ID")]
    NoUriSan {
        /// The leaf's subject.
        peer: String,
    },
    /// The leaf has several URI SANs; an SVID has exactly one.
    #[error("certificate has {} URI SANs ({}); an SVID carries exactly one SPIFFE ID", .uris.len(), .uris.join(", "))]
    MultipleUriSans {
        /// Every URI SAN, in certificate order.
        uris: Vec<String>,
    },
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("certificate's URI SAN is not a SPIFFE ID: {0}")]
    BadSpiffeId(SpiffeIdError),
    /// The SPIFFE ID belongs to another trust domain than the bundle's.
    #[error("certificate of \"{found}\" is not in trust domain \"{expected}\"")]
    WrongTrustDomain {
        /// The bundle's trust domain.
        expected: TrustDomain,
        /// The ID presented.
        found: SpiffeId,
    },
    /// The leaf is a CA certificate (basicConstraints cA=true).
    #[error("certificate of {peer} is a CA certificate, not a workload SVID")]
    LeafIsCa {
        /// The leaf's SPIFFE ID or subject.
        peer: String,
    },
    /// The leaf has a keyUsage extension without digitalSignature, so it cannot sign handshakes.
    #[error("certificate of {peer} has a keyUsage without digitalSignature")]
    KeyUsage {
        /// The leaf's SPIFFE ID.
        peer: String,
    },
    /// A valid SVID of another workload than the one expected.
    #[error("peer presented \"{found}\" but \"{expected}\" was expected")]
    UnexpectedIdentity {
        /// The identity discovery said the peer has.
        expected: SpiffeId,
        /// The identity the peer presented.
        found: SpiffeId,
    },
}

// === impl VerifyError ===

impl VerifyError {
    /// The [`VerifyError`] inside a rustls error that a mesh verifier returned, if it is one.
    pub fn from_rustls(error: &rustls::Error) -> Option<&Self> {
        match error {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<Refused>().map(|refused| &refused.0)
            }
            _ => None,
        }
    }
}

impl From<VerifyError> for rustls::Error {
    fn from(error: VerifyError) -> Self {
        Self::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
            error,
        )))))
    }
}

/// Carries a [`VerifyError`] through rustls, which prints `CertificateError::Other` with
/// `Debug`: this wrapper's `Debug` is the message, so handshake errors read
/// `invalid peer certificate: Other(OtherError(peer presented "spiffe://..." but ...))`
/// instead of a dump of the error's fields.
struct Refused(VerifyError);

impl fmt::Debug for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The crypto provider every mesh TLS config uses: ring's (one provider in the tree), with
/// the post-quantum hybrid key exchange [`X25519_MLKEM768`] preferred over its classical
/// groups (X25519, P-256, P-384), which stay for peers without it.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups.insert(0, X25519_MLKEM768);
    Arc::new(provider)
}

/// The signature algorithms a chain may use: those of ring that rustls' ring provider offers.
static SIGNATURE_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// The root certificates of one trust domain.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
    /// The roots parsed once, here, rather than in every handshake.
    anchors: Vec<TrustAnchor<'static>>,
}

// === impl TrustBundle ===

impl TrustBundle {
    /// A bundle from DER roots; each must parse as a trust anchor, and there must be one.
    ///
    /// Several roots are normal while roots rotate: a chain to any of them verifies.
    pub fn from_der(
        trust_domain: TrustDomain,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, VerifyError> {
        if roots.is_empty() {
            return Err(VerifyError::BadBundle(format!(
                "no root certificates for trust domain \"{trust_domain}\""
            )));
        }
        let anchors = roots
            .iter()
            .enumerate()
            .map(|(i, root)| {
                webpki::anchor_from_trusted_cert(root)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|e| {
                        VerifyError::BadBundle(format!(
                            "root {i} is not a usable trust anchor: {e}"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            trust_domain,
            roots,
            anchors,
        })
    }

    /// A bundle from a PEM file's contents (one or more `CERTIFICATE` blocks; other blocks,
    /// such as keys, are skipped).
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, VerifyError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| VerifyError::BadBundle(format!("invalid PEM: {e}")))?;
        if roots.is_empty() {
            return Err(VerifyError::BadBundle(format!(
                "no CERTIFICATE blocks in the PEM for trust domain \"{trust_domain}\""
            )));
        }
        Self::from_der(trust_domain, roots)
    }

    /// The bundle as PEM, one `CERTIFICATE` block per root, in order.
    pub fn to_pem(&self) -> String {
        self.roots
            .iter()
            .map(|root| crate::pem::encode("CERTIFICATE", root))
            .collect()
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The roots, DER.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }
}

/// The trust bundle in force, swapped atomically when roots rotate. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TrustStore(Arc<ArcSwap<TrustBundle>>);

impl TrustStore {
    /// A store holding `bundle`.
    pub fn new(bundle: TrustBundle) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(bundle)))
    }

    /// The bundle in force now.
    pub fn load(&self) -> Arc<TrustBundle> {
        self.0.load_full()
    }

    /// Replaces the bundle; handshakes from now on use the new one.
    pub fn store(&self, bundle: TrustBundle) {
        self.0.store(Arc::new(bundle));
    }
}

/// Which side the verified certificate authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A server's certificate (extended key usage serverAuth).
    Server,
    /// A client's certificate (extended key usage clientAuth).
    Client,
}

impl Usage {
    fn key_usage(self) -> webpki::KeyUsage {
        match self {
            Self::Server => webpki::KeyUsage::server_auth(),
            Self::Client => webpki::KeyUsage::client_auth(),
        }
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Server => "serverAuth",
            Self::Client => "clientAuth",
        })
    }
}

/// Verifies a presented chain as an SVID of `bundle`'s trust domain and returns its SPIFFE ID.
///
/// In order: the leaf parses; the chain verifies to the bundle at `now` for `usage` (webpki
/// also refuses a CA as the leaf, reported as [`VerifyError::LeafIsCa`]); the leaf has exactly
/// one URI SAN, a SPIFFE ID in the bundle's trust domain; it is not a CA; a keyUsage, when
/// present, allows digitalSignature.
pub fn verify_svid(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: Usage,
) -> Result<SpiffeId, VerifyError> {
    let leaf = parse(end_entity)?;
    let uris = uri_sans(&leaf)?;
    // Read before the chain is verified, and only to say whose certificate failed; built only
    // when something did, so a good handshake does not pay for it.
    let peer = || describe(&leaf, &uris);

    let cert = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| VerifyError::Malformed(format!("certificate of {}: {e}", peer())))?;
    cert.verify_for_usage(
        SIGNATURE_ALGORITHMS,
        &bundle.anchors,
        intermediates,
        now,
        usage.key_usage(),
        None,
        None,
    )
    .map_err(|e| chain_error(&e, &peer(), bundle, usage))?;

    let id = single_spiffe_id(&leaf, &uris)?;
    if id.trust_domain() != bundle.trust_domain() {
        return Err(VerifyError::WrongTrustDomain {
            expected: bundle.trust_domain().clone(),
            found: id,
        });
    }
    // webpki already refuses a CA leaf; checked again so that this rule does not rest on a
    // dependency's choice.
    let basic_constraints = leaf.basic_constraints().map_err(|e| {
        VerifyError::Malformed(format!("certificate of {}: basicConstraints: {e}", peer()))
    })?;
    if basic_constraints.is_some_and(|bc| bc.value.ca) {
        return Err(VerifyError::LeafIsCa { peer: peer() });
    }
    // webpki does not look at keyUsage bits; TLS 1.3 handshakes are signed, so the key must be
    // allowed to sign.
    let key_usage = leaf
        .key_usage()
        .map_err(|e| VerifyError::Malformed(format!("certificate of {}: keyUsage: {e}", peer())))?;
    if key_usage.is_some_and(|ku| !ku.value.digital_signature()) {
        return Err(VerifyError::KeyUsage { peer: peer() });
    }
    Ok(id)
}

/// The SPIFFE ID in an already verified leaf (its single URI SAN).
pub fn spiffe_id_of(end_entity: &CertificateDer<'_>) -> Result<SpiffeId, VerifyError> {
    let leaf = parse(end_entity)?;
    let uris = uri_sans(&leaf)?;
    single_spiffe_id(&leaf, &uris)
}

/// When a certificate stops being valid (its `notAfter`).
pub fn not_after_of(cert: &CertificateDer<'_>) -> Result<std::time::SystemTime, VerifyError> {
    let seconds = parse(cert)?.validity().not_after.timestamp();
    let seconds = u64::try_from(seconds)
        .map_err(|_| VerifyError::Malformed(format!("notAfter {seconds} is before 1970")))?;
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, VerifyError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| VerifyError::Malformed(e.to_string()))
}

fn uri_sans<'a>(leaf: &X509Certificate<'a>) -> Result<Vec<&'a str>, VerifyError> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| VerifyError::Malformed(format!("subjectAltName: {e}")))?;
    Ok(san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

fn single_spiffe_id(leaf: &X509Certificate<'_>, uris: &[&str]) -> Result<SpiffeId, VerifyError> {
    match uris {
        [uri] => SpiffeId::parse(uri).map_err(VerifyError::BadSpiffeId),
        [] => Err(VerifyError::NoUriSan {
            peer: describe(leaf, uris),
        }),
        _ => Err(VerifyError::MultipleUriSans {
            uris: uris.iter().map(|uri| (*uri).to_owned()).collect(),
        }),
    }
}

/// Names a certificate in messages: its URI SAN when it has exactly one, else its subject.
fn describe(leaf: &X509Certificate<'_>, uris: &[&str]) -> String {
    if let [uri] = uris {
        return format!("{uri:?}");
    }
    let subject = leaf.subject().to_string();
    if subject.is_empty() {
        format!("serial {}", leaf.raw_serial_as_string())
    } else {
        format!("subject {subject:?}")
    }
}

/// Says what webpki found, in words, naming the peer.
fn chain_error(
    error: &webpki::Error,
    peer: &str,
    bundle: &TrustBundle,
    usage: Usage,
) -> VerifyError {
    use webpki::Error as E;
    let reason = match error {
        E::CaUsedAsEndEntity => {
            return VerifyError::LeafIsCa {
                peer: peer.to_owned(),
            };
        }
        E::CertExpired { time, not_after } => {
            format!(
                "expired: not valid after {}, now {}",
                when(*not_after),
                when(*time)
            )
        }
        E::CertNotValidYet { time, not_before } => {
            format!(
                "not yet valid: not valid before {}, now {}",
                when(*not_before),
                when(*time)
            )
        }
        E::UnknownIssuer => format!(
            "does not chain to the trust bundle of \"{}\" (unknown issuer, or a missing intermediate)",
            bundle.trust_domain()
        ),
        E::InvalidSignatureForPublicKey => "a signature in the chain does not verify".to_owned(),
        E::RequiredEkuNotFoundContext(_) => {
            format!("its extended key usage does not allow {usage}")
        }
        E::EndEntityUsedAsCa => "a non-CA certificate signed another".to_owned(),
        E::PathLenConstraintViolated => "the chain is longer than a CA allows".to_owned(),
        E::NameConstraintViolation => "the chain breaks a CA's name constraints".to_owned(),
        other => other.to_string(),
    };
    VerifyError::ChainInvalid(format!("certificate of {peer}: {reason}"))
}

/// A time for messages: readable when it fits the calendar, else seconds since the epoch.
fn when(time: UnixTime) -> String {
    i64::try_from(time.as_secs())
        .ok()
        .and_then(|secs| x509_parser::time::ASN1Time::from_timestamp(secs).ok())
        .map_or_else(
            || format!("{} (Unix time)", time.as_secs()),
            |t| t.to_string(),
        )
}

/// A client's verifier of servers: the server must present `expected`.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    store: TrustStore,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// Accepts only servers that present `expected`, chained to the bundle in `store`.
    pub fn new(store: TrustStore, expected: SpiffeId) -> Self {
        Self {
            store,
            expected,
            provider: crypto_provider(),
        }
    }

    /// The identity the server must present.
    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bundle = self.store.load();
        let found = verify_svid(&bundle, end_entity, intermediates, now, Usage::Server)?;
        if found != self.expected {
            return Err(VerifyError::UnexpectedIdentity {
                expected: self.expected.clone(),
                found,
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes(&self.provider)
    }
}

/// A server's verifier of clients: any SVID of the trust domain.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    store: TrustStore,
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl SpiffeClientVerifier {
    /// `mandatory`: refuse clients without a certificate (strict mTLS). When false, a client
    /// may present none (it then has no identity), but one it presents must verify.
    pub fn new(store: TrustStore, mandatory: bool) -> Self {
        Self {
            store,
            mandatory,
            provider: crypto_provider(),
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bundle = self.store.load();
        verify_svid(&bundle, end_entity, intermediates, now, Usage::Client)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes(&self.provider)
    }
}

/// Handshake signatures are checked the same way on both sides: with the provider's algorithms.
mod hybrid_kx;
pub use hybrid_kx::X25519_MLKEM768;

mod signatures {
    use rustls::client::danger::HandshakeSignatureValid;
    use rustls::crypto::CryptoProvider;
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use rustls_pki_types::CertificateDer;

    pub(super) fn tls12(
        provider: &CryptoProvider,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider.signature_verification_algorithms,
        )
    }

    pub(super) fn tls13(
        provider: &CryptoProvider,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider.signature_verification_algorithms,
        )
    }

    pub(super) fn schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
        provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests;
