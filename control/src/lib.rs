//! `mesh-control`: the mesh's control service, as a library (for the demo and tests) and a
//! binary.
//!
//! It serves `mesh.control.v1.Control` over TLS with its own SPIFFE identity
//! (`spiffe://<td>/ns/<namespace>/sa/mesh-control`):
//!
//! - `Certify`: a workload proves who it is with a bootstrap token from the control file and
//!   sends a CSR; the CA signs fresh parameters for the SPIFFE ID the token maps to.
//! - `Watch`: a workload with a certificate names the destinations it needs; it gets a
//!   versioned snapshot of them at once and a new one whenever its projection changes, and it
//!   ACKs or NACKs each version. [`RunningControl::subscribers`] shows who is on which version.
//!
//! Config comes from a YAML control file ([`file`](mod@file)) that is polled for edits: a valid edit
//! becomes the next version, an invalid one is logged with its field paths and ignored.
//! With the `kubernetes` feature (on by default) it can instead read the Kubernetes API
//! (`ConfigSource::Kubernetes`, module `k8s`): Services, EndpointSlices, Pods, GAMMA routes
//! and `AuthorizationPolicy` objects become the same versioned config, and `Certify` checks
//! pods' projected ServiceAccount tokens with TokenReview.
//!
//! # Getting started
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_control::{CaSource, ConfigSource, ControlOptions};
//! use mesh_core::TrustDomain;
//!
//! let yaml = "
//! services:
//!   - name: greeter
//!     endpoints:
//!       - address: 127.0.0.1:50051
//!         identity: spiffe://mesh.local/ns/default/sa/greeter
//! bootstrapTokens:
//!   - token: greeter-secret
//!     namespace: default
//!     serviceAccount: greeter
//! ";
//! let mut options = ControlOptions::new(
//!     TrustDomain::new("mesh.local")?,
//!     ConfigSource::Inline(yaml.to_owned()),
//! );
//! options.ca = CaSource::Ephemeral;
//! let control = mesh_control::start(options).await?;
//! println!("control at {}, trust anchors:\n{}", control.addr(), control.trust_bundle_pem());
//! control.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Tasks
//!
//! One task accepts TCP connections and spawns a task per TLS handshake; one task per
//! established connection serves it with every stream on it, Watch streams and Certify calls
//! (see `conn.rs` for why not a task per stream); one task polls the control file; one
//! re-issues the service's own certificate at about 70 % of its lifetime; one serves the admin
//! port ([`admin`](ControlOptions::admin_listen)).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mesh_core::snapshot::check_dns_label;
use mesh_core::tls::{TrustBundle, TrustStore};
use mesh_core::{SpiffeId, SpiffeIdError, TrustDomain};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

mod admin;
pub mod authn;
pub mod ca;
mod ca_reload;
mod certify;
mod conn;
pub mod file;
#[cfg(feature = "kubernetes")]
pub mod k8s;
mod metrics;
mod projection;
mod registry;
mod server;
mod service;
pub mod skew;
mod state;
mod watch;
mod watch_route;

pub use authn::{Authenticator, AuthnError, AuthnFuture, BootstrapTokens};
pub use ca::{Ca, CaError, CaSource, Issued, SignError};
pub use file::{ControlConfig, LoadError, ParseError};
pub use registry::SubscriberStatus;
pub use server::{PeerInfo, ServerCertError};
pub use state::State;

/// The namespace of the control service's own identity unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "mesh-system";

/// The service account in the control service's own identity.
pub const SERVICE_ACCOUNT: &str = "mesh-control";

/// How long connections get to close after a shutdown before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The largest gRPC message accepted (a CSR is about 300 bytes; a subscription with thousands
/// of destinations stays well below).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// How to run the control service.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Where gRPC listens; port 0 picks a free port ([`RunningControl::addr`] tells which).
    pub listen: SocketAddr,
    /// Where the admin HTTP server listens; none when `None`.
    pub admin_listen: Option<SocketAddr>,
    /// The trust domain the CA signs for and endpoint identities must belong to.
    pub trust_domain: TrustDomain,
    /// Where the config comes from.
    pub config: ConfigSource,
    /// Where the CA's key comes from.
    pub ca: CaSource,
    /// When set, the trust bundle PEM is written there (atomically) at start-up.
    pub trust_bundle_out: Option<PathBuf>,
    /// The namespace of the control service's own identity (default `mesh-system`).
    pub namespace: String,
    /// Lifetime of the certificates the CA signs, the service's own included (default 24 h).
    pub cert_lifetime: Duration,
    /// Rewrites every snapshot sent: the identity unless a test (feature `testing`) sets one
    /// to play a newer control service (see [`skew`]).
    pub wire_transform: skew::WireTransform,
    /// How often a control file is read for edits (default 200 ms); an edit applies once two
    /// reads agree, so within two intervals.
    pub file_poll_interval: Duration,
}

/// Where the control service's config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A YAML control file, polled for edits.
    File(PathBuf),
    /// YAML text, fixed for the life of the service.
    Inline(String),
    /// The Kubernetes API: Services, EndpointSlices, Pods, GAMMA routes and
    /// `AuthorizationPolicy` objects; `Certify` then authenticates pods by TokenReview.
    #[cfg(feature = "kubernetes")]
    Kubernetes(k8s::KubernetesSource),
}

/// Why the control service did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `cert_lifetime` is below one second.
    #[error("cert_lifetime: must be at least 1s")]
    CertLifetime,
    /// `namespace` cannot form the service's SPIFFE ID.
    #[error("namespace {namespace:?}: {reason}")]
    Namespace {
        /// The namespace given.
        namespace: String,
        /// Why it was refused.
        reason: String,
    },
    /// The control file could not be read or was invalid (the error names the file and
    /// the fields).
    #[error(transparent)]
    ConfigFile(#[from] LoadError),
    /// The inline config was invalid.
    #[error("inline config: {0}")]
    InlineConfig(#[source] ParseError),
    /// The first sync with the Kubernetes API did not complete.
    #[cfg(feature = "kubernetes")]
    #[error(transparent)]
    Kubernetes(#[from] k8s::SyncError),
    /// The CA could not be loaded or created.
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    /// The trust bundle could not be written.
    #[error("trust bundle {}: {source}", path.display())]
    TrustBundleOut {
        /// Where it was to go.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The service's own certificate could not be issued.
    #[error(transparent)]
    ServerCert(#[from] ServerCertError),
    /// The TLS config was refused.
    #[error("TLS config: {0}")]
    Tls(#[source] rustls::Error),
    /// The gRPC port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The admin port could not be bound.
    #[error("cannot listen on {addr} (admin): {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A started control service. Dropping it stops everything; [`shutdown`](Self::shutdown)
/// stops gracefully and waits.
#[derive(Debug)]
pub struct RunningControl {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    identity: SpiffeId,
    ca: ca::CaHandle,
    state: Arc<state::StateStore>,
    registry: Arc<registry::Registry>,
    ready: Arc<AtomicBool>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    /// Accept loop, file poller, certificate renewal, admin server.
    tasks: Vec<JoinHandle<()>>,
}

// === impl ControlOptions ===

impl ControlOptions {
    /// Options with defaults: listen on 127.0.0.1 with a free port, no admin port, an
    /// ephemeral CA, namespace `mesh-system`, 24 h certificates, no trust bundle file.
    pub fn new(trust_domain: TrustDomain, config: ConfigSource) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: None,
            trust_domain,
            config,
            ca: CaSource::Ephemeral,
            trust_bundle_out: None,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            cert_lifetime: ca::DEFAULT_CERT_LIFETIME,
            wire_transform: skew::WireTransform::default(),
            file_poll_interval: file::POLL_INTERVAL,
        }
    }
}

/// Starts the control service: loads the config and the CA, binds the ports, and serves until
/// [`RunningControl::shutdown`] (or drop).
pub async fn start(options: ControlOptions) -> Result<RunningControl, StartError> {
    let ControlOptions {
        listen,
        admin_listen,
        trust_domain,
        config,
        ca,
        trust_bundle_out,
        namespace,
        cert_lifetime,
        wire_transform,
        file_poll_interval,
    } = options;
    if cert_lifetime < Duration::from_secs(1) {
        return Err(StartError::CertLifetime);
    }
    let identity = own_identity(&trust_domain, &namespace)?;

    #[cfg(feature = "kubernetes")]
    let mut kubernetes = None;
    let (initial, poll) = match config {
        ConfigSource::File(path) => {
            let (initial, bytes) = file::load(&path, &trust_domain).await?;
            (initial, Some((path, bytes)))
        }
        ConfigSource::Inline(text) => (
            file::parse(&text, &trust_domain).map_err(StartError::InlineConfig)?,
            None,
        ),
        #[cfg(feature = "kubernetes")]
        ConfigSource::Kubernetes(source) => {
            let (mesh, syncer) = k8s::source::sync(&source, &trust_domain, &namespace).await?;
            let authn = k8s::TokenReviewAuthenticator::new(
                source.client.clone(),
                source.audience.clone(),
                trust_domain.clone(),
            );
            kubernetes = Some((syncer, authn, source.client.clone()));
            let tokens = Vec::new();
            (ControlConfig { mesh, tokens }, None)
        }
    };

    // Synchronous on purpose: a key generation and a few small file reads, once.
    let ca_source = ca;
    let ca: ca::CaHandle = Arc::new(arc_swap::ArcSwap::from_pointee(Ca::load(
        &ca_source,
        &trust_domain,
    )?));
    if let Some(path) = &trust_bundle_out {
        write_trust_bundle(path, &ca.load().trust_bundle_pem())?;
    }

    let (resolver, not_after) = server::SvidResolver::issue(&ca.load(), &identity, cert_lifetime)?;
    let resolver = Arc::new(resolver);
    let server_trust = TrustStore::new(ca.load().trust_bundle());
    let tls =
        server::tls_config(server_trust.clone(), resolver.clone()).map_err(StartError::Tls)?;

    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let admin_listener = match admin_listen {
        Some(admin) => {
            Some(
                TcpListener::bind(admin)
                    .await
                    .map_err(|source| StartError::AdminBind {
                        addr: admin,
                        source,
                    })?,
            )
        }
        None => None,
    };
    let admin_addr = match &admin_listener {
        Some(l) => Some(l.local_addr().map_err(|source| StartError::AdminBind {
            addr: admin_listen.unwrap_or(listen),
            source,
        })?),
        None => None,
    };

    let tokens = Arc::new(BootstrapTokens::new(initial.tokens));
    let state = Arc::new(state::StateStore::new(
        initial.mesh,
        ca.load().trust_bundle().roots().to_vec(),
    ));
    let registry = Arc::new(registry::Registry::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);

    #[cfg_attr(not(feature = "kubernetes"), allow(unused_mut))]
    let mut authn: Arc<dyn Authenticator> = tokens.clone();
    #[cfg(feature = "kubernetes")]
    let kubernetes = kubernetes.map(|(syncer, review, client)| {
        authn = Arc::new(review);
        (syncer, client)
    });
    let service = service::ControlService::new(
        certify::Certifier::new(authn, ca.clone(), cert_lifetime),
        watch::WatchHub::new(
            state.subscribe(),
            shutdown_rx.clone(),
            registry.clone(),
            wire_transform,
        ),
    );
    let mut tasks = Vec::new();
    let (accept, incoming) = server::spawn_accept_loop(listener, TlsAcceptor::from(Arc::new(tls)));
    tasks.push(accept);
    let server = tokio::spawn(conn::serve(
        watch_route::ControlRoutes::new(service, MAX_MESSAGE_BYTES),
        incoming,
        shutdown_rx,
        SHUTDOWN_GRACE,
    ));
    if let Some((path, bytes)) = poll {
        let (tokens, state) = (tokens.clone(), state.clone());
        tasks.push(file::spawn_poller(
            path,
            file_poll_interval,
            trust_domain.clone(),
            bytes,
            move |config| apply(&tokens, &state, config),
        ));
    }
    #[cfg(feature = "kubernetes")]
    if let Some((syncer, client)) = kubernetes {
        tasks.extend(syncer.spawn(state.clone()));
        tasks.push(k8s::bundle::spawn_publisher(
            client,
            trust_domain.clone(),
            namespace.clone(),
            state.subscribe(),
        ));
    }
    tasks.push(resolver.spawn_renewal(ca.clone(), identity.clone(), cert_lifetime, not_after));
    tasks.extend(ca_reload::spawn(
        ca_source,
        trust_domain.clone(),
        ca_reload::Targets {
            ca: ca.clone(),
            server_trust,
            state: state.clone(),
            trust_bundle_out: trust_bundle_out.clone(),
        },
    ));
    if let Some(listener) = admin_listener {
        if mesh_process::prometheus::install().is_none() {
            tracing::info!(
                "a metrics recorder is already installed; /metrics has nothing to render"
            );
        }
        metrics::describe();
        tasks.push(admin::spawn(
            listener,
            admin::AdminState {
                ready: ready.clone(),
                registry: registry.clone(),
                state: state.subscribe(),
                seen: Arc::default(),
            },
        ));
    }
    ready.store(true, Ordering::Release);
    tracing::info!(%addr, ?admin_addr, %identity, version = 1, "mesh-control serving");

    Ok(RunningControl {
        addr,
        admin_addr,
        identity,
        ca,
        state,
        registry,
        ready,
        shutdown: shutdown_tx,
        server: Some(server),
        tasks,
    })
}

fn own_identity(trust_domain: &TrustDomain, namespace: &str) -> Result<SpiffeId, StartError> {
    let refuse = |reason: String| StartError::Namespace {
        namespace: namespace.to_owned(),
        reason,
    };
    check_dns_label(namespace).map_err(|r| refuse(r.to_owned()))?;
    SpiffeId::from_service_account(trust_domain, namespace, SERVICE_ACCOUNT)
        .map_err(|e: SpiffeIdError| refuse(e.to_string()))
}

pub(crate) fn write_trust_bundle(path: &Path, pem: &str) -> Result<(), StartError> {
    let err = |source| StartError::TrustBundleOut {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    mesh_process::atomic_file::write(path, pem.as_bytes(), 0o644).map_err(err)
}

/// Applies a new valid control file: tokens at once, services as the next version if they
/// changed.
fn apply(tokens: &BootstrapTokens, state: &state::StateStore, config: ControlConfig) {
    let token_count = config.tokens.len();
    tokens.replace(config.tokens);
    match state.publish(config.mesh) {
        Some(version) => tracing::info!(version, tokens = token_count, "config published"),
        None => tracing::info!(
            version = state.current().version,
            tokens = token_count,
            "services unchanged; version kept"
        ),
    }
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
