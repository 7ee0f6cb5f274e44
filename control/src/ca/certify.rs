//! The `Certify` RPC: authenticate the caller's token, sign its CSR for the identity the token
//! proves, reply with the chain and the trust bundle.
//!
//! Issuance is rate-limited per identity ([`CertifyRateLimit`]): whoever holds a token can
//! otherwise make the CA sign as fast as it can, thousands of certificates a second. The limit
//! is per identity, not per token, because every token (and every Kubernetes pod) of one
//! service account proves the same identity; so the burst is sized for a deployment's replicas
//! all starting at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use mesh_core::SpiffeId;
use mesh_core::proto::{CertifyRequest, CertifyResponse};
use mesh_core::rate::{TokenBucket, TokenBucketConfig};
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::authn::{Authenticator, AuthnError};
use super::dns_names::DnsNames;
use super::issuer::CaHandle;
use crate::admin::metrics;

/// How many certificates `Certify` issues per identity: a token bucket per SPIFFE ID.
///
/// The defaults let a deployment of 128 replicas (which share one identity) start at once, and
/// then one more certificate a second, far above renewal (each workload renews at about 70 % of
/// its certificate's lifetime: once in some 17 hours with 24 h certificates) and above any
/// rolling restart, while one leaked token gets 128 certificates and then one a second instead
/// of the CA's whole signing capacity. A refused call gets `RESOURCE_EXHAUSTED` with a
/// `retry-after` (seconds) in its metadata and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertifyRateLimit {
    /// Certificates one identity may get back to back (default 128; at least 1).
    pub burst: u32,
    /// How long one identity waits for each further certificate (default 1 s; at least 1 ms).
    pub refill: Duration,
    /// The most identities whose recent issuance is remembered (default 10,000, about a
    /// megabyte). An identity idle long enough to have a full bucket again is forgotten first;
    /// past this many busy ones, the one nearest to full is.
    pub max_identities: usize,
}

impl Default for CertifyRateLimit {
    fn default() -> Self {
        Self {
            burst: 128,
            refill: Duration::from_secs(1),
            max_identities: 10_000,
        }
    }
}

/// The per-identity token buckets of [`CertifyRateLimit`].
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: CertifyRateLimit,
    buckets: Mutex<HashMap<SpiffeId, TokenBucket>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: CertifyRateLimit) -> Self {
        Self {
            limit: CertifyRateLimit {
                max_identities: limit.max_identities.max(1),
                ..limit
            },
            buckets: Mutex::default(),
        }
    }

    fn bucket_config(&self) -> TokenBucketConfig {
        TokenBucketConfig {
            burst: self.limit.burst,
            refill: self.limit.refill,
        }
    }

    /// Takes one issuance for `identity` at `now`; `Err` with how long until the next one.
    pub(crate) fn check(&self, identity: &SpiffeId, now: Instant) -> Result<(), Duration> {
        let config = self.bucket_config();
        // A panic while the lock was held left buckets that are each whole: still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(identity) {
            return bucket.try_take(config, now);
        }
        if buckets.len() >= self.limit.max_identities {
            // Full buckets are what a new identity would get anyway.
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        if buckets.len() >= self.limit.max_identities {
            // Still full of busy identities: forget the one nearest to full, which loses the
            // least. Rare (only with this many identities certifying within one burst's
            // refill time) and bounded by `max_identities`.
            let nearest = buckets
                .iter()
                .max_by_key(|(_, bucket)| bucket.available(config, now))
                .map(|(id, _)| id.clone());
            if let Some(nearest) = nearest {
                buckets.remove(&nearest);
            }
        }
        let mut bucket = TokenBucket::new(now);
        let taken = bucket.try_take(config, now);
        buckets.insert(identity.clone(), bucket);
        taken
    }

    /// How many identities are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Signs workload certificates for authenticated callers.
pub(crate) struct Certifier {
    authn: Arc<dyn Authenticator>,
    ca: CaHandle,
    lifetime: Duration,
    limiter: RateLimiter,
    /// The DNS names each identity's certificates carry.
    names: DnsNames,
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
    pub(crate) fn new(
        authn: Arc<dyn Authenticator>,
        ca: CaHandle,
        lifetime: Duration,
        rate: CertifyRateLimit,
        names: DnsNames,
    ) -> Self {
        Self {
            authn,
            ca,
            lifetime,
            limiter: RateLimiter::new(rate),
            names,
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
        if let Err(wait) = self.limiter.check(&identity, Instant::now()) {
            tracing::warn!(%peer, %identity, "certify refused: rate limit");
            metrics::certificate_refused("rate_limited");
            return Err(rate_limited(&identity, &self.limiter.limit, wait));
        }
        // The CA in force now: a reloaded issuer signs from the next request on.
        let ca = self.ca.load();
        // Built once per config version; a lookup here.
        let names = self.names.of(&identity);
        let issued = match ca.sign_with_names(&request.csr_der, &identity, &names, self.lifetime) {
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

/// `RESOURCE_EXHAUSTED` for `identity`, naming the limit, with `retry-after` (whole seconds,
/// rounded up) in the metadata and the message.
fn rate_limited(identity: &SpiffeId, limit: &CertifyRateLimit, wait: Duration) -> Status {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut status = Status::resource_exhausted(format!(
        "certify rate limit for {identity}: {} certificates at once, then one per {:?}; \
         retry after {secs}s",
        limit.burst, limit.refill
    ));
    status
        .metadata_mut()
        .insert("retry-after", MetadataValue::from(secs));
    status
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

#[cfg(test)]
mod tests {
    use mesh_core::testing::trust_domain as td;

    use super::*;

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::from_service_account(&td(), "default", sa).expect("valid")
    }

    #[test]
    fn each_identity_has_its_own_bucket() {
        let limiter = RateLimiter::new(CertifyRateLimit {
            burst: 2,
            refill: Duration::from_secs(10),
            max_identities: 100,
        });
        let now = Instant::now();
        let (a, b) = (id("a"), id("b"));
        assert_eq!(limiter.check(&a, now), Ok(()));
        assert_eq!(limiter.check(&a, now), Ok(()));
        assert_eq!(limiter.check(&a, now), Err(Duration::from_secs(10)));
        assert_eq!(limiter.check(&b, now), Ok(()), "another identity");
        let later = now + Duration::from_secs(10);
        assert_eq!(limiter.check(&a, later), Ok(()));
    }

    #[test]
    fn memory_is_bounded_by_max_identities() {
        let limiter = RateLimiter::new(CertifyRateLimit {
            burst: 2,
            refill: Duration::from_secs(10),
            max_identities: 3,
        });
        let now = Instant::now();
        for i in 0..50 {
            limiter.check(&id(&format!("sa-{i}")), now).expect("first");
            assert!(limiter.len() <= 3, "{} entries", limiter.len());
        }
        // Idle identities (full buckets) go first; a busy one keeps its state.
        let busy = id("busy");
        let later = now + Duration::from_secs(60);
        limiter.check(&busy, later).expect("1");
        limiter.check(&busy, later).expect("2");
        for i in 0..2 {
            limiter.check(&id(&format!("new-{i}")), later).expect("new");
        }
        assert!(limiter.check(&busy, later).is_err(), "still limited");
    }

    #[test]
    fn the_refusal_names_the_identity_and_says_when_to_retry() {
        let status = rate_limited(
            &id("a"),
            &CertifyRateLimit::default(),
            Duration::from_millis(1500),
        );
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status
                .message()
                .starts_with("certify rate limit for spiffe://mesh.local/ns/default/sa/a: "),
            "{}",
            status.message()
        );
        assert!(status.message().ends_with("retry after 2s"));
        assert_eq!(
            status
                .metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("2")
        );
    }
}
