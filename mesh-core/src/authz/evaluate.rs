//! Evaluating a request against an [`InboundPolicy`]: exemptions, then DENY, then ALLOW, then
//! the default; audit-mode policies are evaluated alongside and recorded.

use std::fmt;
use std::sync::Arc;

use http::Method;

use super::model::{
    Action, AuthorizationPolicy, AuthorizationRule, DefaultPolicy, InboundPolicy, Operation,
    PathPattern, PolicyMode, Source,
};
use crate::jwt::Principal;
use crate::route::{GrpcPath, RequestSummary};
use crate::spiffe::SpiffeId;

/// What authorization looks at, borrowed from a request and its connection.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    /// The caller's verified identity; `None` for a caller without one (plaintext).
    pub peer: Option<&'a SpiffeId>,
    /// The HTTP method.
    pub method: &'a Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The gRPC service and method, for a gRPC request.
    pub grpc: Option<GrpcPath<'a>>,
    /// The server's own port the request arrived on, when known; port conditions never match
    /// without one.
    pub port: Option<u16>,
    /// The name of the service's route the request matched, if any; policies that target a
    /// route apply only to requests that matched it.
    pub route: Option<&'a str>,
    /// The end user, from a verified JWT; `None` for a request without a token.
    pub principal: Option<&'a Principal>,
}

/// The verdict of an authorization decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Allowed, and would be with every audit-mode policy enforced too.
    Allow,
    /// Denied: 403 / `PERMISSION_DENIED`.
    Deny,
    /// Allowed, but refused were every audit-mode policy enforced and the `audit` default a
    /// `deny`: what an operator checks before enforcing.
    AuditAllow,
}

/// What decided a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The path is exempt (a health probe).
    Exempt(PathPattern),
    /// A rule of a policy matched.
    Policy {
        /// The policy's name.
        policy: Arc<str>,
        /// Its action.
        action: Action,
        /// The index of the rule that matched, in the policy's `rules`.
        rule: usize,
    },
    /// ALLOW policies target the request, and none of their rules matched it.
    NoAllowMatched,
    /// No ALLOW policy targets the request: the service's default decided.
    Default(DefaultPolicy),
}

/// What full enforcement would have decided: audit-mode policies enforced, and the `audit`
/// default read as `deny`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuditOutcome {
    /// Whether the request would have been allowed.
    pub allowed: bool,
    /// What would have decided.
    pub reason: Reason,
}

/// An authorization decision, cheap to clone (names are shared) and `'static`, so that a layer
/// can put it in request extensions and telemetry can label by [`Verdict::as_str`] and
/// [`Reason::policy`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Allow, deny or audit-allow.
    pub verdict: Verdict,
    /// What decided, among the enforced policies and the default.
    pub reason: Reason,
    /// What full enforcement would have decided, when it differs from what was decided.
    pub audit: Option<AuditOutcome>,
}

// === impl AuthzRequest ===

impl<'a> AuthzRequest<'a> {
    /// The request that `summary` describes, from `peer`, with no port or route yet.
    pub fn new(summary: &RequestSummary<'a>, peer: Option<&'a SpiffeId>) -> Self {
        Self {
            peer,
            method: summary.method(),
            path: summary.path(),
            grpc: summary.grpc(),
            port: None,
            route: None,
            principal: None,
        }
    }

    /// The same request, carrying the verified end user `principal`.
    pub fn with_principal(self, principal: &'a Principal) -> Self {
        Self {
            principal: Some(principal),
            ..self
        }
    }

    /// The same request, arrived on the server's `port`.
    pub fn with_port(self, port: u16) -> Self {
        Self {
            port: Some(port),
            ..self
        }
    }

    /// The same request, having matched the route called `route`.
    pub fn with_route(self, route: &'a str) -> Self {
        Self {
            route: Some(route),
            ..self
        }
    }
}

// === impl Verdict ===

impl Verdict {
    /// A telemetry label: `allow`, `deny` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::AuditAllow => "audit",
        }
    }

    /// Whether the request may proceed (allow or audit-allow).
    pub fn is_allowed(self) -> bool {
        !matches!(self, Self::Deny)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Reason ===

impl Reason {
    /// A telemetry label for the kind of reason: `exempt`, `policy`, `no-allow-matched` or
    /// `default`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Exempt(_) => "exempt",
            Self::Policy { .. } => "policy",
            Self::NoAllowMatched => "no-allow-matched",
            Self::Default(_) => "default",
        }
    }

    /// A telemetry label naming what decided: the policy's name, `default:<policy>`,
    /// `exempt` or `no-allow-matched`.
    pub fn policy(&self) -> &str {
        match self {
            Self::Policy { policy, .. } => policy,
            Self::Default(DefaultPolicy::AllUnauthenticated) => "default:all-unauthenticated",
            Self::Default(DefaultPolicy::AllAuthenticated) => "default:all-authenticated",
            Self::Default(DefaultPolicy::Deny) => "default:deny",
            Self::Default(DefaultPolicy::Audit) => "default:audit",
            Self::Exempt(_) => "exempt",
            Self::NoAllowMatched => "no-allow-matched",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exempt(path) => write!(f, "exempt path {path}"),
            Self::Policy {
                policy,
                action,
                rule,
            } => write!(f, "{action} policy {policy:?} (rules[{rule}])"),
            Self::NoAllowMatched => f.write_str("no ALLOW policy matched"),
            Self::Default(default) => write!(f, "the default policy {:?}", default.as_str()),
        }
    }
}

// === impl Decision ===

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.verdict.is_allowed()
    }
}

impl fmt::Display for Decision {
    /// The message a denied caller gets (`denied by DENY policy "legacy" (rules[0])`), or a
    /// description of an allowed request for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.verdict, &self.reason) {
            (Verdict::Deny, Reason::NoAllowMatched) => {
                f.write_str("denied: no ALLOW policy matched the request")
            }
            (Verdict::Deny, Reason::Default(DefaultPolicy::AllAuthenticated)) => write!(
                f,
                "denied by the default policy \"all-authenticated\": the caller has no identity"
            ),
            (Verdict::Deny, reason) => write!(f, "denied by {reason}"),
            (Verdict::Allow, reason) => write!(f, "allowed by {reason}"),
            (Verdict::AuditAllow, reason) => {
                write!(f, "allowed by {reason}")?;
                if let Some(audit) = &self.audit {
                    write!(f, "; audit: would be denied by {}", audit.reason)?;
                }
                Ok(())
            }
        }
    }
}

// === impl InboundPolicy ===

impl InboundPolicy {
    /// Decides `request`: an exempt path passes; then the first DENY rule that matches denies;
    /// then, when any ALLOW policy targets the request, the first ALLOW rule that matches allows
    /// and no match denies; otherwise the default decides. Audit-mode policies take no part,
    /// but the same evaluation with them enforced (and the `audit` default read as `deny`) is
    /// recorded in [`Decision::audit`] when it differs, and turns an allow it would deny into
    /// [`Verdict::AuditAllow`].
    ///
    /// Allocates nothing: policy names are shared, patterns were compiled with the policy.
    pub fn evaluate(&self, request: &AuthzRequest<'_>) -> Decision {
        if let Some(path) = self.exempt_paths.iter().find(|p| p.matches(request.path)) {
            return Decision {
                verdict: Verdict::Allow,
                reason: Reason::Exempt(path.clone()),
                audit: None,
            };
        }
        let (allowed, reason) = self.outcome(request, false);
        let audited = self.default_policy == DefaultPolicy::Audit
            || self.policies.iter().any(|p| p.mode == PolicyMode::Audit);
        let audit = audited
            .then(|| self.outcome(request, true))
            .filter(|(would_allow, would_reason)| {
                (*would_allow, would_reason) != (allowed, &reason)
            })
            .map(|(allowed, reason)| AuditOutcome { allowed, reason });
        let verdict = match (allowed, &audit) {
            (false, _) => Verdict::Deny,
            (true, Some(AuditOutcome { allowed: false, .. })) => Verdict::AuditAllow,
            (true, _) => Verdict::Allow,
        };
        Decision {
            verdict,
            reason,
            audit,
        }
    }

    /// One evaluation: with `full`, audit-mode policies count and `audit` is `deny`.
    fn outcome(&self, request: &AuthzRequest<'_>, full: bool) -> (bool, Reason) {
        let targeted = |action: Action| {
            self.policies.iter().filter(move |p| {
                p.action == action && (full || p.mode == PolicyMode::Enforce) && p.targets(request)
            })
        };
        for policy in targeted(Action::Deny) {
            if let Some(rule) = policy.matching_rule(request) {
                return (false, policy.reason(rule));
            }
        }
        let mut any_allow = false;
        for policy in targeted(Action::Allow) {
            any_allow = true;
            if let Some(rule) = policy.matching_rule(request) {
                return (true, policy.reason(rule));
            }
        }
        if any_allow {
            return (false, Reason::NoAllowMatched);
        }
        let allowed = match self.default_policy {
            DefaultPolicy::AllUnauthenticated => true,
            DefaultPolicy::AllAuthenticated => request.peer.is_some(),
            DefaultPolicy::Deny => false,
            DefaultPolicy::Audit => !full,
        };
        (allowed, Reason::Default(self.default_policy))
    }
}

// === impl AuthorizationPolicy ===

impl AuthorizationPolicy {
    /// Whether the policy applies to `request`: it targets the whole service, or the route the
    /// request matched.
    fn targets(&self, request: &AuthzRequest<'_>) -> bool {
        match &self.route {
            None => true,
            Some(route) => request.route == Some(&**route),
        }
    }

    /// The index of the first rule that matches.
    fn matching_rule(&self, request: &AuthzRequest<'_>) -> Option<usize> {
        self.rules.iter().position(|rule| rule.matches(request))
    }

    fn reason(&self, rule: usize) -> Reason {
        Reason::Policy {
            policy: self.name.clone(),
            action: self.action,
            rule,
        }
    }
}

// === impl AuthorizationRule ===

impl AuthorizationRule {
    /// Whether the caller matches `from`, its end user `principal`, and the request `to`.
    pub fn matches(&self, request: &AuthzRequest<'_>) -> bool {
        self.from.matches(request.peer)
            && self
                .principal
                .as_ref()
                .is_none_or(|p| p.matches(request.principal))
            && self.to.as_ref().is_none_or(|to| to.matches(request))
    }
}

// === impl Source ===

impl Source {
    /// Whether a caller with `peer` (none: no identity) matches.
    pub fn matches(&self, peer: Option<&SpiffeId>) -> bool {
        let Some(id) = peer else {
            return self.unauthenticated;
        };
        self.identities.iter().any(|m| m.matches(id))
            || self
                .namespaces
                .iter()
                .any(|ns| id.namespace() == Some(ns.as_str()))
            || self.service_accounts.iter().any(|sa| sa.matches(id))
    }
}

// === impl Operation ===

impl Operation {
    /// Whether every condition given holds for `request`.
    pub fn matches(&self, request: &AuthzRequest<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(request.method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(request.path)))
            && (self.grpc.is_empty()
                || request.grpc.is_some_and(|call| {
                    self.grpc
                        .iter()
                        .any(|g| g.matches(call.service, call.method))
                }))
            && (self.ports.is_empty() || request.port.is_some_and(|p| self.ports.contains(&p)))
    }
}
