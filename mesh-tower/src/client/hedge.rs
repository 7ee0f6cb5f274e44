//! Hedged calls (gRPC A6's hedging, Finagle's backup requests): on a rule with a hedging
//! policy, while a try is outstanding a further try of the same request goes to another
//! endpoint after the policy's delay, up to `maxAttempts` tries in all; the first answer that
//! is not a non-fatal status wins and the other tries are cancelled.
//!
//! ```text
//! first try ──delay──> hedge to another endpoint ──delay──> hedge ...   (a token each)
//!     any answer: fatal or success -> it wins, the others are dropped (RST_STREAM CANCEL,
//!                 the connections stay)
//!                 non-fatal        -> the next hedge at once; the last one's answer if none
//!                                     is left
//! ```
//!
//! - Only a request whose body was kept for replay is hedged (see [`super::body`]); any
//!   other is sent once, as on a route without hedging.
//! - Each hedge takes a token from the destination's retry budget, as a retry does (the call
//!   deposits as a retried call does): without a token, no hedge.
//! - A hedge goes only to an endpoint other than those with a try outstanding, with a
//!   connection ready now; when there is none, the hedge waits for the next delay.
//! - The delay is fixed, or a percentile of the backend's latency to response headers over
//!   the last 10 to 20 s (`mesh_core::hedge`); until enough calls were seen, no hedge is
//!   sent on the delay (a non-fatal answer still sends the next try at once). A cancelled
//!   try counts at the time it was cancelled: a lower bound, which keeps the tail the
//!   hedges cut off in the estimate.
//! - The route's request timeout bounds the whole call ([`super::call`]); a per-try timeout
//!   bounds each try, and a try that outlives it is a non-fatal failure.
//! - A try refused unprocessed (a draining endpoint) is resent at once elsewhere, as on any
//!   route, without a token and without counting as a hedge.
//!
//! Hedges show as `mesh.client.hedges` and `mesh.client.hedges_won`, in `explain`'s count of
//! tries, and as `hedge sent` / `hedged call answered` events (`RUST_LOG=mesh=debug`).

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use http::{Request, Response, StatusCode};
use mesh_core::hedge::{WindowedLatency, hedge_delay};
use mesh_core::route::CompiledRule;
use mesh_core::snapshot::{HedgeDelay, HedgingPolicy};

use super::backend::{Backend, Ready};
use super::body::{MeshBody, ResponseBody};
use super::deadline::within;
use super::endpoint::EndpointKey;
use super::respond::grpc_status;
use super::retry::{MAX_RESENDS, Outcome, Tries, Verdict, lock};
use crate::error::{BoxError, CallError};

/// The hedging policy in force for a call under `rule`: the rule's, when the request's body
/// can be replayed (a body streamed as it is sent cannot be sent twice).
pub(crate) fn policy_in_force(
    rule: Option<&CompiledRule>,
    replayable: bool,
) -> Option<&HedgingPolicy> {
    if !replayable {
        return None;
    }
    rule?.hedging()
}

/// Whether a response (HTTP `status`, and for gRPC the `code` in its headers) leaves the call
/// to the other tries. A gRPC response without a status in its headers has begun its answer:
/// it wins, as A6 commits on response headers.
pub(crate) fn non_fatal_response(
    policy: &HedgingPolicy,
    grpc: bool,
    status: StatusCode,
    code: Option<tonic::Code>,
) -> bool {
    match code {
        Some(code) => policy.non_fatal_grpc(code),
        None if !grpc => policy.non_fatal_status(status),
        None => false,
    }
}

/// What one try's answer means for a hedged call.
enum Step<B> {
    /// It wins: the call ends with it.
    Commit(Result<Response<ResponseBody>, CallError>),
    /// It failed, but leaves the call to the other tries (and sends the next at once).
    NonFatal(Result<Response<ResponseBody>, CallError>),
    /// Refused unprocessed: sent again elsewhere (the request itself when hyper gave it back).
    Resend(CallError, Option<Request<MeshBody<B>>>),
}

/// A try ready to go: its endpoint and connection, and its request.
type NextTry<B> = (Ready<MeshBody<B>>, Request<MeshBody<B>>);

/// Why no hedge is sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoHedge {
    /// The policy's tries are all sent.
    NoneLeft,
    /// Every endpoint ready now has a try of this call outstanding.
    NoOtherEndpoint,
    /// The retry budget is spent.
    BudgetExhausted,
}

/// A try of a hedged call that has not answered yet.
struct Outstanding {
    id: usize,
    endpoint: EndpointKey,
    sent: Instant,
    /// A hedge (not the first try, nor a resend after a refusal).
    hedge: bool,
}

/// A hedged call's tries: what is outstanding, what is left.
struct Hedged<'a, B> {
    tries: &'a Tries<B>,
    policy: &'a HedgingPolicy,
    /// Whether latencies are recorded (the delay is a percentile of them).
    adaptive: bool,
    outstanding: Vec<Outstanding>,
    hedges_left: u32,
    resends_left: u32,
    next_id: usize,
}

impl<'a, B> Hedged<'a, B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// Records that a try (a hedge when `hedge`) goes to `ready`'s endpoint; its id.
    fn sending(&mut self, ready: &Ready<MeshBody<B>>, hedge: bool) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        self.outstanding.push(Outstanding {
            id,
            endpoint: ready.0.key.clone(),
            sent: Instant::now(),
            hedge,
        });
        if self.tries.explain {
            self.tries.sent.fetch_add(1, Ordering::Relaxed);
        }
        id
    }

    /// The next hedge, if one may go: a try left, an endpoint without a try of this call
    /// ready now, and a token from the budget (taken last, so that a hedge that cannot go
    /// anyway costs nothing).
    fn hedge(&mut self) -> Result<NextTry<B>, NoHedge> {
        if self.hedges_left == 0 {
            return Err(NoHedge::NoneLeft);
        }
        let avoid: Vec<EndpointKey> = self
            .outstanding
            .iter()
            .map(|o| o.endpoint.clone())
            .collect();
        let ready = self
            .tries
            .backend
            .ready_other(&avoid)
            .ok_or(NoHedge::NoOtherEndpoint)?;
        if !lock(&self.tries.shared.budget).try_withdraw(Instant::now()) {
            self.tries.metrics.budget_exhausted.increment(1);
            tracing::debug!(destination = %self.tries.shared.destination, "retry budget exhausted: no hedge");
            return Err(NoHedge::BudgetExhausted);
        }
        // Hedging is in force only with a replayable body (see `policy_in_force`).
        let mut request = self.tries.again().ok_or(NoHedge::NoneLeft)?;
        self.tries.prepare(&mut request);
        self.hedges_left -= 1;
        self.tries.metrics.hedges.increment(1);
        tracing::debug!(
            target: "mesh",
            endpoint = %ready.0.key.addr,
            tries_left = self.hedges_left,
            "hedge sent"
        );
        Ok((ready, request))
    }

    /// A refused try sent again at once, elsewhere when another endpoint is ready: no token,
    /// not a hedge ([`MAX_RESENDS`] bound it).
    fn resend(
        &mut self,
        unsent: Option<Request<MeshBody<B>>>,
        refused_by: Option<EndpointKey>,
    ) -> Option<NextTry<B>> {
        if self.resends_left == 0 {
            return None;
        }
        let mut request = unsent.or_else(|| self.tries.again())?;
        let mut avoid: Vec<EndpointKey> = self
            .outstanding
            .iter()
            .map(|o| o.endpoint.clone())
            .collect();
        avoid.extend(refused_by);
        let ready = self.tries.backend.ready_endpoint(&avoid)?;
        if self.resends_left == MAX_RESENDS {
            self.tries.count_resend();
        }
        self.resends_left -= 1;
        self.tries.prepare(&mut request);
        Some((ready, request))
    }

    /// Takes try `id` off the outstanding ones, recording its latency when `answered`.
    fn answered(&mut self, id: usize, answered: bool) -> Option<Outstanding> {
        let index = self.outstanding.iter().position(|o| o.id == id)?;
        let done = self.outstanding.swap_remove(index);
        if self.adaptive && answered {
            record(&self.tries.backend, done.sent.elapsed());
        }
        Some(done)
    }

    /// The tries still outstanding when the call ends: cancelled (their futures are dropped
    /// with the call's), each counted in the latency window as at least as slow as it was.
    fn cancel_the_rest(&mut self) {
        if !self.outstanding.is_empty() {
            tracing::debug!(target: "mesh", cancelled = self.outstanding.len(), "hedged call answered; cancelling the other tries");
        }
        if self.adaptive {
            for done in self.outstanding.drain(..) {
                record(&self.tries.backend, done.sent.elapsed());
            }
        }
    }

    /// What try `outcome` means for the call (recording it for outlier detection).
    fn step(&self, outcome: Outcome<B>) -> Step<B> {
        let (verdict, _) = self.tries.judge(outcome);
        match verdict {
            Verdict::Refused { error, unsent, .. } => Step::Resend(error, unsent),
            // A try that outlived its own timeout.
            Verdict::Retryable(result) => Step::NonFatal(result),
            Verdict::Done(Ok(response)) => {
                let code = if self.tries.grpc {
                    grpc_status(&response)
                } else {
                    None
                };
                if non_fatal_response(self.policy, self.tries.grpc, response.status(), code) {
                    Step::NonFatal(Ok(response))
                } else {
                    Step::Commit(Ok(response))
                }
            }
            Verdict::Done(Err(error @ CallError::Endpoint { .. }))
                if self.policy.non_fatal_broken_connection() =>
            {
                Step::NonFatal(Err(error))
            }
            Verdict::Done(result) => Step::Commit(result),
        }
    }
}

/// Counts a try's latency in its backend's window.
fn record<B>(backend: &Backend<B>, elapsed: Duration) {
    latency(backend).record(elapsed, Instant::now());
}

fn latency<B>(backend: &Backend<B>) -> std::sync::MutexGuard<'_, WindowedLatency> {
    // Plain counts: a panic elsewhere cannot leave them inconsistent.
    backend
        .latency
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// One try on an endpoint picked already, within the per-try timeout; its id with its outcome.
fn one_try<B>(
    ready: Ready<MeshBody<B>>,
    request: Request<MeshBody<B>>,
    per_try: Option<Duration>,
    id: usize,
) -> impl Future<Output = (usize, Outcome<B>)> + Send
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (endpoint, sender) = ready;
    let timed_out = per_try.map(|_| endpoint.clone());
    async move {
        let outcome = match within(per_try, Backend::send_to(endpoint, sender, request)).await {
            Ok(sent) => Outcome::Sent(sent),
            Err(limit) => Outcome::TryTimedOut(limit, timed_out),
        };
        (id, outcome)
    }
}

/// Makes a hedged call under `policy` (see the module docs), `first` being its first try.
///
/// A plain function around an `async` block, as [`Tries::run`] is: an `async fn` would keep
/// both its argument and its own copy of it in its state.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its argument twice in its state"
)]
pub(crate) fn run<'a, B>(
    tries: &'a Tries<B>,
    policy: &'a HedgingPolicy,
    mut first: Request<MeshBody<B>>,
) -> impl Future<Output = Result<Response<ResponseBody>, CallError>> + Send + 'a
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    async move {
        lock(&tries.shared.budget).deposit(tries.start);
        let adaptive = matches!(policy.delay, HedgeDelay::Percentile(_));
        let delay = hedge_delay(policy.delay, |p| {
            latency(&tries.backend).percentile(p, Instant::now())
        });
        let mut call = Hedged {
            tries,
            policy,
            adaptive,
            outstanding: Vec::with_capacity(policy.max_attempts as usize),
            hedges_left: policy.max_attempts.saturating_sub(1),
            resends_left: MAX_RESENDS,
            next_id: 0,
        };
        // The first try may wait for an endpoint to be ready; hedges go only where one is.
        let ready = match tries.backend.ready(&[], tries.shared.ready_timeout).await {
            Ok(ready) => ready,
            Err(error) => {
                let (Verdict::Done(result) | Verdict::Retryable(result), _) =
                    tries.judge(Outcome::Sent(Err(error)))
                else {
                    // Not being sent, the request cannot have been refused.
                    return Err(CallError::NoEndpoints(tries.backend.service.clone()));
                };
                return result;
            }
        };
        tries.prepare(&mut first);
        let id = call.sending(&ready, false);
        let mut pending = FuturesUnordered::new();
        pending.push(one_try(ready, first, tries.per_try, id));
        let mut hedge_at = delay.map(|d| tokio::time::Instant::now() + d);
        let mut last = None;
        loop {
            let timer = async {
                match hedge_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // Whether to send the next hedge now (its delay over, or a non-fatal answer).
            let hedge_now = tokio::select! {
                biased;
                Some((id, outcome)) = pending.next() => {
                    if matches!(outcome, Outcome::TryTimedOut(..)) {
                        tries.metrics.try_timeouts.increment(1);
                    }
                    let done = call.answered(id, !matches!(outcome, Outcome::Sent(Err(_))));
                    let hedge = done.as_ref().is_some_and(|d| d.hedge);
                    match call.step(outcome) {
                        Step::Commit(result) => {
                            if hedge && result.is_ok() {
                                tries.metrics.hedges_won.increment(1);
                                tracing::debug!(target: "mesh", "a hedge answered first");
                            }
                            call.cancel_the_rest();
                            return result;
                        }
                        Step::NonFatal(result) => {
                            last = Some(result);
                            true
                        }
                        Step::Resend(error, unsent) => {
                            match call.resend(unsent, done.map(|d| d.endpoint)) {
                                Some((ready, request)) => {
                                    let id = call.sending(&ready, false);
                                    pending.push(one_try(ready, request, tries.per_try, id));
                                    false
                                }
                                None => {
                                    last = Some(Err(error));
                                    true
                                }
                            }
                        }
                    }
                }
                () = timer => true,
            };
            if hedge_now {
                match call.hedge() {
                    Ok((ready, request)) => {
                        let id = call.sending(&ready, true);
                        pending.push(one_try(ready, request, tries.per_try, id));
                        hedge_at = delay
                            .filter(|_| call.hedges_left > 0)
                            .map(|d| tokio::time::Instant::now() + d);
                    }
                    // Another endpoint may be ready after another delay.
                    Err(NoHedge::NoOtherEndpoint) => {
                        hedge_at = delay.map(|d| tokio::time::Instant::now() + d);
                    }
                    Err(NoHedge::NoneLeft | NoHedge::BudgetExhausted) => hedge_at = None,
                }
            }
            if pending.is_empty() {
                // Every try answered non-fatally and no other may go: the last answer.
                return last
                    .unwrap_or_else(|| Err(CallError::NoEndpoints(tries.backend.service.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn policy(codes: &[u16], grpc_codes: &[Code]) -> HedgingPolicy {
        HedgingPolicy {
            max_attempts: 3,
            delay: HedgeDelay::Fixed(Duration::from_millis(10)),
            non_fatal_codes: codes
                .iter()
                .map(|&c| StatusCode::from_u16(c).unwrap())
                .collect(),
            non_fatal_grpc_codes: grpc_codes.to_vec(),
        }
    }

    #[test]
    fn only_the_non_fatal_statuses_leave_the_call_to_the_other_tries() {
        let both = policy(&[503], &[Code::Unavailable]);
        let none = policy(&[], &[]);
        let ok = StatusCode::OK;
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        let cases = [
            (&both, false, unavailable, None, true),
            (&both, false, StatusCode::INTERNAL_SERVER_ERROR, None, false),
            (&both, false, ok, None, false),
            // gRPC: a Trailers-Only status in the headers.
            (&both, true, ok, Some(Code::Unavailable), true),
            (&both, true, ok, Some(Code::Internal), false),
            (&both, true, ok, Some(Code::Ok), false),
            // gRPC headers without a status: the answer has begun, it wins.
            (&both, true, ok, None, false),
            (&both, true, unavailable, None, false),
            // No non-fatal status: every answer wins.
            (&none, false, unavailable, None, false),
            (&none, true, ok, Some(Code::Unavailable), false),
        ];
        for (i, (policy, grpc, status, code, non_fatal)) in cases.into_iter().enumerate() {
            assert_eq!(
                non_fatal_response(policy, grpc, status, code),
                non_fatal,
                "case {i}"
            );
        }
        // A broken connection is what UNAVAILABLE, 502 and 503 mean.
        assert!(both.non_fatal_broken_connection());
        assert!(policy(&[502], &[]).non_fatal_broken_connection());
        assert!(!policy(&[500], &[Code::Internal]).non_fatal_broken_connection());
    }
}
