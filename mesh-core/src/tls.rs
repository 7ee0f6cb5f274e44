//! SPIFFE certificate verification for rustls, shared by the services and the control service.
//!
//! rustls checks DNS names, not URI SANs, so the mesh brings its own verifiers: the chain is
//! verified to the trust bundle with rustls-webpki, then the leaf must carry exactly one URI SAN
//! that is a valid SPIFFE ID in the bundle's trust domain, must not be a CA, and (client side)
//! must be the identity that discovery expects.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::spiffe::{SpiffeId, TrustDomain};

/// Why a certificate or bundle was refused. Each variant says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Placeholder until implemented.
    #[error("{0}")]
    Other(String),
}

/// The ring crypto provider every mesh TLS config uses (one provider in the tree).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The root certificates of one trust domain.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// A bundle from DER roots; each must parse as a trust anchor.
    pub fn from_der(
        trust_domain: TrustDomain,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, VerifyError> {
        let _ = (trust_domain, roots);
        todo!()
    }

    /// A bundle from a PEM file's contents (one or more `CERTIFICATE` blocks).
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, VerifyError> {
        let _ = (trust_domain, pem);
        todo!()
    }

    /// The bundle as PEM.
    pub fn to_pem(&self) -> String {
        todo!()
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

/// Verifies a presented chain as an SVID of `bundle`'s trust domain and returns its SPIFFE ID.
pub fn verify_svid(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: Usage,
) -> Result<SpiffeId, VerifyError> {
    let _ = (bundle, end_entity, intermediates, now, usage);
    todo!()
}

/// The SPIFFE ID in an already verified leaf (its single URI SAN).
pub fn spiffe_id_of(end_entity: &CertificateDer<'_>) -> Result<SpiffeId, VerifyError> {
    let _ = end_entity;
    todo!()
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
        let _ = (end_entity, intermediates, now, &self.store, &self.expected);
        todo!()
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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
        let _ = (end_entity, intermediates, now, &self.store);
        todo!()
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
