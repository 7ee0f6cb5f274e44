//! The validated route model: matches, filters, timeouts and retries of Gateway API rules.
//!
//! Values here are typed (header names are [`HeaderName`]s, durations are [`Duration`]s,
//! regular expressions are compiled [`Pattern`]s), so nothing downstream parses again.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::ServiceName;

/// Which Gateway API route type a route is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RouteKind {
    /// An HTTPRoute.
    #[default]
    Http,
    /// A GRPCRoute.
    Grpc,
}

impl RouteKind {
    /// The config spelling: `http` or `grpc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A regular expression (RE2 syntax, the `regex` crate) that must match the *whole* value.
///
/// Compiled once, when the config or snapshot is validated; cloning shares the compiled form.
/// Two patterns are equal when their sources are.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

/// The compiled size limit for one pattern: generous for routing, small enough that a hostile
/// snapshot cannot make a client allocate much.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

impl Pattern {
    /// Compiles `source`, anchored at both ends (Gateway API matches whole values).
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let build = |pattern: &str| {
            regex::RegexBuilder::new(pattern)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
        };
        let regex = build(&format!("^(?:{source})$")).map_err(|anchored| {
            // Report the error against what the user wrote, not the anchored wrapper.
            build(source).err().unwrap_or(anchored)
        })?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

/// One match of a rule, for the route's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// An HTTPRoute match.
    Http(HttpRouteMatch),
    /// A GRPCRoute match.
    Grpc(GrpcRouteMatch),
}

/// An HTTPRoute match: every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRouteMatch {
    /// The path condition; `PathPrefix /` when the config gave none.
    pub path: PathMatch,
    /// The method, if one is required.
    pub method: Option<Method>,
    /// Header conditions, distinct names.
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions, distinct names.
    pub query_params: Vec<QueryParamMatch>,
}

impl Default for HttpRouteMatch {
    fn default() -> Self {
        Self {
            path: PathMatch::Prefix("/".to_owned()),
            method: None,
            headers: Vec::new(),
            query_params: Vec::new(),
        }
    }
}

/// A path condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path equals this.
    Exact(String),
    /// The path starts with these whole segments (`/v2` matches `/v2` and `/v2/x`, not `/v2x`).
    Prefix(String),
    /// The whole path matches this pattern.
    RegularExpression(Pattern),
}

impl PathMatch {
    /// The Gateway API type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Exact(_) => "Exact",
            Self::Prefix(_) => "PathPrefix",
            Self::RegularExpression(_) => "RegularExpression",
        }
    }

    /// The value or pattern as written.
    pub fn value(&self) -> &str {
        match self {
            Self::Exact(v) | Self::Prefix(v) => v,
            Self::RegularExpression(p) => p.as_str(),
        }
    }
}

/// How a header, query parameter, gRPC service or gRPC method value is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch {
    /// Equal, byte for byte.
    Exact(String),
    /// The whole value matches.
    RegularExpression(Pattern),
}

impl ValueMatch {
    /// The Gateway API type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Exact(_) => "Exact",
            Self::RegularExpression(_) => "RegularExpression",
        }
    }

    /// The value or pattern as written.
    pub fn value(&self) -> &str {
        match self {
            Self::Exact(v) => v,
            Self::RegularExpression(p) => p.as_str(),
        }
    }

    /// Whether `value` satisfies the condition.
    pub fn is_match(&self, value: &str) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::RegularExpression(p) => p.is_match(value),
        }
    }
}

/// A header condition (names compare case-insensitively, as [`HeaderName`]s do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// The header.
    pub name: HeaderName,
    /// Its value condition.
    pub value: ValueMatch,
}

/// A query parameter condition (names compare case-sensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParamMatch {
    /// The parameter.
    pub name: String,
    /// Its (percent-decoded) value condition.
    pub value: ValueMatch,
}

/// A GRPCRoute match: every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrpcRouteMatch {
    /// The service/method condition; any method when none.
    pub method: Option<GrpcMethodMatch>,
    /// Metadata conditions, distinct names.
    pub headers: Vec<HeaderMatch>,
}

/// A gRPC service and/or method condition. At least one is set, and both use the same type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcMethodMatch {
    /// The fully qualified service (`helloworld.Greeter`); any when none.
    pub service: Option<ValueMatch>,
    /// The method (`SayHello`); any when none.
    pub method: Option<ValueMatch>,
}

/// A filter of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteFilter {
    /// Edits the request's headers before it is sent.
    RequestHeaderModifier(HeaderModifier),
    /// Edits the response's headers before the caller sees them.
    ResponseHeaderModifier(HeaderModifier),
    /// Sends a copy of the request elsewhere, ignoring its response.
    RequestMirror(RequestMirror),
    /// Delays or aborts a share of calls before they are sent (see [`crate::fault`]).
    FaultInjection(crate::fault::FaultInjection),
}

/// Header edits, applied in Gateway API order: set, then add, then remove.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderModifier {
    /// Replace any existing values.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append a value, keeping existing ones.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove every value.
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Applies the edits to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// A mirror target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMirror {
    /// The service that receives copies (listed in the destination's backends).
    pub backend: ServiceName,
    /// The service port named, if any.
    pub port: Option<u16>,
    /// Share of matching requests mirrored, 0 to 100.
    pub percent: u32,
}

/// Gateway API timeouts. `Some(Duration::ZERO)` means explicitly disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// The whole request, retries included.
    pub request: Option<Duration>,
    /// Each try.
    pub backend_request: Option<Duration>,
}

impl Timeouts {
    /// The request timeout to enforce, if any (zero disables it).
    pub fn request(&self) -> Option<Duration> {
        self.request.filter(|d| !d.is_zero())
    }

    /// The per-try timeout to enforce, if any (zero disables it).
    pub fn backend_request(&self) -> Option<Duration> {
        self.backend_request.filter(|d| !d.is_zero())
    }
}

/// Which failures are retried, how often, and how long to wait in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// HTTP routes: retried response statuses.
    pub codes: Vec<StatusCode>,
    /// gRPC routes: retried gRPC statuses.
    pub grpc_codes: Vec<tonic::Code>,
    /// Retries after the first try.
    pub attempts: u32,
    /// Wait before each retry, if any.
    pub backoff: Option<Duration>,
}

impl RetryPolicy {
    /// Whether an HTTP response status is retried under this policy.
    pub fn retries_status(&self, status: StatusCode) -> bool {
        self.codes.contains(&status)
    }

    /// Whether a gRPC status is retried under this policy.
    pub fn retries_grpc(&self, code: tonic::Code) -> bool {
        self.grpc_codes.contains(&code)
    }
}
