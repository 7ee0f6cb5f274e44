//! Authorization policies as written in the config (YAML), before validation.
//!
//! ```yaml
//! defaultPolicy: all-authenticated        # mesh-wide; all-unauthenticated when omitted
//! services:
//!   - name: greeter
//!     mtls: permissive                    # strict when omitted
//!     defaultPolicy: deny                 # the service's own default
//!     exemptPaths: [/healthz, /grpc.health.v1.Health/Check]
//! policies:
//!   - name: shop-reads
//!     target: {service: greeter, namespace: default, route: api}   # route is optional
//!     action: ALLOW                       # or DENY
//!     mode: audit                         # enforce when omitted
//!     rules:
//!       - from:
//!           identities: ["spiffe://mesh.local/ns/shop/*"]
//!           namespaces: [billing]
//!           serviceAccounts: [ops/oncall]
//!           unauthenticated: false
//!         to:
//!           methods: [GET]
//!           paths: [/status, /api/*]
//!           grpc: [{service: helloworld.Greeter, method: SayHello}]
//!           ports: [8080]
//! ```
//!
//! As with routes, values are strings here so that validation can report every problem with
//! its path; [`crate::authz`] has the validated model.

use serde::{Deserialize, Serialize};

/// One authorization policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// A DNS-1123 subdomain, unique among the policies of its target's namespace.
    pub name: String,
    /// The service (or one of its routes) the policy applies to.
    pub target: PolicyTargetSpec,
    /// `ALLOW` or `DENY`; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `enforce` (when omitted) or `audit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Alternatives, ORed; at least one.
    #[serde(default)]
    pub rules: Vec<PolicyRuleSpec>,
}

/// What a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetSpec {
    /// The service's name; it must be in the config.
    pub service: String,
    /// The service's namespace; `default` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A route of the service, by name: the policy then applies only to requests it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// One rule: who may (or may not) do what.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRuleSpec {
    /// The callers; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PolicyFromSpec>,
    /// The end user (a verified JWT); any request, with or without a token, when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<super::PolicyPrincipalSpec>,
    /// The requests; every request when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PolicyToSpec>,
}

/// Callers: any entry may match; at least one is required.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyFromSpec {
    /// SPIFFE IDs: exact, with a trailing `*` (a prefix), or `*` for any authenticated caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Namespaces of `/ns/<ns>/sa/<sa>` identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// `namespace/serviceAccount` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Callers without an identity (plaintext, in permissive mode).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthenticated: bool,
}

/// Requests: every list given must have a matching entry; at least one list is required.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyToSpec {
    /// HTTP methods (`GET`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Paths: exact, or with a trailing `*` (a prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// gRPC services, each with an optional method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc: Vec<GrpcOperationSpec>,
    /// The server's own ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u32>,
}

/// A gRPC service, and optionally one of its methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcOperationSpec {
    /// The fully qualified service (`helloworld.Greeter`).
    pub service: String,
    /// The method (`SayHello`); every method when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}
