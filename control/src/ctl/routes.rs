//! `meshctl routes`: the route table a caller of a destination gets, in the order the client
//! evaluates it, with each rule's backends, timeouts, retry policy and filters.
//!
//! The destination is what the control service sends the caller
//! ([`ValidConfig::destination_for`](mesh_core::config::ValidConfig::destination_for), as
//! namespace `--from-namespace` sees it), compiled by mesh-core's
//! [`CompiledRoutes`], whose [`CompiledRoutes::ranked`] order is the order requests are
//! checked in.

use std::time::Duration;

use mesh_core::route::{CompiledRoutes, CompiledRule, RankedMatch};
use mesh_core::snapshot::{
    Destination, DestinationKey, Endpoint, HeaderModifier, RouteFilter, RouteKind,
};
use serde::Serialize;

use super::error::CtlError;
use super::load::Valid;

/// A destination's compiled route table.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTable {
    /// `name.namespace[:port]`.
    pub destination: String,
    /// The caller namespace whose view this is; `None`: the service's own (producer) routes.
    pub from_namespace: Option<String>,
    /// The destination's own replicas: where calls go when no route is attached.
    pub endpoints: Vec<EndpointView>,
    /// The HTTPRoute matches, in precedence order (plain HTTP requests, and gRPC requests
    /// when no GRPCRoute is attached).
    pub http: Vec<RankedRule>,
    /// The GRPCRoute matches, in precedence order (gRPC requests).
    pub grpc: Vec<RankedRule>,
}

/// One entry of the precedence order: a rule reached by one of its matches.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RankedRule {
    /// 1-based position in the order.
    pub rank: usize,
    /// The match's index in the rule's `matches`; `None` for a rule without matches.
    pub match_index: Option<usize>,
    /// The match's conditions.
    pub conditions: String,
    /// The rule.
    pub rule: RuleView,
}

/// A rule with what applies to the requests it matches.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    /// The route's name.
    pub route: String,
    /// `http` or `grpc`.
    pub kind: &'static str,
    /// The rule's index in the route.
    pub index: usize,
    /// The rule's name, when it has one.
    pub name: Option<String>,
    /// Where matched requests go, by weight.
    pub backends: Vec<BackendView>,
    /// The whole request's timeout (`10s`; `0s` is disabled); `None`: none.
    pub request_timeout: Option<String>,
    /// Each try's timeout.
    pub backend_request_timeout: Option<String>,
    /// The retry policy; `None`: no retries.
    pub retry: Option<RetryView>,
    /// The hedging policy; `None`: no hedging.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hedging: Option<HedgingView>,
    /// Filters, in order, for people.
    pub filters: Vec<String>,
}

/// A weighted backend of a rule.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendView {
    /// `name.namespace[:port]`.
    pub service: String,
    /// Its weight.
    pub weight: u32,
    /// Its share of the rule's traffic, in percent.
    pub percent: f64,
    /// Whether the service exists; when not, its share fails.
    pub found: bool,
    /// How many replicas it has.
    pub endpoints: usize,
}

/// A retry policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryView {
    /// Retries after the first try.
    pub attempts: u32,
    /// Retried HTTP statuses.
    pub codes: Vec<u16>,
    /// Retried gRPC statuses.
    pub statuses: Vec<String>,
    /// Wait before each retry.
    pub backoff: Option<String>,
}

/// A replica.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    /// `ip:port`.
    pub address: String,
    /// Its SPIFFE ID.
    pub identity: String,
    /// Its weight.
    pub weight: u32,
}

/// The route table of `key` as a caller in `from_namespace` gets it.
pub fn table(
    valid: &Valid,
    key: &DestinationKey,
    from_namespace: Option<&str>,
) -> Result<RouteTable, CtlError> {
    let destination = valid.config.mesh.destination_for(key, from_namespace);
    if !destination.found {
        return Err(CtlError::UnknownDestination(key.clone()));
    }
    let compiled = CompiledRoutes::new(&destination);
    let ranked = |kind| -> Vec<RankedRule> {
        compiled
            .ranked(kind)
            .iter()
            .enumerate()
            .map(|(i, m)| ranked_rule(i + 1, m, &destination))
            .collect()
    };
    Ok(RouteTable {
        destination: key.to_string(),
        from_namespace: from_namespace.map(str::to_owned),
        endpoints: endpoints(&destination.endpoints),
        http: ranked(RouteKind::Http),
        grpc: ranked(RouteKind::Grpc),
    })
}

fn ranked_rule(rank: usize, m: &RankedMatch, destination: &Destination) -> RankedRule {
    RankedRule {
        rank,
        match_index: m.match_index,
        conditions: m.conditions.clone(),
        rule: RuleView::of(&m.rule, destination),
    }
}

/// Replicas, for output.
pub fn endpoints(endpoints: &[Endpoint]) -> Vec<EndpointView> {
    endpoints
        .iter()
        .map(|e| EndpointView {
            address: e.address.to_string(),
            identity: e.identity.to_string(),
            weight: e.weight,
        })
        .collect()
}

impl RuleView {
    /// A compiled rule of `destination`, for output.
    pub fn of(rule: &CompiledRule, destination: &Destination) -> Self {
        let total = rule.total_weight();
        let backends = rule
            .backends()
            .iter()
            .map(|target| {
                let b = &target.backend_ref;
                let key = DestinationKey {
                    service: b.service.clone(),
                    port: b.port,
                };
                let endpoints = destination
                    .backends
                    .iter()
                    .find(|d| d.service == b.service && d.port == b.port)
                    .map_or(0, |d| d.endpoints.len());
                // Precision does not matter: a share for people, rounded to 0.1 %.
                #[allow(clippy::cast_precision_loss)]
                let percent = if total == 0 {
                    0.0
                } else {
                    (f64::from(b.weight) * 1000.0 / total as f64).round() / 10.0
                };
                BackendView {
                    service: key.to_string(),
                    weight: b.weight,
                    percent,
                    found: target.found,
                    endpoints,
                }
            })
            .collect();
        let timeouts = rule.timeouts();
        Self {
            route: rule.route_name().to_owned(),
            kind: rule.route_kind().as_str(),
            index: rule.rule_index(),
            name: (!rule.rule_name().is_empty()).then(|| rule.rule_name().to_owned()),
            backends,
            request_timeout: timeouts.request.map(duration),
            backend_request_timeout: timeouts.backend_request.map(duration),
            retry: rule.retry().map(|r| RetryView {
                attempts: r.attempts,
                codes: r.codes.iter().map(|c| c.as_u16()).collect(),
                statuses: r.grpc_codes.iter().map(|c| grpc_status(*c)).collect(),
                backoff: r.backoff.map(duration),
            }),
            hedging: rule.hedging().map(|h| HedgingView {
                max_attempts: h.max_attempts,
                delay: h.delay.to_string(),
                non_fatal_codes: h.non_fatal_codes.iter().map(|c| c.as_u16()).collect(),
                non_fatal_statuses: h
                    .non_fatal_grpc_codes
                    .iter()
                    .map(|c| grpc_status(*c))
                    .collect(),
            }),
            filters: rule.filters().iter().map(filter).collect(),
        }
    }
}

/// A rule's hedging policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HedgingView {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// `p95` or a duration: when the next try goes.
    pub delay: String,
    /// HTTP statuses after which the next try goes at once.
    pub non_fatal_codes: Vec<u16>,
    /// gRPC statuses after which the next try goes at once.
    pub non_fatal_statuses: Vec<String>,
}

/// A Gateway API duration (`1m30s`).
fn duration(d: Duration) -> String {
    mesh_core::duration::format(d)
}

/// A gRPC status as the config spells it (`RESOURCE_EXHAUSTED`).
fn grpc_status(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

fn filter(filter: &RouteFilter) -> String {
    match filter {
        RouteFilter::RequestHeaderModifier(m) => format!("RequestHeaderModifier {}", edits(m)),
        RouteFilter::ResponseHeaderModifier(m) => format!("ResponseHeaderModifier {}", edits(m)),
        RouteFilter::RequestMirror(m) => {
            let key = DestinationKey {
                service: m.backend.clone(),
                port: m.port,
            };
            format!("RequestMirror to {key} ({}%)", m.percent)
        }
        RouteFilter::FaultInjection(f) => format!("FaultInjection {f}"),
    }
}

fn edits(m: &HeaderModifier) -> String {
    let value = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let mut parts = Vec::new();
    for (name, v) in &m.set {
        parts.push(format!("set {name}: {}", value(v)));
    }
    for (name, v) in &m.add {
        parts.push(format!("add {name}: {}", value(v)));
    }
    for name in &m.remove {
        parts.push(format!("remove {name}"));
    }
    parts.join(", ")
}
