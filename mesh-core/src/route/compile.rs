//! Compiling a destination's routes into a precedence-sorted candidate list, once per snapshot.

use std::cmp::Ordering;
use std::sync::Arc;

use super::matching::{Condition, Key, Mismatch};
use super::summary::RequestSummary;
use crate::snapshot::{
    BackendRef, Destination, GrpcRouteMatch, HedgingPolicy, HttpRouteMatch, RetryPolicy,
    RouteFilter, RouteKind, RouteMatch, ServiceName, Timeouts,
};

/// A destination's routes, ready to route requests. Build it when a snapshot arrives.
#[derive(Debug, Clone)]
pub struct CompiledRoutes {
    service: ServiceName,
    attached: bool,
    http: Vec<Candidate>,
    grpc: Vec<Candidate>,
}

/// One rule, with what the layers below routing need.
#[derive(Debug)]
pub struct CompiledRule {
    pub(crate) route_index: usize,
    pub(crate) route_name: String,
    pub(crate) route_kind: RouteKind,
    pub(crate) rule_index: usize,
    pub(crate) rule_name: String,
    pub(crate) filters: Vec<RouteFilter>,
    pub(crate) timeouts: Timeouts,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) hedging: Option<HedgingPolicy>,
    pub(crate) backends: Vec<BackendTarget>,
    /// `cumulative[i]` is the sum of the weights of backends `0..=i`.
    pub(crate) cumulative: Vec<u64>,
}

/// A backend reference of a rule, resolved against the destination's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTarget {
    /// The reference as the route gives it.
    pub backend_ref: BackendRef,
    /// Whether the service exists; when not, its share of traffic fails.
    pub found: bool,
}

/// One way to reach a rule: one of its matches (or the implicit match of a rule with none).
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) rule: Arc<CompiledRule>,
    /// `None` for a rule with no matches (the implicit catch-all).
    pub(crate) match_index: Option<usize>,
    pub(crate) condition: Condition,
    pub(crate) key: Key,
    pub(crate) created: Option<i64>,
}

/// What routing decided.
#[derive(Debug, Clone)]
pub enum RouteOutcome {
    /// No routes are attached: send to the destination's own endpoints.
    NoRoutes,
    /// Routes are attached and none matches: HTTP 404, gRPC `UNIMPLEMENTED`.
    NotFound,
    /// A rule matched.
    Matched(Matched),
}

/// The rule a request matched, and by which of its matches.
#[derive(Debug, Clone)]
pub struct Matched {
    /// The rule (shared with the compiled routes; cloning is a reference count).
    pub rule: Arc<CompiledRule>,
    /// The index of the match that won in the rule's `matches`; `None` when the rule has none.
    pub match_index: Option<usize>,
}

// === impl CompiledRoutes ===

impl CompiledRoutes {
    /// Compiles `destination`'s routes.
    pub fn new(destination: &Destination) -> Self {
        let mut http = Vec::new();
        let mut grpc = Vec::new();
        for (route_index, route) in destination.routes.iter().enumerate() {
            for (rule_index, rule) in route.rules.iter().enumerate() {
                let backends: Vec<BackendTarget> = rule
                    .backend_refs
                    .iter()
                    .map(|backend_ref| BackendTarget {
                        found: destination
                            .backends
                            .iter()
                            .any(|b| b.found && b.service == backend_ref.service),
                        backend_ref: backend_ref.clone(),
                    })
                    .collect();
                let cumulative = backends
                    .iter()
                    .scan(0u64, |sum, b| {
                        *sum += u64::from(b.backend_ref.weight);
                        Some(*sum)
                    })
                    .collect();
                let compiled = Arc::new(CompiledRule {
                    route_index,
                    route_name: route.name.clone(),
                    route_kind: route.kind,
                    rule_index,
                    rule_name: rule.name.clone(),
                    filters: rule.filters.clone(),
                    timeouts: rule.timeouts,
                    retry: rule.retry.clone(),
                    hedging: rule.hedging.clone(),
                    backends,
                    cumulative,
                });
                let candidate = |match_index, condition: Condition| Candidate {
                    rule: compiled.clone(),
                    match_index,
                    key: condition.key(),
                    condition,
                    created: route.created,
                };
                let list = match route.kind {
                    RouteKind::Http => &mut http,
                    RouteKind::Grpc => &mut grpc,
                };
                if rule.matches.is_empty() {
                    // Gateway API defaults: `PathPrefix /` for HTTP, everything for gRPC.
                    list.push(candidate(
                        None,
                        match route.kind {
                            RouteKind::Http => Condition::http(&HttpRouteMatch::default()),
                            RouteKind::Grpc => Condition::Grpc(GrpcRouteMatch::default()),
                        },
                    ));
                }
                for (i, m) in rule.matches.iter().enumerate() {
                    // Validation keeps match kinds in line with the route's kind; a stray one
                    // is still routed by its own semantics.
                    let condition = match m {
                        RouteMatch::Http(m) => Condition::http(m),
                        RouteMatch::Grpc(m) => Condition::Grpc(m.clone()),
                    };
                    list.push(candidate(Some(i), condition));
                }
            }
        }
        http.sort_by(precedence);
        grpc.sort_by(precedence);
        Self {
            service: destination.service.clone(),
            attached: !destination.routes.is_empty(),
            http,
            grpc,
        }
    }

    /// The destination these routes belong to.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// Whether any route is attached.
    pub fn has_routes(&self) -> bool {
        self.attached
    }

    /// Routes a request. Allocation-free except as the module docs say.
    pub fn route(&self, request: &RequestSummary<'_>) -> RouteOutcome {
        if !self.attached {
            return RouteOutcome::NoRoutes;
        }
        let winner = self
            .candidates_for(request)
            .iter()
            .find(|c| c.condition.check(request).is_ok());
        match winner {
            Some(c) => RouteOutcome::Matched(Matched {
                rule: c.rule.clone(),
                match_index: c.match_index,
            }),
            None => RouteOutcome::NotFound,
        }
    }

    /// The candidates of the routes of `kind`, in precedence order.
    pub(crate) fn candidates_of(&self, kind: RouteKind) -> &[Candidate] {
        match kind {
            RouteKind::Http => &self.http,
            RouteKind::Grpc => &self.grpc,
        }
    }

    /// The candidates a request is matched against, in precedence order.
    pub(crate) fn candidates_for(&self, request: &RequestSummary<'_>) -> &[Candidate] {
        if request.is_grpc() && !self.grpc.is_empty() {
            &self.grpc
        } else {
            &self.http
        }
    }
}

/// Best first: the precedence key (largest first), then the route's age and name, then rule
/// and match order.
pub(crate) fn precedence(a: &Candidate, b: &Candidate) -> Ordering {
    b.key
        .cmp(&a.key)
        .then_with(|| route_order(a, b))
        .then_with(|| a.rule.rule_index.cmp(&b.rule.rule_index))
        .then_with(|| a.match_index.cmp(&b.match_index))
}

/// Oldest first (routes without a creation time last), then by name.
pub(crate) fn route_order(a: &Candidate, b: &Candidate) -> Ordering {
    age_order(a.created, b.created).then_with(|| a.rule.route_name.cmp(&b.rule.route_name))
}

pub(crate) fn age_order(a: Option<i64>, b: Option<i64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

// === impl CompiledRule ===

impl CompiledRule {
    /// The route's position in the destination's routes.
    pub fn route_index(&self) -> usize {
        self.route_index
    }

    /// The route's name.
    pub fn route_name(&self) -> &str {
        &self.route_name
    }

    /// HTTPRoute or GRPCRoute.
    pub fn route_kind(&self) -> RouteKind {
        self.route_kind
    }

    /// The rule's position in its route.
    pub fn rule_index(&self) -> usize {
        self.rule_index
    }

    /// The rule's name; empty when unnamed.
    pub fn rule_name(&self) -> &str {
        &self.rule_name
    }

    /// Filters to apply, in order.
    pub fn filters(&self) -> &[RouteFilter] {
        &self.filters
    }

    /// Request and per-try timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Retry policy, if any.
    pub fn retry(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// Hedging policy, if any (never with a retry policy).
    pub fn hedging(&self) -> Option<&HedgingPolicy> {
        self.hedging.as_ref()
    }

    /// The backends, in the rule's order.
    pub fn backends(&self) -> &[BackendTarget] {
        &self.backends
    }

    /// The sum of the backends' weights; 0 means nothing can be picked.
    pub fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// `route "name" rule 1 ("name")`, for messages.
    pub fn describe(&self) -> String {
        if self.rule_name.is_empty() {
            format!("route {:?} rule {}", self.route_name, self.rule_index)
        } else {
            format!(
                "route {:?} rule {} ({:?})",
                self.route_name, self.rule_index, self.rule_name
            )
        }
    }
}

// Mismatch is part of the candidate API used by explain.
impl Candidate {
    pub(crate) fn check(&self, request: &RequestSummary<'_>) -> Result<(), Mismatch> {
        self.condition.check(request)
    }
}

// Keys are compared per kind; the two kinds live in separate lists, so mixed comparisons
// never happen, but the order must still be total.
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Http(a), Key::Http(b)) => a.cmp(b),
            (Key::Grpc(a), Key::Grpc(b)) => a.cmp(b),
            (Key::Http(_), Key::Grpc(_)) => Ordering::Greater,
            (Key::Grpc(_), Key::Http(_)) => Ordering::Less,
        }
    }
}
