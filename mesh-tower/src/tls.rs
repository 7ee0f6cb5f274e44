//! rustls configurations for the mesh: servers that require (or accept) client SVIDs, and
//! clients that accept only the identity discovery expects.
//!
//! Workloads speak TLS 1.3 only, as servers and as clients: a peer that offers only TLS 1.2
//! is refused in the handshake (`protocol_version` alert). ALPN offers what the server speaks
//! ([`ServerProtocols`]): a client that offers none of it is refused with a
//! `no_application_protocol` alert (RFC 7301) rather than agreed and then spoken to in
//! another protocol.

use std::sync::Arc;

use mesh_core::SpiffeId;
use mesh_core::tls::{SpiffeClientVerifier, SpiffeServerVerifier, TrustStore, crypto_provider};
use rustls::{ClientConfig, ServerConfig};

use crate::identity::Identity;

const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The application protocols a server speaks, and so offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ServerProtocols {
    /// HTTP/2 and HTTP/1.1 (`h2`, `http/1.1`): [`crate::server::serve`], which detects either.
    #[default]
    Http2AndHttp1,
    /// HTTP/2 only (`h2`): tonic's server, which speaks nothing else.
    Http2Only,
}

impl ServerProtocols {
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Self::Http2AndHttp1 => vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()],
            Self::Http2Only => vec![ALPN_H2.to_vec()],
        }
    }
}

/// A server configuration presenting `identity`'s SVID. With `mandatory`, a client certificate
/// is required (strict mTLS); without, a client may present none but one it presents must
/// verify. Offers HTTP/2 and HTTP/1.1.
pub fn server_config(identity: &Identity, mandatory: bool) -> Arc<ServerConfig> {
    server_config_for(identity, mandatory, ServerProtocols::Http2AndHttp1)
}

/// [`server_config`] offering `protocols` in ALPN.
pub fn server_config_for(
    identity: &Identity,
    mandatory: bool,
    protocols: ServerProtocols,
) -> Arc<ServerConfig> {
    let verifier = SpiffeClientVerifier::new(identity.trust().clone(), mandatory);
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        // The ring provider supports TLS 1.3; this cannot fail with the provider above.
        .unwrap_or_else(|e| unreachable!("ring supports TLS 1.3: {e}"))
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(identity.clone()));
    config.alpn_protocols = protocols.alpn();
    Arc::new(config)
}

/// A client configuration that accepts only a server presenting `expected`, and presents
/// `identity` when there is one (there is none while asking for the first certificate).
pub fn client_config(
    trust: &TrustStore,
    expected: SpiffeId,
    identity: Option<&Identity>,
) -> Arc<ClientConfig> {
    let verifier = SpiffeServerVerifier::new(trust.clone(), expected);
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| unreachable!("ring supports TLS 1.3: {e}"))
        .dangerous()
        // Not dangerous in fact: the SPIFFE verifier checks the chain, the URI SAN and the
        // expected identity; rustls' built-in verifier would check a DNS name instead.
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(Arc::new(identity.clone())),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Arc::new(config)
}
