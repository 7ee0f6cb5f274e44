//! `RequestAuthentication` (`policy.mesh.dev/v1alpha1`): the Kubernetes home of the file
//! source's `requestAuthentications` entries, the JWT issuers a service accepts (Istio's
//! resource of the same name).
//!
//! The spec has the shape of [`mesh_core::config::RequestAuthenticationSpec`] (less the
//! target's namespace, which is the object's own). The API server checks the bounds up front
//! (CEL rules); mesh-core's validation runs again on each object against its Service, and one
//! it refuses is left out with a log line naming the field.
//!
//! ```yaml
//! apiVersion: policy.mesh.dev/v1alpha1
//! kind: RequestAuthentication
//! metadata: {name: web-users, namespace: default}
//! spec:
//!   target: {service: web}
//!   jwtRules:
//!     - issuer: https://issuer.example.com
//!       audiences: [web]
//!       jwksUri: https://issuer.example.com/.well-known/jwks.json
//! ```

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of a `RequestAuthentication`: the JWT issuers a Service accepts.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "policy.mesh.dev",
    version = "v1alpha1",
    kind = "RequestAuthentication",
    plural = "requestauthentications",
    shortname = "meshauthn",
    category = "mesh",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.target.service"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    /// The Service, in the object's namespace.
    pub target: AuthnTarget,
    /// The issuers, 1 to 4.
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 4")
        .message("1 to 4 issuers"))]
    pub jwt_rules: Vec<JwtRule>,
}

/// The Service a `RequestAuthentication` applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthnTarget {
    /// The Service's name.
    pub service: String,
}

/// One issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.jwksUri) != has(self.jwks)")
    .message("set exactly one of jwksUri and jwks"))]
pub struct JwtRule {
    /// The `iss` its tokens carry, at most 1024 bytes.
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 1024")
        .message("1 to 1024 bytes"))]
    pub issuer: String,
    /// Accepted audiences (at most 16); any when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 16").message("at most 16 audiences"))]
    pub audiences: Vec<String>,
    /// Where mesh-control fetches the JWK Set: `https://`, `http://` or `file://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "size(self) <= 2048 && self.matches('^(https?://[^/]+|file:///).*')"
    ).message("an https://, http:// or file:/// URI of at most 2048 bytes"))]
    pub jwks_uri: Option<String>,
    /// The JWK Set itself (JSON, at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 65536").message("at most 64 KiB"))]
    pub jwks: Option<String>,
    /// Headers that carry the token (at most 4); `Authorization: Bearer` when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 4").message("at most 4 headers"))]
    pub from_headers: Vec<JwtHeader>,
}

/// A header that carries a token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtHeader {
    /// The header's name.
    pub name: String,
    /// What precedes the token (`Bearer `); none when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}
