//! End-user authentication on the server side: the request's JWT, when the service accepts
//! issuers, verified against the keys its snapshot carries, between peer identity and
//! authorization.
//!
//! The issuers' keys arrive with the inbound policy and are compiled once per snapshot into a
//! [`Verifier`] (see [`crate::discovery`]); a service that accepts no issuer pays one branch
//! per request. The verification itself is the pure [`Verifier::verify`] of mesh-core.
//!
//! - No token: the request goes on without a principal, and authorization decides (a rule
//!   that requires a principal does not match it), as Istio does.
//! - A valid token: its [`RequestPrincipal`] goes into the request's extensions, for the
//!   handler and for authorization rules on principals.
//! - An invalid token: refused, 401 or UNAUTHENTICATED, with a message naming the reason
//!   (`invalid token: the token has expired`, never the token) and
//!   `www-authenticate: Bearer error="invalid_token", error_description="..."` (RFC 6750).

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use mesh_core::jwt::{JwtError, Verifier};

/// The verified end user of a request, a typed request extension (like [`crate::PeerIdentity`]):
/// the token's issuer, subject and claims.
///
/// ```no_run
/// # async fn handler(request: http::Request<()>) {
/// if let Some(user) = request.extensions().get::<mesh_tower::RequestPrincipal>() {
///     println!("{} of {} in {:?}", user.subject, user.issuer, user.claims.get("groups"));
/// }
/// # }
/// ```
pub use mesh_core::jwt::Principal as RequestPrincipal;

/// The principal of a request with `headers`: `Ok(None)` without a token, or why its token is
/// refused.
pub(crate) fn authenticate(
    verifier: &Verifier,
    headers: &HeaderMap,
) -> Result<Option<RequestPrincipal>, JwtError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    verifier.verify(headers, now)
}

/// The mesh's refusal of a request whose token is invalid: UNAUTHENTICATED (gRPC) or 401, the
/// reason in the message, and RFC 6750's challenge.
pub(crate) fn unauthenticated<R: Default>(error: JwtError, grpc: bool) -> Response<R> {
    let mut response = crate::refusal::refusal(
        grpc,
        tonic::Code::Unauthenticated,
        StatusCode::UNAUTHORIZED,
        &format!("invalid token: {error}"),
    );
    // The reason is one of a fixed set of ASCII sentences: always a valid header value.
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{error}\"");
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mesh_core::jwt::{JwtRule, TokenLocation};
    use mesh_core::testing::jwt::{TestKey, claims, jwks, now};

    use super::*;

    #[test]
    fn a_refusal_names_the_reason_and_never_the_token() {
        let key = TestKey::es256("k");
        let verifier = Verifier::new(&[JwtRule {
            issuer: "https://issuer.test".into(),
            audiences: vec![],
            from_headers: vec![TokenLocation::bearer()],
            jwks_uri: None,
            jwks: Some(Arc::from(jwks(&[&key]))),
        }])
        .unwrap();
        let token = key.sign(&claims("https://issuer.test", "a", "x", now() - 3600));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let error = authenticate(&verifier, &headers).unwrap_err();
        assert_eq!(error, JwtError::Expired);

        for grpc in [false, true] {
            let response: Response<()> = unauthenticated(error, grpc);
            let all = format!("{:?}", response.headers());
            assert!(all.contains("expired"), "{all}");
            assert!(!all.contains(&token[..20]), "the token leaked: {all}");
            assert!(
                response.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer error=\"invalid_token\"")
            );
            if grpc {
                assert_eq!(response.headers()["grpc-status"], "16");
            } else {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            }
        }
    }
}
