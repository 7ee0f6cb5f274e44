//! Test helpers shared by every crate's tests (feature `testing`): a test CA that issues good
//! SVIDs and deliberately broken certificates.

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::spiffe::{SpiffeId, TrustDomain};
use crate::tls::TrustBundle;

/// A certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct TestCert {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key, PKCS#8.
    pub key: PrivateKeyDer<'static>,
}

/// A self-signed root for one trust domain.
pub struct TestCa {
    trust_domain: TrustDomain,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

impl TestCa {
    /// A fresh root for `trust_domain`.
    pub fn new(trust_domain: &str) -> Self {
        let _ = trust_domain;
        todo!()
    }

    /// The root as a bundle.
    pub fn bundle(&self) -> TrustBundle {
        todo!()
    }

    /// A valid SVID (serverAuth + clientAuth, 1 h) for `id`.
    pub fn issue(&self, id: &SpiffeId) -> TestCert {
        let _ = id;
        todo!()
    }
}
