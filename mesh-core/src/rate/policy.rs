//! The validated rate-limit model: a service's local rate-limit policies, as its own
//! replicas enforce them on the calls they receive (Linkerd's `HTTPLocalRateLimitPolicy`).

use std::fmt;
use std::sync::Arc;

use super::gcra::Gcra;
use crate::spiffe::SpiffeId;

/// One local rate-limit policy of a service, or of one of its routes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimitPolicy {
    /// Unique within the service's policies; refusals and metrics carry it.
    pub name: Arc<str>,
    /// The route (by name) it is limited to; `None` for every call to the service.
    pub route: Option<Arc<str>>,
    /// One limit shared by every caller.
    pub total: Option<RateLimit>,
    /// A limit for each caller identity on its own (callers without an identity share one).
    pub identity: Option<RateLimit>,
    /// Named callers with a limit of their own in place of `identity`, in config order (the
    /// first that names a caller applies).
    pub overrides: Vec<RateLimitOverride>,
}

/// A sustained rate and the burst admitted back to back from rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Calls per second, sustained (1 to [`MAX_REQUESTS_PER_SECOND`]).
    pub requests_per_second: u32,
    /// Calls admitted back to back from rest (1 to [`MAX_BURST`]); the config's default is one
    /// second's worth, `requests_per_second`.
    pub burst: u32,
}

/// The most calls per second a limit may name.
pub const MAX_REQUESTS_PER_SECOND: u32 = 1_000_000;

/// The largest burst a limit may name.
pub const MAX_BURST: u32 = 1_000_000;

/// The most overrides one policy may have, and the most callers one override may name: the
/// first caller of an identity looks its override up in these lists.
pub const MAX_OVERRIDES: usize = 64;

/// Callers with a limit of their own. The callers it names share that one limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimitOverride {
    /// The limit.
    pub limit: RateLimit,
    /// Who it applies to; never empty.
    pub clients: Vec<ClientMatch>,
}

/// A caller an override names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientMatch {
    /// Exactly this SPIFFE ID.
    Identity(SpiffeId),
    /// The identity `/ns/<namespace>/sa/<name>` (in any trust domain the mesh trusts).
    ServiceAccount {
        /// The namespace.
        namespace: String,
        /// The service account.
        name: String,
    },
}

/// Which of a policy's limits refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// The limit shared by every caller.
    Total,
    /// The caller's own limit.
    Identity,
    /// The limit of an override that names the caller.
    Override,
}

// === impl RateLimit ===

impl RateLimit {
    /// The limit as GCRA parameters.
    pub fn gcra(&self) -> Gcra {
        Gcra::per_second(self.requests_per_second, self.burst)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.requests_per_second)?;
        if self.burst != self.requests_per_second {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

// === impl RateLimitPolicy ===

impl RateLimitPolicy {
    /// The limit that applies to `caller` besides `total`: the first override that names it,
    /// else the per-identity limit. The index is the override's.
    pub fn limit_for(&self, caller: Option<&SpiffeId>) -> Option<(Option<usize>, RateLimit)> {
        if let Some(caller) = caller
            && let Some((i, o)) = self
                .overrides
                .iter()
                .enumerate()
                .find(|(_, o)| o.clients.iter().any(|c| c.matches(caller)))
        {
            return Some((Some(i), o.limit));
        }
        self.identity.map(|limit| (None, limit))
    }
}

// === impl ClientMatch ===

impl ClientMatch {
    /// Whether `id` is this caller.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Identity(exact) => exact == id,
            Self::ServiceAccount { namespace, name } => {
                id.namespace() == Some(namespace.as_str())
                    && id.service_account() == Some(name.as_str())
            }
        }
    }
}

impl fmt::Display for ClientMatch {
    /// The config spelling: the SPIFFE ID, or `namespace/name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity(id) => write!(f, "{id}"),
            Self::ServiceAccount { namespace, name } => write!(f, "{namespace}/{name}"),
        }
    }
}

// === impl LimitKind ===

impl LimitKind {
    /// The metric label and message word: `total`, `identity` or `override`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Identity => "identity",
            Self::Override => "override",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
