//! Workload authentication in Kubernetes: a pod's projected ServiceAccount token, checked
//! with the TokenReview API, proves `spiffe://<td>/ns/<ns>/sa/<sa>`.
//!
//! A token is accepted only when the review says it is authenticated, that it is valid for
//! the mesh's own audience (so a token minted for another service, or the pod's default
//! API token, cannot be replayed here), and that it belongs to a service account
//! (`system:serviceaccount:<ns>:<sa>`). The SPIFFE ID comes from that username alone, never
//! from anything the caller asserts.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use mesh_core::{SpiffeId, TrustDomain};

use crate::ca::authn::{Authenticator, AuthnError, AuthnFuture};

/// The username prefix of service account tokens.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Authenticates projected ServiceAccount tokens through the TokenReview API.
#[derive(Clone)]
pub struct TokenReviewAuthenticator {
    api: Api<TokenReview>,
    audience: String,
    trust_domain: TrustDomain,
}

impl std::fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("audience", &self.audience)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

// === impl TokenReviewAuthenticator ===

impl TokenReviewAuthenticator {
    /// Reviews tokens through `client`, requiring `audience`, and certifies identities in
    /// `trust_domain`.
    pub fn new(client: Client, audience: impl Into<String>, trust_domain: TrustDomain) -> Self {
        Self {
            api: Api::all(client),
            audience: audience.into(),
            trust_domain,
        }
    }

    async fn review(&self, token: &str) -> Result<SpiffeId, AuthnError> {
        if token.is_empty() {
            return Err(AuthnError::Missing);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviewed = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                // The API server refusing *us* (401/403: our RBAC) or being down is not the
                // caller's fault: it may retry, and the operator needs the log line.
                tracing::error!(error = %e, "TokenReview failed");
                AuthnError::Unavailable(format!("TokenReview failed: {e}"))
            })?;
        let status = reviewed.status.unwrap_or_default();
        identity(
            status.authenticated.unwrap_or(false),
            status.audiences.as_deref().unwrap_or_default(),
            status.user.as_ref().and_then(|u| u.username.as_deref()),
            status.error.as_deref(),
            &self.audience,
            &self.trust_domain,
        )
    }
}

impl Authenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthnFuture<'a> {
        Box::pin(self.review(token))
    }
}

/// The decision on a review's status, pure so that every refusal can be tested. Refusals are
/// logged with their reason here: [`AuthnError::Refused`] carries none to the caller, who
/// should not learn which check failed.
fn identity(
    authenticated: bool,
    audiences: &[String],
    username: Option<&str>,
    error: Option<&str>,
    audience: &str,
    trust_domain: &TrustDomain,
) -> Result<SpiffeId, AuthnError> {
    let refuse = |reason: &str| {
        tracing::warn!(reason, "token refused");
        AuthnError::Refused
    };
    if !authenticated {
        return Err(refuse(error.unwrap_or("not authenticated")));
    }
    if !audiences.iter().any(|a| a == audience) {
        return Err(refuse("the token is not for the mesh's audience"));
    }
    let Some(account) = username.and_then(|u| u.strip_prefix(SERVICE_ACCOUNT_PREFIX)) else {
        return Err(refuse("not a service account token"));
    };
    let Some((namespace, service_account)) = account.split_once(':') else {
        return Err(refuse("malformed service account username"));
    };
    SpiffeId::from_service_account(trust_domain, namespace, service_account)
        .map_err(|_| refuse("the service account cannot form a SPIFFE ID"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::testing::trust_domain as td;

    fn decide(
        authenticated: bool,
        audiences: &[&str],
        user: Option<&str>,
    ) -> Result<String, AuthnError> {
        let audiences: Vec<String> = audiences.iter().map(|a| (*a).to_owned()).collect();
        identity(authenticated, &audiences, user, None, "mesh-control", &td())
            .map(|id| id.to_string())
    }

    #[test]
    fn accepts_an_authenticated_service_account_for_our_audience() {
        assert_eq!(
            decide(
                true,
                &["mesh-control"],
                Some("system:serviceaccount:shop:web")
            ),
            Ok("spiffe://mesh.local/ns/shop/sa/web".to_owned())
        );
    }

    #[test]
    fn refuses_everything_else() {
        let cases: &[(bool, &[&str], Option<&str>)] = &[
            (
                false,
                &["mesh-control"],
                Some("system:serviceaccount:shop:web"),
            ),
            (true, &[], Some("system:serviceaccount:shop:web")),
            (
                true,
                &["https://kubernetes.default.svc"],
                Some("system:serviceaccount:shop:web"),
            ),
            (true, &["mesh-control"], Some("alice@example.com")),
            (true, &["mesh-control"], Some("system:node:worker-1")),
            (true, &["mesh-control"], Some("system:serviceaccount:shop")),
            (
                true,
                &["mesh-control"],
                Some("system:serviceaccount:Shop:web"),
            ),
            (true, &["mesh-control"], None),
        ];
        for (authenticated, audiences, user) in cases {
            assert_eq!(
                decide(*authenticated, audiences, *user),
                Err(AuthnError::Refused),
                "{authenticated} {audiences:?} {user:?}"
            );
        }
    }
}
