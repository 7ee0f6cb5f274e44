//! The tries of one call: per-try timeout, retries under the route's policy with a budget and
//! backoff, each on another endpoint when there is one, and resends of refused requests.
//!
//! ```text
//! try  ->  outcome  ->  judged: done | retryable | refused unprocessed
//!            retryable: a retry left, a token in the budget, the body replayable -> backoff, again
//!            refused:   resent at once (at most MAX_RESENDS), else judged as retryable
//! ```
//!
//! A request the endpoint refused without processing it (a draining server's GOAWAY, a
//! REFUSED_STREAM, a connection that closed before the request was written) is sent again to
//! another endpoint at once, with or without a retry policy, as gRPC clients and Linkerd do:
//! it never reached the application, so even a non-idempotent call is safe to resend.
//!
//! The judging (which outcomes a policy retries, whether a policy is in force, whether the
//! budget allows another try) is in plain functions, tested on their own; [`Tries::run`] is the
//! loop that applies them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use mesh_core::budget::RetryBudget;
use mesh_core::route::CompiledRule;
use mesh_core::snapshot::{RetryPolicy, RouteFilter};

use super::backend::{Backend, SendError, Sent};
use super::body::{MeshBody, Replay, ResponseBody};
use super::deadline::{set_grpc_timeout, within};
use super::endpoint::{Endpoint, EndpointKey};
use super::respond::{failure, grpc_status, is_server_failure};
use super::shared::Shared;
use crate::connect::set_origin;
use crate::error::{BoxError, CallError, refused_unprocessed};
use crate::explain;
use crate::telemetry::OutboundMetrics;

/// How many times one call may be resent after a refusal (see the module docs): once covers a
/// draining replica, twice one more draining at the same time; a bound, so that a backend
/// whose every endpoint is going away ends the call rather than loop.
pub(super) const MAX_RESENDS: u32 = 2;

/// The request's head, kept to build retries (and a mirror's copy) from.
pub(crate) struct Head {
    /// The request's method, URI, version and headers (after the route's filters).
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

impl Head {
    /// A request with this head and `body`.
    pub(crate) fn request<B>(&self, body: MeshBody<B>) -> Request<MeshBody<B>> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// The tries of one call, and what they need.
pub(crate) struct Tries<B> {
    /// The client's: its budget, the authority to send, the ready timeout.
    pub(crate) shared: Arc<Shared<B>>,
    /// The backend the route decided on.
    pub(crate) backend: Arc<Backend<MeshBody<B>>>,
    /// The route's and backend's metrics (tries timed out, retries, budget exhausted).
    pub(crate) metrics: Arc<OutboundMetrics>,
    /// The route's rule, if a route matched: its retry policy and response filter.
    pub(crate) rule: Option<Arc<CompiledRule>>,
    /// The request's head, kept when its body is replayable.
    pub(crate) head: Option<Head>,
    /// The request's body, when it can be sent again.
    pub(crate) replay: Option<Replay>,
    /// The route's timeout for each try.
    pub(crate) per_try: Option<Duration>,
    /// When the call must be over: passed on as `grpc-timeout`, reduced, with every try.
    pub(crate) deadline: Option<Instant>,
    /// Whether the call is gRPC (statuses in headers, failures as `grpc-status`).
    pub(crate) grpc: bool,
    /// When the call started: the retry budget's deposit is dated by it.
    pub(crate) start: Instant,
    /// Whether the caller asked what the mesh did (see [`crate::explain`]); then the tries
    /// sent are counted in `sent`.
    pub(crate) explain: bool,
    pub(crate) sent: AtomicU32,
}

impl<B> Tries<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// The retry policy in force (see [`policy_in_force`]).
    fn retry(&self) -> Option<&RetryPolicy> {
        policy_in_force(self.rule.as_deref(), self.replay.is_some())
    }

    /// Sends the request, resends and retries it as the outcomes allow.
    ///
    /// A plain function around an `async` block: an `async fn` would keep both its argument
    /// and its own copy of it (`attempt`) in its state.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its argument twice in its state"
    )]
    pub(crate) fn run(
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
                if self.explain {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                }
                self.prepare(&mut attempt);
                let mut chosen = None;
                let sent = self.backend.send(
                    attempt,
                    avoid.as_slice(),
                    self.shared.ready_timeout,
                    // Only a try with its own timer can be dropped before it answers.
                    self.per_try.map(|_| &mut chosen),
                );
                let outcome = match within(self.per_try, sent).await {
                    Ok(outcome) => Outcome::Sent(outcome),
                    Err(limit) => {
                        self.metrics.try_timeouts.increment(1);
                        Outcome::TryTimedOut(limit, chosen)
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
                match may_retry(retries_left, &self.shared.budget, Instant::now) {
                    Ok(()) => {}
                    Err(Stop::NoRetriesLeft) => return result,
                    Err(Stop::BudgetExhausted) => {
                        self.metrics.budget_exhausted.increment(1);
                        tracing::debug!(destination = %self.shared.destination, "retry budget exhausted");
                        return result;
                    }
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

    /// Readies a try to go out: its origin, and the caller's deadline passed on, less what
    /// has been spent.
    pub(super) fn prepare(&self, attempt: &mut Request<MeshBody<B>>) {
        set_origin(attempt, &self.shared.authority);
        if self.grpc
            && let Some(deadline) = self.deadline
        {
            let remaining = deadline.saturating_duration_since(Instant::now());
            set_grpc_timeout(attempt.headers_mut(), remaining);
        }
    }

    /// The response the caller gets: the route's response filter applied, or the mesh's own
    /// failure as the caller's protocol expresses it.
    pub(crate) fn respond(
        &self,
        result: Result<Response<ResponseBody>, CallError>,
    ) -> Response<ResponseBody> {
        match result {
            Ok(response) if self.server_gave_up_at_the_deadline(&response) => {
                let after = self
                    .deadline
                    .map_or(Duration::ZERO, |d| d.saturating_duration_since(self.start));
                let error = CallError::Timeout {
                    destination: self.shared.destination.clone(),
                    after,
                };
                self.explained(failure(&error, self.grpc))
            }
            Ok(mut response) => {
                let filters = self.rule.as_ref().map_or(&[][..], |r| r.filters());
                for filter in filters {
                    if let RouteFilter::ResponseHeaderModifier(modifier) = filter {
                        modifier.apply(response.headers_mut());
                    }
                }
                // The call's deadline bounds the whole call, its streamed body included.
                if let Some(deadline) = self.deadline {
                    let after = deadline.saturating_duration_since(self.start);
                    response
                        .body_mut()
                        .until(deadline, self.grpc, &self.shared.destination, after);
                }
                self.explained(response)
            }
            Err(error) => {
                tracing::debug!(destination = %self.shared.destination, %error, "call failed in the mesh");
                self.explained(failure(&error, self.grpc))
            }
        }
    }

    /// Whether `response` is the server's own end of a call whose deadline (passed on as
    /// `grpc-timeout`) it reached as the mesh's own timer did: tonic's server answers that with
    /// CANCELLED ("Timeout expired"), and which of the two timers fired first was a coin toss.
    /// The caller's deadline passed, so the caller gets DEADLINE_EXCEEDED either way. The
    /// margin covers `grpc-timeout`'s whole milliseconds and the timers' granularity.
    fn server_gave_up_at_the_deadline(&self, response: &Response<ResponseBody>) -> bool {
        const MARGIN: Duration = Duration::from_millis(5);
        self.grpc
            && self
                .deadline
                .is_some_and(|deadline| Instant::now() + MARGIN >= deadline)
            && grpc_status(response) == Some(tonic::Code::Cancelled)
    }

    /// `response` with what the mesh did, when the caller asked (see [`crate::explain`]).
    fn explained(&self, mut response: Response<ResponseBody>) -> Response<ResponseBody> {
        if !self.explain {
            return response;
        }
        let headers = response.headers_mut();
        let (route, rule) = match &self.rule {
            Some(rule) if rule.rule_name().is_empty() => {
                (rule.route_name(), rule.rule_index().to_string())
            }
            Some(rule) => (
                rule.route_name(),
                format!("{} {}", rule.rule_index(), rule.rule_name()),
            ),
            None => ("", String::new()),
        };
        explain::set(headers, explain::ROUTE_HEADER, route);
        explain::set(headers, explain::RULE_HEADER, &rule);
        explain::set(
            headers,
            explain::BACKEND_HEADER,
            &self.backend.service.to_string(),
        );
        explain::set(
            headers,
            explain::TRIES_HEADER,
            &self.sent.load(Ordering::Relaxed).to_string(),
        );
        response
    }

    /// The request again, from its head and its replayable body, if both were kept.
    pub(super) fn again(&self) -> Option<Request<MeshBody<B>>> {
        let (head, replay) = (self.head.as_ref()?, self.replay.as_ref()?);
        Some(head.request(MeshBody::Replay(replay.rewind())))
    }

    /// Whether the try's outcome ends the call or may be retried, and the endpoint to avoid;
    /// records the outcome for the endpoint's outlier detection.
    pub(super) fn judge(&self, outcome: Outcome<B>) -> (Verdict<B>, Option<EndpointKey>) {
        let policy = self.retry();
        match outcome {
            Outcome::Sent(Ok((response, endpoint))) => {
                let code = if self.grpc {
                    grpc_status(&response)
                } else {
                    None
                };
                self.backend
                    .record(&endpoint, !is_server_failure(response.status(), code));
                if let Some(spare) = shedding(&response, code) {
                    // Overloaded: P2C sends elsewhere for as long as the endpoint asked.
                    endpoint.load.shedding(Instant::now(), spare);
                }
                // A span event (with `RUST_LOG=mesh=debug`): the same facts as `explain`.
                tracing::debug!(
                    target: "mesh",
                    endpoint = %endpoint.key.addr,
                    identity = %endpoint.key.identity,
                    status = response.status().as_u16(),
                    "try answered"
                );
                let mut response = response;
                if self.explain {
                    let answered = format!("{} {}", endpoint.key.addr, endpoint.key.identity);
                    explain::set(response.headers_mut(), explain::ENDPOINT_HEADER, &answered);
                }
                let retryable = retries_response(policy, self.grpc, response.status(), code);
                let result = Ok(response.map(ResponseBody::incoming));
                if retryable {
                    (Verdict::Retryable(result), Some(endpoint.key.clone()))
                } else {
                    (Verdict::Done(result), None)
                }
            }
            Outcome::Sent(Err(SendError::Endpoint(endpoint, source))) => {
                let refused = refused_unprocessed(&source);
                tracing::debug!(
                    target: "mesh",
                    endpoint = %endpoint.key.addr,
                    error = %source,
                    refused,
                    "try failed"
                );
                // A draining endpoint refusing a stream is not failing: it is going away.
                if !refused {
                    self.backend.record(&endpoint, false);
                }
                let error = CallError::Endpoint {
                    endpoint: endpoint.key.addr,
                    source,
                };
                let failure = if refused {
                    Failure::Refused
                } else {
                    Failure::Broken
                };
                let verdict = match judge_failure(policy, failure) {
                    Judgement::Resend { else_retry } => Verdict::Refused {
                        error,
                        unsent: None,
                        retryable: else_retry,
                    },
                    Judgement::Retry => Verdict::Retryable(Err(error)),
                    Judgement::Done => Verdict::Done(Err(error)),
                };
                (verdict, Some(endpoint.key.clone()))
            }
            Outcome::Sent(Err(SendError::Unsent(endpoint, source, request))) => {
                self.backend.record(&endpoint, false);
                let error = CallError::Endpoint {
                    endpoint: endpoint.key.addr,
                    source,
                };
                let verdict = match judge_failure(policy, Failure::Refused) {
                    Judgement::Resend { else_retry } => Verdict::Refused {
                        error,
                        unsent: Some(*request),
                        retryable: else_retry,
                    },
                    // A refusal is always resendable; kept total.
                    Judgement::Retry => Verdict::Retryable(Err(error)),
                    Judgement::Done => Verdict::Done(Err(error)),
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
            Outcome::TryTimedOut(after, endpoint) => {
                let error = CallError::Timeout {
                    destination: self.shared.destination.clone(),
                    after,
                };
                let verdict = match judge_failure(policy, Failure::TryTimedOut) {
                    Judgement::Done => Verdict::Done(Err(error)),
                    _ => Verdict::Retryable(Err(error)),
                };
                // A try that outlived its timeout failed at its endpoint: it counts toward
                // ejection, and a retry goes elsewhere when it can.
                let avoid = endpoint.map(|endpoint| {
                    tracing::debug!(target: "mesh", endpoint = %endpoint.key.addr, "try timed out");
                    self.backend.record(&endpoint, false);
                    endpoint.key.clone()
                });
                (verdict, avoid)
            }
        }
    }

    /// Records a call's resends after refusals in the retry budget, once per call whatever
    /// their number. A resend is never refused for want of budget: the refused request cost
    /// the endpoint's application nothing, so resending it cannot feed a retry storm, and
    /// [`MAX_RESENDS`] bounds it.
    pub(super) fn count_resend(&self) {
        let _taken = lock(&self.shared.budget).try_withdraw(Instant::now());
    }
}

/// What a try came to.
pub(super) enum Outcome<B> {
    Sent(Sent<MeshBody<B>>),
    /// The try's timer fired; the endpoint it went to, when one had been picked.
    TryTimedOut(Duration, Option<Arc<Endpoint<MeshBody<B>>>>),
}

/// A try's outcome, judged, with what the next step needs.
pub(super) enum Verdict<B> {
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

/// The retry policy in force for a call under `rule`: the rule's, when it allows a retry at
/// all and the request's body can be replayed (a body streamed as it is sent cannot be sent
/// twice).
pub(crate) fn policy_in_force(
    rule: Option<&CompiledRule>,
    replayable: bool,
) -> Option<&RetryPolicy> {
    if !replayable {
        return None;
    }
    rule?.retry().filter(|p| p.attempts > 0)
}

/// Whether `policy` retries a response with HTTP `status` and, for gRPC, the `code` in its
/// headers (a Trailers-Only response). A gRPC response without a status in its headers is
/// on its way to trailers: not a failure to retry.
pub(crate) fn retries_response(
    policy: Option<&RetryPolicy>,
    grpc: bool,
    status: StatusCode,
    code: Option<tonic::Code>,
) -> bool {
    policy.is_some_and(|policy| match code {
        Some(code) => policy.retries_grpc(code),
        None if !grpc => policy.retries_status(status),
        None => false,
    })
}

/// How a try failed without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The endpoint refused the request unprocessed, or the connection closed before it was
    /// written.
    Refused,
    /// The connection failed during the call.
    Broken,
    /// The try outlived its per-try timeout.
    TryTimedOut,
}

/// What comes after a try that failed without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// The call ends with the failure.
    Done,
    /// The call may be retried (a retry left, budget allowing).
    Retry,
    /// The request may be resent at once; `else_retry` when, should it not be resendable, the
    /// policy retries the failure.
    Resend { else_retry: bool },
}

/// What `policy` makes of a try that failed with `failure`.
pub(crate) fn judge_failure(policy: Option<&RetryPolicy>, failure: Failure) -> Judgement {
    match failure {
        Failure::Refused => Judgement::Resend {
            else_retry: retries_broken_connection(policy),
        },
        Failure::Broken if retries_broken_connection(policy) => Judgement::Retry,
        Failure::Broken => Judgement::Done,
        // A try that outlived its own timeout is retried like a failure (as Envoy's per-try
        // timeout); the call's own deadline still bounds every try, and without a policy no
        // retry is left.
        Failure::TryTimedOut => Judgement::Retry,
    }
}

/// Whether `policy` retries a broken connection: that is what UNAVAILABLE and 502/503 mean.
pub(crate) fn retries_broken_connection(policy: Option<&RetryPolicy>) -> bool {
    policy.is_some_and(|policy| {
        policy.retries_grpc(tonic::Code::Unavailable)
            || policy.retries_status(StatusCode::SERVICE_UNAVAILABLE)
            || policy.retries_status(StatusCode::BAD_GATEWAY)
    })
}

/// How long an endpoint that answered `response` asks to be spared: `Some` for 429 (HTTP)
/// or RESOURCE_EXHAUSTED (gRPC), for its `Retry-After` (seconds) or `grpc-retry-pushback-ms`,
/// else [`DEFAULT_SHEDDING`].
fn shedding(
    response: &Response<hyper::body::Incoming>,
    code: Option<tonic::Code>,
) -> Option<Duration> {
    let headers = response.headers();
    let hint = if response.status() == StatusCode::TOO_MANY_REQUESTS {
        headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    } else if code == Some(tonic::Code::ResourceExhausted) {
        headers
            .get("grpc-retry-pushback-ms")
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
    } else {
        return None;
    };
    Some(hint.unwrap_or(DEFAULT_SHEDDING))
}

/// How long an endpoint that sheds load without saying for how long is spared.
const DEFAULT_SHEDDING: Duration = Duration::from_secs(1);

/// Why a retryable try is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The policy's retries are used up (or there is no policy).
    NoRetriesLeft,
    /// The destination's retry budget is spent.
    BudgetExhausted,
}

/// Whether a retryable try may be retried: a retry left under the policy, and a token taken
/// from `budget` (only asked, and `now` only read, when a retry is left).
pub(crate) fn may_retry(
    retries_left: u32,
    budget: &Mutex<RetryBudget>,
    now: impl FnOnce() -> Instant,
) -> Result<(), Stop> {
    if retries_left == 0 {
        return Err(Stop::NoRetriesLeft);
    }
    if lock(budget).try_withdraw(now()) {
        Ok(())
    } else {
        Err(Stop::BudgetExhausted)
    }
}

pub(super) fn lock(budget: &Mutex<RetryBudget>) -> std::sync::MutexGuard<'_, RetryBudget> {
    // The budget is plain arithmetic: a panic elsewhere cannot leave it inconsistent.
    budget
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use http::Request;
    use mesh_core::budget::RetryBudgetConfig;
    use mesh_core::route::{CompiledRoutes, RequestSummary, RouteOutcome};
    use serde_json::json;
    use tonic::Code;

    use super::super::route::tests::destination;
    use super::*;

    fn policy(codes: &[u16], grpc_codes: &[Code]) -> RetryPolicy {
        RetryPolicy {
            codes: codes
                .iter()
                .map(|&c| StatusCode::from_u16(c).unwrap())
                .collect(),
            grpc_codes: grpc_codes.to_vec(),
            attempts: 2,
            backoff: None,
        }
    }

    #[test]
    fn a_policy_is_in_force_with_retries_and_a_replayable_body() {
        let routes = CompiledRoutes::new(&destination(json!([{"name": "r", "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/retried"}}],
             "backendRefs": [{"name": "echo-v1"}], "retry": {"codes": [503], "attempts": 2}},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/never"}}],
             "backendRefs": [{"name": "echo-v1"}], "retry": {"codes": [503], "attempts": 0}},
            {"backendRefs": [{"name": "echo-v1"}]},
        ]}])));
        let rule = |path: &str| {
            let request = Request::get(path).body(()).unwrap();
            match routes.route(&RequestSummary::from_request(&request)) {
                RouteOutcome::Matched(matched) => matched.rule,
                other => panic!("{other:?}"),
            }
        };
        let (retried, never, plain) = (rule("/retried"), rule("/never"), rule("/other"));
        let cases: [(Option<&CompiledRule>, bool, Option<u32>); 7] = [
            (Some(&retried), true, Some(2)),
            // A body streamed as it is sent cannot be sent again.
            (Some(&retried), false, None),
            // No retry after the first try is no policy.
            (Some(&never), true, None),
            (Some(&plain), true, None),
            (Some(&plain), false, None),
            // No route, no policy.
            (None, true, None),
            (None, false, None),
        ];
        for (i, (rule, replayable, attempts)) in cases.into_iter().enumerate() {
            let found = policy_in_force(rule, replayable).map(|p| p.attempts);
            assert_eq!(found, attempts, "case {i}");
        }
    }

    #[test]
    fn responses_are_retried_by_the_status_the_policy_names() {
        let both = policy(&[503], &[Code::Unavailable]);
        let ok = StatusCode::OK;
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        let cases = [
            // HTTP: the response's status.
            (Some(&both), false, unavailable, None, true),
            (
                Some(&both),
                false,
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                false,
            ),
            (Some(&both), false, ok, None, false),
            // gRPC: the status in a Trailers-Only response's headers.
            (Some(&both), true, ok, Some(Code::Unavailable), true),
            (Some(&both), true, ok, Some(Code::Internal), false),
            (Some(&both), true, ok, Some(Code::Ok), false),
            // gRPC without a status in the headers: it comes in trailers, after the body.
            (Some(&both), true, ok, None, false),
            // A gRPC call's HTTP status is not what a gRPC policy judges.
            (Some(&both), true, unavailable, None, false),
            // No policy retries nothing.
            (None, false, unavailable, None, false),
            (None, true, ok, Some(Code::Unavailable), false),
        ];
        for (i, (policy, grpc, status, code, retried)) in cases.into_iter().enumerate() {
            assert_eq!(
                retries_response(policy, grpc, status, code),
                retried,
                "case {i}: grpc {grpc}, {status}, {code:?}"
            );
        }
    }

    #[test]
    fn failures_without_a_response_are_judged_by_what_the_policy_retries() {
        let http_503 = policy(&[503], &[]);
        let http_502 = policy(&[502], &[]);
        let grpc_unavailable = policy(&[], &[Code::Unavailable]);
        let http_500 = policy(&[500], &[Code::Internal]);
        let cases = [
            // A refusal is resent whatever the policy; whether it is retried otherwise is
            // whether the policy retries a broken connection.
            (
                None,
                Failure::Refused,
                Judgement::Resend { else_retry: false },
            ),
            (
                Some(&http_503),
                Failure::Refused,
                Judgement::Resend { else_retry: true },
            ),
            (
                Some(&http_500),
                Failure::Refused,
                Judgement::Resend { else_retry: false },
            ),
            // A broken connection is what UNAVAILABLE, 502 and 503 mean.
            (None, Failure::Broken, Judgement::Done),
            (Some(&http_503), Failure::Broken, Judgement::Retry),
            (Some(&http_502), Failure::Broken, Judgement::Retry),
            (Some(&grpc_unavailable), Failure::Broken, Judgement::Retry),
            (Some(&http_500), Failure::Broken, Judgement::Done),
            // A try that timed out may be retried, whatever the statuses named.
            (None, Failure::TryTimedOut, Judgement::Retry),
            (Some(&http_500), Failure::TryTimedOut, Judgement::Retry),
        ];
        for (i, (policy, failure, judged)) in cases.into_iter().enumerate() {
            assert_eq!(
                judge_failure(policy, failure),
                judged,
                "case {i}: {failure:?}"
            );
        }
    }

    #[test]
    fn a_retry_needs_one_left_and_a_token_in_the_budget() {
        let t0 = Instant::now();
        // A floor of one retry per second over one second, and a fifth of a retry per call.
        let config = RetryBudgetConfig {
            ratio_percent: 20,
            min_retries_per_sec: 1,
            ttl: Duration::from_secs(1),
        };
        let budget = Mutex::new(RetryBudget::new(config, t0));
        let at = |t: Instant| move || t;
        let steps: [(u32, Result<(), Stop>); 4] = [
            // No retry left: the budget is not asked (nor the clock read).
            (0, Err(Stop::NoRetriesLeft)),
            // The floor's token.
            (2, Ok(())),
            // Spent.
            (1, Err(Stop::BudgetExhausted)),
            (0, Err(Stop::NoRetriesLeft)),
        ];
        for (i, (left, expected)) in steps.into_iter().enumerate() {
            let allowed = if left == 0 {
                may_retry(left, &budget, || {
                    panic!("the clock read without a retry left")
                })
            } else {
                may_retry(left, &budget, at(t0))
            };
            assert_eq!(allowed, expected, "step {i}");
        }
        // Five calls earn one more.
        for _ in 0..5 {
            lock(&budget).deposit(t0);
        }
        assert_eq!(may_retry(1, &budget, at(t0)), Ok(()));
        assert_eq!(may_retry(1, &budget, at(t0)), Err(Stop::BudgetExhausted));
        // The window moves on: the floor again.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(may_retry(1, &budget, at(later)), Ok(()));
    }
}
