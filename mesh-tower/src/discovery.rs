//! What the control service last said: the snapshot in use, which destinations are wanted, and
//! the state of the control connection.
//!
//! The snapshot is published through a `watch` channel: the request path never reads it under
//! a lock held by the control path for long, and every destination's discovery sees each
//! change.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use mesh_core::authz::InboundPolicy;
use mesh_core::jwt::Verifier;
use mesh_core::rate::InboundLimiter;
use mesh_core::route::CompiledRoutes;
use mesh_core::snapshot::{DestinationKey, Snapshot};
use tokio::sync::watch;

/// The control connection as the service sees it, for health reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlStatus {
    /// Whether a Watch stream is open now.
    pub connected: bool,
    /// The version of the snapshot in use (0 before the first).
    pub version: u64,
    /// When the snapshot in use arrived (for one restored from `MESH_STATE_DIR`, when it was
    /// saved there).
    pub updated_at: Option<SystemTime>,
    /// True while the mesh runs on state restored from `MESH_STATE_DIR` because the control
    /// service could not be reached at start-up; false again once the control service sends
    /// a snapshot. [`ControlStatus::staleness`] then says how old the restored snapshot is.
    pub restored_from_disk: bool,
    /// The last error on the control connection, if any since it was last healthy.
    pub last_error: Option<String>,
    /// The last snapshot refused, with the reason.
    pub last_nack: Option<(u64, String)>,
}

impl ControlStatus {
    /// How long ago the snapshot in use arrived.
    pub fn staleness(&self) -> Option<Duration> {
        self.updated_at
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }
}

/// What the server side judges requests by: the own service's inbound policy, its routes and
/// its rate limiter.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) policy: InboundPolicy,
    /// The own service's routes, when it has any.
    pub(crate) routes: Option<CompiledRoutes>,
    /// The JWT issuers it accepts, compiled with their keys; `None` when it accepts none.
    pub(crate) verifier: Option<Verifier>,
    /// The rate limits' state, when the service has any: carried from one snapshot to the
    /// next while its policies stay the same, so an update refills nobody's limit.
    pub(crate) limiter: Option<Arc<InboundLimiter>>,
}

/// What the Watch subscription asks for and tells the control service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The destinations whose snapshots the workload needs.
    pub(crate) destinations: BTreeSet<DestinationKey>,
    /// The gRPC services (`package.Service`) it serves.
    pub(crate) grpc_services: BTreeSet<String>,
}

/// The shared discovery state of one mesh handle.
#[derive(Debug)]
pub(crate) struct Discovery {
    snapshot: watch::Sender<Arc<Snapshot>>,
    wanted: watch::Sender<Wanted>,
    status: watch::Sender<ControlStatus>,
    /// The own service's inbound policy, for the server side's request path.
    inbound: Arc<ArcSwapOption<Inbound>>,
    /// Snapshots refused (NACKed), for telemetry.
    rejected: metrics::Counter,
}

impl Discovery {
    /// Discovery that counts the snapshots it refuses on `rejected` (made by the telemetry,
    /// labelled with the workload's service).
    pub(crate) fn new(rejected: metrics::Counter) -> Self {
        Self {
            snapshot: watch::Sender::new(Arc::new(Snapshot::default())),
            wanted: watch::Sender::new(Wanted::default()),
            status: watch::Sender::new(ControlStatus::default()),
            inbound: Arc::new(ArcSwapOption::empty()),
            rejected,
        }
    }

    /// Follows the snapshot in use.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.subscribe()
    }

    /// The snapshot in use.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Puts a validated snapshot in force.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        let version = snapshot.version;
        let previous = self.inbound.load_full();
        let previous = previous.as_ref().and_then(|p| p.limiter.as_ref());
        self.inbound.store(snapshot.inbound.as_ref().map(|policy| {
            // The service's own routes (it subscribes to itself) name the route a request
            // matched, for policies that target one route.
            let routes = snapshot
                .destination(&DestinationKey::service(policy.service.clone()))
                .map(CompiledRoutes::new)
                .filter(CompiledRoutes::has_routes);
            let limiter =
                InboundLimiter::update(previous, &policy.rate_limits, std::time::Instant::now());
            Arc::new(Inbound {
                policy: policy.clone(),
                routes,
                verifier: Verifier::new(&policy.jwt_rules),
                limiter,
            })
        }));
        self.snapshot.send_replace(Arc::new(snapshot));
        self.status.send_modify(|s| {
            s.version = version;
            s.updated_at = Some(SystemTime::now());
            s.restored_from_disk = false;
        });
    }

    /// Puts a snapshot restored from the state directory in force, saved at `saved_at`: the
    /// status says so, and its staleness counts from when it was saved.
    pub(crate) fn restore(&self, snapshot: Snapshot, saved_at: SystemTime) {
        self.publish(snapshot);
        self.status.send_modify(|s| {
            s.updated_at = Some(saved_at);
            s.restored_from_disk = true;
        });
    }

    /// The own service's inbound policy, as the server side reads it.
    pub(crate) fn inbound(&self) -> Arc<ArcSwapOption<Inbound>> {
        self.inbound.clone()
    }

    /// Follows what the subscription asks for and says.
    pub(crate) fn wanted(&self) -> watch::Receiver<Wanted> {
        self.wanted.subscribe()
    }

    /// Adds a destination to the subscription.
    pub(crate) fn want(&self, destination: &DestinationKey) {
        self.wanted
            .send_if_modified(|wanted| wanted.destinations.insert(destination.clone()));
    }

    /// Tells the control service that this process serves the gRPC service `name`.
    pub(crate) fn serve_grpc(&self, name: &str) {
        self.wanted.send_if_modified(|wanted| {
            !wanted.grpc_services.contains(name) && wanted.grpc_services.insert(name.to_owned())
        });
    }

    /// The control connection's state.
    pub(crate) fn status(&self) -> ControlStatus {
        self.status.borrow().clone()
    }

    /// Records a snapshot refused with `error`; the last good one stays in force.
    pub(crate) fn rejected(&self, version: u64, error: String) {
        self.rejected.increment(1);
        self.status
            .send_modify(|s| s.last_nack = Some((version, error)));
    }

    /// Updates the control connection's state.
    pub(crate) fn set_status(&self, update: impl FnOnce(&mut ControlStatus)) {
        self.status.send_modify(update);
    }

    /// Waits until a snapshot answers for `destination` (found or not), up to `timeout`.
    pub(crate) async fn resolved(&self, destination: &DestinationKey, timeout: Duration) -> bool {
        let mut snapshots = self.subscribe();
        let wait = snapshots.wait_for(|s| s.destination(destination).is_some());
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }
}
