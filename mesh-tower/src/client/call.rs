//! One call through the client stack: its span and measurement, routing it at once, the
//! mirror's copy, then its tries within the call's deadline.
//!
//! ```text
//! call  ->  route (a RouteDecision, or the mesh's refusal)  ->  mirror (a copy, not awaited)
//!       ->  within the call's timeout: injected delay, then injected abort or Tries::run
//!           (or hedge::run)
//!       ->  respond (response filter, or failure)
//! ```
//!
//! Injected faults (see [`mesh_core::fault`]) come before the tries and inside the call's
//! timeout: a delay longer than the time left ends as the timeout; an abort is the mesh's own
//! answer, never retried and never held against an endpoint, since no try was made.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use futures_util::FutureExt as _;
use futures_util::future::{Either, ready};
use http::{Request, Response};
use mesh_core::fault::FaultDecision;
use tracing::Instrument;

use super::backend::{Backend, SendError};
use super::body::{MeshBody, Replay, ResponseBody};
use super::deadline::within;
use super::hedge;
use super::respond::failure;
use super::retry::{Head, Tries};
use super::route::route;
use super::shared::Shared;
use crate::connect::set_origin;
use crate::error::{BoxError, CallError};
use crate::explain;
use crate::inbound_deadline::{self, NoInheritedDeadline};
use crate::telemetry::{
    CallKind, CallRecord, Direction, OutboundMetrics, client_span, http_method_index,
    inject_context,
};

/// Makes one call; a failure of the mesh's own becomes the response a caller expects
/// (see [`super::respond`]), so the result is an error only for what no status can express.
///
/// The call has a span (its trace context goes out in the request's headers) and is measured
/// by route and backend until its response body ends.
///
/// The call is routed at once, when the service is called; the future only sends and waits.
/// It is built from combinators and plain `async` blocks around what must live across a wait,
/// not nested `async fn`s: each of those kept its own copy of its arguments and of the future
/// it awaited, and a call's (boxed) state was 4.4 KB, copied from frame to frame as it grew;
/// it touched that much memory per call in flight. For the same reason a future is built in
/// place as the argument of what awaits it, never bound to a local and moved in, and the rare
/// branches (an injected delay, hedging, waiting for a ready endpoint) are boxed where they
/// start: the boxed state of a call is about 2 KB (it was 11.5 KB before both).
pub(crate) fn call<B>(
    shared: Arc<Shared<B>>,
    mut request: Request<B>,
) -> impl Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let start = Instant::now();
    let grpc = mesh_core::route::is_grpc(request.headers());
    let span = client_span(&request, &shared.destination, grpc);
    // What the call's labels need of the request, which routing takes: its gRPC method's path
    // (a `Bytes` clone, a reference count) or its HTTP method's index.
    let grpc_path = if grpc {
        request.uri().path_and_query().cloned()
    } else {
        None
    };
    let http_method = http_method_index(request.method());
    // A span no subscriber wants is not entered at every poll, nor injected.
    let traced = !span.is_disabled();
    if traced {
        inject_context(&span, request.headers_mut());
    }
    let routed = {
        // Routing's own events belong to the call's span, as the waiting's do.
        let _entered = traced.then(|| span.enter());
        routed(shared, request, grpc, &span, start)
    };
    let instrumented = traced.then(|| span.clone());
    let observed = routed.map(move |(result, metrics)| {
        let mut response = result?;
        let table = metrics.durations.clone();
        let kind = if grpc {
            CallKind::Grpc(table.method_row(grpc_path.as_ref().map_or("", |p| p.path())))
        } else {
            CallKind::Http(http_method)
        };
        let mut record = CallRecord::new(table, Direction::Outbound, kind, start, span);
        record.on_response(&response);
        response.body_mut().observe(record);
        Ok(response)
    });
    match instrumented {
        Some(span) => Either::Left(observed.instrument(span)),
        None => Either::Right(observed),
    }
}

/// What a routed call resolves to: its response, and the metrics of the route and backend it
/// took.
type RoutedOutput = (
    Result<Response<ResponseBody>, BoxError>,
    Arc<OutboundMetrics>,
);

/// Routes the call now (see [`super::route`]) and returns the future that makes its tries (or
/// the answer routing already has: an unknown destination, no route, no backend).
fn routed<B>(
    shared: Arc<Shared<B>>,
    mut request: Request<B>,
    grpc: bool,
    span: &tracing::Span,
    start: Instant,
) -> impl Future<Output = RoutedOutput> + Send + use<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let state = shared.router.load_full_state();
    // The deadline of the request this call is made for, when its handler makes it.
    // (The thread-local first: most calls have none, and then the extensions are not looked up.)
    let inherited = inbound_deadline::current()
        .filter(|_| request.extensions().get::<NoInheritedDeadline>().is_none());
    let mut decision = match route(
        &state,
        &shared.destination,
        &mut request,
        grpc,
        start,
        || fastrand::u32(..),
    ) {
        Ok(decision) => decision,
        Err(error) => {
            return Either::Left(ready((Ok(failure(&error, grpc)), state.metrics.unrouted())));
        }
    };
    if let Some(inherited) = inherited {
        // The sooner of the call's own deadline and the inherited one, less what is spent.
        let remaining = inherited.saturating_duration_since(start);
        if decision.timeout.is_none_or(|own| remaining < own) {
            decision.timeout = Some(remaining);
            decision.deadline = Some(start + remaining);
        }
    }
    let metrics = state
        .metrics
        .get(decision.route_name(), &decision.backend.service);
    if let Some(rule) = &decision.rule {
        // A span event (with `RUST_LOG=mesh=debug`): the same facts as `explain`.
        tracing::debug!(
            target: "mesh",
            route = rule.route_name(),
            rule = rule.rule_index(),
            backend = %decision.backend.service,
            "routed"
        );
    }
    if !span.is_disabled() {
        span.record("mesh.route", decision.route_name());
        span.record(
            "mesh.backend",
            tracing::field::display(&decision.backend.service),
        );
    }

    // A body complete at once (and small) is kept, whether or not a retry or a mirror needs
    // it: a request refused unprocessed is resent with it even without a retry policy.
    let (parts, body) = request.into_parts();
    let body = MeshBody::buffer(body);
    let replay = body.replay().cloned();
    // A body still streaming is cut (fails, so the server reads a reset) if the call ends
    // without an answer: see `super::cut`.
    let mut cut = body.cut_guard();
    let keep_head = replay.is_some();
    let head = keep_head.then(|| Head {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
    });

    if let (Some(target), Some(head), Some(replay)) = (decision.mirror, &head, &replay) {
        send_mirror(&shared, target.clone(), head, replay.rewind());
    }

    let explain = explain::wanted(&parts.headers);
    let first = Request::from_parts(parts, body);
    let timeout = decision.timeout;
    let fault = decision.fault;
    let tries = Tries {
        shared,
        backend: decision.backend.clone(),
        metrics,
        rule: decision.rule,
        head,
        replay,
        per_try: decision.per_try,
        deadline: decision.deadline,
        grpc,
        start,
        explain,
        sent: AtomicU32::new(0),
    };
    // What lives across the wait: the tries, the first request, and the try's own future.
    // Boxed here, once: the wrappers around it (the call's measurement, its span, the
    // client's own box) then move a pointer rather than the whole state, which they copied
    // about ten times a call (over 1,000 instructions of memcpy at 64 in flight, more than the
    // allocation costs; measured with `profile_call instructions`).
    let whole = async move {
        // Built in place as `within`'s argument: a future bound to a local first and then
        // moved in is laid out twice in this state machine.
        let result = within(timeout, attempt(&tries, &fault, first)).await;
        if let (Ok(Ok(_)), Some(cut)) = (&result, &mut cut) {
            cut.disarm();
        }
        drop(cut);
        let result = match result {
            Ok(result) => result,
            Err(after) => {
                tries.metrics.request_timeouts.increment(1);
                Err(CallError::Timeout {
                    destination: tries.shared.destination.clone(),
                    after,
                })
            }
        };
        let mut response = tries.respond(result);
        if tries.explain && !fault.is_none() {
            explain::set(
                response.headers_mut(),
                explain::FAULT_HEADER,
                &fault_explained(&fault),
            );
        }
        (Ok(response), tries.metrics)
    };
    Either::Right(Box::pin(whole))
}

/// The call's tries after its injected faults: a delay first, then an abort or the tries (or
/// their hedged form).
///
/// Plain functions choosing among futures rather than one `async fn`: that kept the request in
/// its own state beside the tries' future holding it.
fn attempt<'a, B>(
    tries: &'a Tries<B>,
    fault: &FaultDecision,
    first: Request<MeshBody<B>>,
) -> impl Future<Output = Result<Response<ResponseBody>, CallError>> + Send + 'a
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let abort = fault.abort;
    match fault.delay {
        None => Either::Left(after_delay(tries, abort, first)),
        // Boxed: a delay is injected in few calls, and its timer would size every call's state.
        Some(delay) => Either::Right(Box::pin(async move {
            tries.metrics.fault_delays.increment(1);
            tokio::time::sleep(delay).await;
            after_delay(tries, abort, first).await
        })),
    }
}

/// [`attempt`] once its injected delay is over: the injected abort, or the tries.
fn after_delay<B>(
    tries: &Tries<B>,
    abort: Option<mesh_core::fault::AbortStatus>,
    first: Request<MeshBody<B>>,
) -> impl Future<Output = Result<Response<ResponseBody>, CallError>> + Send + '_
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(status) = abort {
        tries.metrics.fault_aborts.increment(1);
        return Either::Left(ready(Err(CallError::FaultAbort {
            destination: tries.shared.destination.clone(),
            route: tries
                .rule
                .as_ref()
                .map_or_else(String::new, |r| r.describe()),
            status,
        })));
    }
    Either::Right(
        match hedge::policy_in_force(tries.rule.as_deref(), tries.replay.is_some()) {
            // Boxed: hedging's state (several tries at once) is larger than a call's without
            // it, and every call's state would otherwise be sized for it.
            Some(policy) => Either::Left(Box::pin(hedge::run(tries, policy, first))),
            None => Either::Right(tries.run(first)),
        },
    )
}

/// `delay 100ms`, `abort HTTP 503`, or both, for [`explain::FAULT_HEADER`].
fn fault_explained(fault: &FaultDecision) -> String {
    let delay = fault
        .delay
        .map(|d| format!("delay {}", mesh_core::duration::format(d)));
    let abort = fault.abort.map(|a| format!("abort {a}"));
    delay
        .into_iter()
        .chain(abort)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sends a copy of the request to the mirror backend and forgets it.
fn send_mirror<B>(shared: &Shared<B>, target: Arc<Backend<MeshBody<B>>>, head: &Head, body: Replay)
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut request = head.request(MeshBody::Replay(body));
    set_origin(&mut request, &shared.authority);
    let ready_timeout = shared.ready_timeout;
    tokio::spawn(async move {
        if let Err(SendError::Endpoint(_, error) | SendError::Unsent(_, error, _)) =
            target.send(request, &[], ready_timeout, None).await
        {
            tracing::debug!(backend = %target.service, %error, "mirrored request failed");
        }
    });
}
