//! The certificate authority: loads or creates the signing key, and signs workload SVIDs from
//! CSRs on parameters it builds itself.
//!
//! The CSR contributes only its public key, after its signature is checked. Its subject and
//! every extension it requests (CA rights, key usages, key identifiers, whatever a tool adds by
//! default) are ignored, never parsed into the certificate. Every leaf gets exactly one URI SAN
//! (the SPIFFE ID the caller proved), the DNS names its identity is entitled to (decided by the
//! caller of [`Ca::sign_with_names`] from config, see `ca::dns_names`), `CA:FALSE`,
//! digitalSignature, serverAuth + clientAuth, and the configured lifetime.
//!
//! The names a CSR asks for (its subjectAltName request) are checked, never copied: a request
//! may ask for the SPIFFE ID the token proves and for DNS names among those the identity is
//! entitled to; anything else (another SPIFFE ID, a name of a service the identity does not
//! serve, an IP address, an e-mail) refuses the whole request, naming what was asked for. The
//! certificate carries the entitled names whatever subset was asked for.
//!
//! What it refuses, and why:
//! - more than [`MAX_CSR_BYTES`], or bytes that are not a DER PKCS#10 request: nothing to read;
//! - a key that is not ECDSA P-256 (an uncompressed point): the mesh's SVIDs are P-256 end to
//!   end, and the error names the key type found;
//! - a signature that is not ECDSA with SHA-256 or SHA-384, or does not verify: the signature
//!   proves the caller holds the key, and an unverifiable one proves nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::tls::{self, TrustBundle, Usage};
use mesh_core::{SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
    SignatureAlgorithm,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use time::OffsetDateTime;

use mesh_process::atomic_file;

/// CSRs larger than this are refused before parsing (a P-256 CSR is about 300 bytes).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// The default lifetime of a workload certificate.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Leaves start this long before "now", so a peer whose clock is a little behind accepts them.
const BACKDATE: Duration = Duration::from_secs(60);

/// Lifetime of a generated dev root: long, because its trust anchor is copied to clients.
const DEV_ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Lifetime of an in-memory root: it dies with the process anyway.
const EPHEMERAL_ROOT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Roots made at start-up start this long before "now", for peers whose clocks are behind.
const ROOT_BACKDATE: time::Duration = time::Duration::minutes(1);

/// The dev CA's files in its state directory.
const DEV_CERT_FILE: &str = "ca.crt";
const DEV_KEY_FILE: &str = "ca.key";

/// Where the CA's key and certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// An existing CA, as PEM files. The issuer may be the root itself (same file) or an
    /// intermediate signed by it; the issuer file may carry further intermediates after the
    /// issuer. `root_cert` may hold several roots (rotation with overlap): all are trusted.
    Files {
        /// The trust anchors (one or more `CERTIFICATE` blocks).
        root_cert: PathBuf,
        /// The certificate of the key that signs workloads, first in the file.
        issuer_cert: PathBuf,
        /// The issuer's private key, PKCS#8 PEM (`PRIVATE KEY`).
        issuer_key: PathBuf,
    },
    /// A self-signed P-256 root made on first start and kept in `state_dir` (`ca.crt`, and
    /// `ca.key` with mode 0600), reused on every later start so trust anchors survive restarts.
    Dev {
        /// Directory for the CA's files (created when missing, mode 0700).
        state_dir: PathBuf,
    },
    /// A root that lives in memory only: for demos and tests.
    Ephemeral,
}

/// Why the CA could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file's content was refused.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A dev state directory holds only one of the CA's two files.
    #[error(
        "{}: found {} without {}; restore it or delete both to make a new CA",
        dir.display(), present, missing
    )]
    Incomplete {
        /// The state directory.
        dir: PathBuf,
        /// The file found.
        present: &'static str,
        /// The file missing.
        missing: &'static str,
    },
    /// The loaded CA cannot issue a certificate that verifies against its own roots.
    #[error("the CA's files do not belong together: a test certificate failed to verify: {0}")]
    SelfCheck(String),
    /// Key generation or certificate signing failed.
    #[error("creating the CA failed: {0}")]
    Generate(#[source] rcgen::Error),
}

/// Why a CSR was refused, or signing failed. The messages say what is wrong with the CSR
/// without quoting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// No bytes.
    #[error("empty")]
    Empty,
    /// More than [`MAX_CSR_BYTES`].
    #[error("{len} bytes, more than the {max} allowed")]
    TooLarge {
        /// The CSR's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a DER PKCS#10 request.
    #[error("not a DER PKCS#10 certificate signing request")]
    Malformed,
    /// The request's self-signature does not verify.
    #[error("the request's signature does not verify")]
    BadSignature,
    /// The key is not ECDSA P-256 (an uncompressed point).
    #[error("the key must be ECDSA P-256, not {found}")]
    UnsupportedKey {
        /// The key type the request carries, e.g. `ECDSA P-384`, `RSA-2048`, `Ed25519`.
        found: String,
    },
    /// The request is signed with an algorithm the CA does not verify (it verifies ECDSA with
    /// SHA-256 or SHA-384).
    #[error(
        "the request is signed with {found}; the CA verifies ecdsa-with-SHA256 and \
         ecdsa-with-SHA384"
    )]
    UnsupportedSignature {
        /// The request's signature algorithm, e.g. `ecdsa-with-SHA512`.
        found: String,
    },
    /// The request asks for names the proven identity is not entitled to.
    #[error(
        "the request asks for names its identity is not entitled to: {}; it may ask for its \
         SPIFFE ID and the DNS names of the services it serves ({})",
        .refused.join(", "),
        if .entitled.is_empty() { "none".to_owned() } else { .entitled.join(", ") }
    )]
    NamesNotEntitled {
        /// The names refused, as `DNS:name`, `URI:uri`, `IP:addr` or the kind of name.
        refused: Vec<String>,
        /// The DNS names the identity is entitled to.
        entitled: Vec<String>,
    },
    /// The CA failed to sign; not the caller's fault.
    #[error("signing failed: {0}")]
    Internal(String),
}

impl SignError {
    /// Whether the caller's request was at fault (INVALID_ARGUMENT) rather than the CA.
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, Self::Internal(_))
    }
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf first, then any intermediates up to (not including) a root.
    pub chain_der: Vec<CertificateDer<'static>>,
    /// When the leaf expires (whole seconds).
    pub not_after: SystemTime,
}

/// The CA in force, swapped whole when its files are reloaded.
pub(crate) type CaHandle = std::sync::Arc<arc_swap::ArcSwap<Ca>>;

/// The certificate authority of one trust domain.
pub struct Ca {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    /// Certificates between a leaf and a root: empty when the issuer is a root.
    intermediates: Vec<CertificateDer<'static>>,
    bundle: TrustBundle,
    /// Leaves never outlive their issuer.
    issuer_not_after: OffsetDateTime,
    /// The expiry (Unix seconds) of the last leaf the issuer signed, shared by every `Ca`
    /// built on the same issuing key, so a rotation knows when that key's leaves are gone.
    signed_until: Arc<AtomicU64>,
}

/// A root the control service made and keeps (its certificate and key): what an automatic
/// rotation builds its CAs from.
#[derive(Clone)]
pub(crate) struct RootPair {
    /// The self-signed root certificate.
    pub(crate) cert: CertificateDer<'static>,
    /// Its PKCS#8 key, DER (parsed again for every `Ca` built on it).
    key_der: Arc<Vec<u8>>,
    /// When it becomes valid.
    pub(crate) not_before: SystemTime,
    /// When it expires.
    pub(crate) not_after: SystemTime,
    /// See [`Ca::signed_until`]: shared by every `Ca` that issues with this root.
    signed_until: Arc<AtomicU64>,
}

impl std::fmt::Debug for RootPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootPair")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

// === impl RootPair ===

impl RootPair {
    /// A fresh root for `trust_domain`, valid for `lifetime`.
    pub(crate) fn generate(
        trust_domain: &TrustDomain,
        lifetime: Duration,
    ) -> Result<Self, CaError> {
        // Not backdated: a rotation measures its schedule from `not_before`, and trust anchors'
        // validity is not checked by verifiers (rustls-webpki keeps only name and key).
        let (cert, key) = generate_root(trust_domain, lifetime, time::Duration::ZERO)?;
        Self::new(cert.der().clone(), &key, Path::new("<memory>"))
    }

    fn new(cert: CertificateDer<'static>, key: &KeyPair, path: &Path) -> Result<Self, CaError> {
        let (_, x509) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| invalid(path, format!("not an X.509 certificate: {e}")))?;
        let validity = x509.validity();
        let not_before = validity.not_before.to_datetime().into();
        let not_after = validity.not_after.to_datetime().into();
        Ok(Self {
            cert,
            key_der: Arc::new(key.serialize_der()),
            not_before,
            not_after,
            signed_until: Arc::default(),
        })
    }

    /// The dev root in `state_dir` (made there on first use, valid for `lifetime`): where a
    /// dev CA's rotation starts.
    pub(crate) fn dev(
        state_dir: &Path,
        trust_domain: &TrustDomain,
        lifetime: Duration,
    ) -> Result<Self, CaError> {
        let (cert, key, path) = dev_root(state_dir, trust_domain, lifetime)?;
        check_issuer(&path, &cert, &key)?;
        Self::new(cert, &key, &path)
    }

    /// A root stored as PEM (certificate and PKCS#8 key), checked to belong together.
    pub(crate) fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let path = Path::new("<stored root>");
        let cert = parse_pem_certs(path, cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| invalid(path, "no CERTIFICATE block"))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| invalid(path, format!("not a PKCS#8 private key: {e}")))?;
        check_issuer(path, &cert, &key)?;
        Self::new(cert, &key, path)
    }

    /// The certificate and key as PEM, for storing.
    pub(crate) fn to_pem(&self) -> (String, String) {
        let cert = mesh_core::pem::certificates(std::iter::once(self.cert.as_ref()));
        let key = mesh_core::pem::encode("PRIVATE KEY", &self.key_der);
        (cert, key)
    }

    /// Assumes leaves signed until `until` (a state resumed after a restart, whose leaves this
    /// process did not count).
    pub(crate) fn assume_signed_until(&self, until: SystemTime) {
        let secs = until.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.signed_until.fetch_max(secs, Ordering::AcqRel);
    }

    /// The expiry of the last leaf signed with this root (`None`: none yet).
    pub(crate) fn signed_until(&self) -> Option<SystemTime> {
        match self.signed_until.load(Ordering::Acquire) {
            0 => None,
            secs => Some(UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }

    /// The root's key identifier (hex), which every leaf it signs names as its authority key
    /// identifier.
    pub(crate) fn key_id(&self) -> String {
        crate::ca::key_id::subject_key_id(&self.cert).unwrap_or_default()
    }
}

/// The pair's key, parsed again (rcgen's `Issuer` takes it by value).
fn pair_key(pair: &RootPair) -> Result<KeyPair, CaError> {
    KeyPair::try_from(pair.key_der.as_slice()).map_err(CaError::Generate)
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("intermediates", &self.intermediates.len())
            .field("roots", &self.bundle.roots().len())
            .finish_non_exhaustive()
    }
}

// === impl Ca ===

impl Ca {
    /// Loads or creates the CA that `source` describes.
    pub fn load(source: &CaSource, trust_domain: &TrustDomain) -> Result<Self, CaError> {
        match source {
            CaSource::Files {
                root_cert,
                issuer_cert,
                issuer_key,
            } => Self::from_files(root_cert, issuer_cert, issuer_key, trust_domain),
            CaSource::Dev { state_dir } => Self::dev(state_dir, trust_domain),
            CaSource::Ephemeral => Self::ephemeral(trust_domain),
        }
    }

    /// A fresh in-memory root.
    pub fn ephemeral(trust_domain: &TrustDomain) -> Result<Self, CaError> {
        let (cert, key) = generate_root(trust_domain, EPHEMERAL_ROOT_LIFETIME, ROOT_BACKDATE)?;
        Self::from_root(trust_domain, cert.der().clone(), key, Path::new("<memory>"))
    }

    /// A CA that issues with `issuer` and trusts `roots` (the issuer's own root among them):
    /// one phase of an automatic rotation.
    pub(crate) fn from_pair(
        trust_domain: &TrustDomain,
        issuer: &RootPair,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CaError> {
        let path = Path::new("<memory>");
        let mut ca = Self::from_root(trust_domain, issuer.cert.clone(), pair_key(issuer)?, path)?;
        ca.bundle = TrustBundle::from_der(trust_domain.clone(), roots)
            .map_err(|e| invalid(path, e.to_string()))?;
        ca.signed_until = issuer.signed_until.clone();
        Ok(ca)
    }

    fn dev(state_dir: &Path, trust_domain: &TrustDomain) -> Result<Self, CaError> {
        let (cert, key, path) = dev_root(state_dir, trust_domain, DEV_ROOT_LIFETIME)?;
        Self::from_root(trust_domain, cert, key, &path)
    }

    fn from_root(
        trust_domain: &TrustDomain,
        cert: CertificateDer<'static>,
        key: KeyPair,
        path: &Path,
    ) -> Result<Self, CaError> {
        let issuer_not_after = check_issuer(path, &cert, &key)?;
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| invalid(path, format!("unusable CA certificate: {e}")))?;
        let bundle = TrustBundle::from_der(trust_domain.clone(), vec![cert])
            .map_err(|e| invalid(path, e.to_string()))?;
        Ok(Self {
            trust_domain: trust_domain.clone(),
            issuer,
            intermediates: Vec::new(),
            bundle,
            issuer_not_after,
            signed_until: Arc::default(),
        })
    }

    fn from_files(
        root_path: &Path,
        issuer_path: &Path,
        key_path: &Path,
        trust_domain: &TrustDomain,
    ) -> Result<Self, CaError> {
        let roots = parse_pem_certs(root_path, &read_to_string(root_path)?)?;
        if roots.is_empty() {
            return Err(invalid(root_path, "no CERTIFICATE block"));
        }
        let mut issuer_chain =
            parse_pem_certs(issuer_path, &read_to_string(issuer_path)?)?.into_iter();
        let issuer_cert = issuer_chain
            .next()
            .ok_or_else(|| invalid(issuer_path, "no CERTIFICATE block"))?;
        let key = KeyPair::from_pem(&read_to_string(key_path)?)
            .map_err(|e| invalid(key_path, format!("not a PKCS#8 private key: {e}")))?;
        let issuer_not_after =
            check_issuer(issuer_path, &issuer_cert, &key).map_err(|e| match e {
                // A key that does not match is reported against the key file.
                CaError::Invalid { reason, .. } if reason.starts_with("the key") => {
                    invalid(key_path, format!("{reason} in {}", issuer_path.display()))
                }
                other => other,
            })?;
        // Whatever sits between a leaf and a root travels with every leaf.
        let intermediates: Vec<_> = std::iter::once(issuer_cert.clone())
            .chain(issuer_chain)
            .filter(|c| !roots.contains(c))
            .collect();
        let issuer = Issuer::from_ca_cert_der(&issuer_cert, key)
            .map_err(|e| invalid(issuer_path, format!("unusable CA certificate: {e}")))?;
        let bundle = TrustBundle::from_der(trust_domain.clone(), roots)
            .map_err(|e| invalid(root_path, e.to_string()))?;
        let ca = Self {
            trust_domain: trust_domain.clone(),
            issuer,
            intermediates,
            bundle,
            issuer_not_after,
            signed_until: Arc::default(),
        };
        ca.self_check()?;
        Ok(ca)
    }

    /// Issues a throwaway certificate and verifies it against the roots, so that a CA whose
    /// files do not belong together fails at start-up rather than at every workload's handshake.
    fn self_check(&self) -> Result<(), CaError> {
        let failed = |e: &dyn std::fmt::Display| CaError::SelfCheck(e.to_string());
        let id = SpiffeId::from_service_account(&self.trust_domain, "mesh-system", "ca-self-check")
            .map_err(|e| failed(&e))?;
        let (issued, _) = self
            .issue_own(&id, Duration::from_secs(60))
            .map_err(|e| failed(&e))?;
        let (leaf, intermediates) = issued
            .chain_der
            .split_first()
            .ok_or_else(|| failed(&"empty chain"))?;
        tls::verify_svid(
            &self.bundle,
            leaf,
            intermediates,
            UnixTime::now(),
            Usage::Client,
        )
        .map(drop)
        .map_err(|e| failed(&e))
    }

    /// The trust domain the CA signs for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The roots that verify what this CA signs.
    pub fn trust_bundle(&self) -> TrustBundle {
        self.bundle.clone()
    }

    /// The same roots, borrowed: what a `Certify` response carries, without copying the
    /// bundle (and its parsed anchors) for every issuance.
    pub fn trust_roots(&self) -> &[CertificateDer<'static>] {
        self.bundle.roots()
    }

    /// The roots as PEM, for `MESH_TRUST_ANCHORS_FILE`.
    pub fn trust_bundle_pem(&self) -> String {
        self.bundle.to_pem()
    }

    /// Signs a certificate for `id` with the public key of `csr_der`, valid for `lifetime`
    /// (capped at the issuer's own expiry).
    ///
    /// The CSR must be DER, at most [`MAX_CSR_BYTES`], for an ECDSA P-256 key, and self-signed
    /// with ECDSA SHA-256 or SHA-384 (the signature is verified). Nothing else from it is read:
    /// its subject, attributes and requested extensions, whatever they are, are ignored.
    pub fn sign(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        lifetime: Duration,
    ) -> Result<Issued, SignError> {
        self.sign_with_names(csr_der, id, &[], lifetime)
    }

    /// [`Ca::sign`] with DNS SANs: `dns_names`, the names `id` is entitled to (decided by the
    /// caller from config, never from the CSR). A CSR that asks for a name outside them (or
    /// for another SPIFFE ID, or any other kind of name) is refused, naming what it asked.
    pub fn sign_with_names(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        dns_names: &[String],
        lifetime: Duration,
    ) -> Result<Issued, SignError> {
        if csr_der.is_empty() {
            return Err(SignError::Empty);
        }
        if csr_der.len() > MAX_CSR_BYTES {
            return Err(SignError::TooLarge {
                len: csr_der.len(),
                max: MAX_CSR_BYTES,
            });
        }
        let key = csr_public_key(csr_der, id, dns_names)?;
        let params = self.leaf_params(id, &LeafNames::dns(dns_names), lifetime)?;
        let not_after = params.not_after;
        // Fresh parameters, never `csr.params`: those are the caller's wishes.
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| SignError::Internal(e.to_string()))?;
        Ok(self.issued(cert.der().clone(), not_after))
    }

    /// Issues a certificate for `id` on a key made here and returned with it: the control
    /// service's own serving certificate.
    pub fn issue_own(
        &self,
        id: &SpiffeId,
        lifetime: Duration,
    ) -> Result<(Issued, PrivateKeyDer<'static>), SignError> {
        self.issue_own_with_names(id, &[], lifetime)
    }

    /// [`Ca::issue_own`] with more names: each of `names` is an IP address (an IP SAN) or a
    /// DNS name (a DNS SAN), so a TLS client that checks names (gRPC's xDS client, talking
    /// to the control service) finds the one it dialled.
    pub fn issue_own_with_names(
        &self,
        id: &SpiffeId,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(Issued, PrivateKeyDer<'static>), SignError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| SignError::Internal(e.to_string()))?;
        let params = self.leaf_params(id, &LeafNames::mixed(names), lifetime)?;
        let not_after = params.not_after;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| SignError::Internal(e.to_string()))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((self.issued(cert.der().clone(), not_after), key_der))
    }

    fn issued(&self, leaf: CertificateDer<'static>, not_after: OffsetDateTime) -> Issued {
        // Leaves expire in whole seconds after 1970; a negative time cannot come from `now`.
        let secs = u64::try_from(not_after.unix_timestamp()).unwrap_or(0);
        self.signed_until.fetch_max(secs, Ordering::AcqRel);
        let mut chain_der = Vec::with_capacity(1 + self.intermediates.len());
        chain_der.push(leaf);
        chain_der.extend(self.intermediates.iter().cloned());
        Issued {
            chain_der,
            not_after: not_after.into(),
        }
    }

    fn leaf_params(
        &self,
        id: &SpiffeId,
        names: &LeafNames<'_>,
        lifetime: Duration,
    ) -> Result<CertificateParams, SignError> {
        let now = now_seconds();
        let lifetime =
            time::Duration::try_from(lifetime).map_err(|e| SignError::Internal(e.to_string()))?;
        let backdate =
            time::Duration::try_from(BACKDATE).map_err(|e| SignError::Internal(e.to_string()))?;
        let uri = id
            .as_str()
            .to_owned()
            .try_into()
            .map_err(|e: rcgen::Error| SignError::Internal(e.to_string()))?;
        let mut params = CertificateParams::default();
        // An empty subject: the SPIFFE ID is the name (rcgen then marks the SAN critical, as
        // RFC 5280 requires).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = Vec::with_capacity(1 + names.len());
        params.subject_alt_names.push(SanType::URI(uri));
        names.push_to(&mut params.subject_alt_names)?;
        // An explicit `CA:FALSE` (X.509-SVID: leaves must set cA to false).
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - backdate;
        params.not_after = (now + lifetime).min(self.issuer_not_after);
        params.serial_number =
            Some(random_serial().map_err(|_| SignError::Internal("the system RNG failed".into()))?);
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

/// The names a leaf carries besides its SPIFFE ID.
struct LeafNames<'a> {
    names: &'a [String],
    /// Whether a name that parses as an IP address is an IP SAN (the control service's own
    /// names) rather than refused (a workload's DNS names never are addresses).
    ips: bool,
}

impl<'a> LeafNames<'a> {
    fn dns(names: &'a [String]) -> Self {
        Self { names, ips: false }
    }

    fn mixed(names: &'a [String]) -> Self {
        Self { names, ips: true }
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn push_to(&self, sans: &mut Vec<SanType>) -> Result<(), SignError> {
        for name in self.names {
            if self.ips
                && let Ok(ip) = name.parse::<std::net::IpAddr>()
            {
                sans.push(SanType::IpAddress(ip));
                continue;
            }
            let dns = name.as_str().try_into().map_err(|e: rcgen::Error| {
                SignError::Internal(format!("DNS name {name:?}: {e}"))
            })?;
            sans.push(SanType::DnsName(dns));
        }
        Ok(())
    }
}

/// The public key of a P-256 CSR: the uncompressed point, the only thing the CA takes from a
/// request.
struct CsrKey(Vec<u8>);

impl rcgen::PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key's algorithm as rcgen writes it into the certificate's SubjectPublicKeyInfo:
    /// id-ecPublicKey on P-256 (the hash is the issuer's business, not the subject key's).
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

/// Parses `csr_der` as a PKCS#10 request, checks its key, its signature and the names it asks
/// for (only `id` and names among `entitled`), and returns its public key. The other
/// extensions it requests, whatever they are, are neither parsed into anything nor refused.
fn csr_public_key(csr_der: &[u8], id: &SpiffeId, entitled: &[String]) -> Result<CsrKey, SignError> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::FromDer;

    let (rest, csr) =
        X509CertificationRequest::from_der(csr_der).map_err(|_| SignError::Malformed)?;
    if !rest.is_empty() {
        return Err(SignError::Malformed);
    }
    let spki = &csr.certification_request_info.subject_pki;
    check_csr_key(spki)?;
    check_csr_signature_algorithm(&csr.signature_algorithm)?;
    csr.verify_signature()
        .map_err(|_| SignError::BadSignature)?;
    check_requested_names(&csr, id, entitled)?;
    Ok(CsrKey(spki.subject_public_key.data.to_vec()))
}

/// Refuses a request that asks for a name `id` is not entitled to: a URI SAN other than `id`,
/// a DNS name outside `entitled` (compared without case, as DNS does), or a name of any other
/// kind.
fn check_requested_names(
    csr: &x509_parser::certification_request::X509CertificationRequest<'_>,
    id: &SpiffeId,
    entitled: &[String],
) -> Result<(), SignError> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};

    let Some(extensions) = csr.requested_extensions() else {
        return Ok(());
    };
    let mut refused = Vec::new();
    for extension in extensions {
        let ParsedExtension::SubjectAlternativeName(san) = extension else {
            continue;
        };
        for name in &san.general_names {
            match name {
                GeneralName::URI(uri) if *uri == id.as_str() => {}
                GeneralName::DNSName(dns)
                    if entitled.iter().any(|e| e.eq_ignore_ascii_case(dns)) => {}
                GeneralName::URI(uri) => refused.push(format!("URI:{uri}")),
                GeneralName::DNSName(dns) => refused.push(format!("DNS:{dns}")),
                GeneralName::IPAddress(bytes) => refused.push(ip_name(bytes)),
                GeneralName::RFC822Name(mail) => refused.push(format!("email:{mail}")),
                _ => refused.push("a name of another kind".to_owned()),
            }
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(SignError::NamesNotEntitled {
        refused,
        entitled: entitled.to_vec(),
    })
}

/// An IP SAN as a refusal names it: `IP:addr` from its 4 or 16 bytes.
fn ip_name(bytes: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return format!("IP:{}", std::net::IpAddr::from(v4));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return format!("IP:{}", std::net::IpAddr::from(v6));
    }
    "an IP address".to_owned()
}

/// Accepts an ECDSA P-256 key (an uncompressed point); refuses anything else, naming it.
fn check_csr_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<(), SignError> {
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let found = match algorithm.as_str() {
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => {
                    let point = spki.subject_public_key.data.as_ref();
                    // 0x04, then X and Y of 32 bytes each.
                    if point.len() == 65 && point.first() == Some(&0x04) {
                        return Ok(());
                    }
                    "a P-256 key that is not an uncompressed point".to_owned()
                }
                Some("1.3.132.0.34") => "ECDSA P-384".to_owned(),
                Some("1.3.132.0.35") => "ECDSA P-521".to_owned(),
                Some("1.3.132.0.10") => "ECDSA secp256k1".to_owned(),
                Some(other) => format!("ECDSA on curve {other}"),
                None => "ECDSA without a named curve".to_owned(),
            }
        }
        OID_RSA => match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => format!("RSA-{}", rsa.key_size()),
            _ => "RSA".to_owned(),
        },
        "1.2.840.113549.1.1.10" => "RSA-PSS".to_owned(),
        "1.3.101.112" => "Ed25519".to_owned(),
        "1.3.101.113" => "Ed448".to_owned(),
        "1.2.840.10040.4.1" => "DSA".to_owned(),
        other => format!("a key of algorithm {other}"),
    };
    Err(SignError::UnsupportedKey { found })
}

/// Accepts ECDSA with SHA-256 or SHA-384 (what a P-256 key is signed with, and what the CA
/// can verify); refuses anything else, naming it.
fn check_csr_signature_algorithm(
    algorithm: &x509_parser::x509::AlgorithmIdentifier<'_>,
) -> Result<(), SignError> {
    let oid = algorithm.algorithm.to_id_string();
    let found = match oid.as_str() {
        OID_ECDSA_SHA256 | OID_ECDSA_SHA384 => return Ok(()),
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1".to_owned(),
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224".to_owned(),
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512".to_owned(),
        other => format!("algorithm {other}"),
    };
    Err(SignError::UnsupportedSignature { found })
}

/// Now, truncated to whole seconds (X.509 validity has no fractions), so `not_after` is
/// exactly what the certificate says.
fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// 16 bytes from the system's CSPRNG, top bit clear so the serial is positive and its first
/// byte non-zero so its DER encoding keeps its length.
fn random_serial() -> Result<SerialNumber, rustls::crypto::GetRandomFailed> {
    let mut bytes = [0u8; 16];
    tls::crypto_provider().secure_random.fill(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The dev root in `state_dir` (its certificate, key and certificate path), made (valid for
/// `lifetime`) and written there on first use.
fn dev_root(
    state_dir: &Path,
    trust_domain: &TrustDomain,
    lifetime: Duration,
) -> Result<(CertificateDer<'static>, KeyPair, PathBuf), CaError> {
    let cert_path = state_dir.join(DEV_CERT_FILE);
    let key_path = state_dir.join(DEV_KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let cert_pem = read_to_string(&cert_path)?;
            let key_pem = read_to_string(&key_path)?;
            let cert = parse_pem_certs(&cert_path, &cert_pem)?
                .into_iter()
                .next()
                .ok_or_else(|| invalid(&cert_path, "no CERTIFICATE block"))?;
            let key = KeyPair::from_pem(&key_pem)
                .map_err(|e| invalid(&key_path, format!("not a PKCS#8 private key: {e}")))?;
            check_dev_trust_domain(&cert_path, &cert, trust_domain)?;
            tracing::info!(path = %cert_path.display(), "reusing the dev CA");
            Ok((cert, key, cert_path))
        }
        (false, false) => {
            create_private_dir(state_dir)?;
            // Backdated at most a hundredth of its life: a rotation counts from `not_before`.
            let backdate = time::Duration::try_from(lifetime / 100)
                .unwrap_or(ROOT_BACKDATE)
                .min(ROOT_BACKDATE);
            let (cert, key) = generate_root(trust_domain, lifetime, backdate)?;
            write_dev_root(state_dir, &cert.pem(), &key.serialize_pem())?;
            tracing::info!(path = %cert_path.display(), "created a dev CA");
            Ok((cert.der().clone(), key, cert_path))
        }
        (true, false) => Err(CaError::Incomplete {
            dir: state_dir.to_owned(),
            present: DEV_CERT_FILE,
            missing: DEV_KEY_FILE,
        }),
        (false, true) => Err(CaError::Incomplete {
            dir: state_dir.to_owned(),
            present: DEV_KEY_FILE,
            missing: DEV_CERT_FILE,
        }),
    }
}

/// Writes a dev root's `ca.key` and `ca.crt` into `state_dir` (a rotation writes the root in
/// force there too, so a start without rotation keeps trusting it).
pub(crate) fn write_dev_root(
    state_dir: &Path,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), CaError> {
    // The key first: a crash between the two writes leaves a key without a certificate,
    // which start-up reports instead of silently replacing.
    write_file(&state_dir.join(DEV_KEY_FILE), key_pem.as_bytes(), 0o600)?;
    write_file(&state_dir.join(DEV_CERT_FILE), cert_pem.as_bytes(), 0o644)
}

/// A self-signed P-256 root for `trust_domain`. It has no URI name constraints: rustls-webpki
/// fails closed on them.
fn generate_root(
    trust_domain: &TrustDomain,
    lifetime: Duration,
    backdate: time::Duration,
) -> Result<(rcgen::Certificate, KeyPair), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
    let now = now_seconds();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // The trust domain in O lets a restart notice a state dir made for another trust domain.
    dn.push(DnType::OrganizationName, trust_domain.as_str());
    dn.push(DnType::CommonName, "mesh-control root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - backdate;
    params.not_after = now
        + time::Duration::try_from(lifetime).map_err(|_| CaError::Generate(rcgen::Error::Time))?;
    params.serial_number =
        Some(random_serial().map_err(|_| CaError::Generate(rcgen::Error::RingUnspecified))?);
    let cert = params.self_signed(&key).map_err(CaError::Generate)?;
    Ok((cert, key))
}

/// Checks that `cert` is a CA certificate, current, and holds `key`'s public key; returns its
/// expiry.
fn check_issuer(
    path: &Path,
    cert: &CertificateDer<'_>,
    key: &KeyPair,
) -> Result<OffsetDateTime, CaError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| invalid(path, format!("not an X.509 certificate: {e}")))?;
    if !x509.is_ca() {
        return Err(invalid(
            path,
            "not a CA certificate (basicConstraints cA is not set)",
        ));
    }
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(invalid(path, "the key does not match the certificate"));
    }
    let validity = x509.validity();
    let now = OffsetDateTime::now_utc();
    let not_after = validity.not_after.to_datetime();
    if not_after <= now {
        return Err(invalid(path, format!("expired at {not_after}")));
    }
    if validity.not_before.to_datetime() > now + time::Duration::minutes(5) {
        return Err(invalid(path, "not valid yet"));
    }
    Ok(not_after)
}

/// A dev root records its trust domain in O; refuse one made for another trust domain rather
/// than sign certificates no peer will accept.
fn check_dev_trust_domain(
    path: &Path,
    cert: &CertificateDer<'_>,
    trust_domain: &TrustDomain,
) -> Result<(), CaError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| invalid(path, format!("not an X.509 certificate: {e}")))?;
    let Some(found) = x509
        .subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
    else {
        return Ok(());
    };
    if found != trust_domain.as_str() {
        return Err(invalid(
            path,
            format!(
                "this dev CA was made for trust domain {found:?}, not {:?}; use another state \
                 directory or delete its ca.crt and ca.key",
                trust_domain.as_str()
            ),
        ));
    }
    Ok(())
}

fn invalid(path: &Path, reason: impl Into<String>) -> CaError {
    CaError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_to_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM file, DER.
fn parse_pem_certs(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("bad PEM: {e}")))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    atomic_file::write(path, contents, mode).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Creates `dir` (and its missing parents) with mode 0700.
fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    atomic_file::create_private_dir(dir).map_err(|source| CaError::Io {
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
