//! The plain tonic mTLS baseline's TLS: a CA, a server certificate for 127.0.0.1 and a client
//! certificate, with rustls's standard WebPKI verifiers; the material can be written to a
//! directory for a server process of its own (`bench __server plain`) and as PEM for haproxy.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// One certificate and its key, DER and PEM.
#[derive(Clone)]
pub(crate) struct Pair {
    pub(crate) cert_der: Vec<u8>,
    pub(crate) key_der: Vec<u8>,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// The certificates of the baseline.
#[derive(Clone)]
pub(crate) struct Material {
    pub(crate) ca: Pair,
    pub(crate) server: Pair,
    pub(crate) client: Pair,
}

/// The rustls configs built from [`Material`].
pub(crate) struct PlainTls {
    pub(crate) server: Arc<rustls::ServerConfig>,
    pub(crate) client: Arc<rustls::ClientConfig>,
    pub(crate) material: Material,
}

const FILES: [&str; 6] = [
    "ca.der",
    "ca.key.der",
    "server.der",
    "server.key.der",
    "client.der",
    "client.key.der",
];

impl Material {
    /// A fresh CA and two leaves signed by it (P-256).
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = common_name("bench CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = Pair {
            cert_der: ca_cert.der().to_vec(),
            key_der: ca_key.serialize_der(),
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str, sans: Vec<SanType>| -> anyhow::Result<Pair> {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            // Names distinct from the CA's: OpenSSL (haproxy) takes a leaf whose subject is
            // its issuer's for a self-signed certificate and refuses it.
            params.distinguished_name = common_name(name);
            params.subject_alt_names = sans;
            let cert = params.signed_by(&key, &issuer)?;
            Ok(Pair {
                cert_der: cert.der().to_vec(),
                key_der: key.serialize_der(),
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        };
        Ok(Self {
            server: leaf("127.0.0.1", vec![SanType::IpAddress([127, 0, 0, 1].into())])?,
            client: leaf(
                "bench-client",
                vec![SanType::DnsName("bench-client".try_into()?)],
            )?,
            ca,
        })
    }

    /// Writes the DER files to `dir` (for [`read`](Self::read) in another process).
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let parts = [
            &self.ca.cert_der,
            &self.ca.key_der,
            &self.server.cert_der,
            &self.server.key_der,
            &self.client.cert_der,
            &self.client.key_der,
        ];
        for (name, der) in FILES.iter().zip(parts) {
            std::fs::write(dir.join(name), der)?;
        }
        Ok(())
    }

    /// Reads what [`write`](Self::write) wrote (DER only: the PEM fields stay empty).
    pub(crate) fn read(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| std::fs::read(dir.join(name));
        let pair = |cert: &str, key: &str| -> anyhow::Result<Pair> {
            Ok(Pair {
                cert_der: read(cert)?,
                key_der: read(key)?,
                cert_pem: String::new(),
                key_pem: String::new(),
            })
        };
        Ok(Self {
            ca: pair(FILES[0], FILES[1])?,
            server: pair(FILES[2], FILES[3])?,
            client: pair(FILES[4], FILES[5])?,
        })
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

impl PlainTls {
    /// Fresh certificates and the configs over them.
    pub(crate) fn generate() -> anyhow::Result<Self> {
        Self::from_material(Material::generate()?)
    }

    /// Server and client configs: TLS 1.3, client certificates required, ALPN h2.
    pub(crate) fn from_material(material: Material) -> anyhow::Result<Self> {
        let provider = mesh_core::tls::crypto_provider();
        let chain = |p: &Pair| vec![CertificateDer::from(p.cert_der.clone())];
        let key = |p: &Pair| PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key_der.clone()));
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(material.ca.cert_der.clone()))?;
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain(&material.server), key(&material.server))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain(&material.client), key(&material.client))?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            material,
        })
    }
}

/// A tonic channel over rustls mTLS to `addr`.
pub(crate) use bench::tls_channel;

/// An mTLS listener as tonic's incoming stream.
pub(crate) use bench::tls_server::incoming;
