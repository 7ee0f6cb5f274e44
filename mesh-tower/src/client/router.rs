//! A destination's routing state: its compiled routes and its backends, rebuilt when a snapshot
//! changes it and read by calls through an `ArcSwap`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use mesh_core::route::CompiledRoutes;
use mesh_core::snapshot::{Destination, ServiceName, Snapshot};
use tokio::sync::watch;

use super::ClientOptions;
use super::backend::Backend;
use crate::error::BoxError;
use crate::identity::Identity;
use crate::telemetry::{MeshTelemetry, OutboundIndex, Refresh};

/// What calls read: the routes and the backend of every service they may send to.
pub(crate) struct RouterState<B> {
    pub(crate) destination: Destination,
    pub(crate) routes: CompiledRoutes,
    /// The destination's own endpoints (no routes attached).
    pub(crate) default: Arc<Backend<B>>,
    /// Backend services referenced by routes (and mirrors), by name.
    pub(crate) backends: HashMap<ServiceName, Arc<Backend<B>>>,
    /// Metric handles for every route and backend of this state, built with it.
    pub(crate) metrics: OutboundIndex,
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
    ) -> Self {
        let epoch = Instant::now();
        let state = build(destination, None, &identity, epoch, options, &telemetry);
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

    /// Rebuilds the state for a changed destination, keeping backends and their endpoints.
    fn apply(&self, destination: &Destination) {
        let current = self.state.load_full();
        if current.destination == *destination {
            return;
        }
        let state = build(
            destination,
            Some(&current),
            &self.identity,
            self.epoch,
            self.options,
            &self.telemetry,
        );
        self.state.store(Arc::new(state));
    }
}

fn build<B>(
    destination: &Destination,
    previous: Option<&RouterState<B>>,
    identity: &Identity,
    epoch: Instant,
    options: ClientOptions,
    telemetry: &Arc<MeshTelemetry>,
) -> RouterState<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let reuse = |service: &ServiceName| -> Arc<Backend<B>> {
        previous
            .and_then(|p| {
                if &p.default.service == service {
                    Some(p.default.clone())
                } else {
                    p.backends.get(service).cloned()
                }
            })
            .unwrap_or_else(|| {
                let backend = Arc::new(Backend::new(
                    service.clone(),
                    epoch,
                    options,
                    &telemetry.service,
                ));
                let weak: Weak<dyn Refresh> = Arc::downgrade(&backend) as Weak<Backend<B>>;
                telemetry.register(weak);
                backend
            })
    };
    let default = reuse(&destination.service);
    default.update(&destination.endpoints, identity);
    let mut backends = HashMap::with_capacity(destination.backends.len());
    for backend in destination.backends.iter().filter(|b| b.found) {
        let handle = if backend.service == destination.service {
            default.clone()
        } else {
            reuse(&backend.service)
        };
        handle.update(&backend.endpoints, identity);
        backends.insert(backend.service.clone(), handle);
    }
    RouterState {
        metrics: OutboundIndex::new(&telemetry.service, destination),
        routes: CompiledRoutes::new(destination),
        destination: destination.clone(),
        default,
        backends,
    }
}

/// Follows snapshots for `router`'s destination until the router or the mesh is gone.
pub(crate) async fn follow<B>(
    router: Weak<Router<B>>,
    destination: ServiceName,
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
            router.apply(update);
        }
    }
}
