//! The balancer for one destination, failing fast instead of waiting forever.
//!
//! tower's balancer is simply not ready while it has no ready endpoint. That is right while a
//! connection is being set up, but a destination that does not exist or has no replicas must
//! fail at once (503 / UNAVAILABLE), and one whose replicas are all unreachable must fail after
//! a bounded wait. This wrapper turns those cases into specific [`CallError`]s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use mesh_core::snapshot::{ServiceName, Snapshot};
use tokio::sync::watch;
use tokio::time::Sleep;
use tower::balance::p2c::Balance;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};

use super::discover::EndpointDiscover;
use crate::error::{BoxError, CallError};

/// The future of a call through the mesh's client stack.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'static>>;

/// Peak-EWMA's assumed latency for an endpoint with no history. Deliberately optimistic: a
/// pessimistic default (Linkerd's 30 ms) means that on a fast network a new replica costs more
/// than the warm ones and P2C never tries it until the others' estimates grow; an optimistic one
/// lets it take a call at once, and the peak rule replaces the default with the real latency
/// on the first response.
const DEFAULT_RTT: Duration = Duration::from_micros(100);
/// How fast peak-EWMA forgets.
const EWMA_DECAY: Duration = Duration::from_secs(10);

type Balancer<B> = Balance<PeakEwmaDiscover<EndpointDiscover<B>, CompleteOnResponse>, Request<B>>;

/// P2C over peak-EWMA across a destination's endpoints, with fast failure.
pub(crate) struct DestinationService<B> {
    destination: ServiceName,
    balancer: Balancer<B>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    ready_timeout: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
    fail_next: Option<CallError>,
}

impl<B> DestinationService<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(
        destination: ServiceName,
        discover: EndpointDiscover<B>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        ready_timeout: Duration,
    ) -> Self {
        let discover = PeakEwmaDiscover::new(
            discover,
            DEFAULT_RTT,
            EWMA_DECAY,
            CompleteOnResponse::default(),
        );
        Self {
            destination,
            balancer: Balance::new(discover),
            snapshots,
            ready_timeout,
            waiting: None,
            fail_next: None,
        }
    }

    /// Why no endpoint can be had right now, if the snapshot says so.
    fn unservable(&self) -> Option<CallError> {
        // A read lock on the latest snapshot; taken only when no endpoint is ready, never on
        // the path of a call that has one.
        let snapshot = self.snapshots.borrow();
        let destination = snapshot.destination(&self.destination)?;
        if !destination.found {
            Some(CallError::UnknownDestination(self.destination.clone()))
        } else if destination.endpoints.is_empty() {
            Some(CallError::NoEndpoints(self.destination.clone()))
        } else {
            None
        }
    }
}

impl<B> tower::Service<Request<B>> for DestinationService<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.fail_next.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.balancer.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.waiting = None;
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => {}
        }
        // Nothing ready: fail at once when the snapshot says nothing can be, else wait a
        // bounded time for a connection.
        if let Some(error) = self.unservable() {
            self.waiting = None;
            self.fail_next = Some(error);
            return Poll::Ready(Ok(()));
        }
        let timeout = self.ready_timeout;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if waiting.as_mut().poll(cx).is_ready() {
            self.waiting = None;
            self.fail_next = Some(CallError::NoReadyEndpoint {
                destination: self.destination.clone(),
                waited: timeout,
            });
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Some(error) = self.fail_next.take() {
            return Box::pin(async move { Err(error.into()) });
        }
        let response = self.balancer.call(request);
        Box::pin(response)
    }
}
