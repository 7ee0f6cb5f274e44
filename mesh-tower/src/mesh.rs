//! [`Mesh`]: the handle a service holds. Starting it gets a certificate from the control
//! service and opens the Watch stream; from it come clients for destinations and the TLS
//! configuration for serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mesh_core::backoff::Backoff;
use mesh_core::snapshot::{DestinationKey, Snapshot};
use mesh_core::tls::{TrustBundle, TrustStore};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::client::MeshClient;
use crate::control::{ControlConnector, Subscriber, certify, renew_forever, watch_forever};
use crate::discovery::{ControlStatus, Discovery};
use crate::error::BoxError;
use crate::identity::{Identity, IdentityError, Svid};
use crate::persist::{Restored, StateDir, StateError};
use crate::server::{Authorizer, InboundTelemetry, MeshIncoming};
use crate::settings::{MeshSettings, SettingsError};
use crate::telemetry::{AdminState, MeshTelemetry};
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
    /// The control service could not be reached and `MESH_STATE_DIR` holds no usable state to
    /// start from instead.
    #[error(
        "no certificate from the control service after {waited:?} ({source}), and MESH_STATE_DIR \
         {} has no usable state to start from: {missing}",
        dir.display()
    )]
    NoUsableState {
        /// How long it tried the control service.
        waited: Duration,
        /// The state directory.
        dir: PathBuf,
        /// Which file is missing, expired or invalid, and why.
        missing: StateError,
        /// The last failure reaching the control service.
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
        destination: DestinationKey,
        /// How long it waited.
        waited: Duration,
    },
}

/// Whether a [`Mesh`] is ready to serve, from [`Mesh::readiness`].
#[derive(Debug, Clone)]
pub struct Readiness {
    identity: Identity,
    discovery: std::sync::Weak<Discovery>,
}

impl Readiness {
    /// True while the mesh runs with an unexpired certificate and a snapshot from the control
    /// service (what `/ready` answers 200 for).
    pub fn is_ready(&self) -> bool {
        self.identity.svid().not_after > SystemTime::now()
            && self
                .discovery
                .upgrade()
                .is_some_and(|d| d.status().version > 0)
    }

    /// True once the mesh it was taken from is gone.
    pub fn is_closed(&self) -> bool {
        self.discovery.strong_count() == 0
    }
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
    /// With `state_dir` set, accepted snapshots (and, with `persist_identity`, the certificate
    /// and key) are saved there. When that directory holds usable state, the control service
    /// is given one short try (a couple of seconds at most) and, if it cannot be reached, the
    /// mesh starts from the saved state instead: [`ControlStatus::restored_from_disk`] is set
    /// and the workers keep trying the control service. See [`crate::persist`].
    ///
    /// With `admin_addr` set, the admin server starts first (so probes see "not ready" while
    /// the certificate is awaited) and the mesh's Prometheus recorder is installed unless the
    /// application installed one.
    pub async fn start(settings: MeshSettings) -> Result<Self, StartError> {
        crate::telemetry::install_propagator();
        let admin = match settings.admin_addr {
            Some(addr) => Some(start_admin(addr, settings.admin_debug).await?),
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
            &settings.node,
        ));

        let state = settings
            .state_dir
            .clone()
            .map(|dir| Arc::new(StateDir::new(dir, settings.persist_identity)));
        let saved = match &state {
            Some(state) => Some(state.load(&trust.load(), &settings.trust_domain).await),
            None => None,
        };
        // With state to fall back on, a control service that is down should not hold the start
        // for the whole timeout: that is the point of static stability.
        let wait = match &saved {
            Some(Ok(_)) => settings.startup_timeout.min(RESTORE_PROBE),
            _ => settings.startup_timeout,
        };
        let (svid, bundle, restored) = match first_certificate(&connector, &trust, &settings, wait)
            .await
        {
            Ok((svid, bundle)) => {
                if let Some(state) = &state {
                    state.save_identity(&svid).await;
                }
                (svid, bundle, None)
            }
            // Only an unreachable control service is a reason to start from disk: a refusal is
            // an answer, and must be heeded.
            Err(StartError::Certificate { waited, source }) if unreachable(&source) => {
                match (saved, &state) {
                    (Some(Ok(restored)), _) => {
                        let Restored {
                            snapshot,
                            saved_at,
                            svid,
                            bundle,
                        } = restored;
                        tracing::warn!(
                            error = %source,
                            version = snapshot.version,
                            snapshot_age_secs = SystemTime::now()
                                .duration_since(saved_at)
                                .unwrap_or_default()
                                .as_secs(),
                            "control service unreachable; starting from the state in MESH_STATE_DIR"
                        );
                        (svid, bundle, Some((snapshot, saved_at)))
                    }
                    (Some(Err(missing)), Some(state)) => {
                        return Err(StartError::NoUsableState {
                            waited,
                            dir: state.path().to_owned(),
                            missing,
                            source,
                        });
                    }
                    _ => return Err(StartError::Certificate { waited, source }),
                }
            }
            Err(error) => return Err(error),
        };
        log_identity(&svid, restored.is_some());
        trust.store(bundle);
        let identity = Identity::new(svid, trust);

        let service_label = settings
            .service
            .as_ref()
            .map_or_else(String::new, ToString::to_string);
        let telemetry = Arc::new(MeshTelemetry::new(service_label.clone()));
        let inbound = Arc::new(InboundTelemetry::new(service_label.clone()));
        let discovery = Arc::new(Discovery::new(crate::telemetry::config_rejected(
            &service_label,
        )));
        if let Some(service) = &settings.service {
            // A server subscribes to its own service too: its routes name the route each
            // request matched, for authorization policies that target a route.
            discovery.want(&DestinationKey::service(service.clone()));
        }
        if let Some((snapshot, saved_at)) = restored {
            // In force before the workers start, so a fresh snapshot always replaces it.
            discovery.restore(snapshot, saved_at);
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
                state.clone(),
            ))
            .abort_handle(),
            tokio::spawn(watch_forever(
                connector,
                identity.clone(),
                discovery.clone(),
                subscriber,
                state,
                telemetry.edges.clone(),
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

    /// The workload's readiness, as the admin port's `/ready` reports it: a valid certificate
    /// and a snapshot. The handle does not keep the mesh alive (once the mesh is gone it says
    /// "not ready"), so a task may follow it for as long as it likes.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            identity: self.inner.identity.clone(),
            discovery: Arc::downgrade(&self.inner.discovery),
        }
    }

    /// Tells the control service that this process serves the gRPC service `name`
    /// (`package.Service`), so that operators' checks can find routes and policies naming a
    /// service no replica serves (`meshctl check --admin`). Sent with the Watch subscription,
    /// now and after every reconnection. `mesh_tonic`'s `serving` calls it with the generated
    /// server's name.
    pub fn serves_grpc(&self, name: &str) {
        self.inner.discovery.serve_grpc(name);
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
            self.inner.telemetry.clone(),
            crate::client::ClientOptions::from_settings(&self.inner.settings),
        ))
    }

    /// The server TLS configuration: this workload's SVID, client certificates required.
    pub fn server_tls_config(&self) -> Arc<ServerConfig> {
        server_config(&self.inner.identity, true)
    }

    /// Accepts mTLS connections on `listener` for [`crate::server::serve`] (ALPN offers
    /// HTTP/2 and HTTP/1.1), with the settings' [`crate::ServerLimits`].
    pub fn incoming(&self, listener: TcpListener) -> std::io::Result<MeshIncoming> {
        self.incoming_for(listener, crate::tls::ServerProtocols::Http2AndHttp1)
    }

    /// [`Mesh::incoming`] for a server that speaks `protocols` (tonic's: HTTP/2 only).
    pub fn incoming_for(
        &self,
        listener: TcpListener,
        protocols: crate::tls::ServerProtocols,
    ) -> std::io::Result<MeshIncoming> {
        let authorizer = Authorizer::new(
            self.inner.discovery.inbound(),
            Some(self.inner.inbound.clone()),
        )
        .with_explain_to(&self.inner.settings.explain_to);
        let tls = crate::tls::server_config_for(&self.inner.identity, true, protocols);
        MeshIncoming::with_limits(
            listener,
            tls,
            Some(authorizer),
            self.inner.settings.server_limits,
        )
    }

    /// Serves `service` (an axum `Router` or any tower HTTP service) over mTLS on `listener`,
    /// with the caller's [`crate::PeerIdentity`] in each request's extensions.
    pub async fn serve<S, ResBody>(&self, listener: TcpListener, service: S) -> std::io::Result<()>
    where
        S: crate::server::HttpService<ResBody>,
        ResBody: crate::server::HttpBody,
    {
        let incoming = self.incoming(listener)?;
        crate::server::serve(incoming, service).await;
        Ok(())
    }

    /// Like [`Mesh::serve`], until `shutdown` completes; then drains gracefully (stops
    /// accepting, GOAWAY to every peer, calls in flight finish within `grace`). For tonic,
    /// `Server::serve_with_incoming_shutdown` does the same.
    pub async fn serve_with_shutdown<S, ResBody>(
        &self,
        listener: TcpListener,
        service: S,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> std::io::Result<()>
    where
        S: crate::server::HttpService<ResBody>,
        ResBody: crate::server::HttpBody,
    {
        let incoming = self.incoming(listener)?;
        crate::server::serve_with_shutdown(incoming, service, shutdown, grace).await;
        Ok(())
    }
}

/// The admin server, started before the certificate is asked for.
struct StartedAdmin {
    addr: SocketAddr,
    state: Arc<AdminState>,
    task: AbortOnDrop,
}

async fn start_admin(addr: SocketAddr, serve_debug: bool) -> Result<StartedAdmin, StartError> {
    if mesh_process::prometheus::install().is_none() {
        tracing::info!("a metrics recorder is already installed; the mesh only emits to it");
    }
    let bind_error = |source| StartError::Admin { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let state = Arc::new(AdminState::new(serve_debug));
    let task = crate::telemetry::spawn_admin(listener, state.clone()).abort_handle();
    tracing::info!(addr = %bound, debug_endpoints = serve_debug, "mesh admin serving /metrics /live /ready /debug/*");
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

/// How long the control service is tried at start-up when usable persisted state exists.
const RESTORE_PROBE: Duration = Duration::from_secs(2);

/// Whether a start-up failure means the control service could not be reached (rather than
/// that it answered no).
fn unreachable(error: &IdentityError) -> bool {
    matches!(error, IdentityError::Connect(_))
}

fn log_identity(svid: &Svid, restored: bool) {
    let valid_for_secs = svid.valid_for().as_secs();
    if restored {
        tracing::info!(id = %svid.id, valid_for_secs, "mesh identity restored from MESH_STATE_DIR");
    } else {
        tracing::info!(id = %svid.id, valid_for_secs, "mesh identity issued");
    }
}

/// How long before the start-up deadline the last attempt at a first certificate starts: time
/// for a connection, a TLS handshake and the call on a local network.
const LAST_ATTEMPT: Duration = Duration::from_millis(100);

/// The first certificate, retried with backoff while the control service is unreachable, for
/// up to `wait`: the waits between attempts never pass the deadline, and the last attempt starts
/// [`LAST_ATTEMPT`] before it.
async fn first_certificate(
    connector: &ControlConnector,
    trust: &TrustStore,
    settings: &MeshSettings,
    wait: Duration,
) -> Result<(Svid, TrustBundle), StartError> {
    let started = tokio::time::Instant::now();
    let deadline = started + wait;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        // Each attempt is bounded too: a control address that swallows packets must not hold
        // the start past the deadline.
        let attempt = certify(connector, trust, &settings.token, &settings.trust_domain);
        let result = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(IdentityError::Connect(
                crate::error::ConnectError::Timeout {
                    peer: settings.control_addrs.join(","),
                    after: wait,
                },
            )),
        };
        match result {
            Ok(issued) => return Ok(issued),
            // A refusal will not change by asking again: fail at once with the reason.
            Err(source @ IdentityError::Refused(_)) | Err(source @ IdentityError::BadReply(_)) => {
                return Err(StartError::Certificate {
                    waited: Duration::ZERO,
                    source,
                });
            }
            Err(source) => {
                // The attempt just made was the last one when too little time is left for
                // another: give up now, having waited (close to) the whole `wait`.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left <= LAST_ATTEMPT {
                    return Err(StartError::Certificate {
                        waited: started.elapsed(),
                        source,
                    });
                }
                tracing::info!(error = %source, "control service not reachable yet; retrying");
                // A wait that would pass the deadline is cut short: the last attempt starts
                // `LAST_ATTEMPT` before it, so the start gives up at the timeout, not a backoff
                // step early.
                tokio::time::sleep(backoff.next_wait().min(left - LAST_ATTEMPT)).await;
            }
        }
    }
}
