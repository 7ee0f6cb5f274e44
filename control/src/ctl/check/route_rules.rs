//! Lints on route rules: rules no request can reach (shadowed), rules whose backends can take
//! no traffic (all weights 0, or none), and backends whose service has no endpoints.
//!
//! Precedence is mesh-core's: each route is compiled alone ([`CompiledRoutes::ranked`]) and a
//! rule is shadowed when each of its matches is covered by a match of another rule of the
//! same route that ranks ahead of it. "Covered" is decided conservatively, on the conditions
//! as written: a path prefix covers the paths under it, identical conditions cover each other,
//! a pattern covers an exact value it matches (checked with the route's own compiled pattern),
//! and a match with fewer conditions covers one with more. What cannot be proven is not
//! reported.

use mesh_core::config::{RouteSpec, ServiceSpec, ValidConfig};
use mesh_core::route::{CompiledRoutes, RankedMatch};
use mesh_core::snapshot::{
    Destination, DestinationKey, GrpcRouteMatch, HeaderMatch, HttpRouteMatch, PathMatch,
    QueryParamMatch, Route, RouteKind, RouteMatch, ServiceName, ValueMatch,
};

use crate::ctl::finding::Finding;
use crate::file::ControlFile;

/// Every route lint, in document order.
pub(super) fn lint(file: &ControlFile, config: &ValidConfig, out: &mut Vec<Finding>) {
    for (i, service) in file.services.iter().enumerate() {
        let Ok(name) = ServiceName::new(&service.namespace, &service.name) else {
            continue;
        };
        for (j, spec) in service.routes.iter().enumerate() {
            let path = format!("services[{i}].routes[{j}]");
            route(&path, service, &name, spec, config, out);
        }
    }
}

/// The lints of one route at `path`.
fn route(
    path: &str,
    service: &ServiceSpec,
    name: &ServiceName,
    spec: &RouteSpec,
    config: &ValidConfig,
    out: &mut Vec<Finding>,
) {
    let namespace = spec.namespace.as_deref().unwrap_or(&service.namespace);
    let consumer = (namespace != service.namespace).then_some(namespace);
    let key = DestinationKey {
        service: name.clone(),
        port: spec.port.and_then(|p| u16::try_from(p).ok()),
    };
    // The route as the control service sends it, to the callers it applies to.
    let destination = config.destination_for(&key, consumer);
    let Some(valid) = destination.routes.iter().find(|r| r.name == spec.name) else {
        return;
    };
    let alone = CompiledRoutes::new(&Destination {
        routes: vec![valid.clone()],
        ..destination.clone()
    });
    let ranked = alone.ranked(valid.kind);
    for (k, rule) in spec.rules.iter().enumerate() {
        let rule_path = format!("{path}.rules[{k}]");
        if let Some((by, match_index)) = shadowed_by(valid, &ranked, k) {
            let how = match match_index {
                Some(m) => format!("its matches[{m}]"),
                None => "its implicit match-all".to_owned(),
            };
            let earlier = if by < k { "earlier " } else { "" };
            out.push(Finding::warning(
                &rule_path,
                format!(
                    "shadowed: {earlier}rules[{by}] ({how}) ranks ahead and matches every request this rule matches, so it never applies"
                ),
            ));
        }
        if let Some(first) = ranked.iter().find(|m| m.rule.rule_index() == k)
            && first.rule.total_weight() == 0
        {
            let why = if rule.backend_refs.is_empty() {
                "has no backendRefs"
            } else {
                "has only backends of weight 0"
            };
            out.push(Finding::warning(
                &rule_path,
                format!("{why}: every request it matches fails (HTTP 500, gRPC UNAVAILABLE)"),
            ));
        }
        for (l, backend) in rule.backend_refs.iter().enumerate() {
            if backend.weight == Some(0) {
                continue;
            }
            let Ok(target) = ServiceName::new(
                backend.namespace.as_deref().unwrap_or(namespace),
                &backend.name,
            ) else {
                continue;
            };
            let port = backend.port.and_then(|p| u16::try_from(p).ok());
            let key = DestinationKey {
                service: target,
                port,
            };
            let resolved = config.destination_for(&key, None);
            let message = if !resolved.found {
                format!(
                    "backend {key} is not a service (or port) of the config: its share of traffic fails (HTTP 500, gRPC UNAVAILABLE)"
                )
            } else if resolved.endpoints.is_empty() {
                format!("backend {key} has no endpoints: its share of traffic fails")
            } else {
                continue;
            };
            out.push(Finding::warning(
                format!("{rule_path}.backendRefs[{l}]"),
                message,
            ));
        }
    }
}

/// The rule (and which of its matches) that shadows rule `k`: for each match of rule `k`, a
/// match of another rule ahead of it in `ranked` covers it.
fn shadowed_by(route: &Route, ranked: &[RankedMatch], k: usize) -> Option<(usize, Option<usize>)> {
    let mut by = None;
    for (position, candidate) in ranked.iter().enumerate() {
        if candidate.rule.rule_index() != k {
            continue;
        }
        let this = match_of(route, candidate)?;
        let cover = ranked[..position].iter().find(|ahead| {
            ahead.rule.rule_index() != k
                && match_of(route, ahead).is_some_and(|m| covers(&m, &this))
        })?;
        by.get_or_insert((cover.rule.rule_index(), cover.match_index));
    }
    by
}

/// The match a candidate stands for (a rule without matches: the kind's match-all).
fn match_of(route: &Route, candidate: &RankedMatch) -> Option<RouteMatch> {
    let rule = route.rules.get(candidate.rule.rule_index())?;
    match candidate.match_index {
        Some(i) => rule.matches.get(i).cloned(),
        None => Some(match route.kind {
            RouteKind::Http => RouteMatch::Http(HttpRouteMatch::default()),
            RouteKind::Grpc => RouteMatch::Grpc(GrpcRouteMatch::default()),
        }),
    }
}

/// Whether every request `b` matches is matched by `a`, as far as can be told from the
/// conditions themselves.
fn covers(a: &RouteMatch, b: &RouteMatch) -> bool {
    match (a, b) {
        (RouteMatch::Http(a), RouteMatch::Http(b)) => {
            path_covers(&a.path, &b.path)
                && a.method
                    .as_ref()
                    .is_none_or(|m| b.method.as_ref() == Some(m))
                && headers_cover(&a.headers, &b.headers)
                && queries_cover(&a.query_params, &b.query_params)
        }
        (RouteMatch::Grpc(a), RouteMatch::Grpc(b)) => {
            let method = match (&a.method, &b.method) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => {
                    optional_covers(a.service.as_ref(), b.service.as_ref())
                        && optional_covers(a.method.as_ref(), b.method.as_ref())
                }
            };
            method && headers_cover(&a.headers, &b.headers)
        }
        _ => false,
    }
}

/// Gateway API path semantics: a prefix matches whole segments, a trailing `/` ignored.
fn path_covers(a: &PathMatch, b: &PathMatch) -> bool {
    let under = |path: &str, prefix: &str| {
        let prefix = prefix.trim_end_matches('/');
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    match (a, b) {
        (PathMatch::Prefix(p), _) if p.trim_end_matches('/').is_empty() => true,
        (PathMatch::Prefix(p), PathMatch::Prefix(q)) => under(q.trim_end_matches('/'), p),
        (PathMatch::Prefix(p), PathMatch::Exact(e)) => under(e, p),
        (PathMatch::Exact(x), PathMatch::Exact(y)) => x == y,
        (PathMatch::RegularExpression(p), PathMatch::Exact(e)) => p.is_match(e),
        (PathMatch::RegularExpression(p), PathMatch::RegularExpression(q)) => p == q,
        _ => false,
    }
}

/// A condition on a value, absent (any value) or one that covers `b`'s.
fn optional_covers(a: Option<&ValueMatch>, b: Option<&ValueMatch>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => value_covers(a, b),
    }
}

fn value_covers(a: &ValueMatch, b: &ValueMatch) -> bool {
    match (a, b) {
        (ValueMatch::RegularExpression(p), ValueMatch::Exact(v)) => p.is_match(v),
        _ => a == b,
    }
}

/// Every header condition of `a` is implied by one of `b`'s.
fn headers_cover(a: &[HeaderMatch], b: &[HeaderMatch]) -> bool {
    a.iter().all(|h| {
        b.iter()
            .any(|g| g.name == h.name && value_covers(&h.value, &g.value))
    })
}

/// Every query parameter condition of `a` is implied by one of `b`'s.
fn queries_cover(a: &[QueryParamMatch], b: &[QueryParamMatch]) -> bool {
    a.iter().all(|q| {
        b.iter()
            .any(|r| r.name == q.name && value_covers(&q.value, &r.value))
    })
}
