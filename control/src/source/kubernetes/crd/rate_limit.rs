//! The mesh's `LocalRateLimitPolicy` (`policy.mesh.dev/v1alpha1`), the Kubernetes home of the
//! file source's `rateLimits` entries, modelled on Linkerd's `HTTPLocalRateLimitPolicy`.
//!
//! The spec has the shape of [`mesh_core::config::RateLimitSpec`], less the target's
//! namespace (the policy's own). The API server checks bounds and "at least one limit" up
//! front; mesh-core's validation still runs on every policy (identities in the trust domain,
//! the target route), and a policy it refuses is left out with a log line naming the field.
//!
//! ```yaml
//! apiVersion: policy.mesh.dev/v1alpha1
//! kind: LocalRateLimitPolicy
//! metadata: {name: greeter-limits, namespace: default}
//! spec:
//!   target: {service: greeter}              # route: <name> for one route only
//!   total: {requestsPerSecond: 1000}
//!   identity: {requestsPerSecond: 100}
//!   overrides:
//!     - requestsPerSecond: 500
//!       clients: {serviceAccounts: [shop/checkout]}
//! ```

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::PolicyTarget;

/// The spec of a `LocalRateLimitPolicy`: how many calls a service's replicas each take.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "policy.mesh.dev",
    version = "v1alpha1",
    kind = "LocalRateLimitPolicy",
    plural = "localratelimitpolicies",
    shortname = "meshratelimit",
    category = "mesh",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.target.service"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".spec.total.requestsPerSecond"}"#,
    printcolumn = r#"{"name":"Identity","type":"integer","jsonPath":".spec.identity.requestsPerSecond"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.total) || has(self.identity) || (has(self.overrides) && size(self.overrides) > 0)"
).message("set at least one of total, identity and overrides"))]
pub struct LocalRateLimitPolicySpec {
    /// The service (and optionally one of its routes) in the policy's namespace.
    pub target: PolicyTarget,
    /// One limit shared by every caller, per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Limit>,
    /// A limit for each caller identity on its own, per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Limit>,
    /// Named callers with a limit of their own in place of `identity`; at most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub overrides: Vec<Override>,
}

/// A sustained rate and its burst.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limit {
    /// Calls per second, sustained.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_second: u32,
    /// Calls admitted back to back from rest; `requestsPerSecond` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: Option<u32>,
}

/// Callers that share a limit of their own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Override {
    /// Calls per second, sustained.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_second: u32,
    /// Calls admitted back to back from rest; `requestsPerSecond` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: Option<u32>,
    /// The callers.
    pub clients: Clients,
}

/// The callers an override names: at least one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.identities) && size(self.identities) > 0) || \
     (has(self.serviceAccounts) && size(self.serviceAccounts) > 0)"
).message("name at least one caller: identities or serviceAccounts"))]
pub struct Clients {
    /// Exact SPIFFE IDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// `namespace/serviceAccount` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
}
