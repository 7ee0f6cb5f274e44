//! The mesh's own custom resources: `AuthorizationPolicy` (`policy.mesh.dev/v1alpha1`), the
//! Kubernetes home of the file source's `policies` entries, [`RequestAuthentication`], the JWT
//! issuers a service accepts, `FaultInjection` (see [`fault`]), which route rules name with an
//! `ExtensionRef` filter, and `LocalRateLimitPolicy` ([`rate_limit`]), the home of its
//! `rateLimits`.
//!
//! The spec has the shape of [`mesh_core::config::PolicySpec`] (camelCase, `ALLOW`/`DENY`,
//! `enforce`/`audit`), so that moving a policy from the control file into the cluster changes
//! where it lives, not what it says. The differences: the target's namespace is the policy's
//! own (a policy in one namespace cannot govern a service in another), and the API server
//! checks the shape up front (enumerations, required fields, CEL rules), so a `kubectl apply`
//! of a policy with no rules or a rule with no callers fails at once instead of in our logs.
//! mesh-core's validation still runs on every policy (identities in the trust domain, path
//! wildcards), and a policy it refuses is left out with a log line naming the field.
//!
//! ```yaml
//! apiVersion: policy.mesh.dev/v1alpha1
//! kind: AuthorizationPolicy
//! metadata: {name: shop-may-greet, namespace: default}
//! spec:
//!   target: {service: greeter}
//!   action: ALLOW
//!   rules:
//!     - from: {namespaces: [shop]}
//!       to: {grpc: [{service: helloworld.Greeter}]}
//! ```

use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod authn;
mod fault;

pub use authn::{
    AuthnTarget, JwtHeader, JwtRule, RequestAuthentication, RequestAuthenticationSpec,
};
pub use fault::{FaultAbort, FaultDelay, FaultInjection, FaultInjectionSpec};
pub mod rate_limit;

pub use rate_limit::{LocalRateLimitPolicy, LocalRateLimitPolicySpec};

/// The spec of an `AuthorizationPolicy`: who may (ALLOW) or may not (DENY) call a service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "policy.mesh.dev",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    plural = "authorizationpolicies",
    shortname = "meshauthz",
    category = "mesh",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.target.service"}"#,
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// The service (and optionally one of its routes) in the policy's namespace.
    pub target: PolicyTarget,
    /// `ALLOW` or `DENY`.
    pub action: PolicyAction,
    /// `enforce` (the default) or `audit` (log the decision, let the request through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PolicyMode>,
    /// Alternatives, ORed; at least one.
    #[x_kube(validation = Rule::new("self.size() > 0").message("at least one rule is required"))]
    pub rules: Vec<PolicyRule>,
}

/// What a policy applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTarget {
    /// The Service's name, in the policy's namespace.
    pub service: String,
    /// The name of an HTTPRoute or GRPCRoute of that service: the policy then applies only to
    /// requests that route matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// Whether matching requests are allowed or denied.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PolicyAction {
    /// Matching requests are allowed.
    #[serde(rename = "ALLOW")]
    Allow,
    /// Matching requests are denied (DENY policies are evaluated first).
    #[serde(rename = "DENY")]
    Deny,
}

/// Whether the decision is enforced or only logged.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PolicyMode {
    /// The decision is applied.
    Enforce,
    /// The decision is logged and the request goes through.
    Audit,
}

/// One rule: who may (or may not) do what.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// The callers.
    pub from: PolicyFrom,
    /// The end user (a JWT verified by a `RequestAuthentication`'s issuers); any request,
    /// with or without a token, when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<PolicyPrincipal>,
    /// The requests; every request when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PolicyTo>,
}

/// Callers: any entry may match; at least one is required.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.identities) && size(self.identities) > 0) || \
     (has(self.namespaces) && size(self.namespaces) > 0) || \
     (has(self.serviceAccounts) && size(self.serviceAccounts) > 0) || \
     (has(self.unauthenticated) && self.unauthenticated)"
).message("name at least one caller: identities, namespaces, serviceAccounts or unauthenticated"))]
pub struct PolicyFrom {
    /// SPIFFE IDs: exact, with a trailing `*` (a prefix), or `*` for any authenticated caller.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Namespaces of `/ns/<ns>/sa/<sa>` identities.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// `namespace/serviceAccount` pairs.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// Callers without an identity (plaintext, in permissive mode).
    #[serde(default)]
    pub unauthenticated: bool,
}

/// A rule's end-user conditions: a verified token is required.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPrincipal {
    /// `<iss>/<sub>`: exact, with a trailing `*` (a prefix), or `*` (at most 16); any
    /// principal when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 16").message("at most 16 patterns"))]
    pub request_principals: Vec<String>,
    /// Claims that must each hold one of their values (at most 8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 8").message("at most 8 conditions"))]
    pub claims: Vec<ClaimCondition>,
}

/// A top-level claim that must hold one of `values`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimCondition {
    /// The claim (`groups`).
    pub name: String,
    /// Accepted values, 1 to 16.
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 16")
        .message("1 to 16 values"))]
    pub values: Vec<String>,
}

/// Requests: every list given must have a matching entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTo {
    /// HTTP methods (`GET`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Paths: exact, or with a trailing `*` (a prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// gRPC services, each with an optional method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc: Vec<GrpcOperation>,
    /// The server's own ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// A gRPC service, and optionally one of its methods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcOperation {
    /// The fully qualified service (`helloworld.Greeter`).
    pub service: String,
    /// The method (`SayHello`); every method when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// The CustomResourceDefinitions the mesh installs, as one multi-document YAML text (what
/// `control/deploy/crds.yaml` holds).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let crd = serde_yaml::to_string(&AuthorizationPolicy::crd())?;
    let fault = serde_yaml::to_string(&FaultInjection::crd())?;
    let rate_limit = serde_yaml::to_string(&LocalRateLimitPolicy::crd())?;
    let authn = serde_yaml::to_string(&RequestAuthentication::crd())?;
    Ok(format!(
        "# Generated from mesh_control::k8s::{{AuthorizationPolicy, FaultInjection, \
         LocalRateLimitPolicy, RequestAuthentication}}; do not edit by hand.\n\
         # Regenerate: MESH_UPDATE_CRDS=1 cargo test -p mesh-control crds_file_is_current\n\
         ---\n{crd}---\n{fault}---\n{rate_limit}---\n{authn}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_file_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds.yaml");
        let generated = crds_yaml().expect("serializable");
        if std::env::var_os("MESH_UPDATE_CRDS").is_some() {
            std::fs::write(path, &generated).expect("write crds.yaml");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "control/deploy/crds.yaml is stale; run MESH_UPDATE_CRDS=1 cargo test -p mesh-control \
             crds_file_is_current"
        );
    }

    #[test]
    fn the_schema_carries_the_cel_rules_and_enums() {
        let json = serde_json::to_string(&AuthorizationPolicy::crd()).expect("serializable");
        assert!(json.contains(r#""rule":"self.size() > 0""#), "{json}");
        assert!(json.contains("x-kubernetes-validations"));
        assert!(json.contains(r#""enum":["ALLOW","DENY"]"#), "{json}");
        assert!(json.contains(r#""group":"policy.mesh.dev""#));
    }

    #[test]
    fn the_rate_limit_schema_carries_its_bounds_and_rules() {
        let json = serde_json::to_string(&LocalRateLimitPolicy::crd()).expect("serializable");
        assert!(json.contains("set at least one of total, identity and overrides"));
        assert!(json.contains(r#""maximum":1000000"#), "{json}");
        assert!(json.contains(r#""minimum":1"#), "{json}");
        assert!(json.contains(r#""maxItems":64"#), "{json}");
        assert!(json.contains(r#""plural":"localratelimitpolicies""#));
    }

    #[test]
    fn examples_parse_in_the_file_shape() {
        let yaml = "\
apiVersion: policy.mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: shop-may-greet, namespace: default}
spec:
  target: {service: greeter, route: api}
  action: ALLOW
  mode: audit
  rules:
    - from: {namespaces: [shop], serviceAccounts: [ops/oncall]}
      to: {grpc: [{service: helloworld.Greeter, method: SayHello}], ports: [8080]}
";
        let policy: AuthorizationPolicy = serde_yaml::from_str(yaml).expect("parses");
        assert_eq!(policy.spec.action, PolicyAction::Allow);
        assert_eq!(policy.spec.mode, Some(PolicyMode::Audit));
        assert_eq!(policy.spec.rules[0].from.service_accounts, ["ops/oncall"]);
    }
}
