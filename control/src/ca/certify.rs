//! The `Certify` RPC: authenticate the caller's token, sign its CSR for the identity the token
//! proves, reply with the chain and the trust bundle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use mesh_core::proto::{CertifyRequest, CertifyResponse};
use tonic::Status;

use super::authn::{Authenticator, AuthnError};
use super::issuer::CaHandle;
use crate::admin::metrics;

/// Signs workload certificates for authenticated callers.
pub(crate) struct Certifier {
    authn: Arc<dyn Authenticator>,
    ca: CaHandle,
    lifetime: Duration,
}

/// The caller's address as logs print it.
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

// === impl Certifier ===

impl Certifier {
    pub(crate) fn new(authn: Arc<dyn Authenticator>, ca: CaHandle, lifetime: Duration) -> Self {
        Self {
            authn,
            ca,
            lifetime,
        }
    }

    /// Handles one request from `peer`.
    pub(crate) async fn certify(
        &self,
        request: CertifyRequest,
        peer: Option<SocketAddr>,
    ) -> Result<CertifyResponse, Status> {
        // Formatted only by the log lines that print it, not for every issuance.
        let peer = Peer(peer);
        let identity = match self.authn.authenticate(&request.token).await {
            Ok(identity) => identity,
            Err(error) => {
                tracing::warn!(%peer, %error, "certify refused");
                metrics::certificate_refused(refusal_reason(&error));
                return Err(match error {
                    AuthnError::Unavailable(_) => Status::unavailable(error.to_string()),
                    AuthnError::Missing | AuthnError::Unknown | AuthnError::Refused => {
                        Status::unauthenticated(error.to_string())
                    }
                });
            }
        };
        // The CA in force now: a reloaded issuer signs from the next request on.
        let ca = self.ca.load();
        let issued = match ca.sign(&request.csr_der, &identity, self.lifetime) {
            Ok(issued) => issued,
            Err(error) if error.is_caller_error() => {
                tracing::warn!(%peer, %identity, %error, "certify refused: bad CSR");
                metrics::certificate_refused("bad_csr");
                return Err(Status::invalid_argument(format!("csr_der: {error}")));
            }
            Err(error) => {
                tracing::error!(%peer, %identity, %error, "certify failed");
                metrics::certificate_refused("internal");
                return Err(Status::internal(error.to_string()));
            }
        };
        let not_after_unix = issued
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        // Debug, not info: at thousands of issuances a second (a fleet restarting) a line each
        // is most of the work; `mesh_control_certificates_issued_total` counts them.
        tracing::debug!(%peer, %identity, not_after_unix, "issued a certificate");
        metrics::certificate_issued();
        Ok(CertifyResponse {
            chain_der: issued.chain_der.into_iter().map(|c| c.to_vec()).collect(),
            trust_bundle_der: ca.trust_roots().iter().map(|r| r.to_vec()).collect(),
            not_after_unix,
            spiffe_id: identity.to_string(),
        })
    }
}

/// The `reason` label of a request whose token was refused.
fn refusal_reason(error: &AuthnError) -> &'static str {
    match error {
        AuthnError::Missing => "missing_token",
        AuthnError::Unknown => "unknown_token",
        AuthnError::Refused => "refused_token",
        AuthnError::Unavailable(_) => "unavailable",
    }
}
