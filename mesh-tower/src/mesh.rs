//! [`Mesh`]: the handle a service holds. Starting it gets a certificate from the control
//! service and opens the Watch stream; from it come clients for destinations and the TLS
//! configuration for serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_core::snapshot::{ServiceName, Snapshot};
use mesh_core::tls::{TrustBundle, TrustStore};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::authz::Authorizer;
use crate::client::MeshClient;
use crate::control::{ControlConnector, Subscriber, certify, renew_forever, watch_forever};
use crate::discovery::{ControlStatus, Discovery};
use crate::error::BoxError;
use crate::identity::{Identity, IdentityError};
use crate::server::MeshIncoming;
use crate::settings::{MeshSettings, SettingsError};
use crate::telemetry::{AdminState, InboundTelemetry, MeshTelemetry};
use crate::tls::server_config;

/// Why the mesh could not start, or a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is missing or malformed.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The trust anchors file could not be read or parsed.
    #[error("MESH_TRUST_ANCHORS_FILE {path}: {message}")]
    TrustAnchors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No certificate could be had before the start-up timeout.
    #[error("no certificate from the control service after {waited:?}: {source}")]
    Certificate {
        /// How long it tried.
        waited: Duration,
        /// The last failure.
        #[source]
        source: IdentityError,
    },
    /// The control service sent no snapshot (and so no inbound policy) in time.
    #[error("no snapshot from the control service after {waited:?}")]
    NoSnapshot {
        /// How long it waited.
        waited: Duration,
    },
    /// The admin port (`MESH_ADMIN_ADDR`) could not be bound.
    #[error("cannot listen on {addr} (MESH_ADMIN_ADDR): {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The control service did not answer for a destination in time.
    #[error("destination {destination}: no answer from the control service after {waited:?}")]
    Unresolved {
        /// The destination.
        destination: ServiceName,
        /// How long it waited.
        waited: Duration,
    },
}

/// The mesh inside one service: identity, discovery, and the workers that keep them current.
/// Cheap to clone; the workers stop when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: MeshSettings,
    identity: Identity,
    discovery: Arc<Discovery>,
    telemetry: Arc<MeshTelemetry>,
    inbound: Arc<InboundTelemetry>,
    admin_addr: Option<SocketAddr>,
    workers: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

impl Mesh {
    /// Starts the mesh from `MESH_*` environment variables.
    pub async fn from_env() -> Result<Self, StartError> {
        Self::start(MeshSettings::from_env()?).await
    }

    /// Starts the mesh: reads the trust anchors, obtains a certificate (retrying until
    /// `startup_timeout` while the control service is unreachable), then follows snapshots
    /// and renews the certificate in the background.
    ///
    /// With `admin_addr` set, the admin server starts first (so probes see "not ready" while
    /// the certificate is awaited) and the mesh's Prometheus recorder is installed unless the
    /// application installed one.
    pub async fn start(settings: MeshSettings) -> Result<Self, StartError> {
        crate::telemetry::install_propagator();
        let admin = match settings.admin_addr {
            Some(addr) => Some(start_admin(addr).await?),
            None => None,
        };
        crate::telemetry::describe();
        let pem = tokio::fs::read(&settings.trust_anchors_file)
            .await
            .map_err(|e| StartError::TrustAnchors {
                path: settings.trust_anchors_file.clone(),
                message: e.to_string(),
            })?;
        let anchors = TrustBundle::from_pem(settings.trust_domain.clone(), &pem).map_err(|e| {
            StartError::TrustAnchors {
                path: settings.trust_anchors_file.clone(),
                message: e.to_string(),
            }
        })?;
        let trust = TrustStore::new(anchors);
        let connector = Arc::new(ControlConnector::new(
            settings.control_addrs.clone(),
            settings.control_identity.clone(),
        ));

        let (svid, bundle) = first_certificate(&connector, &trust, &settings).await?;
        tracing::info!(
            id = %svid.id,
            valid_for_secs = svid.valid_for().as_secs(),
            "mesh identity issued"
        );
        trust.store(bundle);
        let identity = Identity::new(svid, trust);

        let service_label = settings
            .service
            .as_ref()
            .map_or_else(String::new, ToString::to_string);
        let telemetry = Arc::new(MeshTelemetry::new(service_label.clone()));
        let inbound = Arc::new(InboundTelemetry::new(service_label.clone()));
        let discovery = Arc::new(Discovery::new(&service_label));
        if let Some(service) = &settings.service {
            // A server subscribes to its own service too: its routes name the route each
            // request matched, for authorization policies that target a route.
            discovery.want(service);
        }
        let subscriber = Subscriber {
            node: settings.node.clone(),
            own_service: settings.service.clone(),
        };
        let mut workers = vec![
            tokio::spawn(renew_forever(
                connector.clone(),
                identity.clone(),
                settings.token.clone(),
                settings.trust_domain.clone(),
            ))
            .abort_handle(),
            tokio::spawn(watch_forever(
                connector,
                identity.clone(),
                discovery.clone(),
                subscriber,
            ))
            .abort_handle(),
            tokio::spawn(crate::telemetry::refresh_forever(
                Arc::downgrade(&telemetry),
                identity.clone(),
                Arc::downgrade(&discovery),
            ))
            .abort_handle(),
        ];
        let admin_addr = match admin {
            Some(admin) => {
                admin
                    .state
                    .started(identity.clone(), &discovery, &telemetry);
                workers.extend(admin.task.disarm());
                Some(admin.addr)
            }
            None => None,
        };
        let mesh = Self {
            inner: Arc::new(Inner {
                settings,
                identity,
                discovery,
                telemetry,
                inbound,
                admin_addr,
                workers,
            }),
        };
        if mesh.inner.settings.service.is_some() {
            // A server must not take calls before its inbound policy is known: wait for the
            // first snapshot, which carries it.
            mesh.first_snapshot().await?;
        }
        Ok(mesh)
    }

    async fn first_snapshot(&self) -> Result<(), StartError> {
        let waited = self.inner.settings.startup_timeout;
        let mut snapshots = self.inner.discovery.subscribe();
        let arrived = tokio::time::timeout(waited, snapshots.wait_for(|s| s.version > 0)).await;
        match arrived {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StartError::NoSnapshot { waited }),
        }
    }

    /// The settings the mesh runs with.
    pub fn settings(&self) -> &MeshSettings {
        &self.inner.settings
    }

    /// Where the admin server listens, when `admin_addr` was set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// This workload's identity and trust bundle.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The snapshot in use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.discovery.snapshot()
    }

    /// The control connection's state: connected, version, staleness.
    pub fn control_status(&self) -> ControlStatus {
        self.inner.discovery.status()
    }

    /// A client for `destination` (`name.namespace`, or `name` in this workload's namespace).
    /// Waits until the control service has answered for it (up to the start-up timeout), so
    /// the first call does not race discovery.
    pub async fn client<B>(&self, destination: &str) -> Result<MeshClient<B>, StartError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let destination = self.inner.settings.destination(destination)?;
        let discovery = &self.inner.discovery;
        discovery.want(&destination);
        let waited = self.inner.settings.startup_timeout;
        if !discovery.resolved(&destination, waited).await {
            return Err(StartError::Unresolved {
                destination,
                waited,
            });
        }
        let snapshot = discovery.snapshot();
        let Some(resolved) = snapshot.destination(&destination) else {
            // `resolved` returned true: the snapshot in force has the destination, and a
            // later snapshot for the same subscription keeps it.
            return Err(StartError::Unresolved {
                destination,
                waited,
            });
        };
        Ok(MeshClient::new(
            resolved,
            discovery,
            self.inner.identity.clone(),
            self.inner.settings.ready_timeout,
            self.inner.telemetry.clone(),
        ))
    }

    /// The server TLS configuration: this workload's SVID, client certificates required.
    pub fn server_tls_config(&self) -> Arc<ServerConfig> {
        server_config(&self.inner.identity, true)
    }

    /// Accepts mTLS connections on `listener` (for tonic's `serve_with_incoming`, or
    /// [`crate::server::serve`]).
    pub fn incoming(&self, listener: TcpListener) -> std::io::Result<MeshIncoming> {
        let authorizer = Authorizer::new(
            self.inner.discovery.inbound(),
            Some(self.inner.inbound.clone()),
        );
        MeshIncoming::new(listener, self.server_tls_config(), Some(authorizer))
    }

    /// Serves `service` (an axum `Router` or any tower HTTP service) over mTLS on `listener`,
    /// with the caller's [`crate::PeerIdentity`] in each request's extensions.
    pub async fn serve<S, ResBody>(&self, listener: TcpListener, service: S) -> std::io::Result<()>
    where
        S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<ResBody>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError> + Send,
        ResBody: http_body::Body + Default + Send + 'static,
        ResBody::Data: Send,
        ResBody::Error: Into<BoxError>,
    {
        let incoming = self.incoming(listener)?;
        crate::server::serve(incoming, service).await;
        Ok(())
    }
}

/// The admin server, started before the certificate is asked for.
struct StartedAdmin {
    addr: SocketAddr,
    state: Arc<AdminState>,
    task: AbortOnDrop,
}

async fn start_admin(addr: SocketAddr) -> Result<StartedAdmin, StartError> {
    if mesh_core::prometheus::install().is_none() {
        tracing::info!("a metrics recorder is already installed; the mesh only emits to it");
    }
    let bind_error = |source| StartError::Admin { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let state = Arc::new(AdminState::default());
    let task = crate::telemetry::spawn_admin(listener, state.clone()).abort_handle();
    tracing::info!(addr = %bound, "mesh admin serving /metrics /live /ready /debug/config");
    Ok(StartedAdmin {
        addr: bound,
        state,
        task: AbortOnDrop(Some(task)),
    })
}

/// Aborts a task when dropped, unless disarmed: `Mesh::start` failing half-way leaves no task
/// behind.
struct AbortOnDrop(Option<AbortHandle>);

impl AbortOnDrop {
    fn disarm(mut self) -> Option<AbortHandle> {
        self.0.take()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The first certificate, retried with backoff while the control service is unreachable.
async fn first_certificate(
    connector: &ControlConnector,
    trust: &TrustStore,
    settings: &MeshSettings,
) -> Result<(crate::identity::Svid, TrustBundle), StartError> {
    let deadline = tokio::time::Instant::now() + settings.startup_timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        match certify(connector, trust, &settings.token, &settings.trust_domain).await {
            Ok(issued) => return Ok(issued),
            // A refusal will not change by asking again: fail at once with the reason.
            Err(source @ IdentityError::Refused(_)) | Err(source @ IdentityError::BadReply(_)) => {
                return Err(StartError::Certificate {
                    waited: Duration::ZERO,
                    source,
                });
            }
            Err(source) => {
                if tokio::time::Instant::now() + backoff > deadline {
                    return Err(StartError::Certificate {
                        waited: settings.startup_timeout,
                        source,
                    });
                }
                tracing::info!(error = %source, "control service not reachable yet; retrying");
                tokio::time::sleep(crate::client::jittered(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
