//! Local rate-limit policies as written in the config (YAML), before validation.
//!
//! ```yaml
//! rateLimits:
//!   - name: web-limits
//!     target: {service: web, namespace: default, route: api}   # route is optional
//!     total: {requestsPerSecond: 1000}                # shared by every caller
//!     identity: {requestsPerSecond: 100, burst: 200}  # each caller identity on its own
//!     overrides:                                      # named callers, in place of identity
//!       - requestsPerSecond: 500
//!         clients:
//!           identities: ["spiffe://mesh.local/ns/shop/sa/checkout"]
//!           serviceAccounts: [ops/batch]
//! ```
//!
//! Each limit is a sustained rate of 1 to 1,000,000 calls per second and a burst of 1 to
//! 1,000,000 (one second's worth, `requestsPerSecond`, when omitted); at least one of
//! `total`, `identity` and `overrides` is required. [`crate::rate`] has the validated model.

use serde::{Deserialize, Serialize};

use super::PolicyTargetSpec;

/// One local rate-limit policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSpec {
    /// A DNS-1123 subdomain, unique among the rate-limit policies of its target's namespace.
    pub name: String,
    /// The service (or one of its routes) the limits apply to.
    pub target: PolicyTargetSpec,
    /// One limit shared by every caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<LimitSpec>,
    /// A limit for each caller identity on its own; callers without an identity share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<LimitSpec>,
    /// Named callers with a limit of their own in place of `identity` (the first that names
    /// a caller applies); at most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OverrideSpec>,
}

/// A rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitSpec {
    /// Calls per second, sustained: 1 to 1,000,000.
    pub requests_per_second: u32,
    /// Calls admitted back to back from rest: 1 to 1,000,000; `requestsPerSecond` when
    /// omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// Callers with a limit of their own, which they share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OverrideSpec {
    /// Calls per second, sustained: 1 to 1,000,000.
    pub requests_per_second: u32,
    /// Calls admitted back to back from rest: 1 to 1,000,000; `requestsPerSecond` when
    /// omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// The callers; at least one.
    pub clients: ClientsSpec,
}

/// The callers an override names: at least one, at most 64 in all.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientsSpec {
    /// Exact SPIFFE IDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// `namespace/serviceAccount` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
}
