//! `grpc.health.v1.Health` for a meshed tonic server, following the mesh's readiness.
//!
//! ```no_run
//! use mesh_tonic::{MeshLayer, MeshTonicExt};
//! # async fn run(mesh: mesh_tower::Mesh, listener: tokio::net::TcpListener)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! let (health, health_service) = mesh.tonic_health().await;
//! mesh.tonic_server()
//!     .layer(MeshLayer::new())
//!     .add_service(health_service)
//!     // .add_service(GreeterServer::new(...))
//!     .serve_with_incoming_shutdown(mesh.tonic_incoming(listener)?, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!         // NOT_SERVING while the server drains its calls.
//!         health.drain().await;
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The server's status (service `""`) is `SERVING` while the mesh is ready (an unexpired
//! certificate and a snapshot from the control service: what the admin port's `/ready`
//! answers 200 for) and `NOT_SERVING` otherwise, and for good once [`MeshHealth::drain`] is
//! called. Other service names are the application's to set, through
//! [`MeshHealth::reporter`].
//!
//! **Authorization.** Served on the mesh's port, a health check is a meshed call like any
//! other: over mTLS, and authorized by the service's policies. A service whose
//! `defaultPolicy` is `deny` and whose meshed callers should see its health lists the method
//! in `exemptPaths` (`[/grpc.health.v1.Health/Check, /grpc.health.v1.Health/Watch]`), which
//! skips authorization for those paths, not mTLS.
//!
//! **Kubernetes probes.** The kubelet's gRPC probe speaks plaintext HTTP/2 without a client
//! certificate, so it cannot reach a strict-mTLS port. [`serve_probe`] serves the same health
//! service alone, in plaintext, on a port of its own, for `grpc:` probes: it answers nothing
//! but `Check` and `Watch` of the statuses above (no data of the application, no call to a
//! handler), so it does not weaken the mesh's port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mesh_tower::Mesh;
use tokio::sync::Notify;
use tonic_health::ServingStatus;
use tonic_health::server::{HealthReporter, HealthService};

pub use tonic_health::pb::health_server::HealthServer;

/// How often readiness is checked (it changes when the certificate expires unrenewed, or the
/// first snapshot arrives).
const POLL: Duration = Duration::from_millis(500);

/// The health of a meshed tonic server: follows the mesh's readiness until [`drain`].
///
/// [`drain`]: MeshHealth::drain
#[derive(Debug, Clone)]
pub struct MeshHealth {
    reporter: HealthReporter,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    draining: AtomicBool,
    wake: Notify,
}

impl MeshHealth {
    /// The health service for `mesh` and its handle; the status is set before this returns,
    /// and then followed by a task that ends with the mesh.
    pub async fn new(mesh: &Mesh) -> (Self, HealthServer<HealthService>) {
        let reporter = HealthReporter::new();
        let readiness = mesh.readiness();
        let state = Arc::new(State::default());
        let status = |ready: bool, state: &State| {
            if ready && !state.draining.load(Ordering::Acquire) {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        let mut current = status(readiness.is_ready(), &state);
        reporter.set_service_status("", current).await;
        let follower = (reporter.clone(), state.clone());
        tokio::spawn(async move {
            let (reporter, state) = follower;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = state.wake.notified() => {}
                }
                let closed = readiness.is_closed();
                let next = status(!closed && readiness.is_ready(), &state);
                if next != current {
                    reporter.set_service_status("", next).await;
                    current = next;
                }
                if closed || state.draining.load(Ordering::Acquire) {
                    return;
                }
            }
        });
        let service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        mesh.serves_grpc(<HealthServer<HealthService> as tonic::server::NamedService>::NAME);
        (Self { reporter, state }, service)
    }

    /// `NOT_SERVING` from now on: call it when the server starts draining (its shutdown
    /// signal fired), so that probes and balancers stop sending before it closes.
    pub async fn drain(&self) {
        self.state.draining.store(true, Ordering::Release);
        self.state.wake.notify_one();
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }

    /// The reporter behind the service, to set the status of named services.
    pub fn reporter(&self) -> &HealthReporter {
        &self.reporter
    }
}

/// Serves `health` alone, in plaintext HTTP/2, on `listener` until `shutdown` completes: the
/// port for the kubelet's `grpc:` probes (see the module's documentation). Calls are bounded
/// (a few streams per connection, a second each).
pub async fn serve_probe(
    listener: tokio::net::TcpListener,
    health: HealthServer<HealthService>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .accept_http1(false)
        .max_concurrent_streams(4)
        .concurrency_limit_per_connection(4)
        .timeout(Duration::from_secs(1))
        .add_service(health)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
