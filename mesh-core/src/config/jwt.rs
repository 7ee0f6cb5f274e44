//! End-user authentication as written in the config (YAML), before validation: the JWT
//! issuers a service accepts, modelled on Istio's `RequestAuthentication`.
//!
//! ```yaml
//! requestAuthentications:
//!   - name: web-users
//!     target: {service: greeter, namespace: default}
//!     jwtRules:
//!       - issuer: https://issuer.example.com
//!         audiences: [greeter]                 # any audience when omitted
//!         jwksUri: https://issuer.example.com/.well-known/jwks.json   # or http://, file://
//!         # jwks: '{"keys": [...]}'            # inline instead of jwksUri
//!         fromHeaders:                         # Authorization: Bearer when omitted
//!           - {name: x-jwt-assertion}          # no prefix: the whole value
//! policies:
//!   - name: admins-only
//!     target: {service: greeter}
//!     action: ALLOW
//!     rules:
//!       - from: {identities: ["*"]}
//!         principal:
//!           requestPrincipals: ["https://issuer.example.com/*"]
//!           claims: [{name: groups, values: [admin]}]
//! ```
//!
//! [`crate::jwt`] has the validated model and the verification.

use serde::{Deserialize, Serialize};

use super::PolicyTargetSpec;

/// The JWT issuers one service accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// A DNS-1123 subdomain, unique among the request authentications of its namespace.
    pub name: String,
    /// The service it applies to (a route may not be named: authentication is per service).
    pub target: PolicyTargetSpec,
    /// The issuers, 1 to [`crate::jwt::MAX_JWT_RULES`] per service in all.
    #[serde(default)]
    pub jwt_rules: Vec<JwtRuleSpec>,
}

/// One issuer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRuleSpec {
    /// The `iss` its tokens carry (at most 1024 bytes); unique among the service's issuers.
    pub issuer: String,
    /// Accepted audiences (at most 16, each at most 256 bytes); any when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where the control service fetches the JWK Set: `https://`, `http://` or `file://`, at
    /// most 2048 bytes. Exactly one of `jwksUri` and `jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The JWK Set itself (JSON, at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers that carry the token (at most 4); `Authorization: Bearer` when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeaderSpec>,
}

/// A header that carries a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeaderSpec {
    /// The header's name.
    pub name: String,
    /// What precedes the token (`Bearer `, at most 64 bytes); none when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A rule's conditions on the request's end user: a verified JWT is required.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPrincipalSpec {
    /// `<iss>/<sub>`: exact, with a trailing `*` (a prefix), or `*` for any (at most 16); any
    /// principal when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// Claims that must each hold one of their values (at most 8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<ClaimConditionSpec>,
}

/// A claim condition: `groups` holds `admin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimConditionSpec {
    /// A top-level claim (at most 256 bytes).
    pub name: String,
    /// Accepted values (1 to 16, each at most 256 bytes): a string claim equal to one, or an
    /// array claim holding one.
    pub values: Vec<String>,
}
