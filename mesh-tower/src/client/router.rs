//! A destination's routing state: its compiled routes and its backends, rebuilt when a snapshot
//! changes it and read by calls through an `ArcSwap`.

use std::sync::{Arc, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use mesh_core::route::CompiledRoutes;
use mesh_core::snapshot::{Destination, DestinationKey, ServiceName, Snapshot};
use tokio::sync::watch;

use super::ClientOptions;
use super::backend::Backend;
use crate::error::BoxError;
use crate::identity::Identity;
use crate::telemetry::{MeshTelemetry, OutboundIndex, Refresh};

/// What calls read: the routes and the backend of every service they may send to.
pub(crate) struct RouterState<B> {
    pub(crate) destination: Destination,
    /// The caller's zone this state was built for (empty: none): backends prefer endpoints
    /// local to it.
    zone: Arc<str>,
    pub(crate) routes: CompiledRoutes,
    /// The destination's own endpoints (no routes attached).
    pub(crate) default: Arc<Backend<B>>,
    /// Backend services (and ports) referenced by routes and mirrors. Routes name a handful,
    /// so a linear search by reference beats hashing two strings per call.
    backends: Vec<(DestinationKey, Arc<Backend<B>>)>,
    /// Metric handles for every route and backend of this state, built with it.
    pub(crate) metrics: OutboundIndex,
}

impl<B> RouterState<B> {
    /// The backend for `service` at `port`, as a route's reference names it.
    pub(crate) fn backend(
        &self,
        service: &ServiceName,
        port: Option<u16>,
    ) -> Option<&Arc<Backend<B>>> {
        self.backends
            .iter()
            .find(|(key, _)| key.port == port && &key.service == service)
            .map(|(_, backend)| backend)
    }
}

/// The routing state of one destination and what it needs to rebuild it.
pub(crate) struct Router<B> {
    state: ArcSwap<RouterState<B>>,
    identity: Identity,
    epoch: Instant,
    options: ClientOptions,
    telemetry: Arc<MeshTelemetry>,
}

impl<B> Router<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(
        destination: &Destination,
        identity: Identity,
        telemetry: Arc<MeshTelemetry>,
        options: ClientOptions,
        told_zone: &str,
    ) -> Self {
        let epoch = Instant::now();
        let zone = own_zone(&options, told_zone);
        let state = build(
            destination,
            zone,
            None,
            &identity,
            epoch,
            &options,
            &telemetry,
        );
        Self {
            state: ArcSwap::from_pointee(state),
            identity,
            epoch,
            options,
            telemetry,
        }
    }

    /// The state in force.
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<RouterState<B>>> {
        self.state.load()
    }

    /// The state in force, owned (a call keeps it for its whole life).
    pub(crate) fn load_full_state(&self) -> Arc<RouterState<B>> {
        self.state.load_full()
    }

    /// Rebuilds the state for a changed destination (or a changed zone of the caller's, as the
    /// control service tells it in `told_zone`), keeping backends and their endpoints.
    fn apply(&self, destination: &Destination, told_zone: &str) {
        let current = self.state.load_full();
        let zone = own_zone(&self.options, told_zone);
        if current.destination == *destination && current.zone == zone {
            return;
        }
        let state = build(
            destination,
            zone,
            Some(&current),
            &self.identity,
            self.epoch,
            &self.options,
            &self.telemetry,
        );
        self.state.store(Arc::new(state));
    }
}

/// The caller's zone: its own setting (`MESH_ZONE`) when it has one, else what the control
/// service tells.
fn own_zone(options: &ClientOptions, told: &str) -> Arc<str> {
    options.zone.clone().unwrap_or_else(|| Arc::from(told))
}

fn build<B>(
    destination: &Destination,
    zone: Arc<str>,
    previous: Option<&RouterState<B>>,
    identity: &Identity,
    epoch: Instant,
    options: &ClientOptions,
    telemetry: &Arc<MeshTelemetry>,
) -> RouterState<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let reuse = |key: &DestinationKey| -> Arc<Backend<B>> {
        previous
            .and_then(|p| {
                if p.destination.service == key.service && p.destination.port == key.port {
                    Some(p.default.clone())
                } else {
                    p.backend(&key.service, key.port).cloned()
                }
            })
            .unwrap_or_else(|| {
                let backend = Arc::new(Backend::new(
                    key.service.clone(),
                    epoch,
                    options.clone(),
                    &telemetry.service,
                ));
                let weak: Weak<dyn Refresh> = Arc::downgrade(&backend) as Weak<Backend<B>>;
                telemetry.register(weak);
                backend
            })
    };
    let own = destination.key();
    let default = reuse(&own);
    default.update(&destination.endpoints, identity, &zone);
    let mut backends = Vec::with_capacity(destination.backends.len());
    for backend in destination.backends.iter().filter(|b| b.found) {
        let key = DestinationKey {
            service: backend.service.clone(),
            port: backend.port,
        };
        let handle = if key == own {
            default.clone()
        } else {
            reuse(&key)
        };
        handle.update(&backend.endpoints, identity, &zone);
        backends.push((key, handle));
    }
    RouterState {
        metrics: OutboundIndex::new(&telemetry.service, destination, &telemetry.edges),
        routes: CompiledRoutes::new(destination),
        destination: destination.clone(),
        zone,
        default,
        backends,
    }
}

/// Follows snapshots for `router`'s destination until the router or the mesh is gone.
pub(crate) async fn follow<B>(
    router: Weak<Router<B>>,
    destination: DestinationKey,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
) where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        let Some(router) = router.upgrade() else {
            return;
        };
        if let Some(update) = snapshot.destination(&destination) {
            router.apply(update, &snapshot.zone);
        }
    }
}

#[cfg(test)]
impl<B> RouterState<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// The state for `destination` as [`build`] makes it, but with backends that have no
    /// endpoints (nothing connects, no runtime needed): for tests of routing.
    pub(crate) fn unconnected(destination: &Destination) -> Self {
        let options = ClientOptions {
            ready_timeout: std::time::Duration::from_secs(1),
            outliers: mesh_core::outlier::OutlierConfig::default(),
            connections_per_endpoint: 1,
            zone: None,
        };
        let epoch = Instant::now();
        let new = |service: &ServiceName| {
            Arc::new(Backend::new(
                service.clone(),
                epoch,
                options.clone(),
                "test",
            ))
        };
        let default = new(&destination.service);
        let backends = destination
            .backends
            .iter()
            .filter(|b| b.found)
            .map(|b| {
                let key = DestinationKey {
                    service: b.service.clone(),
                    port: b.port,
                };
                let backend = new(&key.service);
                (key, backend)
            })
            .collect();
        RouterState {
            metrics: OutboundIndex::new("test", destination, &Default::default()),
            routes: CompiledRoutes::new(destination),
            destination: destination.clone(),
            zone: Arc::from(""),
            default,
            backends,
        }
    }
}
