//! The server side's telemetry, all of it: a span per request parented on the caller's trace
//! context, the call's duration by caller and status (recorded when the response body ends),
//! and authorization decisions by policy and verdict.
//!
//! It sits outside authorization in [`super::MeshService`], so a call the mesh denies is
//! measured and traced like any other (with its 403 or PERMISSION_DENIED).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use arc_swap::ArcSwapOption;
use mesh_core::authz::{Decision, Verdict};
use mesh_core::rate::{LimitKind, Limited};
use metrics::{Counter, Label};

use crate::activity::Busy;
use crate::identity::PeerIdentity;
use crate::telemetry::{
    AUTHZ_DECISIONS, CallRecord, Direction, JWT_REFUSALS, ObservedBody, RATE_LIMITED, StatusTable,
    attr, server_span, set_remote_parent,
};

pin_project! {
    /// The future of a measured call: runs the inner future inside the request's span and
    /// hands the measurement to the response body.
    pub struct InboundFuture<F> {
        #[pin]
        inner: F,
        record: Option<CallRecord>,
        busy: Option<Busy>,
        // The verdict to tell the caller (see `crate::explain`).
        explanation: Option<HeaderValue>,
        // The caller's deadline, current while the handler is polled (see
        // `crate::inbound_deadline`).
        deadline: Option<Instant>,
    }
}

impl<F> std::fmt::Debug for InboundFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundFuture").finish_non_exhaustive()
    }
}

impl<F> InboundFuture<F> {
    /// Starts measuring `request` from `peer` (when `measure`, the service's telemetry and
    /// the caller's duration table, is given: see [`super::Authorizer::measure`]) and calls
    /// `call` with it inside the request's span. `busy` marks the call in flight on its
    /// connection until the response body ends.
    pub(crate) fn instrument<B>(
        measure: Option<(&InboundTelemetry, Arc<StatusTable>)>,
        peer: Option<&PeerIdentity>,
        grpc: bool,
        request: Request<B>,
        busy: Busy,
        call: impl FnOnce(Request<B>) -> F,
    ) -> Self {
        let busy = Some(busy);
        let Some((telemetry, table)) = measure else {
            return Self {
                inner: call(request),
                record: None,
                busy,
                explanation: None,
                deadline: None,
            };
        };
        let start = Instant::now();
        let span = server_span(&request, telemetry.service(), grpc);
        set_remote_parent(&span, request.headers());
        if let Some(peer) = peer
            && !span.is_disabled()
        {
            span.record("mesh.peer_identity", tracing::field::display(peer));
        }
        let kind = table.kind(grpc, request.uri().path(), request.method());
        let record = CallRecord::new(table, Direction::Inbound, kind, start, span);
        let inner = {
            let _entered = record.span().enter();
            call(request)
        };
        Self {
            inner,
            record: Some(record),
            busy,
            explanation: None,
            deadline: None,
        }
    }

    /// Makes `deadline` current while the handler is polled, for the calls it makes.
    pub(crate) fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Adds `x-mesh-authz: <verdict>` to the response (see [`crate::explain`]).
    pub(crate) fn with_explanation(mut self, verdict: Option<HeaderValue>) -> Self {
        self.explanation = verdict;
        self
    }

    /// A call that is not measured (an outer layer measures it): the body is passed on.
    pub(crate) fn unmeasured(inner: F) -> Self {
        Self {
            inner,
            record: None,
            busy: None,
            explanation: None,
            deadline: None,
        }
    }
}

impl<F, R, E> Future for InboundFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<ObservedBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _deadline = this.deadline.map(crate::inbound_deadline::enter);
        let polled = match this.record {
            Some(record) => {
                let _entered = record.span().enter();
                this.inner.poll(cx)
            }
            None => this.inner.poll(cx),
        };
        let response = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(response)) => response,
        };
        let mut record = this.record.take();
        if let Some(record) = &mut record {
            record.on_response(&response);
        }
        let busy = this.busy.take();
        let mut response = response;
        if let Some(verdict) = this.explanation.take() {
            response
                .headers_mut()
                .insert(crate::explain::AUTHZ_HEADER, verdict);
        }
        Poll::Ready(Ok(
            response.map(|body| ObservedBody::new(body, record, busy))
        ))
    }
}

/// The server side's metrics for one service: a table per caller identity, made on the
/// caller's first request, and a counter per authorization policy and verdict.
///
/// Both maps are behind a one-entry cache of the last lookup: calls come in runs from one
/// connection (one caller) decided by one policy, and comparing the cached key (a pointer for
/// the peer, a short string for the policy) is far cheaper than hashing it and taking a lock.
#[derive(Default)]
pub(crate) struct InboundTelemetry {
    service: String,
    by_peer: RwLock<HashMap<Option<PeerIdentity>, Arc<StatusTable>>>,
    last_peer: ArcSwapOption<(Option<PeerIdentity>, Arc<StatusTable>)>,
    /// Verdict -> policy -> counter (nested so a lookup borrows the policy name).
    decisions: RwLock<HashMap<Verdict, HashMap<String, Counter>>>,
    last_decision: ArcSwapOption<(Verdict, String, Counter)>,
    /// Calls refused by a rate limit, by policy, limit and caller (see [`RATE_LIMITED`]).
    limited: Mutex<HashMap<LimitedKey, Counter>>,
}

/// A rate-limited counter's labels: policy, limit, caller (`None` for `_OTHER`).
type LimitedKey = (Arc<str>, LimitKind, Option<Option<PeerIdentity>>);

/// Callers labelled by name on the rate-limited counter; further ones are `_OTHER`. Callers
/// are verified identities, so this only bounds what a flood of them could make the mesh
/// remember.
const MAX_LIMITED_CALLERS: usize = 256;

impl std::fmt::Debug for InboundTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundTelemetry")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl InboundTelemetry {
    pub(crate) fn new(service: String) -> Self {
        Self {
            service,
            ..Self::default()
        }
    }

    /// The service's name, as labelled.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// The duration table of calls from `peer`.
    pub(crate) fn table(&self, peer: Option<&PeerIdentity>) -> Arc<StatusTable> {
        // `PeerIdentity` is an `Arc`: requests of one connection compare by pointer.
        if let Some(last) = &*self.last_peer.load()
            && last.0.as_ref() == peer
        {
            return last.1.clone();
        }
        let table = self.lookup_table(peer);
        self.last_peer
            .store(Some(Arc::new((peer.cloned(), table.clone()))));
        table
    }

    fn lookup_table(&self, peer: Option<&PeerIdentity>) -> Arc<StatusTable> {
        let key = peer.cloned();
        if let Some(table) = self
            .by_peer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return table.clone();
        }
        let labels = vec![
            Label::new(attr::MESH_SERVICE, self.service.clone()),
            Label::new(
                attr::MESH_PEER_IDENTITY,
                peer.map_or_else(String::new, |p| p.id().to_string()),
            ),
        ];
        let table = Arc::new(StatusTable::new(Direction::Inbound, labels));
        self.by_peer
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(table)
            .clone()
    }

    /// Counts an authorization decision.
    pub(crate) fn decided(&self, decision: &Decision) {
        let policy = decision.reason.policy();
        if let Some(last) = &*self.last_decision.load()
            && last.0 == decision.verdict
            && last.1 == policy
        {
            last.2.increment(1);
            return;
        }
        let counter = self.decision_counter(decision.verdict, policy);
        counter.increment(1);
        self.last_decision.store(Some(Arc::new((
            decision.verdict,
            policy.to_owned(),
            counter,
        ))));
    }

    /// Counts a request refused for an invalid end-user token (rare: the counter is looked up
    /// each time).
    pub(crate) fn token_refused(&self, error: mesh_core::jwt::JwtError) {
        metrics::counter!(
            JWT_REFUSALS,
            vec![
                Label::new(attr::MESH_SERVICE, self.service.clone()),
                Label::from_static_parts(attr::MESH_REASON, error.as_str()),
            ]
        )
        .increment(1);
    }

    /// The counter of `verdict` by `policy`, made on first use.
    fn decision_counter(&self, verdict: Verdict, policy: &str) -> Counter {
        if let Some(counter) = self
            .decisions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&verdict)
            .and_then(|by_policy| by_policy.get(policy))
        {
            return counter.clone();
        }
        let label = match verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::AuditAllow => "audit",
        };
        let counter = metrics::counter!(
            AUTHZ_DECISIONS,
            vec![
                Label::new(attr::MESH_SERVICE, self.service.clone()),
                Label::new(attr::MESH_POLICY, policy.to_owned()),
                Label::from_static_parts(attr::MESH_VERDICT, label),
            ]
        );
        self.decisions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(verdict)
            .or_default()
            .insert(policy.to_owned(), counter.clone());
        counter
    }

    /// Counts a call from `peer` refused by a rate limit. Only refused calls come here: the
    /// admitted ones pay nothing for this counter.
    pub(crate) fn limited(&self, limited: &Limited, peer: Option<&PeerIdentity>) {
        let mut counters = self.limited.lock().unwrap_or_else(PoisonError::into_inner);
        let mut key: LimitedKey = (limited.policy.clone(), limited.kind, Some(peer.cloned()));
        if !counters.contains_key(&key) {
            let callers = counters.keys().filter(|k| k.2.is_some()).count();
            if callers >= MAX_LIMITED_CALLERS {
                key.2 = None;
            }
        }
        let counter = counters.entry(key).or_insert_with_key(|key| {
            let peer = match &key.2 {
                Some(peer) => peer
                    .as_ref()
                    .map_or_else(String::new, |p| p.id().to_string()),
                None => crate::telemetry::OTHER.to_owned(),
            };
            metrics::counter!(
                RATE_LIMITED,
                vec![
                    Label::new(attr::MESH_SERVICE, self.service.clone()),
                    Label::new(attr::MESH_POLICY, key.0.to_string()),
                    Label::from_static_parts(attr::MESH_LIMIT, key.1.as_str()),
                    Label::new(attr::MESH_PEER_IDENTITY, peer),
                ]
            )
        });
        counter.increment(1);
    }
}
