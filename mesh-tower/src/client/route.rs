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
//! header filters, samples its mirror, and works out the call's deadline. Randomness comes in
//! as a function, so tests can decide with fixed draws.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
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
/// draw for the backend when the rule has backends, one per mirror filter.
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
    let outcome = state.routes.route(&RequestSummary::from_request(request));
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
    if let Some(rule) = &rule {
        for filter in rule.filters() {
            match filter {
                RouteFilter::RequestHeaderModifier(modifier) => {
                    modifier.apply(request.headers_mut())
                }
                RouteFilter::ResponseHeaderModifier(_) => {}
                RouteFilter::RequestMirror(m) if mirror_sampled(m, random()) => mirror = Some(m),
                RouteFilter::RequestMirror(_) => {}
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
        timeout,
        per_try,
        // From the call's start (one clock read less per call).
        deadline: timeout.map(|t| start + t),
    })
}

