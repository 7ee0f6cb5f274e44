//! The validated authorization model: a service's inbound policy, compiled for evaluation.
//!
//! Wildcards and prefixes are resolved when the config or snapshot is validated (a trailing `*`
//! becomes a stored prefix), and names that decisions carry are `Arc<str>`, so evaluating a
//! request allocates nothing.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use http::Method;

use crate::jwt::{JwtRule, Principal};
use crate::rate::RateLimitPolicy;
use crate::snapshot::ServiceName;
use crate::spiffe::SpiffeId;

/// How a service accepts connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MtlsMode {
    /// A client certificate is required (the default).
    #[default]
    Strict,
    /// mTLS and plaintext on the same port; plaintext callers have no identity.
    Permissive,
}

/// What applies to a request when no ALLOW policy targets it (Linkerd's default policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DefaultPolicy {
    /// Every caller, with or without an identity (the mesh-wide default when none is given, so
    /// that adding the mesh to a service changes nothing until a policy says otherwise).
    #[default]
    AllUnauthenticated,
    /// Every caller with an identity.
    AllAuthenticated,
    /// No caller.
    Deny,
    /// Every caller, but each request is recorded as one that `deny` would refuse.
    Audit,
}

/// An ALLOW or DENY policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Requests matching a rule are allowed (after every DENY policy).
    Allow,
    /// Requests matching a rule are denied, whatever ALLOW policies say.
    Deny,
}

/// Whether a policy is enforced or only evaluated and recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PolicyMode {
    /// The policy decides requests.
    #[default]
    Enforce,
    /// The policy is evaluated as if enforced and the result recorded, but it decides nothing:
    /// for rolling out a policy (or default-deny) safely.
    Audit,
}

/// The inbound policy of one service: what its server side enforces (authorization, and the
/// local rate limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPolicy {
    /// The service.
    pub service: ServiceName,
    /// mTLS mode.
    pub mtls: MtlsMode,
    /// The service's default (its own, else the mesh-wide one).
    pub default_policy: DefaultPolicy,
    /// Paths that always pass, before any policy (health probes).
    pub exempt_paths: Vec<PathPattern>,
    /// Every policy that targets the service or one of its routes, in config order.
    pub policies: Vec<AuthorizationPolicy>,
    /// The JWT issuers the service accepts (end-user authentication); empty: tokens are not
    /// looked at.
    pub jwt_rules: Vec<JwtRule>,
    /// The local rate-limit policies that target the service or one of its routes, in
    /// config order (see [`crate::rate`]).
    pub rate_limits: Vec<RateLimitPolicy>,
}

/// One authorization policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    /// Unique within the inbound policy; decisions carry it.
    pub name: Arc<str>,
    /// The route it is limited to; `None` for every request to the service.
    pub route: Option<Arc<str>>,
    /// ALLOW or DENY.
    pub action: Action,
    /// Enforce or audit.
    pub mode: PolicyMode,
    /// Alternatives, ORed; never empty.
    pub rules: Vec<AuthorizationRule>,
}

/// One rule: a request matches when its caller matches `from`, its end user `principal`
/// (when given), and it matches `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRule {
    /// Who.
    pub from: Source,
    /// Which end user (a verified JWT); `None` is any request, with or without one.
    pub principal: Option<PrincipalCondition>,
    /// What; `None` is every request.
    pub to: Option<Operation>,
}

/// Conditions on a request's end user: it must carry a verified principal that matches one of
/// `request_principals` (any principal when empty) and every claim condition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrincipalCondition {
    /// `<iss>/<sub>` patterns, as Istio's `requestPrincipals`.
    pub request_principals: Vec<RequestPrincipalMatch>,
    /// Claims that must hold, ANDed.
    pub claims: Vec<ClaimCondition>,
}

/// A request principal (`<iss>/<sub>`) condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestPrincipalMatch {
    /// Any verified principal (written `*`).
    Any,
    /// Exactly this `<iss>/<sub>`.
    Exact(String),
    /// Principals that start with this text (written with a trailing `*`, stored without it:
    /// `https://issuer.test/*` is every subject of that issuer).
    Prefix(String),
}

/// A claim that must hold one of `values` (a string equal to one, or an array holding one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCondition {
    /// The top-level claim (`groups`).
    pub name: String,
    /// Accepted values, ORed; never empty.
    pub values: Vec<String>,
}

/// The callers a rule names; a caller matches when any entry matches. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// SPIFFE IDs, exact or by prefix.
    pub identities: Vec<IdentityMatch>,
    /// Namespaces of `/ns/<ns>/sa/<sa>` identities.
    pub namespaces: Vec<String>,
    /// Service accounts of `/ns/<ns>/sa/<sa>` identities.
    pub service_accounts: Vec<ServiceAccountRef>,
    /// Callers without an identity (plaintext). Only these: to also admit every authenticated
    /// caller, add the identity `*`.
    pub unauthenticated: bool,
}

/// A SPIFFE ID condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityMatch {
    /// Any caller with an identity (written `*`).
    Any,
    /// Exactly this ID.
    Exact(SpiffeId),
    /// IDs that start with this text (written with a trailing `*`, stored without it:
    /// `spiffe://mesh.local/ns/shop/*` is the prefix `spiffe://mesh.local/ns/shop/`).
    Prefix(String),
}

/// A `namespace/service-account` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccountRef {
    /// The namespace.
    pub namespace: String,
    /// The service account.
    pub name: String,
}

/// The requests a rule names; every non-empty list must have a matching entry. Never all
/// empty (a rule that matches every request omits `to`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operation {
    /// HTTP methods.
    pub methods: Vec<Method>,
    /// Paths.
    pub paths: Vec<PathPattern>,
    /// gRPC services and methods (only gRPC requests match these).
    pub grpc: Vec<GrpcOperation>,
    /// The server's own ports.
    pub ports: Vec<u16>,
}

/// A path, exact or by prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathPattern {
    /// Exactly this path.
    Exact(Arc<str>),
    /// Paths that start with this text (written with a trailing `*`, stored without it:
    /// `/api/*` is the prefix `/api/`).
    Prefix(Arc<str>),
}

/// A gRPC service, and optionally one of its methods.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrpcOperation {
    /// The fully qualified service (`helloworld.Greeter`).
    pub service: String,
    /// The method (`SayHello`); `None` for every method.
    pub method: Option<String>,
}

// === impl MtlsMode ===

impl MtlsMode {
    /// The config spelling: `strict` or `permissive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Permissive => "permissive",
        }
    }
}

impl FromStr for MtlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Self::Strict),
            "permissive" => Ok(Self::Permissive),
            other => Err(format!(
                "unknown mTLS mode {other:?}: expected strict or permissive"
            )),
        }
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl DefaultPolicy ===

impl DefaultPolicy {
    /// The config spelling: `all-unauthenticated`, `all-authenticated`, `deny` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::Deny => "deny",
            Self::Audit => "audit",
        }
    }
}

impl FromStr for DefaultPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all-unauthenticated" => Ok(Self::AllUnauthenticated),
            "all-authenticated" => Ok(Self::AllAuthenticated),
            "deny" => Ok(Self::Deny),
            "audit" => Ok(Self::Audit),
            other => Err(format!(
                "unknown default policy {other:?}: expected all-unauthenticated, \
                 all-authenticated, deny or audit"
            )),
        }
    }
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Action ===

impl Action {
    /// The config spelling: `ALLOW` or `DENY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
        }
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ALLOW" => Ok(Self::Allow),
            "DENY" => Ok(Self::Deny),
            other => Err(format!("unknown action {other:?}: expected ALLOW or DENY")),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl PolicyMode ===

impl PolicyMode {
    /// The config spelling: `enforce` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        }
    }
}

impl FromStr for PolicyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Self::Enforce),
            "audit" => Ok(Self::Audit),
            other => Err(format!("unknown mode {other:?}: expected enforce or audit")),
        }
    }
}

impl fmt::Display for PolicyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl InboundPolicy ===

impl InboundPolicy {
    /// The policy of a service with nothing configured for it: strict mTLS, `default_policy`,
    /// no exemptions, no policies.
    pub fn defaults(service: ServiceName, default_policy: DefaultPolicy) -> Self {
        Self {
            service,
            mtls: MtlsMode::Strict,
            default_policy,
            exempt_paths: Vec::new(),
            policies: Vec::new(),
            jwt_rules: Vec::new(),
            rate_limits: Vec::new(),
        }
    }
}

// === impl IdentityMatch ===

impl IdentityMatch {
    /// Whether `id` matches.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => exact == id,
            Self::Prefix(prefix) => id.as_str().starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for IdentityMatch {
    /// The config spelling: `*`, the ID, or the prefix with its `*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(id) => write!(f, "{id}"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

// === impl ServiceAccountRef ===

impl ServiceAccountRef {
    /// Whether `id` is `/ns/<namespace>/sa/<name>`.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        id.namespace() == Some(self.namespace.as_str())
            && id.service_account() == Some(self.name.as_str())
    }
}

impl fmt::Display for ServiceAccountRef {
    /// The config spelling: `namespace/name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

// === impl PathPattern ===

impl PathPattern {
    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == &**exact,
            Self::Prefix(prefix) => path.starts_with(&**prefix),
        }
    }
}

impl fmt::Display for PathPattern {
    /// The config spelling: the path, or the prefix with its `*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(path) => f.write_str(path),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

// === impl GrpcOperation ===

impl GrpcOperation {
    /// Whether a call to `service`/`method` matches.
    pub fn matches(&self, service: &str, method: &str) -> bool {
        self.service == service && self.method.as_deref().is_none_or(|m| m == method)
    }
}

// === impl PrincipalCondition ===

impl PrincipalCondition {
    /// Whether a request with `principal` (none: no verified token) matches.
    pub fn matches(&self, principal: Option<&Principal>) -> bool {
        let Some(principal) = principal else {
            return false;
        };
        (self.request_principals.is_empty()
            || self.request_principals.iter().any(|m| m.matches(principal)))
            && self
                .claims
                .iter()
                .all(|c| c.values.iter().any(|v| principal.claim_has(&c.name, v)))
    }
}

// === impl RequestPrincipalMatch ===

impl RequestPrincipalMatch {
    /// Whether `principal`'s `<iss>/<sub>` matches.
    pub fn matches(&self, principal: &Principal) -> bool {
        // Compared in two pieces, so that matching allocates nothing.
        let (iss, sub) = (&*principal.issuer, principal.subject.as_str());
        match self {
            Self::Any => true,
            Self::Exact(exact) => {
                exact.len() == iss.len() + 1 + sub.len()
                    && exact.starts_with(iss)
                    && exact[iss.len()..].starts_with('/')
                    && exact.ends_with(sub)
            }
            Self::Prefix(prefix) => {
                if prefix.len() <= iss.len() {
                    iss.starts_with(prefix.as_str())
                } else {
                    prefix.starts_with(iss)
                        && prefix[iss.len()..].starts_with('/')
                        && sub.starts_with(&prefix[iss.len() + 1..])
                }
            }
        }
    }
}

impl fmt::Display for RequestPrincipalMatch {
    /// The config spelling: `*`, the principal, or the prefix with its `*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(p) => f.write_str(p),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}
