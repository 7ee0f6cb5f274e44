//! The workload's identity: its key (made here, never sent anywhere), its certificate from the
//! control service, and the rustls resolvers that present the current one.
//!
//! [`Identity`] is a cheap handle; renewal swaps a new [`Svid`] in atomically, so connections
//! made from then on present it and established ones are not disturbed.
//!
//! A peer's verified identity, as the server side learns it, is a [`PeerIdentity`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use mesh_core::proto::{CertifyRequest, CertifyResponse};
use mesh_core::tls::{TrustBundle, TrustStore, Usage, verify_svid};
use mesh_core::{SpiffeId, TrustDomain};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};

mod peer;

pub use peer::PeerIdentity;

/// Why a certificate could not be obtained or used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key or CSR could not be made.
    #[error("making the key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    /// The control service refused or failed the request.
    #[error("Certify refused: {0}")]
    Refused(String),
    /// The reply does not hold up: the certificate does not verify, names another identity, or
    /// does not match the key.
    #[error("the issued certificate is unusable: {0}")]
    BadReply(String),
    /// The control service could not be reached.
    #[error(transparent)]
    Connect(#[from] crate::error::ConnectError),
    /// The token file could not be read.
    #[error("reading the token file {path}: {source}")]
    Token {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A certificate issued to this workload, with the key it was issued for.
#[derive(Debug)]
pub struct Svid {
    /// The SPIFFE ID in the certificate.
    pub id: SpiffeId,
    /// When it stops being valid.
    pub not_after: SystemTime,
    /// When it was received.
    pub issued_at: SystemTime,
    /// Chain and signing key, as rustls presents them.
    pub certified: Arc<CertifiedKey>,
    /// The private key (PKCS#8 DER), kept only so that it can be written to the state
    /// directory when the user opted into persisting the identity.
    pub(crate) key: SecretKey,
}

/// A private key's PKCS#8 DER. Its `Debug` prints nothing of the key: SVIDs are logged.
#[derive(Clone)]
pub(crate) struct SecretKey(pub(crate) Vec<u8>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl Svid {
    /// How long the certificate remains valid from now (zero once expired).
    pub fn valid_for(&self) -> Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

/// A fresh P-256 key and a CSR for it. The CSR asks for nothing: the control service decides
/// the identity from the token.
pub(crate) struct KeyAndCsr {
    key: KeyPair,
    pub(crate) csr_der: Vec<u8>,
}

impl KeyAndCsr {
    pub(crate) fn generate() -> Result<Self, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let csr = CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
        Ok(Self {
            csr_der: csr.der().to_vec(),
            key,
        })
    }

    pub(crate) fn request(&self, token: String) -> CertifyRequest {
        CertifyRequest {
            csr_der: self.csr_der.clone(),
            token,
        }
    }

    /// Checks the reply (chain verifies to the returned bundle, the identity is a SPIFFE ID of
    /// our trust domain, the certificate is for our key) and makes the SVID and bundle.
    pub(crate) fn accept(
        self,
        reply: CertifyResponse,
        trust_domain: &TrustDomain,
    ) -> Result<(Svid, TrustBundle), IdentityError> {
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
            .map_err(|e| IdentityError::BadReply(format!("trust bundle: {e}")))?;
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| IdentityError::BadReply("empty certificate chain".into()))?;
        let id = verify_svid(&bundle, leaf, intermediates, UnixTime::now(), Usage::Client)
            .map_err(|e| IdentityError::BadReply(e.to_string()))?;
        if id.as_str() != reply.spiffe_id {
            return Err(IdentityError::BadReply(format!(
                "certificate names {id}, the reply says {}",
                reply.spiffe_id
            )));
        }
        let key = SecretKey(self.key.serialize_der());
        let certified = certified_key(chain, &key).map_err(|e| {
            IdentityError::BadReply(format!("certificate does not fit our key: {e}"))
        })?;
        let not_after = UNIX_EPOCH + Duration::from_secs(reply.not_after_unix.max(0) as u64);
        Ok((
            Svid {
                id,
                not_after,
                issued_at: SystemTime::now(),
                certified: Arc::new(certified),
                key,
            },
            bundle,
        ))
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &SecretKey,
) -> Result<CertifiedKey, rustls::Error> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.0.clone()));
    CertifiedKey::from_der(chain, der, &mesh_core::tls::crypto_provider())
}

impl Svid {
    /// Rebuilds an SVID from a chain and key kept on disk, checked as an issued one is: the
    /// chain verifies to `bundle` now (so it has not expired), names a SPIFFE ID of the bundle's
    /// trust domain, and is for `key`. The validity period comes from the leaf certificate, so
    /// renewal is scheduled as for the original.
    pub(crate) fn from_persisted(
        chain: Vec<CertificateDer<'static>>,
        key: SecretKey,
        bundle: &TrustBundle,
    ) -> Result<Self, PersistedIdentityError> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(PersistedIdentityError::NoCertificate)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| PersistedIdentityError::Unparsable(e.to_string()))?;
        let validity = parsed.validity();
        let unix = |t: x509_parser::time::ASN1Time| {
            UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        let (not_before, not_after) = (unix(validity.not_before), unix(validity.not_after));
        if not_after <= SystemTime::now() {
            return Err(PersistedIdentityError::Expired {
                ago: SystemTime::now()
                    .duration_since(not_after)
                    .unwrap_or_default(),
            });
        }
        let id = verify_svid(bundle, leaf, intermediates, UnixTime::now(), Usage::Client)
            .map_err(|e| PersistedIdentityError::DoesNotVerify(e.to_string()))?;
        let certified = certified_key(chain, &key)
            .map_err(|e| PersistedIdentityError::KeyMismatch(e.to_string()))?;
        Ok(Self {
            id,
            not_after,
            issued_at: not_before,
            certified: Arc::new(certified),
            key,
        })
    }
}

/// Why an identity kept on disk cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistedIdentityError {
    /// The file has no usable `PRIVATE KEY` block.
    #[error("no usable PRIVATE KEY block: {0}")]
    NoKey(String),
    /// The file is not valid PEM.
    #[error("invalid PEM: {0}")]
    BadPem(String),
    /// The file has no `CERTIFICATE` block.
    #[error("no CERTIFICATE block")]
    NoCertificate,
    /// The leaf certificate does not parse.
    #[error("the certificate does not parse: {0}")]
    Unparsable(String),
    /// The certificate has expired.
    #[error("the certificate expired {}s ago", ago.as_secs())]
    Expired {
        /// How long ago.
        ago: Duration,
    },
    /// The chain does not verify to the trust bundle.
    #[error("the certificate does not verify: {0}")]
    DoesNotVerify(String),
    /// The certificate is not for the key beside it.
    #[error("the key does not fit: {0}")]
    KeyMismatch(String),
}

/// The workload's current SVID and trust bundle. Cheap to clone; all clones see renewals.
#[derive(Debug, Clone)]
pub struct Identity {
    svid: Arc<ArcSwap<Svid>>,
    trust: TrustStore,
}

impl Identity {
    pub(crate) fn new(svid: Svid, trust: TrustStore) -> Self {
        Self {
            svid: Arc::new(ArcSwap::from_pointee(svid)),
            trust,
        }
    }

    /// This workload's SPIFFE ID.
    pub fn id(&self) -> SpiffeId {
        self.svid.load().id.clone()
    }

    /// The SVID in use now.
    pub fn svid(&self) -> Arc<Svid> {
        self.svid.load_full()
    }

    /// The trust bundle peers are verified with.
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// Puts a renewed SVID (and the bundle that came with it) in force.
    pub(crate) fn rotate(&self, svid: Svid, bundle: TrustBundle) {
        self.trust.store(bundle);
        self.svid.store(Arc::new(svid));
    }

    /// When the current certificate should be renewed: at about 70 % of its life, with ±5 %
    /// jitter so replicas started together do not renew together.
    pub(crate) fn renew_at(&self) -> SystemTime {
        let svid = self.svid.load();
        let life = svid
            .not_after
            .duration_since(svid.issued_at)
            .unwrap_or(Duration::ZERO);
        let fraction = 0.70 + (fastrand::f64() - 0.5) * 0.10;
        svid.issued_at + life.mul_f64(fraction)
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.svid.load().certified.clone())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.svid.load().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
