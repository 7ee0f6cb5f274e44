//! The client stack for one destination.
//!
//! ```text
//! MeshClient::call                                                       [call.rs]
//!   route    a RouteDecision, synchronously: match the request against the destination's
//!            routes (Gateway API precedence), pick a backend by weight, apply request header
//!            filters, sample the mirror, work out the deadline (the route's request timeout
//!            and the caller's grpc-timeout)         [route.rs, router.rs, mesh_core::route]
//!   mirror   a copy of the request to the mirror backend, not awaited      [call.rs]
//!   retry    Tries: per-try timeout; retries with a budget and backoff, for replayable
//!            bodies only, each on another endpoint when there is one; resends of refused
//!            requests; the grpc-timeout passed on reduced           [retry.rs, deadline.rs]
//!   hedge    or, on a route with a hedging policy, Tries with further tries to other
//!            endpoints after a delay, the first answer winning         [hedge.rs]
//!   balance  P2C over peak-EWMA (weighted) across the backend's available endpoints,
//!            outlier ejection                            [balance.rs, load.rs, backend.rs]
//!   endpoint a pool of HTTP/2 connections over mTLS; the endpoint must present the identity
//!            discovery lists                                               [endpoint.rs]
//!   respond  the route's response filter, or the mesh's own failure as a status
//!                                                               [retry.rs, respond.rs]
//! ```
//!
//! Routing state is compiled once per snapshot and read through an `ArcSwap`; connections are
//! kept by each endpoint's own task. A [`MeshClient`] is cheap to clone and needs no buffer
//! task: a call goes from the caller's task straight onto a connection.

mod backend;
mod balance;
mod body;
mod call;
mod cut;
mod deadline;
mod endpoint;
mod hedge;
mod load;
mod respond;
mod retry;
mod route;
mod router;
mod shared;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response};
use mesh_core::budget::{RetryBudget, RetryBudgetConfig};
use mesh_core::snapshot::{Destination, ServiceName};

pub use body::{MeshBody, Replay, ResponseBody, ResponseBodyError};
pub use cut::Cut;

use crate::discovery::Discovery;
use crate::error::BoxError;
use crate::identity::Identity;
use crate::telemetry::MeshTelemetry;
use router::Router;
use shared::Shared;

/// The future of a [`MeshClient`] call.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static>>;

/// How a [`MeshClient`] treats its endpoints, from [`crate::MeshSettings`].
#[derive(Debug, Clone)]
pub(crate) struct ClientOptions {
    /// How long a call waits for an endpoint to become available.
    pub(crate) ready_timeout: Duration,
    /// Outlier ejection for every backend.
    pub(crate) outliers: mesh_core::outlier::OutlierConfig,
    /// HTTP/2 connections kept open to each endpoint (at least 1).
    pub(crate) connections_per_endpoint: usize,
    /// The workload's own zone when it set one (`MESH_ZONE`): it wins over the zone the
    /// control service tells.
    pub(crate) zone: Option<Arc<str>>,
}

impl ClientOptions {
    /// The options `settings` ask for.
    pub(crate) fn from_settings(settings: &crate::MeshSettings) -> Self {
        Self {
            ready_timeout: settings.ready_timeout,
            outliers: settings.outlier,
            connections_per_endpoint: settings.connections_per_endpoint.max(1),
            zone: settings.zone.as_deref().map(Arc::from),
        }
    }
}

/// A client for one destination service. Any HTTP request body with `Bytes` chunks can be
/// sent; tonic uses it through `mesh-tonic`'s channel, hyper or axum callers directly.
///
/// Failures of the mesh's own (no route, no endpoints, timeouts) come back as responses with
/// the status a caller expects (for gRPC, a `grpc-status`), never as transport errors.
pub struct MeshClient<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for MeshClient<B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<B> std::fmt::Debug for MeshClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshClient")
            .field("destination", &self.shared.destination)
            .finish()
    }
}

impl<B> MeshClient<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(
        destination: &Destination,
        discovery: &Discovery,
        identity: Identity,
        telemetry: Arc<MeshTelemetry>,
        options: ClientOptions,
    ) -> Self {
        let name = destination.service.clone();
        let key = destination.key();
        // The logical name is the authority the server sees (`greeter.default`, or
        // `echo.default:7070` for one port of several); it is always a valid authority
        // because both parts are DNS labels and the port a number.
        let authority = Authority::try_from(key.to_string())
            .unwrap_or_else(|_| Authority::from_static("mesh.invalid"));
        let told_zone = discovery.snapshot().zone.clone();
        let router = Arc::new(Router::new(
            destination,
            identity,
            telemetry,
            options.clone(),
            &told_zone,
        ));
        let follower = tokio::spawn(router::follow(
            Arc::downgrade(&router),
            key,
            discovery.subscribe(),
        ))
        .abort_handle();
        Self {
            shared: Arc::new(Shared {
                destination: name,
                authority,
                router,
                budget: Mutex::new(RetryBudget::new(
                    RetryBudgetConfig::default(),
                    Instant::now(),
                )),
                ready_timeout: options.ready_timeout,
                follower,
            }),
        }
    }

    /// The destination this client calls.
    pub fn destination(&self) -> &ServiceName {
        &self.shared.destination
    }

    /// How many endpoints the destination's own backend has now (diagnostics).
    pub fn endpoint_count(&self) -> usize {
        self.shared.router.load().default.endpoint_count()
    }
}

impl<B> tower::Service<Request<B>> for MeshClient<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: a call waits for an endpoint itself, within the ready timeout.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Box::pin(call::call(self.shared.clone(), request))
    }
}
