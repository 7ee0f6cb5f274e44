//! Test helpers shared by every crate's tests (feature `testing`; mesh-core's own unit tests
//! compile them too). Everything a test needs to stand up identities and talk to the mesh
//! without the mesh's own client:
//!
//! - [`TRUST_DOMAIN`], [`trust_domain`], [`trust_domain_named`] and [`spiffe_id`]: the trust
//!   domain and identities tests use.
//! - [`TestCa`] and [`TestCert`]: a test CA that issues good SVIDs and, with the edits in
//!   [`edit`], deliberately broken certificates.
//! - [`csr`]: certificate signing requests, as a well-behaved client makes them and the odd
//!   ones a CA must refuse or ignore.
//! - [`client_tls`]: a rustls client config that accepts only one SPIFFE ID as the server.
//! - [`eventually`] and [`assert_eventually`] (feature `testing` only, they need tokio): poll a
//!   condition until it holds or a timeout passes.
//! - [`jwt`]: JWT signing keys (RS256, ES256, EdDSA), their JWK Sets, and signed tokens.
//! - [`hostile`]: the process's memory, and the one-line report every abuse test prints (what
//!   the legitimate client beside it saw, and the memory before, at the peak and after).
//!
//! ```
//! use mesh_core::testing::{TestCa, edit};
//! use mesh_core::tls::{verify_svid, Usage};
//!
//! let ca = TestCa::new("cluster.local");
//! let id = ca.id("default", "greeter");
//! let good = ca.issue(&id);
//! let now = rustls_pki_types::UnixTime::now();
//! assert_eq!(verify_svid(&ca.bundle(), good.leaf(), &good.chain[1..], now, Usage::Server).unwrap(), id);
//!
//! let expired = ca.issue_with(&id, edit::expired);
//! assert!(verify_svid(&ca.bundle(), expired.leaf(), &[], now, Usage::Server).is_err());
//! ```
//!
//! Everything here panics on failure instead of returning errors: it is for tests only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::spiffe::{SpiffeId, TrustDomain};
use crate::tls::{SpiffeServerVerifier, TrustBundle, TrustStore, crypto_provider};

/// The rcgen version these helpers use, for tests that edit [`CertificateParams`] by hand.
pub use rcgen;

pub mod hostile;
pub mod jwt;

/// The trust domain tests use unless they need another one.
pub const TRUST_DOMAIN: &str = "mesh.local";

/// [`TRUST_DOMAIN`] as a [`TrustDomain`].
pub fn trust_domain() -> TrustDomain {
    trust_domain_named(TRUST_DOMAIN)
}

/// The trust domain `name` (e.g. `cluster.local`, for tests written against Kubernetes'
/// default).
///
/// # Panics
///
/// When `name` is not a valid trust domain.
pub fn trust_domain_named(name: &str) -> TrustDomain {
    TrustDomain::new(name).expect("testing: valid trust domain")
}

/// `spiffe://mesh.local/ns/<namespace>/sa/<service_account>`.
///
/// # Panics
///
/// When either part is not a DNS label.
pub fn spiffe_id(namespace: &str, service_account: &str) -> SpiffeId {
    SpiffeId::from_service_account(&trust_domain(), namespace, service_account)
        .expect("testing: valid namespace and service account")
}

/// A TLS client config (TLS 1.3, ALPN `h2`) that accepts only `server`, chained to `bundle`,
/// and presents `cert` when given: a caller that bypasses the mesh's own client.
pub fn client_tls(
    bundle: TrustBundle,
    server: &SpiffeId,
    cert: Option<TestCert>,
) -> std::sync::Arc<rustls::ClientConfig> {
    let verifier = SpiffeServerVerifier::new(TrustStore::new(bundle), server.clone());
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier));
    let mut config = match cert {
        Some(cert) => builder
            .with_client_auth_cert(cert.chain, cert.key)
            .expect("a usable client certificate and key"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    std::sync::Arc::new(config)
}

/// How often [`eventually`] checks.
#[cfg(feature = "testing")]
pub const POLL: Duration = Duration::from_millis(20);

/// Checks `check` every [`POLL`] until it holds (`true`) or `timeout` passes (`false`, after
/// one last check). Uses tokio's clock, so it needs a tokio runtime.
#[cfg(feature = "testing")]
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    check()
}

/// [`eventually`], failing the test with "timed out waiting for `what`" when `check` does not
/// come to hold within `timeout`.
///
/// # Panics
///
/// When `check` still does not hold after `timeout`.
#[cfg(feature = "testing")]
pub async fn assert_eventually(timeout: Duration, what: &str, check: impl FnMut() -> bool) {
    assert!(
        eventually(timeout, check).await,
        "timed out waiting for {what}"
    );
}

/// A certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct TestCert {
    /// Leaf first, then any intermediates (never the root).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key, PKCS#8.
    pub key: PrivateKeyDer<'static>,
}

// === impl TestCert ===

impl TestCert {
    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The intermediates (the chain after the leaf).
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.chain[1..]
    }

    /// The chain as PEM, leaf first, as a certificate file holds it.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|cert| crate::pem::encode("CERTIFICATE", cert))
            .collect()
    }

    /// The key as a PKCS#8 `PRIVATE KEY` PEM block.
    pub fn key_pem(&self) -> String {
        crate::pem::encode("PRIVATE KEY", self.key.secret_der())
    }
}

impl Clone for TestCert {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// A CA for one trust domain: a self-signed root, or an intermediate under one
/// ([`TestCa::intermediate`]).
pub struct TestCa {
    trust_domain: TrustDomain,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The self-signed root this CA chains to (its own certificate when it is the root).
    root: CertificateDer<'static>,
    /// Intermediates from this CA up to, not including, the root: appended to every leaf chain.
    chain: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("trust_domain", &self.trust_domain)
            .field("intermediates", &self.chain.len())
            .finish()
    }
}

// === impl TestCa ===

impl TestCa {
    /// A fresh self-signed P-256 root for `trust_domain`, valid from a day ago for ten years.
    ///
    /// # Panics
    ///
    /// When `trust_domain` is not a valid trust domain.
    pub fn new(trust_domain: &str) -> Self {
        let trust_domain = TrustDomain::new(trust_domain).expect("TestCa::new: bad trust domain");
        // Distinct names, so that an unrelated root is an unknown issuer to webpki rather than
        // a same-named CA whose signature fails.
        static ROOTS: AtomicUsize = AtomicUsize::new(0);
        let n = ROOTS.fetch_add(1, Ordering::Relaxed);
        let params = ca_params(&format!("mesh test root {n} {trust_domain}"), false);
        let key = new_key();
        let issuer = CertifiedIssuer::self_signed(params, key).expect("TestCa: self-sign root");
        let root = issuer.der().clone();
        Self {
            trust_domain,
            issuer,
            root,
            chain: Vec::new(),
        }
    }

    /// An intermediate CA signed by this one, in the same trust domain; its leaves carry the
    /// intermediates in their chains and verify against the same [`TestCa::bundle`].
    pub fn intermediate(&self) -> Self {
        let depth = self.chain.len() + 1;
        let params = ca_params(
            &format!("mesh test intermediate {depth} {}", self.trust_domain),
            true,
        );
        let issuer = CertifiedIssuer::signed_by(params, new_key(), &self.issuer)
            .expect("TestCa: sign intermediate");
        let mut chain = vec![issuer.der().clone()];
        chain.extend(self.chain.iter().cloned());
        Self {
            trust_domain: self.trust_domain.clone(),
            issuer,
            root: self.root.clone(),
            chain,
        }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The root as a bundle.
    pub fn bundle(&self) -> TrustBundle {
        TrustBundle::from_der(self.trust_domain.clone(), vec![self.root.clone()])
            .expect("TestCa: the root is a trust anchor")
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root.clone()
    }

    /// This CA's own certificate, PEM: with [`TestCa::key_pem`], what the control service
    /// reads as a file-based CA.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// This CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// This CA's own certificate (the root, or the intermediate), DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// `spiffe://<td>/ns/<namespace>/sa/<service_account>` in this CA's trust domain.
    ///
    /// # Panics
    ///
    /// When either part is not a DNS label.
    pub fn id(&self, namespace: &str, service_account: &str) -> SpiffeId {
        SpiffeId::from_service_account(&self.trust_domain, namespace, service_account)
            .expect("TestCa::id: bad namespace or service account")
    }

    /// A valid SVID for `id`: P-256 key, one URI SAN, serverAuth + clientAuth,
    /// digitalSignature, not a CA, valid from a minute ago for an hour.
    pub fn issue(&self, id: &SpiffeId) -> TestCert {
        self.issue_with(id, |_| {})
    }

    /// An SVID for `id` whose parameters `edit` changes first: to make deliberately broken
    /// certificates (see [`edit`] for the usual ones). `id` is written as the URI SAN before
    /// `edit` runs.
    pub fn issue_with(&self, id: &SpiffeId, edit: impl FnOnce(&mut CertificateParams)) -> TestCert {
        let mut params = leaf_params(id);
        edit(&mut params);
        let key = new_key();
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("TestCa: sign leaf");
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        TestCert {
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("TestCa: generate P-256 key")
}

/// A CA's parameters, without path length constraints so that intermediates can nest.
fn ca_params(common_name: &str, intermediate: bool) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = intermediate;
    edit::validity(
        &mut params,
        SystemTime::now() - Duration::from_secs(24 * 3600),
        SystemTime::now() + Duration::from_secs(10 * 365 * 24 * 3600),
    );
    params
}

fn leaf_params(id: &SpiffeId) -> CertificateParams {
    let mut params = CertificateParams::default();
    // SPIFFE leaves carry their identity in the URI SAN; the subject is informational only.
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, id.path().trim_start_matches('/'));
    params.subject_alt_names = vec![uri_san(id.as_str())];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    edit::validity(
        &mut params,
        SystemTime::now() - Duration::from_secs(60),
        SystemTime::now() + Duration::from_secs(3600),
    );
    params
}

fn uri_san(uri: &str) -> SanType {
    SanType::URI(uri.try_into().expect("TestCa: URI SAN must be IA5 (ASCII)"))
}

/// Edits for [`TestCa::issue_with`], each making one thing about a leaf unusual or wrong.
/// They compose: `ca.issue_with(&id, |p| { edit::make_ca(p); edit::expired(p) })`.
pub mod edit {
    use super::*;

    /// Valid from `not_before` to `not_after`.
    pub fn validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
        params.not_before = not_before.into();
        params.not_after = not_after.into();
    }

    /// Expired an hour ago (valid from two hours ago).
    pub fn expired(params: &mut CertificateParams) {
        let now = SystemTime::now();
        validity(
            params,
            now - Duration::from_secs(2 * 3600),
            now - Duration::from_secs(3600),
        );
    }

    /// Valid only from an hour from now.
    pub fn not_yet_valid(params: &mut CertificateParams) {
        let now = SystemTime::now();
        validity(
            params,
            now + Duration::from_secs(3600),
            now + Duration::from_secs(2 * 3600),
        );
    }

    /// Adds a second URI SAN.
    pub fn extra_uri(params: &mut CertificateParams, uri: &str) {
        params.subject_alt_names.push(uri_san(uri));
    }

    /// Adds a DNS SAN (harmless to the mesh, which ignores DNS names).
    pub fn extra_dns(params: &mut CertificateParams, name: &str) {
        params.subject_alt_names.push(SanType::DnsName(
            name.try_into()
                .expect("edit::extra_dns: name must be IA5 (ASCII)"),
        ));
    }

    /// Replaces the URI SAN with `uri`, which need not be a SPIFFE ID.
    pub fn uri(params: &mut CertificateParams, uri: &str) {
        params.subject_alt_names = vec![uri_san(uri)];
    }

    /// Removes every SAN.
    pub fn no_sans(params: &mut CertificateParams) {
        params.subject_alt_names.clear();
    }

    /// Makes the leaf a CA (basicConstraints cA=true, keyCertSign).
    pub fn make_ca(params: &mut CertificateParams) {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages.push(KeyUsagePurpose::KeyCertSign);
    }

    /// Leaves basicConstraints out altogether (a leaf without it is still not a CA).
    pub fn no_basic_constraints(params: &mut CertificateParams) {
        params.is_ca = IsCa::NoCa;
    }

    /// A keyUsage with keyEncipherment only, no digitalSignature.
    pub fn no_digital_signature(params: &mut CertificateParams) {
        params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    }

    /// Extended key usage serverAuth only.
    pub fn server_only(params: &mut CertificateParams) {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    }

    /// Extended key usage clientAuth only.
    pub fn client_only(params: &mut CertificateParams) {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
}

/// Certificate signing requests (PKCS#10, DER), as a workload sends them to `Certify`.
pub mod csr {
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };

    /// A fresh P-256 key, the kind the mesh's workloads use.
    pub fn new_key() -> KeyPair {
        super::new_key()
    }

    /// A CSR signed by `key` whose parameters `edit` chose (`|_| {}` for a plain one: no
    /// subject, no SANs, as the mesh's client sends).
    pub fn for_key(key: &KeyPair, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let mut params = CertificateParams::default();
        edit(&mut params);
        params
            .serialize_request(key)
            .expect("testing: serialize CSR")
            .der()
            .to_vec()
    }

    /// A fresh P-256 key and a CSR for it, as a well-behaved client makes them.
    pub fn key_and_csr() -> (KeyPair, Vec<u8>) {
        csr_with(|_| {})
    }

    /// A fresh P-256 key and a CSR for it whose parameters `edit` chose.
    pub fn csr_with(edit: impl FnOnce(&mut CertificateParams)) -> (KeyPair, Vec<u8>) {
        let key = new_key();
        let csr = for_key(&key, edit);
        (key, csr)
    }

    /// A well-formed CSR whose last byte (inside the signature) is flipped: it parses, and its
    /// signature does not verify.
    pub fn bad_signature() -> Vec<u8> {
        let (_, mut csr) = key_and_csr();
        let last = csr.len() - 1;
        csr[last] ^= 0x5a;
        csr
    }

    /// An edit for [`csr_with`] adding the extensions `openssl req` puts in a request with its
    /// common configurations: subjectKeyIdentifier (the SHA-1 of the key, as OpenSSL computes
    /// it) and basicConstraints `CA:FALSE`, next to a subject (`CN=greeter`). A CA that only
    /// uses the key must accept it.
    pub fn like_openssl(params: &mut CertificateParams) {
        params
            .distinguished_name
            .push(DnType::CommonName, "greeter");
        params.is_ca = IsCa::ExplicitNoCa;
        // rcgen writes custom extensions into the request; the value is an OCTET STRING of
        // 20 bytes (the digest's value does not matter to a CA that ignores it).
        let mut ski = vec![0x04, 20];
        ski.extend_from_slice(&[0x5a; 20]);
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(&[2, 5, 29, 14], ski));
    }

    /// An edit for [`csr_with`] requesting an extension nobody knows (OID 1.3.6.1.4.1.99999.1),
    /// marked critical: the CA ignores requested extensions, known or not.
    pub fn unknown_critical_extension(params: &mut CertificateParams) {
        let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![5, 0]);
        ext.set_criticality(true);
        params.custom_extensions.push(ext);
    }

    /// A P-256 CSR made by `openssl req` with the extensions its common configurations request
    /// (`-subj /CN=greeter -sha256 -addext subjectKeyIdentifier=hash -addext
    /// basicConstraints=CA:FALSE -addext keyUsage=nonRepudiation,digitalSignature,keyEncipherment
    /// -addext subjectAltName=DNS:greeter.example`), kept as a file so tests never need the
    /// `openssl` binary. Its key was thrown away: a CA needs only the request.
    pub const OPENSSL_P256_WITH_EXTENSIONS: &[u8] =
        include_bytes!("testing/openssl-p256-extensions.csr.der");

    /// A P-256 CSR `openssl req -sha384` signed with ecdsa-with-SHA384 (with a
    /// subjectKeyIdentifier), which rcgen cannot make: it signs P-256 with SHA-256 only.
    pub const OPENSSL_P256_SHA384: &[u8] = include_bytes!("testing/openssl-p256-sha384.csr.der");

    /// An RSA-2048 CSR by `openssl req -newkey rsa:2048 -sha256` (ring cannot generate RSA
    /// keys): a key type the mesh's CA refuses.
    pub const OPENSSL_RSA_2048: &[u8] = include_bytes!("testing/openssl-rsa2048.csr.der");

    /// An edit for [`csr_with`] asking for everything a CA must not grant: CA rights,
    /// keyCertSign, any extended key usage, another workload's SPIFFE ID
    /// (`spiffe://mesh.local/ns/kube-system/sa/admin`), a DNS name (`control.example`) and a
    /// subject (`CN=Mesh Root`).
    pub fn greedy(params: &mut CertificateParams) {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Any];
        params.subject_alt_names = vec![
            SanType::URI(
                "spiffe://mesh.local/ns/kube-system/sa/admin"
                    .try_into()
                    .expect("ia5"),
            ),
            SanType::DnsName("control.example".try_into().expect("ia5")),
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, "Mesh Root");
    }
}
