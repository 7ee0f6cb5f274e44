//! Routing a call: where it goes and on what terms, decided at once from the routing state in
//! force and the request's head, as a value the retry stage consumes.
//!
//! ```text
//! RouterState + request head + start  ->  RouteDecision { rule, backend, mirror, timeouts }
//!                                          or the CallError the caller gets instead
//! ```
//!
//! Deciding does no I/O and never waits: it matches the request against the destination's
//! routes (Gateway API precedence), picks a backend by weight, applies the rule's request
//! header filters, samples its mirror, decides its injected faults, and works out the call's
//! deadline. Randomness comes in
//! as a function, so tests can decide with fixed draws.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use mesh_core::fault::FaultDecision;
use mesh_core::route::{BackendPick, CompiledRule, RequestSummary, RouteOutcome, mirror_sampled};
use mesh_core::snapshot::{RequestMirror, RouteFilter, ServiceName};

use super::backend::Backend;
use super::deadline::grpc_timeout;
use super::router::RouterState;
use crate::error::CallError;

/// What routing decided for one call.
pub(crate) struct RouteDecision<'s, B> {
    /// The rule that matched; `None` when the destination has no routes.
    pub(crate) rule: Option<Arc<CompiledRule>>,
    /// The backend the call goes to: the rule's pick by weight, or the destination's own.
    pub(crate) backend: &'s Arc<Backend<B>>,
    /// Where a copy of the request goes, when the rule mirrors it and this call was sampled.
    pub(crate) mirror: Option<&'s Arc<Backend<B>>>,
    /// What the rule's `FaultInjection` filter injects into this call (nothing when none).
    pub(crate) fault: FaultDecision,
    /// The call's timeout: the route's request timeout or the caller's `grpc-timeout`,
    /// whichever is sooner.
    pub(crate) timeout: Option<Duration>,
    /// The route's timeout for each try.
    pub(crate) per_try: Option<Duration>,
    /// When the call must be over: its start plus [`RouteDecision::timeout`].
    pub(crate) deadline: Option<Instant>,
}

impl<B> RouteDecision<'_, B> {
    /// The matched route's name, `""` without one (as metrics label it).
    pub(crate) fn route_name(&self) -> &str {
        self.rule.as_ref().map_or("", |r| r.route_name())
    }
}

/// Decides where `request` goes under `state`, for a call to `destination` that started at
/// `start`; or the mesh's error when it goes nowhere (unknown destination, no route, a
/// backend that does not exist or has no weight).
///
/// The rule's request header modifiers are applied to `request` here, before the caller's
/// `grpc-timeout` is read (a modifier may set it). `random` is a uniformly random `u32`: one
/// draw for the backend when the rule has backends, one per mirror filter, two for a fault
/// injection filter (its delay, then its abort).
pub(crate) fn route<'s, B, R>(
    state: &'s RouterState<B>,
    destination: &ServiceName,
    request: &mut Request<R>,
    grpc: bool,
    start: Instant,
    mut random: impl FnMut() -> u32,
) -> Result<RouteDecision<'s, B>, CallError> {
    if !state.destination.found {
        return Err(CallError::UnknownDestination(state.destination.key()));
    }

    // Which rule, which backend.
    let outcome = state
        .routes
        .route(&RequestSummary::from_request_with_grpc(request, grpc));
    let (rule, backend) = match outcome {
        RouteOutcome::NoRoutes => (None, &state.default),
        RouteOutcome::NotFound => {
            return Err(CallError::NoRoute {
                destination: destination.clone(),
                request: format!("{} {}", request.method(), request.uri().path()),
            });
        }
        RouteOutcome::Matched(matched) => {
            let rule = matched.rule;
            let backend = match rule.pick_backend(random()) {
                BackendPick::Resolved { backend, .. } => {
                    state.backend(&backend.service, backend.port)
                }
                BackendPick::Unresolved { backend, .. } => {
                    return Err(CallError::UnresolvedBackend {
                        destination: destination.clone(),
                        route: rule.describe(),
                        backend: backend.service.clone(),
                    });
                }
                BackendPick::NoBackend => None,
            };
            let Some(backend) = backend else {
                return Err(CallError::NoBackend {
                    destination: destination.clone(),
                    route: rule.describe(),
                });
            };
            (Some(rule), backend)
        }
    };

    // Filters. (The response's filter applies when the response is there: see
    // `Tries::respond`.) Of several sampled mirrors, the last one counts.
    let mut mirror: Option<&RequestMirror> = None;
    let mut fault = FaultDecision::default();
    if let Some(rule) = &rule {
        for filter in rule.filters() {
            match filter {
                RouteFilter::RequestHeaderModifier(modifier) => {
                    modifier.apply(request.headers_mut())
                }
                RouteFilter::ResponseHeaderModifier(_) => {}
                RouteFilter::RequestMirror(m) if mirror_sampled(m, random()) => mirror = Some(m),
                RouteFilter::RequestMirror(_) => {}
                RouteFilter::FaultInjection(f) => {
                    let delay_draw = random();
                    fault = f.decide(delay_draw, random());
                }
            }
        }
    }
    let mirror = mirror.and_then(|m| state.backend(&m.backend, m.port));

    // Deadline: the route's request timeout, or the caller's own, whichever is sooner.
    let route_timeout = rule.as_ref().and_then(|r| r.timeouts().request());
    let caller_timeout = if grpc {
        grpc_timeout(request.headers())
    } else {
        None
    };
    let timeout = match (route_timeout, caller_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let per_try = rule.as_ref().and_then(|r| r.timeouts().backend_request());
    Ok(RouteDecision {
        rule,
        backend,
        mirror,
        fault,
        timeout,
        per_try,
        // From the call's start (one clock read less per call).
        deadline: timeout.map(|t| start + t),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use bytes::Bytes;
    use http::{HeaderValue, header};
    use mesh_core::config::MeshConfig;
    use mesh_core::snapshot::Destination;
    use mesh_core::spiffe::TrustDomain;
    use serde_json::{Value, json};

    use super::super::deadline::GRPC_TIMEOUT;
    use super::*;

    type Body = http_body_util::Full<Bytes>;

    /// `echo` with `routes` (none when empty), and the `echo-v1`, `echo-v2` and
    /// `echo-shadow` services, as the control service would send `echo` to a client.
    pub(crate) fn destination(routes: Value) -> Destination {
        let endpoint = |n: u8| json!([{"address": format!("10.0.0.{n}:8080"), "identity": "spiffe://td/ns/default/sa/echo"}]);
        let config = json!({"services": [
            {"name": "echo", "endpoints": endpoint(1), "routes": routes},
            {"name": "echo-v1", "endpoints": endpoint(2)},
            {"name": "echo-v2", "endpoints": endpoint(3)},
            {"name": "echo-shadow", "endpoints": endpoint(4)},
        ]});
        let config: MeshConfig = serde_json::from_value(config).unwrap();
        let valid = config.validate(&TrustDomain::new("td").unwrap()).unwrap();
        valid.destination(&name("echo"))
    }

    pub(crate) fn name(service: &str) -> ServiceName {
        ServiceName::new("default", service).unwrap()
    }

    fn state(routes: Value) -> RouterState<Body> {
        RouterState::unconnected(&destination(routes))
    }

    fn request(method: &str, path: &str, headers: &[(&'static str, &'static str)]) -> Request<()> {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    fn grpc_request(path: &str, timeout: Option<&'static str>) -> Request<()> {
        let mut request = request("POST", path, &[]);
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        if let Some(timeout) = timeout {
            headers.insert(GRPC_TIMEOUT.clone(), HeaderValue::from_static(timeout));
        }
        request
    }

    /// Decides for `request` under `state` with the draws `random` gives, in order.
    fn decide<'s>(
        state: &'s RouterState<Body>,
        request: &mut Request<()>,
        start: Instant,
        draws: &[u32],
    ) -> Result<RouteDecision<'s, Body>, CallError> {
        let grpc = mesh_core::route::is_grpc(request.headers());
        let mut draws = draws.iter().copied();
        route(state, &name("echo"), request, grpc, start, || {
            draws.next().expect("no more random draws")
        })
    }

    /// `route -> backend` of a decision, or the error's text.
    fn summary(decision: Result<RouteDecision<'_, Body>, CallError>) -> String {
        match decision {
            Ok(d) => format!("{} -> {}", d.route_name(), d.backend.service.name),
            Err(error) => format!("error: {error}"),
        }
    }

    #[test]
    fn matches_pick_the_rule_and_its_backend() {
        let state = state(json!([{"name": "split", "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
             "backendRefs": [{"name": "echo-v2"}]},
            {"matches": [{"headers": [{"name": "x-version", "value": "two"}]}],
             "backendRefs": [{"name": "echo-v2"}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [{"name": "echo-v1"}]},
        ]}]));
        let start = Instant::now();
        let cases = [
            (request("GET", "/v2/x", &[]), "split -> echo-v2"),
            (
                request("GET", "/x", &[("x-version", "two")]),
                "split -> echo-v2",
            ),
            (request("GET", "/x", &[]), "split -> echo-v1"),
            (
                request("GET", "/", &[("x-version", "one")]),
                "split -> echo-v1",
            ),
        ];
        for (mut request, expected) in cases {
            let decided = summary(decide(&state, &mut request, start, &[0]));
            assert_eq!(
                decided,
                expected,
                "{} {:?}",
                request.uri(),
                request.headers()
            );
        }
    }

    #[test]
    fn without_routes_the_call_goes_to_the_destinations_own_endpoints() {
        let state = state(json!([]));
        let decision = decide(&state, &mut request("GET", "/x", &[]), Instant::now(), &[]).unwrap();
        assert!(decision.rule.is_none());
        assert!(Arc::ptr_eq(decision.backend, &state.default));
        assert_eq!(decision.route_name(), "");
        assert!(decision.mirror.is_none());
        assert_eq!(
            (decision.timeout, decision.per_try, decision.deadline),
            (None, None, None)
        );
    }

    #[test]
    fn a_request_that_goes_nowhere_gets_the_error_that_says_why() {
        let state = state(json!([{"name": "narrow", "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/a"}}],
             "backendRefs": [{"name": "echo-v1"}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/missing"}}],
             "backendRefs": [{"name": "echo-gone"}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/weightless"}}],
             "backendRefs": [{"name": "echo-v1", "weight": 0}]},
        ]}]));
        let start = Instant::now();
        let error = |path| decide(&state, &mut request("GET", path, &[]), start, &[0]).err();
        assert!(
            matches!(error("/b"), Some(CallError::NoRoute { request, .. }) if request == "GET /b")
        );
        assert!(matches!(
            error("/missing"),
            Some(CallError::UnresolvedBackend { backend, .. }) if backend == name("echo-gone")
        ));
        assert!(matches!(
            error("/weightless"),
            Some(CallError::NoBackend { .. })
        ));
        assert!(error("/a").is_none());

        // A destination the control service does not know: no routing at all.
        let unknown = RouterState::<Body>::unconnected(&Destination::not_found(
            mesh_core::snapshot::DestinationKey::service(name("nowhere")),
        ));
        let decided = decide(&unknown, &mut request("GET", "/", &[]), start, &[]);
        assert!(
            matches!(decided, Err(CallError::UnknownDestination(key)) if key.service == name("nowhere"))
        );
    }

    #[test]
    fn the_backend_is_picked_by_weight_from_the_draw() {
        // echo-v1 takes a quarter of the draws, echo-v2 the rest.
        let state = state(json!([{"name": "canary", "rules": [
            {"backendRefs": [{"name": "echo-v1", "weight": 1}, {"name": "echo-v2", "weight": 3}]},
        ]}]));
        let start = Instant::now();
        let pick = |draw: u32| {
            summary(decide(
                &state,
                &mut request("GET", "/", &[]),
                start,
                &[draw],
            ))
        };
        assert_eq!(pick(0), "canary -> echo-v1");
        assert_eq!(pick(u32::MAX / 4 - 1), "canary -> echo-v1");
        assert_eq!(pick(u32::MAX / 4 + 1), "canary -> echo-v2");
        assert_eq!(pick(u32::MAX), "canary -> echo-v2");
        let mut rng = fastrand::Rng::with_seed(11);
        let v1 = (0..4000)
            .filter(|_| pick(rng.u32(..)).ends_with("echo-v1"))
            .count();
        assert!((900..1100).contains(&v1), "{v1} of 4000");
    }

    #[test]
    fn the_deadline_is_the_sooner_of_the_routes_timeout_and_the_callers() {
        let unbounded = state(json!([]));
        let bounded = state(json!([{"name": "bounded", "rules": [
            {"backendRefs": [{"name": "echo-v1"}],
             "timeouts": {"request": "2s", "backendRequest": "300ms"}},
        ]}]));
        let start = Instant::now();
        let ms = Duration::from_millis;
        let cases = [
            // The caller's sooner.
            (
                &bounded,
                grpc_request("/a.B/C", Some("500m")),
                Some(ms(500)),
            ),
            // The route's sooner.
            (&bounded, grpc_request("/a.B/C", Some("5S")), Some(ms(2000))),
            // The route's alone.
            (&bounded, grpc_request("/a.B/C", None), Some(ms(2000))),
            // A grpc-timeout on a call that is not gRPC is not a deadline.
            (
                &bounded,
                request("GET", "/", &[("grpc-timeout", "500m")]),
                Some(ms(2000)),
            ),
            // The caller's alone.
            (
                &unbounded,
                grpc_request("/a.B/C", Some("250m")),
                Some(ms(250)),
            ),
            // An invalid one is ignored.
            (&unbounded, grpc_request("/a.B/C", Some("soon")), None),
        ];
        for (state, mut request, expected) in cases {
            let decision = decide(state, &mut request, start, &[0]).unwrap();
            assert_eq!(decision.timeout, expected, "{:?}", request.headers());
            assert_eq!(decision.deadline, expected.map(|t| start + t));
            let per_try = decision.rule.is_some().then(|| ms(300));
            assert_eq!(decision.per_try, per_try);
        }
    }

    #[test]
    fn request_filters_apply_and_the_mirror_is_sampled_from_the_draw() {
        let state = state(json!([{"name": "filtered", "rules": [
            {"backendRefs": [{"name": "echo-v1"}],
             "filters": [
                {"type": "RequestHeaderModifier",
                 "requestHeaderModifier": {"set": [{"name": "grpc-timeout", "value": "100m"}],
                                           "remove": ["x-internal"]}},
                {"type": "RequestMirror",
                 "requestMirror": {"backendRef": {"name": "echo-shadow"}, "percent": 25}},
             ]},
        ]}]));
        let start = Instant::now();
        let mut mirrored = grpc_request("/a.B/C", Some("5S"));
        mirrored
            .headers_mut()
            .insert("x-internal", HeaderValue::from_static("secret"));
        // First draw: the backend; second: the mirror's sample (under a quarter: mirrored).
        let decision = decide(&state, &mut mirrored, start, &[0, 0]).unwrap();
        assert_eq!(
            decision.mirror.map(|b| b.service.name.as_str()),
            Some("echo-shadow")
        );
        // The filter ran before the caller's deadline was read: it set the deadline.
        assert_eq!(decision.timeout, Some(Duration::from_millis(100)));
        assert!(mirrored.headers().get("x-internal").is_none());

        let decision = decide(
            &state,
            &mut grpc_request("/a.B/C", None),
            start,
            &[0, u32::MAX],
        );
        assert!(decision.unwrap().mirror.is_none());
    }

    #[test]
    fn a_fault_filter_decides_from_its_two_draws_after_the_backend() {
        let state = state(json!([{"name": "chaos", "rules": [
            {"backendRefs": [{"name": "echo-v1"}],
             "filters": [{"type": "FaultInjection",
                          "faultInjection": {"delay": {"fixedDelay": "1s", "percent": 50},
                                             "abort": {"httpStatus": 503, "percent": 50}}}]},
        ]}]));
        let start = Instant::now();
        let delay = Some(Duration::from_secs(1));
        let abort = Some(mesh_core::fault::AbortStatus::Http(
            http::StatusCode::SERVICE_UNAVAILABLE,
        ));
        // (backend, delay and abort draws; the decision)
        let cases = [
            ([0, 0, 0], FaultDecision { delay, abort }),
            ([0, 0, u32::MAX], FaultDecision { delay, abort: None }),
            ([0, u32::MAX, 0], FaultDecision { delay: None, abort }),
            ([0, u32::MAX, u32::MAX], FaultDecision::default()),
        ];
        for (draws, expected) in cases {
            let decision = decide(&state, &mut request("GET", "/", &[]), start, &draws).unwrap();
            assert_eq!(decision.fault, expected, "{draws:?}");
            assert_eq!(decision.backend.service.name, "echo-v1");
        }
        // Without the filter nothing is drawn for it and nothing is injected.
        let plain = super::tests::state(json!([]));
        let decision = decide(&plain, &mut request("GET", "/", &[]), start, &[]).unwrap();
        assert!(decision.fault.is_none());
    }
}
