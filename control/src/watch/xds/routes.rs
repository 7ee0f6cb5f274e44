//! A destination's GAMMA routes as an xDS RouteConfiguration (gRFC A28 matching, A31
//! timeouts, A44 retries), in the mesh's own precedence order, so a gRPC client picks the rule
//! a meshed Rust client would.
//!
//! What gRPC clients implement is translated; what they do not is left out of the route rather
//! than sent for the client to refuse, and listed in the crate docs:
//! - matches: path (Exact; PathPrefix as a whole-segment pattern, since an xDS prefix is a
//!   plain string prefix), gRPC service/method, headers (Exact, RegularExpression). A match
//!   that can never see a gRPC call (a method other than POST, a query parameter) is dropped.
//! - backends: weighted clusters; a weight of 0 sends nothing and is left out.
//! - timeouts: the request timeout as `max_stream_duration`; per-try timeouts have no gRPC
//!   equivalent (A44 has no per-try timeout).
//! - retries: the gRPC codes A44 allows (`cancelled`, `deadline-exceeded`, `internal`,
//!   `resource-exhausted`, `unavailable`), attempts and back-off; HTTP status codes are not
//!   retried by gRPC clients.
//! - not translated: header modifiers, mirrors, hedging, fault injection (the Rust mesh applies
//!   them; a gRPC client routes the call without them).

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    WeightedCluster, header_matcher, retry_policy, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::google::protobuf::{Duration as ProtoDuration, UInt32Value};
use http::Method;
use mesh_core::route::CompiledRoutes;
use mesh_core::snapshot::{
    Destination, DestinationKey, GrpcRouteMatch, HeaderMatch, HttpRouteMatch, PathMatch,
    RetryPolicy, RouteKind, RouteMatch as MeshMatch, RouteRule, ValueMatch,
};
use std::time::Duration;

use super::matchers::{escape, exact, regex, regex_matcher};
use super::names;

/// The back-off gRPC uses between retries when a rule names none (A44's default base).
const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// The gRPC status names A44 lets `retry_on` carry.
const RETRYABLE: [(tonic::Code, &str); 5] = [
    (tonic::Code::Cancelled, "cancelled"),
    (tonic::Code::DeadlineExceeded, "deadline-exceeded"),
    (tonic::Code::Internal, "internal"),
    (tonic::Code::ResourceExhausted, "resource-exhausted"),
    (tonic::Code::Unavailable, "unavailable"),
];

/// The route configuration of `destination` (named for `key`): one virtual host for every
/// authority, whose routes are the destination's rules in precedence order; with no routes
/// attached, every call goes to the destination's own endpoints.
pub(crate) fn route_configuration(
    key: &DestinationKey,
    destination: &Destination,
) -> RouteConfiguration {
    let routes = if destination.routes.is_empty() {
        vec![Route {
            name: "default".to_owned(),
            r#match: Some(prefix_match("")),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(names::cluster(
                    key,
                ))),
                ..Default::default()
            })),
            ..Default::default()
        }]
    } else {
        ranked_routes(destination)
    };
    RouteConfiguration {
        name: names::route_configuration(key),
        virtual_hosts: vec![VirtualHost {
            name: key.to_string(),
            domains: vec!["*".to_owned()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Every match of every rule, best first. gRPC calls are matched against the GRPCRoutes when
/// there are any, else the HTTPRoutes, as the Rust mesh does.
fn ranked_routes(destination: &Destination) -> Vec<Route> {
    let compiled = CompiledRoutes::new(destination);
    let mut ranked = compiled.ranked(RouteKind::Grpc);
    if ranked.is_empty() {
        ranked = compiled.ranked(RouteKind::Http);
    }
    ranked
        .iter()
        .filter_map(|candidate| {
            let rule = &candidate.rule;
            let mesh_rule = destination
                .routes
                .get(rule.route_index())
                .and_then(|r| r.rules.get(rule.rule_index()))?;
            let route_match = match candidate.match_index {
                None => Some(prefix_match("")),
                Some(i) => mesh_rule.matches.get(i).and_then(translate_match),
            }?;
            Some(Route {
                name: format!(
                    "{}.rules[{}].matches[{}]",
                    rule.route_name(),
                    rule.rule_index(),
                    candidate
                        .match_index
                        .map_or_else(|| "*".to_owned(), |i| i.to_string())
                ),
                r#match: Some(route_match),
                action: Some(route::Action::Route(action(mesh_rule))),
                ..Default::default()
            })
        })
        .collect()
}

/// Where a rule sends calls, with its timeout and retries.
fn action(rule: &RouteRule) -> RouteAction {
    let clusters: Vec<weighted_cluster::ClusterWeight> = rule
        .backend_refs
        .iter()
        .filter(|b| b.weight > 0)
        .map(|b| weighted_cluster::ClusterWeight {
            name: names::cluster(&DestinationKey {
                service: b.service.clone(),
                port: b.port,
            }),
            weight: Some(UInt32Value { value: b.weight }),
            ..Default::default()
        })
        .collect();
    let cluster_specifier = match clusters.as_slice() {
        [one] => route_action::ClusterSpecifier::Cluster(one.name.clone()),
        _ => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters,
            ..Default::default()
        }),
    };
    RouteAction {
        cluster_specifier: Some(cluster_specifier),
        max_stream_duration: rule
            .timeouts
            .request()
            .map(|d| route_action::MaxStreamDuration {
                max_stream_duration: Some(duration(d)),
                ..Default::default()
            }),
        retry_policy: rule.retry.as_ref().and_then(retry),
        ..Default::default()
    }
}

/// A44's retry policy, when the rule retries any gRPC code gRPC clients retry.
fn retry(policy: &RetryPolicy) -> Option<envoy_types::pb::envoy::config::route::v3::RetryPolicy> {
    let retry_on: Vec<&str> = RETRYABLE
        .iter()
        .filter(|(code, _)| policy.retries_grpc(*code))
        .map(|(_, name)| *name)
        .collect();
    if retry_on.is_empty() || policy.attempts == 0 {
        return None;
    }
    let base = policy.backoff.unwrap_or(DEFAULT_RETRY_BACKOFF);
    Some(envoy_types::pb::envoy::config::route::v3::RetryPolicy {
        retry_on: retry_on.join(","),
        num_retries: Some(UInt32Value {
            value: policy.attempts,
        }),
        retry_back_off: Some(retry_policy::RetryBackOff {
            base_interval: Some(duration(base)),
            max_interval: Some(duration(base * 10)),
        }),
        ..Default::default()
    })
}

/// A mesh match as xDS, or `None` when no gRPC call can match it.
fn translate_match(m: &MeshMatch) -> Option<RouteMatch> {
    match m {
        MeshMatch::Http(m) => http_match(m),
        MeshMatch::Grpc(m) => Some(grpc_match(m)),
    }
}

fn http_match(m: &HttpRouteMatch) -> Option<RouteMatch> {
    // gRPC calls are POSTs without a query string.
    if m.method
        .as_ref()
        .is_some_and(|method| method != Method::POST)
        || !m.query_params.is_empty()
    {
        return None;
    }
    let path_specifier = match &m.path {
        PathMatch::Exact(path) => route_match::PathSpecifier::Path(path.clone()),
        PathMatch::Prefix(prefix) => {
            let trimmed = prefix.trim_end_matches('/');
            if trimmed.is_empty() {
                route_match::PathSpecifier::Prefix(String::new())
            } else {
                // Gateway API prefixes match whole segments: `/v2` is `/v2` and `/v2/...`.
                route_match::PathSpecifier::SafeRegex(regex(&format!("{}(/.*)?", escape(trimmed))))
            }
        }
        PathMatch::RegularExpression(pattern) => {
            route_match::PathSpecifier::SafeRegex(regex(pattern.as_str()))
        }
    };
    Some(RouteMatch {
        path_specifier: Some(path_specifier),
        headers: headers(&m.headers),
        ..Default::default()
    })
}

fn grpc_match(m: &GrpcRouteMatch) -> RouteMatch {
    let path_specifier = match &m.method {
        None => route_match::PathSpecifier::Prefix(String::new()),
        Some(method) => match (&method.service, &method.method) {
            (Some(ValueMatch::Exact(service)), Some(ValueMatch::Exact(name))) => {
                route_match::PathSpecifier::Path(format!("/{service}/{name}"))
            }
            (Some(ValueMatch::Exact(service)), None) => {
                route_match::PathSpecifier::Prefix(format!("/{service}/"))
            }
            (service, name) => route_match::PathSpecifier::SafeRegex(regex(&format!(
                "/{}/{}",
                value_pattern(service.as_ref(), "[^/]+"),
                value_pattern(name.as_ref(), "[^/]+")
            ))),
        },
    };
    RouteMatch {
        path_specifier: Some(path_specifier),
        headers: headers(&m.headers),
        ..Default::default()
    }
}

/// A service or method condition as a regex fragment; `any` when there is none.
fn value_pattern(value: Option<&ValueMatch>, any: &str) -> String {
    match value {
        None => any.to_owned(),
        Some(ValueMatch::Exact(v)) => escape(v),
        Some(ValueMatch::RegularExpression(p)) => format!("(?:{})", p.as_str()),
    }
}

fn headers(matches: &[HeaderMatch]) -> Vec<HeaderMatcher> {
    matches
        .iter()
        .map(|h| HeaderMatcher {
            name: h.name.as_str().to_owned(),
            header_match_specifier: Some(match &h.value {
                ValueMatch::Exact(v) => header_matcher::HeaderMatchSpecifier::StringMatch(exact(v)),
                ValueMatch::RegularExpression(p) => {
                    header_matcher::HeaderMatchSpecifier::StringMatch(regex_matcher(p.as_str()))
                }
            }),
            ..Default::default()
        })
        .collect()
}

fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.to_owned())),
        ..Default::default()
    }
}

/// A protobuf duration.
pub(crate) fn duration(d: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Below one billion, so it fits.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_carry_only_codes_grpc_retries() {
        let policy = RetryPolicy {
            codes: vec![http::StatusCode::BAD_GATEWAY],
            grpc_codes: vec![tonic::Code::Unavailable, tonic::Code::NotFound],
            attempts: 2,
            backoff: None,
        };
        let translated = retry(&policy).unwrap();
        assert_eq!(translated.retry_on, "unavailable");
        assert_eq!(translated.num_retries.unwrap().value, 2);
        let http_only = RetryPolicy {
            grpc_codes: vec![tonic::Code::NotFound],
            ..policy
        };
        assert!(retry(&http_only).is_none());
    }
}
