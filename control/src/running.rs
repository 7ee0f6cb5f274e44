//! A started control service, [`RunningControl`]: what it bound, what it serves, and how it
//! stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mesh_core::SpiffeId;
use mesh_core::tls::TrustBundle;
use tokio::task::JoinHandle;

use crate::ca::CaHandle;
use crate::state::StateStore;
use crate::watch::registry::{Registry, SubscriberStatus};

/// A started control service. Dropping it stops everything; [`shutdown`](Self::shutdown)
/// stops gracefully and waits.
#[derive(Debug)]
pub struct RunningControl {
    pub(crate) addr: SocketAddr,
    pub(crate) admin_addr: Option<SocketAddr>,
    pub(crate) identity: SpiffeId,
    pub(crate) replica_name: String,
    pub(crate) ca: CaHandle,
    pub(crate) state: Arc<StateStore>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    pub(crate) server: Option<JoinHandle<()>>,
    /// Accept loop, file poller, certificate renewal, admin server.
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

// === impl RunningControl ===

impl RunningControl {
    /// The gRPC address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin address actually bound, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The SPIFFE ID the control service presents.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The name this replica's subscribers are marked with in the view across replicas.
    pub fn replica_name(&self) -> &str {
        &self.replica_name
    }

    /// The roots that verify the control service and every certificate it signs.
    pub fn trust_bundle(&self) -> TrustBundle {
        self.ca.load().trust_bundle()
    }

    /// [`trust_bundle`](Self::trust_bundle) as PEM.
    pub fn trust_bundle_pem(&self) -> String {
        self.ca.load().trust_bundle_pem()
    }

    /// Every Watch subscriber, by id.
    pub fn subscribers(&self) -> Vec<SubscriberStatus> {
        self.registry.list()
    }

    /// The config version in force (1 for the first config).
    pub fn config_version(&self) -> u64 {
        self.state.current().version
    }

    /// Waits until a config version newer than `version` is in force and returns it (at once
    /// when one already is), without polling: the caller is woken when a version is published.
    pub async fn version_after(&self, version: u64) -> u64 {
        let mut state = self.state.subscribe();
        match state.wait_for(|state| state.version > version).await {
            Ok(state) => state.version,
            // The store lives as long as `self`: its sender is never dropped first.
            Err(_) => self.config_version(),
        }
    }

    /// Stops accepting, ends every Watch stream (with UNAVAILABLE, so clients reconnect
    /// elsewhere), and returns once the server has finished (at most about 10 s).
    pub async fn shutdown(mut self) {
        self.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(server) = self.server.take() {
            // The server gives connections SHUTDOWN_GRACE to finish, then cuts them.
            let _ = server.await;
        }
        tracing::info!(addr = %self.addr, "mesh-control stopped");
    }
}

impl Drop for RunningControl {
    fn drop(&mut self) {
        // Streams see the signal and end; the server closes every connection gracefully
        // (cutting those still open after SHUTDOWN_GRACE) and ends by itself.
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}
