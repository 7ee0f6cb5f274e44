//! Local rate limiting on the server side: each call is checked against the service's
//! rate-limit policies after its caller is known and before it is authorized.
//!
//! The decision is mesh-core's [`mesh_core::rate::InboundLimiter`], whose state lives with the
//! inbound policy (see `crate::discovery`) and survives snapshots that leave the policies
//! unchanged. A service with no rate limit pays a lock-free read of its inbound policy (as
//! authorization does) and one branch per call; one with limits reads the clock, takes a
//! lock-free GCRA step for a total limit, and a short lock for per-caller limits.
//!
//! A refused call is answered by the mesh in the form its caller reads, the same one the
//! mesh's client reads to spare an endpoint that sheds load:
//! - gRPC: RESOURCE_EXHAUSTED (Trailers-Only) with `grpc-retry-pushback-ms`;
//! - HTTP: 429 with `Retry-After` (whole seconds, at least 1) and the reason in `x-mesh-error`.
//!
//! Each refusal is counted on `mesh.server.rate_limited` by policy, limit and caller.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, StatusCode};
use mesh_core::rate::Limited;
use mesh_core::route::{CompiledRule, RequestSummary, RouteOutcome};

use super::telemetry::InboundTelemetry;
use crate::discovery::Inbound;
use crate::identity::PeerIdentity;

/// The gRPC trailer that tells a client how long to wait before calling again (gRFC A6).
pub const RETRY_PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// Checks `request` from `peer` against the rate limits of `authorizer`'s service: `Ok` to go
/// on, or the mesh's refusal.
pub(crate) fn check<B, R: Default>(
    inbound: &Inbound,
    telemetry: Option<&InboundTelemetry>,
    request: &Request<B>,
    peer: Option<&PeerIdentity>,
) -> Result<(), Response<R>> {
    let Some(limiter) = inbound.limiter.as_deref() else {
        return Ok(());
    };
    let rule = limiter
        .needs_route()
        .then(|| matched_rule(inbound, request))
        .flatten();
    let route = rule.as_deref().map(CompiledRule::route_name);
    let Err(limited) = limiter.check(route, peer.map(PeerIdentity::id), Instant::now()) else {
        return Ok(());
    };
    if let Some(telemetry) = telemetry {
        telemetry.limited(&limited, peer);
    }
    tracing::debug!(
        target: "mesh",
        peer = peer.map_or("unauthenticated".to_owned(), |p| p.to_string()),
        path = request.uri().path(),
        policy = &*limited.policy,
        limit = limited.kind.as_str(),
        "call rate limited"
    );
    Err(refusal(
        mesh_core::route::is_grpc(request.headers()),
        &limited,
    ))
}

/// The rule of the service's own routes that `request` matches, if any.
fn matched_rule<B>(inbound: &Inbound, request: &Request<B>) -> Option<Arc<CompiledRule>> {
    let routes = inbound.routes.as_ref()?;
    match routes.route(&RequestSummary::from_request(request)) {
        RouteOutcome::Matched(matched) => Some(matched.rule),
        RouteOutcome::NoRoutes | RouteOutcome::NotFound => None,
    }
}

/// The mesh's answer to a call over a rate limit.
fn refusal<R: Default>(grpc: bool, limited: &Limited) -> Response<R> {
    let mut response = crate::refusal::refusal(
        grpc,
        tonic::Code::ResourceExhausted,
        StatusCode::TOO_MANY_REQUESTS,
        &limited.to_string(),
    );
    let wait = limited.retry_after;
    let (name, value) = if grpc {
        let ms = wait.as_millis().max(1);
        (
            RETRY_PUSHBACK_HEADER,
            HeaderValue::from(u64::try_from(ms).unwrap_or(u64::MAX)),
        )
    } else {
        // Whole seconds, rounded up: a caller that waits that long is admitted.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        (
            http::header::RETRY_AFTER.as_str(),
            HeaderValue::from(secs.max(1)),
        )
    };
    response.headers_mut().insert(name, value);
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_core::rate::{LimitKind, RateLimit};

    use super::*;

    fn limited(wait: Duration) -> Limited {
        Limited {
            policy: Arc::from("p"),
            kind: LimitKind::Total,
            limit: RateLimit {
                requests_per_second: 10,
                burst: 10,
            },
            retry_after: wait,
        }
    }

    #[test]
    fn refusals_carry_what_the_mesh_client_reads() {
        let table = [
            // (gRPC, wait, status, header, value)
            (true, 1500, StatusCode::OK, RETRY_PUSHBACK_HEADER, "1500"),
            (
                false,
                1500,
                StatusCode::TOO_MANY_REQUESTS,
                "retry-after",
                "2",
            ),
            (false, 1, StatusCode::TOO_MANY_REQUESTS, "retry-after", "1"),
            (
                false,
                3000,
                StatusCode::TOO_MANY_REQUESTS,
                "retry-after",
                "3",
            ),
        ];
        for (grpc, ms, status, header, value) in table {
            let response: Response<()> = refusal(grpc, &limited(Duration::from_millis(ms)));
            assert_eq!(response.status(), status, "{grpc} {ms}");
            assert_eq!(response.headers()[header], value, "{grpc} {ms}");
            if grpc {
                assert_eq!(response.headers()["grpc-status"], "8");
            } else {
                assert!(
                    response.headers()[crate::MESH_ERROR_HEADER]
                        .to_str()
                        .unwrap()
                        .contains("rate limited by policy")
                );
            }
        }
    }
}
