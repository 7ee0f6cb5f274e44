//! Why a request was routed where it was: which rule matched, by which match, and on which
//! precedence criterion it beat the next matching candidate; or why nothing matched. Also the
//! precedence order itself ([`CompiledRoutes::ranked`]) and each candidate a request was
//! checked against ([`CompiledRoutes::attempts`]), for operator tools.

use std::cmp::Ordering;
use std::fmt::{self, Write};
use std::sync::Arc;

use super::compile::{Candidate, CompiledRoutes, CompiledRule, RouteOutcome, age_order};
use super::matching::{Condition, Key, Mismatch};
use super::summary::RequestSummary;
use crate::snapshot::{PathMatch, RouteKind, ValueMatch};

/// The precedence criterion that decided between the winner and the next matching candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// No other candidate matched.
    OnlyMatch,
    /// Path match type: `Exact`, then `RegularExpression`, then `PathPrefix`.
    PathType,
    /// More characters in the matching path.
    PathLength,
    /// A method match.
    Method,
    /// More header matches.
    HeaderMatches,
    /// More query parameter matches.
    QueryParamMatches,
    /// More characters in the matching gRPC service.
    ServiceLength,
    /// More characters in the matching gRPC method.
    MethodLength,
    /// The older route.
    RouteAge,
    /// The route first in alphabetical order.
    RouteName,
    /// The earlier rule of the same route.
    RuleOrder,
    /// The earlier match of the same rule.
    MatchOrder,
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OnlyMatch => "no other match",
            Self::PathType => "path match type",
            Self::PathLength => "path length",
            Self::Method => "method match",
            Self::HeaderMatches => "number of header matches",
            Self::QueryParamMatches => "number of query parameter matches",
            Self::ServiceLength => "gRPC service length",
            Self::MethodLength => "gRPC method length",
            Self::RouteAge => "route age",
            Self::RouteName => "route name",
            Self::RuleOrder => "rule order",
            Self::MatchOrder => "match order",
        })
    }
}

/// A routing decision with its reasons; [`fmt::Display`] writes them for people.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// What [`CompiledRoutes::route`] returns for the same request.
    pub outcome: RouteOutcome,
    /// For a match: what made the winner win.
    pub criterion: Option<Criterion>,
    text: String,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One entry of a destination's precedence order: a rule, reached by one of its matches.
#[derive(Debug, Clone)]
pub struct RankedMatch {
    /// The rule.
    pub rule: Arc<CompiledRule>,
    /// The index of the match in the rule's `matches`; `None` for a rule without matches (its
    /// implicit match-all).
    pub match_index: Option<usize>,
    /// The match's conditions, for people (`path PathPrefix "/api", header x-canary Exact
    /// "true"`; `any request` when there are none).
    pub conditions: String,
}

/// One candidate as a request met it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The candidate.
    pub candidate: RankedMatch,
    /// `None` when the request matched it; otherwise the first of its conditions the request
    /// failed, for people (`header x-canary is missing or not Exact "true"`).
    pub failed: Option<String>,
}

impl CompiledRoutes {
    /// The matches of the routes of `kind`, in the order requests are checked against them
    /// (best first, as the module docs' precedence says). A request goes to the first one it
    /// matches.
    pub fn ranked(&self, kind: RouteKind) -> Vec<RankedMatch> {
        self.candidates_of(kind).iter().map(ranked).collect()
    }

    /// Every candidate `request` is checked against, in precedence order, up to and including
    /// the one it matched (all of them when it matched none), each with the condition it
    /// failed. The last one is what [`CompiledRoutes::route`] picks when its `failed` is
    /// `None`. Empty when no route of the request's kind is attached. Allocates freely.
    pub fn attempts(&self, request: &RequestSummary<'_>) -> Vec<Attempt> {
        let mut attempts = Vec::new();
        for c in self.candidates_for(request) {
            let failed = c.check(request).err().map(|why| mismatch(c, why, request));
            let done = failed.is_none();
            attempts.push(Attempt {
                candidate: ranked(c),
                failed,
            });
            if done {
                break;
            }
        }
        attempts
    }

    /// Routes `request` as [`CompiledRoutes::route`] does, and says why. Allocates freely: this
    /// is for people (debug endpoints, error messages, tests), not the request path.
    pub fn explain(&self, request: &RequestSummary<'_>) -> Explanation {
        let outcome = self.route(request);
        let request_line = match request.grpc() {
            Some(g) => format!("gRPC /{}/{}", g.service, g.method),
            None => format!("{} {}", request.method(), request.path()),
        };
        if !self.has_routes() {
            return Explanation {
                outcome,
                criterion: None,
                text: format!(
                    "no routes are attached to {}: {request_line} goes to the service's own endpoints",
                    self.service()
                ),
            };
        }
        let candidates = self.candidates_for(request);
        let mut matching = candidates.iter().filter(|c| c.check(request).is_ok());
        let Some(winner) = matching.next() else {
            let mut text = format!("no route of {} matched {request_line}", self.service());
            if candidates.is_empty() {
                text.push_str(": no route of this kind is attached");
            }
            for c in candidates {
                if let Err(why) = c.check(request) {
                    let _ = write!(
                        text,
                        "; {} {}: {}",
                        c.rule.describe(),
                        match_label(c),
                        mismatch(c, why, request)
                    );
                }
            }
            return Explanation {
                outcome,
                criterion: None,
                text,
            };
        };
        let mut text = format!(
            "{request_line} matched {} by {} ({})",
            winner.rule.describe(),
            match_label(winner),
            describe(&winner.condition),
        );
        let criterion = match matching.next() {
            None => {
                text.push_str("; no other match");
                Criterion::OnlyMatch
            }
            Some(next) => {
                let (criterion, detail) = decide(winner, next);
                let _ = write!(
                    text,
                    "; it outranks {} {} ({}) on {criterion}{detail}",
                    next.rule.describe(),
                    match_label(next),
                    describe(&next.condition),
                );
                criterion
            }
        };
        Explanation {
            outcome,
            criterion: Some(criterion),
            text,
        }
    }
}

fn ranked(c: &Candidate) -> RankedMatch {
    RankedMatch {
        rule: c.rule.clone(),
        match_index: c.match_index,
        conditions: describe(&c.condition),
    }
}

fn match_label(c: &Candidate) -> String {
    match c.match_index {
        Some(i) => format!("matches[{i}]"),
        None => "its implicit match-all".to_owned(),
    }
}

/// The first criterion on which `a` beats `b` (`a` is ahead in precedence order).
fn decide(a: &Candidate, b: &Candidate) -> (Criterion, String) {
    fn cmp<T: Ord + fmt::Display>(c: Criterion, x: T, y: T) -> Option<(Criterion, String)> {
        (x != y).then(|| (c, format!(" ({x} > {y})")))
    }
    let by_key = match (a.key, b.key) {
        (Key::Http(x), Key::Http(y)) => cmp(Criterion::PathType, x.path_type, y.path_type)
            .or_else(|| cmp(Criterion::PathLength, x.path_chars, y.path_chars))
            .or_else(|| cmp(Criterion::Method, x.method, y.method))
            .or_else(|| cmp(Criterion::HeaderMatches, x.headers, y.headers))
            .or_else(|| cmp(Criterion::QueryParamMatches, x.query_params, y.query_params)),
        (Key::Grpc(x), Key::Grpc(y)) => {
            cmp(Criterion::ServiceLength, x.service_chars, y.service_chars)
                .or_else(|| cmp(Criterion::MethodLength, x.method_chars, y.method_chars))
                .or_else(|| cmp(Criterion::HeaderMatches, x.headers, y.headers))
        }
        _ => None,
    };
    if let Some(found) = by_key {
        return found;
    }
    if age_order(a.created, b.created) != Ordering::Equal {
        let age = |t: Option<i64>| t.map_or("unknown".to_owned(), |t| t.to_string());
        return (
            Criterion::RouteAge,
            format!(" (created {} before {})", age(a.created), age(b.created)),
        );
    }
    if a.rule.route_name != b.rule.route_name {
        return (
            Criterion::RouteName,
            format!(" ({:?} < {:?})", a.rule.route_name, b.rule.route_name),
        );
    }
    if a.rule.rule_index != b.rule.rule_index {
        return (Criterion::RuleOrder, String::new());
    }
    (Criterion::MatchOrder, String::new())
}

fn value(v: &ValueMatch) -> String {
    format!("{} {:?}", v.type_name(), v.value())
}

/// The conditions of a match, for people.
fn describe(condition: &Condition) -> String {
    let mut parts = Vec::new();
    match condition {
        Condition::Http { spec, .. } => {
            parts.push(format!(
                "path {} {:?}",
                spec.path.type_name(),
                spec.path.value()
            ));
            if let Some(m) = &spec.method {
                parts.push(format!("method {m}"));
            }
            for q in &spec.query_params {
                parts.push(format!("query {} {}", q.name, value(&q.value)));
            }
        }
        Condition::Grpc(spec) => {
            if let Some(m) = &spec.method {
                if let Some(s) = &m.service {
                    parts.push(format!("service {}", value(s)));
                }
                if let Some(s) = &m.method {
                    parts.push(format!("method {}", value(s)));
                }
            }
        }
    }
    for h in condition.headers() {
        parts.push(format!("header {} {}", h.name, value(&h.value)));
    }
    if parts.is_empty() {
        "any request".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Why `c` did not match.
fn mismatch(c: &Candidate, why: Mismatch, request: &RequestSummary<'_>) -> String {
    match (why, &c.condition) {
        (Mismatch::Path, Condition::Http { spec, .. }) => {
            let how = match &spec.path {
                PathMatch::Exact(_) => "is not",
                PathMatch::Prefix(_) => "is not under",
                PathMatch::RegularExpression(_) => "does not match",
            };
            format!("path {:?} {how} {:?}", request.path(), spec.path.value())
        }
        (Mismatch::Method, Condition::Http { spec, .. }) => match &spec.method {
            Some(m) => format!("method {} is not {m}", request.method()),
            None => "method".to_owned(),
        },
        (Mismatch::QueryParam(i), Condition::Http { spec, .. }) => match spec.query_params.get(i) {
            Some(q) => format!(
                "query parameter {} is missing or not {}",
                q.name,
                value(&q.value)
            ),
            None => "query parameter".to_owned(),
        },
        (Mismatch::Header(i), condition) => match condition.headers().get(i) {
            Some(h) => format!("header {} is missing or not {}", h.name, value(&h.value)),
            None => "header".to_owned(),
        },
        (Mismatch::NotGrpc, _) => "not a gRPC request with a /service/method path".to_owned(),
        (Mismatch::GrpcService, Condition::Grpc(spec)) => {
            let wanted = spec.method.as_ref().and_then(|m| m.service.as_ref());
            format!(
                "service {:?} does not match {}",
                request.grpc().map_or("", |g| g.service),
                wanted.map_or(String::new(), value)
            )
        }
        (Mismatch::GrpcMethod, Condition::Grpc(spec)) => {
            let wanted = spec.method.as_ref().and_then(|m| m.method.as_ref());
            format!(
                "method {:?} does not match {}",
                request.grpc().map_or("", |g| g.method),
                wanted.map_or(String::new(), value)
            )
        }
        (other, _) => format!("{other:?}"),
    }
}
