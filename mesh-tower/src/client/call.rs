//! One call through the client stack: route, filters, deadline, budgeted retries, balancing.
//!
//! ```text
//! route (match -> rule -> weighted backend)  ->  filters (headers, mirror)
//!   -> deadline (route timeout, caller's grpc-timeout)  ->  tries (per-try timeout,
//!      retry with budget and backoff, another endpoint each time)  ->  backend (P2C)
//! ```
//!
//! A request the endpoint refused without processing it (a draining server's GOAWAY, a
//! REFUSED_STREAM, a connection that closed before the request was written) is sent again to
//! another endpoint at once, with or without a retry policy, as gRPC clients and Linkerd do:
//! it never reached the application, so even a non-idempotent call is safe to resend.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::{Either, ready};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use mesh_core::budget::RetryBudget;
use mesh_core::route::{BackendPick, CompiledRule, RequestSummary, RouteOutcome, mirror_sampled};
use mesh_core::snapshot::{RequestMirror, RetryPolicy, RouteFilter, ServiceName};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::backend::{Backend, SendError, Sent};
use super::body::{MeshBody, Replay, ResponseBody};
use super::deadline::{grpc_timeout, set_grpc_timeout};
use super::endpoint::EndpointKey;
use super::respond::{failure, grpc_status, is_server_failure};
use super::router::Router;
use crate::connect::set_origin;
use crate::error::{BoxError, CallError, refused_unprocessed};
use crate::telemetry::{CallRecord, OutboundMetrics, client_span, inject_context};

/// How many times one call may be resent after a refusal (see the module docs): once covers a
/// draining replica, twice one more draining at the same time; a bound, so that a backend
/// whose every endpoint is going away ends the call rather than loop.
const MAX_RESENDS: u32 = 2;

/// What every call of one [`super::MeshClient`] shares.
pub(crate) struct Shared<B> {
    pub(crate) destination: ServiceName,
    pub(crate) authority: Authority,
    pub(crate) router: Arc<Router<MeshBody<B>>>,
    pub(crate) budget: Mutex<RetryBudget>,
    pub(crate) ready_timeout: Duration,
    pub(crate) follower: AbortHandle,
}

impl<B> Drop for Shared<B> {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// The request's head, kept to build retries from.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    fn request<B>(&self, body: MeshBody<B>) -> Request<MeshBody<B>> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

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
/// it touched that much memory per call in flight.
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
        let mut record = CallRecord::new(metrics.durations.clone(), start, grpc, span);
        record.on_response(&response);
        response.body_mut().observe(record);
        Ok(response)
    });
    match instrumented {
        Some(span) => Either::Left(observed.instrument(span)),
        None => Either::Right(observed),
    }
}

/// `future`, bounded by `limit` when there is one; `Err(limit)` when it ran out.
///
/// One future either way, for one await point: a `match` with an await in each arm would make
/// the caller's state machine hold `future`'s state twice (a call's state was over 10 KB).
fn within<F: Future>(
    limit: Option<Duration>,
    future: F,
) -> impl Future<Output = Result<F::Output, Duration>> {
    match limit {
        Some(limit) => {
            Either::Left(tokio::time::timeout(limit, future).map(move |r| r.map_err(|_| limit)))
        }
        None => Either::Right(future.map(Ok)),
    }
}

/// What a routed call resolves to: its response, and the metrics of the route and backend it
/// took.
type RoutedOutput = (
    Result<Response<ResponseBody>, BoxError>,
    Arc<OutboundMetrics>,
);

/// Routes the call now (route, backend, filters, deadline) and returns the future that sends it
/// (or the answer routing already has: an unknown destination, no route, no backend).
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
    if !state.destination.found {
        let error = CallError::UnknownDestination(state.destination.key());
        return Either::Left(ready((Ok(failure(&error, grpc)), state.metrics.unrouted())));
    }

    // Route: which rule, which backend.
    let outcome = state.routes.route(&RequestSummary::from_request(&request));
    let (rule, backend): (Option<Arc<CompiledRule>>, Arc<Backend<MeshBody<B>>>) = match outcome {
        RouteOutcome::NoRoutes => (None, state.default.clone()),
        RouteOutcome::NotFound => {
            let error = CallError::NoRoute {
                destination: shared.destination.clone(),
                request: format!("{} {}", request.method(), request.uri().path()),
            };
            return Either::Left(ready((Ok(failure(&error, grpc)), state.metrics.unrouted())));
        }
        RouteOutcome::Matched(matched) => {
            let rule = matched.rule;
            let backend = match rule.pick_backend(fastrand::u32(..)) {
                BackendPick::Resolved { backend, .. } => {
                    state.backend(&backend.service, backend.port)
                }
                BackendPick::Unresolved { backend, .. } => {
                    let error = CallError::UnresolvedBackend {
                        destination: shared.destination.clone(),
                        route: rule.describe(),
                        backend: backend.service.clone(),
                    };
                    return Either::Left(ready((
                        Ok(failure(&error, grpc)),
                        state.metrics.unrouted(),
                    )));
                }
                BackendPick::NoBackend => None,
            };
            let Some(backend) = backend.cloned() else {
                let error = CallError::NoBackend {
                    destination: shared.destination.clone(),
                    route: rule.describe(),
                };
                return Either::Left(ready((Ok(failure(&error, grpc)), state.metrics.unrouted())));
            };
            (Some(rule), backend)
        }
    };
    let route_name = rule.as_ref().map_or("", |r| r.route_name());
    let metrics = state.metrics.get(route_name, &backend.service);
    if !span.is_disabled() {
        span.record("mesh.route", route_name);
        span.record("mesh.backend", tracing::field::display(&backend.service));
    }

    // Filters.
    // (The response's filter applies when the response is there: see `Tries::respond`.)
    let mut mirror: Option<&RequestMirror> = None;
    if let Some(rule) = &rule {
        for filter in rule.filters() {
            match filter {
                RouteFilter::RequestHeaderModifier(modifier) => {
                    modifier.apply(request.headers_mut())
                }
                RouteFilter::ResponseHeaderModifier(_) => {}
                RouteFilter::RequestMirror(m) if mirror_sampled(m, fastrand::u32(..)) => {
                    mirror = Some(m)
                }
                RouteFilter::RequestMirror(_) => {}
            }
        }
    }

    // A body complete at once (and small) is kept, whether or not a retry or a mirror needs
    // it: a request refused unprocessed is resent with it even without a retry policy.
    let (parts, body) = request.into_parts();
    let body = MeshBody::buffer(body);
    let replay = body.replay().cloned();
    let keep_head = replay.is_some();
    let head = keep_head.then(|| Head {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
    });

    if let (Some(mirror), Some(head), Some(replay)) = (mirror, &head, &replay)
        && let Some(target) = state.backend(&mirror.backend, mirror.port)
    {
        send_mirror(&shared, target.clone(), head, replay.rewind());
    }

    // Deadline: the route's request timeout, or the caller's own, whichever is sooner.
    let route_timeout = rule.as_ref().and_then(|r| r.timeouts().request());
    let caller_timeout = if grpc {
        grpc_timeout(&parts.headers)
    } else {
        None
    };
    let timeout = match (route_timeout, caller_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let per_try = rule.as_ref().and_then(|r| r.timeouts().backend_request());
    // From the call's start (one clock read less per call).
    let deadline = timeout.map(|t| start + t);

    let first = Request::from_parts(parts, body);
    let tries = Tries {
        shared,
        backend,
        metrics,
        rule,
        head,
        replay,
        per_try,
        deadline,
        grpc,
        start,
    };
    // What lives across the wait: the tries, the first request, and the try's own future.
    Either::Right(async move {
        let result = match within(timeout, tries.run(first)).await {
            Ok(result) => result,
            Err(after) => {
                tries.metrics.request_timeouts.increment(1);
                Err(CallError::Timeout {
                    destination: tries.shared.destination.clone(),
                    after,
                })
            }
        };
        let response = tries.respond(result);
        (Ok(response), tries.metrics)
    })
}

/// The tries of one call, and what they need.
struct Tries<B> {
    shared: Arc<Shared<B>>,
    backend: Arc<Backend<MeshBody<B>>>,
    metrics: Arc<OutboundMetrics>,
    /// The route's rule, if a route matched: its retry policy and response filter.
    rule: Option<Arc<CompiledRule>>,
    head: Option<Head>,
    replay: Option<Replay>,
    per_try: Option<Duration>,
    deadline: Option<Instant>,
    grpc: bool,
    /// When the call started: the retry budget's deposit is dated by it.
    start: Instant,
}

impl<B> Tries<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// The retry policy, only when the body can be replayed.
    fn retry(&self) -> Option<&RetryPolicy> {
        self.replay.as_ref()?;
        self.rule.as_ref()?.retry().filter(|p| p.attempts > 0)
    }

    /// Sends the request, resends and retries it as the outcomes allow.
    ///
    /// A plain function around an `async` block: an `async fn` would keep both its argument
    /// and its own copy of it (`attempt`) in its state.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its argument twice in its state"
    )]
    fn run(
        &self,
        mut attempt: Request<MeshBody<B>>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, CallError>> + Send + '_ {
        async move {
            let retry = self.retry();
            if retry.is_some() {
                lock(&self.shared.budget).deposit(self.start);
            }
            let mut retries_left = retry.map_or(0, |p| p.attempts);
            let mut resends_left = MAX_RESENDS;
            let mut avoid: Option<EndpointKey> = None;
            loop {
                set_origin(&mut attempt, &self.shared.authority);
                if self.grpc
                    && let Some(deadline) = self.deadline
                {
                    // Pass the caller's deadline on, less what has been spent.
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    set_grpc_timeout(attempt.headers_mut(), remaining);
                }
                let sent = self
                    .backend
                    .send(attempt, avoid.as_ref(), self.shared.ready_timeout);
                let outcome = match within(self.per_try, sent).await {
                    Ok(outcome) => Outcome::Sent(outcome),
                    Err(limit) => {
                        self.metrics.try_timeouts.increment(1);
                        Outcome::TryTimedOut(limit)
                    }
                };
                let (verdict, retry_from) = self.judge(outcome);
                let result = match verdict {
                    Verdict::Done(result) => return result,
                    Verdict::Refused {
                        error,
                        unsent,
                        retryable,
                    } => {
                        // The request itself when hyper gave it back, else a copy of it.
                        match (resends_left, unsent.or_else(|| self.again())) {
                            (1.., Some(request)) => {
                                if resends_left == MAX_RESENDS {
                                    self.count_resend();
                                }
                                resends_left -= 1;
                                tracing::debug!(
                                    destination = %self.shared.destination,
                                    %error,
                                    "request refused unprocessed; sending it again"
                                );
                                attempt = request;
                                avoid = retry_from;
                                continue;
                            }
                            // Not resendable: the retry policy may still retry a broken connection.
                            _ if retryable => Err(error),
                            _ => return Err(error),
                        }
                    }
                    Verdict::Retryable(result) => result,
                };
                if retries_left == 0 || !self.withdraw() {
                    return result;
                }
                // A retry policy is in force only with a replayable body (see `Tries::retry`).
                let Some(request) = self.again() else {
                    return result;
                };
                retries_left -= 1;
                self.metrics.retries.increment(1);
                attempt = request;
                avoid = retry_from;
                if let Some(backoff) = retry.and_then(|p| p.backoff) {
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// The response the caller gets: the route's response filter applied, or the mesh's own
    /// failure as the caller's protocol expresses it.
    fn respond(&self, result: Result<Response<ResponseBody>, CallError>) -> Response<ResponseBody> {
        match result {
            Ok(mut response) => {
                let filters = self.rule.as_ref().map_or(&[][..], |r| r.filters());
                for filter in filters {
                    if let RouteFilter::ResponseHeaderModifier(modifier) = filter {
                        modifier.apply(response.headers_mut());
                    }
                }
                response
            }
            Err(error) => {
                tracing::debug!(destination = %self.shared.destination, %error, "call failed in the mesh");
                failure(&error, self.grpc)
            }
        }
    }

    /// The request again, from its head and its replayable body, if both were kept.
    fn again(&self) -> Option<Request<MeshBody<B>>> {
        let (head, replay) = (self.head.as_ref()?, self.replay.as_ref()?);
        Some(head.request(MeshBody::Replay(replay.rewind())))
    }

    /// Whether the try's outcome ends the call or may be retried, and the endpoint to avoid.
    fn judge(&self, outcome: Outcome<B>) -> (Verdict<B>, Option<EndpointKey>) {
        match outcome {
            Outcome::Sent(Ok((response, endpoint))) => {
                let code = if self.grpc {
                    grpc_status(&response)
                } else {
                    None
                };
                self.backend
                    .record(&endpoint, !is_server_failure(response.status(), code));
                let retryable = self.retry().is_some_and(|policy| match code {
                    Some(code) => policy.retries_grpc(code),
                    None if !self.grpc => policy.retries_status(response.status()),
                    None => false,
                });
                let result = Ok(response.map(ResponseBody::incoming));
                if retryable {
                    (Verdict::Retryable(result), Some(endpoint.key.clone()))
                } else {
                    (Verdict::Done(result), None)
                }
            }
            Outcome::Sent(Err(SendError::Endpoint(endpoint, source))) => {
                let refused = refused_unprocessed(&source);
                // A draining endpoint refusing a stream is not failing: it is going away.
                if !refused {
                    self.backend.record(&endpoint, false);
                }
                let error = CallError::Endpoint {
                    endpoint: endpoint.key.addr,
                    source,
                };
                let retryable = self.retries_broken_connection();
                let verdict = if refused {
                    Verdict::Refused {
                        error,
                        unsent: None,
                        retryable,
                    }
                } else if retryable {
                    Verdict::Retryable(Err(error))
                } else {
                    Verdict::Done(Err(error))
                };
                (verdict, Some(endpoint.key.clone()))
            }
            Outcome::Sent(Err(SendError::Unsent(endpoint, source, request))) => {
                self.backend.record(&endpoint, false);
                let verdict = Verdict::Refused {
                    error: CallError::Endpoint {
                        endpoint: endpoint.key.addr,
                        source,
                    },
                    unsent: Some(*request),
                    retryable: self.retries_broken_connection(),
                };
                (verdict, Some(endpoint.key.clone()))
            }
            Outcome::Sent(Err(SendError::NoEndpoints)) => (
                Verdict::Done(Err(CallError::NoEndpoints(self.backend.service.clone()))),
                None,
            ),
            Outcome::Sent(Err(SendError::NoReadyEndpoint(waited))) => (
                Verdict::Done(Err(CallError::NoReadyEndpoint {
                    destination: self.backend.service.clone(),
                    waited,
                })),
                None,
            ),
            // A try that outlived its own timeout is retried like a failure (as Envoy's
            // per-try timeout); the call's own deadline still bounds every try.
            Outcome::TryTimedOut(after) => (
                Verdict::Retryable(Err(CallError::Timeout {
                    destination: self.shared.destination.clone(),
                    after,
                })),
                None,
            ),
        }
    }

    /// Whether the retry policy retries a broken connection: that is what UNAVAILABLE and
    /// 502/503 mean.
    fn retries_broken_connection(&self) -> bool {
        self.retry().is_some_and(|policy| {
            policy.retries_grpc(tonic::Code::Unavailable)
                || policy.retries_status(http::StatusCode::SERVICE_UNAVAILABLE)
                || policy.retries_status(http::StatusCode::BAD_GATEWAY)
        })
    }

    /// Records a call's resends after refusals in the retry budget, once per call whatever
    /// their number. A resend is never refused for want of budget: the refused request cost
    /// the endpoint's application nothing, so resending it cannot feed a retry storm, and
    /// [`MAX_RESENDS`] bounds it.
    fn count_resend(&self) {
        let _taken = lock(&self.shared.budget).try_withdraw(Instant::now());
    }

    fn withdraw(&self) -> bool {
        let allowed = lock(&self.shared.budget).try_withdraw(Instant::now());
        if !allowed {
            self.metrics.budget_exhausted.increment(1);
            tracing::debug!(destination = %self.shared.destination, "retry budget exhausted");
        }
        allowed
    }
}

enum Outcome<B> {
    Sent(Sent<MeshBody<B>>),
    TryTimedOut(Duration),
}

enum Verdict<B> {
    Done(Result<Response<ResponseBody>, CallError>),
    Retryable(Result<Response<ResponseBody>, CallError>),
    /// The endpoint refused the request unprocessed: it may be sent again anywhere.
    Refused {
        error: CallError,
        /// The request, when hyper gave it back unsent.
        unsent: Option<Request<MeshBody<B>>>,
        /// Whether the retry policy retries this error, should the request not be resendable.
        retryable: bool,
    },
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
            target.send(request, None, ready_timeout).await
        {
            tracing::debug!(backend = %target.service, %error, "mirrored request failed");
        }
    });
}

fn lock(budget: &Mutex<RetryBudget>) -> std::sync::MutexGuard<'_, RetryBudget> {
    // The budget is plain arithmetic: a panic elsewhere cannot leave it inconsistent.
    budget
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
