//! The server side's telemetry: a span per request parented on the caller's trace context, and
//! the call's duration by status, recorded when the response body ends.
//!
//! It sits outside authorization, so a call the mesh denies is measured and traced like any
//! other (with its 403 or PERMISSION_DENIED).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;

use super::metrics::{InboundTelemetry, StatusTable};
use super::propagation::set_remote_parent;
use super::record::{CallRecord, ObservedBody, server_span};
use crate::authz::Authorizer;
use crate::server::PeerIdentity;

/// The mesh's server-side telemetry around a service, for one connection from `peer`; see the
/// module docs. Built by [`crate::server::serve`]; tonic servers get it from `MeshLayer`.
#[derive(Debug, Clone)]
pub struct Inbound<S> {
    inner: S,
    peer: Option<PeerIdentity>,
    /// The connection's authorizer: it carries the service's telemetry and the caller's
    /// duration table.
    authorizer: Option<Authorizer>,
}

impl<S> Inbound<S> {
    /// Wraps `inner` for a connection from `peer` whose requests `authorizer` judges (the
    /// authorizer carries its service's metric handles; without one nothing is recorded).
    pub fn new(inner: S, peer: Option<PeerIdentity>, authorizer: Option<&Authorizer>) -> Self {
        Self {
            inner,
            peer,
            authorizer: authorizer.cloned(),
        }
    }
}

impl<S, B, R> tower::Service<Request<B>> for Inbound<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<ObservedBody<R>>;
    type Error = S::Error;
    type Future = InboundFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = &mut self.inner;
        InboundFuture::instrument(
            self.authorizer.as_ref(),
            self.peer.as_ref(),
            request,
            |request| inner.call(request),
        )
    }
}

pin_project! {
    /// The future of an [`Inbound`] call: runs the inner future inside the request's span and
    /// hands the measurement to the response body.
    pub struct InboundFuture<F> {
        #[pin]
        inner: F,
        record: Option<CallRecord>,
    }
}

impl<F> std::fmt::Debug for InboundFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundFuture").finish_non_exhaustive()
    }
}

impl<F> InboundFuture<F> {
    /// Starts measuring `request` from `peer` (when `measure`, the service's telemetry and
    /// the caller's duration table, is given) and calls `call` with it inside the request's
    /// span.
    fn start<B>(
        measure: Option<(&InboundTelemetry, Arc<StatusTable>)>,
        peer: Option<&PeerIdentity>,
        request: Request<B>,
        call: impl FnOnce(Request<B>) -> F,
    ) -> Self {
        let Some((telemetry, table)) = measure else {
            return Self {
                inner: call(request),
                record: None,
            };
        };
        let start = Instant::now();
        let grpc = crate::authz::is_grpc(&request);
        let span = server_span(&request, telemetry.service(), grpc);
        set_remote_parent(&span, request.headers());
        if let Some(peer) = peer
            && !span.is_disabled()
        {
            span.record("client.identity", tracing::field::display(peer));
        }
        let record = CallRecord::new(table, start, grpc, span);
        let inner = {
            let _entered = record.span().enter();
            call(request)
        };
        Self {
            inner,
            record: Some(record),
        }
    }

    /// Like [`Inbound`], for a server whose connection details arrive in each request (tonic):
    /// measures `request` when `authorizer` carries telemetry.
    pub fn instrument<B>(
        authorizer: Option<&Authorizer>,
        peer: Option<&PeerIdentity>,
        request: Request<B>,
        call: impl FnOnce(Request<B>) -> F,
    ) -> Self {
        Self::start(
            authorizer.and_then(|authorizer| authorizer.measure(peer)),
            peer,
            request,
            call,
        )
    }
}

impl<F, R, E> Future for InboundFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<ObservedBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
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
        Poll::Ready(Ok(response.map(|body| ObservedBody::new(body, record))))
    }
}
