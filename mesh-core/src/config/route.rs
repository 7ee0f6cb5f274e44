//! Route config as people write it: Gateway API HTTPRoute / GRPCRoute rules in the file source.
//!
//! The shapes follow Gateway API (camelCase, `type` + value objects) so that moving a route to a
//! Kubernetes HTTPRoute or GRPCRoute changes where it lives, not what it says. Enumerations
//! (`kind`, match and filter `type`s, gRPC status names) are plain strings here so that
//! validation can report every bad one with its path, instead of the YAML parser stopping at the
//! first.

use serde::{Deserialize, Serialize};

use super::{BackendRefSpec, FaultInjectionSpec};

/// A route attached to the service it is listed under (an HTTPRoute or GRPCRoute whose
/// `parentRef` is that service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique within the service and the route's namespace.
    pub name: String,
    /// The route's own namespace (Gateway API GAMMA); the service's when omitted. A route in
    /// another namespace is a *consumer route*: it applies only to callers in its namespace,
    /// in place of the service's own routes, and its `backendRefs` default to its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The service port the route attaches to (a `parentRef` with `port`): it then applies
    /// only to calls to that port. Every port when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `http` (an HTTPRoute, the default) or `grpc` (a GRPCRoute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// When the route was created: Unix seconds or an RFC 3339 time. Only used to break
    /// precedence ties between routes, oldest first, as Gateway API does with
    /// `metadata.creationTimestamp`; routes without one rank after routes with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<CreationTimestamp>,
    /// Rules, in order.
    #[serde(default)]
    pub rules: Vec<RouteRuleSpec>,
}

/// A route's creation time, as Unix seconds or an RFC 3339 string (`2024-05-01T10:00:00Z`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CreationTimestamp {
    /// Seconds since the Unix epoch.
    Unix(i64),
    /// RFC 3339, as Kubernetes writes `creationTimestamp`.
    Rfc3339(String),
}

/// One rule of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRuleSpec {
    /// Optional rule name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Alternatives (ORed); none means every request (`PathPrefix /` for HTTP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatchSpec>,
    /// Filters applied to matching requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterSpec>,
    /// Weighted backends.
    #[serde(default)]
    pub backend_refs: Vec<BackendRefSpec>,
    /// Request and per-try timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    /// Retry policy (GEP-1731).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Hedging (gRPC A6); a rule has either `retry` or `hedging`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedging: Option<super::HedgingSpec>,
}

/// One match: every condition given must hold (ANDed).
///
/// HTTP routes use `path`, `method` (a string), `headers` and `queryParams`; gRPC routes use
/// `method` (an object) and `headers`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatchSpec {
    /// HTTP only; `PathPrefix /` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatchSpec>,
    /// An HTTP method (`GET`), or for gRPC a service/method match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<MethodMatchSpec>,
    /// Header (gRPC metadata) matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
    /// HTTP only: query parameter matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatchSpec>,
}

/// A path match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatchSpec {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The path or pattern; `/` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The `method` of a match: a string for HTTP, an object for gRPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MethodMatchSpec {
    /// An HTTP method such as `GET`.
    Http(String),
    /// A gRPC service and/or method.
    Grpc(GrpcMethodMatchSpec),
}

/// A gRPC method match; at least one of `service` and `method`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatchSpec {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Fully qualified service (`helloworld.Greeter`); any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method (`SayHello`); any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A header or query parameter match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatchSpec {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Header name (case-insensitive) or query parameter name (case-sensitive).
    pub name: String,
    /// The value or pattern.
    pub value: String,
}

/// A filter: `type` names which one of the other fields is set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterSpec {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestMirror` or
    /// `FaultInjection`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifierSpec>,
    /// For `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifierSpec>,
    /// For `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirrorSpec>,
    /// For `FaultInjection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_injection: Option<FaultInjectionSpec>,
}

/// Header edits: `set` replaces, `add` appends, `remove` deletes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifierSpec {
    /// Headers to overwrite.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderSpec>,
    /// Headers to append to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderSpec>,
    /// Header names to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderSpec {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// A copy of matching requests sent, fire and forget, to another service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirrorSpec {
    /// Where the copies go.
    pub backend_ref: MirrorBackendRefSpec,
    /// Share of matching requests mirrored, 0 to 100; 100 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

/// The target of a mirror (a Gateway API `BackendObjectReference`: no weight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorBackendRefSpec {
    /// The service's name.
    pub name: String,
    /// Its namespace; the route's own when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its port, 1 to 65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// Gateway API timeouts, as duration strings (`10s`, `500ms`, `1h2m`); `0s` disables one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutsSpec {
    /// The whole request, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Each try; at most `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// A retry policy in the shape of GEP-1731, with gRPC status names for GRPCRoutes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// HTTP routes: response status codes (400 to 599) that are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u32>,
    /// gRPC routes: status names (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`) that are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<String>,
    /// Retries after the first try, 0 to 10; 1 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Wait before each retry (a duration string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}
