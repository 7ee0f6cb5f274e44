//! Workload authentication for `Certify`: a token in, the SPIFFE ID it proves out.
//!
//! [`BootstrapTokens`] checks the tokens of the control file. A Kubernetes authenticator
//! (TokenReview of a projected ServiceAccount token) plugs in behind the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_core::SpiffeId;

use crate::source::file::BootstrapToken;

/// The future [`Authenticator::authenticate`] returns.
pub type AuthnFuture<'a> = Pin<Box<dyn Future<Output = Result<SpiffeId, AuthnError>> + Send + 'a>>;

/// Turns a caller's proof of identity into its SPIFFE ID.
pub trait Authenticator: Send + Sync {
    /// The identity `token` proves. Errors never quote the token.
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthnFuture<'a>;
}

/// Why a token proved nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    /// No token was presented.
    #[error("no token presented")]
    Missing,
    /// The token is not one the authenticator knows.
    #[error("bootstrap token not recognised")]
    Unknown,
    /// The token was reviewed and refused (Kubernetes TokenReview); which check failed is
    /// logged by the control service, not told to the caller.
    #[error("token refused")]
    Refused,
    /// The authenticator could not decide (its backend is down); the caller may retry.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

/// The bootstrap tokens of the current control file; replaced whenever the file changes.
#[derive(Debug, Default)]
pub struct BootstrapTokens {
    tokens: ArcSwap<Vec<BootstrapToken>>,
}

// === impl BootstrapTokens ===

impl BootstrapTokens {
    /// Authenticates against `tokens`.
    pub fn new(tokens: Vec<BootstrapToken>) -> Self {
        Self {
            tokens: ArcSwap::from_pointee(tokens),
        }
    }

    /// Replaces the tokens; calls in progress finish with the old set.
    pub fn replace(&self, tokens: Vec<BootstrapToken>) {
        self.tokens.store(Arc::new(tokens));
    }

    /// The identity `token` maps to.
    pub fn lookup(&self, token: &str) -> Result<SpiffeId, AuthnError> {
        if token.is_empty() {
            return Err(AuthnError::Missing);
        }
        let tokens = self.tokens.load();
        // Compare against every entry without stopping early, each comparison in time that
        // depends only on the lengths, so response time does not reveal how close a guess was.
        let mut found = None;
        for entry in tokens.iter() {
            if constant_time_eq(entry.token.as_bytes(), token.as_bytes()) && found.is_none() {
                found = Some(&entry.identity);
            }
        }
        found.cloned().ok_or(AuthnError::Unknown)
    }
}

impl Authenticator for BootstrapTokens {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthnFuture<'a> {
        Box::pin(std::future::ready(self.lookup(token)))
    }
}

impl<A: Authenticator + ?Sized> Authenticator for Arc<A> {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthnFuture<'a> {
        (**self).authenticate(token)
    }
}

/// Whether `a == b`, looking at every byte of the longer one whatever the contents.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    // black_box keeps the optimiser from turning the loop back into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use mesh_core::testing::trust_domain as td;

    use super::*;

    fn token(token: &str, sa: &str) -> BootstrapToken {
        let td = td();
        BootstrapToken {
            token: token.to_owned(),
            identity: SpiffeId::from_service_account(&td, "default", sa).expect("valid"),
        }
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abc\0", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[tokio::test]
    async fn maps_tokens_to_identities() {
        let tokens = BootstrapTokens::new(vec![token("t-one", "one"), token("t-two", "two")]);
        let id = tokens.authenticate("t-two").await.expect("known");
        assert_eq!(id.as_str(), "spiffe://mesh.local/ns/default/sa/two");
        assert_eq!(
            tokens.authenticate("t-three").await,
            Err(AuthnError::Unknown)
        );
        assert_eq!(tokens.authenticate("").await, Err(AuthnError::Missing));
        assert_eq!(tokens.authenticate("t-on").await, Err(AuthnError::Unknown));
    }

    #[tokio::test]
    async fn errors_never_echo_the_token() {
        let tokens = BootstrapTokens::new(vec![token("t-one", "one")]);
        let err = tokens.authenticate("guess-123").await.expect_err("unknown");
        assert!(!err.to_string().contains("guess-123"));
        assert!(!format!("{err:?}").contains("guess-123"));
    }

    #[tokio::test]
    async fn replace_takes_effect() {
        let tokens = BootstrapTokens::new(vec![token("old", "one")]);
        tokens.replace(vec![token("new", "one")]);
        assert_eq!(tokens.authenticate("old").await, Err(AuthnError::Unknown));
        assert!(tokens.authenticate("new").await.is_ok());
    }
}
