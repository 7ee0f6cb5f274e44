//! Starting the control service: [`start`] and the steps it takes, in order. Anything that
//! fails makes `start` return before a port is served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use mesh_core::anchor_rotation::RotationSchedule;
use mesh_core::snapshot::{ServiceName, check_dns_label};
use mesh_core::tls::TrustStore;
use mesh_core::{SpiffeId, SpiffeIdError, TrustDomain};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, metrics};
use crate::ca::authn::{Authenticator, BootstrapTokens};
use crate::ca::certify::Certifier;
use crate::ca::dns_names::{DnsNames, DnsSanSuffixes};
use crate::ca::rotation::RotationStatus;
use crate::ca::rotation_store::{Resumed, RotationStore};
use crate::ca::{self, Ca, CaHandle, CaSource, RootPair, trust_bundle};
use crate::options::{ControlOptions, SERVICE_ACCOUNT, StartError};
use crate::replicas::local::LocalReplica;
use crate::replicas::peers::Peers;
use crate::running::RunningControl;
use crate::serve::conn;
use crate::serve::limits::ConnectionLimits;
use crate::serve::routes::ControlRoutes;
use crate::serve::service::ControlService;
use crate::serve::tls::{self, SvidResolver};
use crate::source::ConfigSource;
use crate::source::file::{self, ControlConfig};
#[cfg(feature = "kubernetes")]
use crate::source::kubernetes;
use crate::state::StateStore;
use crate::view::edges::EdgeStore;
use crate::watch::limits::WatchLimits;
use crate::watch::registry::Registry;
use crate::watch::skew::WireTransform;
use crate::watch::stream::WatchHub;

/// How long connections get to close after a shutdown before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The largest gRPC message accepted (a CSR is about 300 bytes; a subscription with thousands
/// of destinations stays well below).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Starts the control service: loads the config and the CA, binds the ports, and serves until
/// [`RunningControl::shutdown`] (or drop).
pub async fn start(options: ControlOptions) -> Result<RunningControl, StartError> {
    let ControlOptions {
        listen,
        admin_listen,
        trust_domain,
        config,
        ca: ca_source,
        trust_bundle_out,
        namespace,
        cert_lifetime,
        wire_transform,
        file_poll_interval,
        connection_limits,
        certify_rate,
        watch_limits,
        edge_report_interval,
        jwks,
        root_rotation,
        dns_san_suffixes,
        server_names,
        peers,
        replica_name,
        peer_limits,
    } = options;
    if cert_lifetime < Duration::from_secs(1) {
        return Err(StartError::CertLifetime);
    }
    connection_limits
        .check()
        .map_err(StartError::ConnectionLimits)?;
    jwks.check().map_err(StartError::Jwks)?;
    Peers::check(&peers, &peer_limits).map_err(StartError::Peer)?;
    let identity = own_identity(&trust_domain, &namespace)?;
    let config = load_config(config, &trust_domain, &namespace).await?;
    let rotating = rotation_state(
        root_rotation.as_ref(),
        &ca_source,
        &trust_domain,
        cert_lifetime,
        &config.follow,
        &namespace,
    )
    .await?;
    let ca = build_ca(
        &ca_source,
        rotating.as_ref().map(|(state, _)| state),
        &trust_domain,
        trust_bundle_out.as_deref(),
    )?;
    let own_names = own_names(&identity, &dns_san_suffixes, server_names)?;
    let own = own_tls(&ca, &identity, own_names, cert_lifetime)?;
    let listeners = bind_listeners(listen, admin_listen).await?;

    let mut shared = Shared::new(config.initial, &ca, edge_report_interval);
    // The rotation first: the subscriber rows that the service and the admin port list
    // show its state.
    let mut rotation_task = None;
    if let (Some(schedule), Some((state, store))) = (root_rotation, rotating) {
        let (task, status) = ca::rotation::spawn(
            schedule,
            trust_domain.clone(),
            state,
            store,
            ca::rotation::Targets {
                ca: ca.clone(),
                server_trust: own.trust.clone(),
                state: shared.state.clone(),
                registry: shared.registry.clone(),
                trust_bundle_out: trust_bundle_out.clone(),
                own: own.resolver.clone(),
                own_id: identity.clone(),
                leaf_lifetime: cert_lifetime,
            },
        );
        rotation_task = Some(task);
        shared.rotation = Some(status);
    }
    let replica_name = replica_name.unwrap_or_else(|| listeners.addr.to_string());
    let local = Arc::new(LocalReplica::new(
        replica_name.clone(),
        identity.clone(),
        shared.registry.clone(),
        shared.state.subscribe(),
        shared.rotation.clone(),
    ));
    let peers = if peers.is_empty() {
        None
    } else {
        Some(Arc::new(
            Peers::new(
                peers,
                peer_limits,
                identity.clone(),
                own.trust.clone(),
                own.resolver.clone(),
                local.instance.clone(),
            )
            .map_err(|error| {
                if let Some(task) = &rotation_task {
                    task.abort();
                }
                StartError::Tls(error)
            })?,
        ))
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let authn = authenticator(&shared.tokens, &config.follow);
    let (server, mut tasks) = spawn_server(
        listeners.grpc,
        own.acceptor,
        connection_limits,
        control_service(
            Certifier::new(
                authn,
                ca.clone(),
                cert_lifetime,
                certify_rate,
                DnsNames::new(dns_san_suffixes, shared.state.subscribe()),
            ),
            &shared,
            shutdown_rx.clone(),
            wire_transform,
            watch_limits,
            local.clone(),
        ),
        shutdown_rx,
    );
    tasks.extend(rotation_task);
    tasks.extend(spawn_config_followers(
        config.follow,
        &shared,
        &trust_domain,
        &namespace,
        file_poll_interval,
    ));
    tasks.push(crate::jwks::spawn(shared.state.clone(), jwks));
    tasks.push(own.resolver.clone().spawn_renewal(
        ca.clone(),
        identity.clone(),
        cert_lifetime,
        own.not_after,
    ));
    tasks.extend(ca::reload::spawn(
        ca_source,
        trust_domain,
        ca::reload::Targets {
            ca: ca.clone(),
            server_trust: own.trust,
            state: shared.state.clone(),
            trust_bundle_out,
        },
    ));
    tasks.extend(
        listeners
            .admin
            .map(|listener| spawn_admin(listener, &shared, local, peers)),
    );
    shared.ready.store(true, Ordering::Release);
    let (addr, admin_addr) = (listeners.addr, listeners.admin_addr);
    tracing::info!(%addr, ?admin_addr, %identity, version = 1, "mesh-control serving");

    Ok(RunningControl {
        addr,
        admin_addr,
        identity,
        replica_name,
        ca,
        state: shared.state,
        registry: shared.registry,
        ready: shared.ready,
        shutdown: shutdown_tx,
        server: Some(server),
        tasks,
    })
}

/// The control service's own SPIFFE ID, `spiffe://<td>/ns/<namespace>/sa/mesh-control`.
fn own_identity(trust_domain: &TrustDomain, namespace: &str) -> Result<SpiffeId, StartError> {
    let refuse = |reason: String| StartError::Namespace {
        namespace: namespace.to_owned(),
        reason,
    };
    check_dns_label(namespace).map_err(|r| refuse(r.to_owned()))?;
    SpiffeId::from_service_account(trust_domain, namespace, SERVICE_ACCOUNT)
        .map_err(|e: SpiffeIdError| refuse(e.to_string()))
}

/// The config read at start-up, and what keeps it current afterwards.
struct LoadedConfig {
    initial: ControlConfig,
    follow: Follow,
}

/// What keeps the config current after start-up.
enum Follow {
    /// Inline config: nothing, it is fixed.
    Nothing,
    /// A control file, polled; with the bytes the initial config was read from.
    File { path: PathBuf, bytes: Vec<u8> },
    /// The Kubernetes API: its watchers, the TokenReview authenticator that replaces the
    /// bootstrap tokens, and the client the trust bundle is published with. (Boxed: the
    /// watchers' state is large, the other variants small.)
    #[cfg(feature = "kubernetes")]
    Kubernetes {
        syncer: Box<kubernetes::sync::Syncer>,
        authn: Arc<kubernetes::TokenReviewAuthenticator>,
        client: kube::Client,
    },
}

/// Reads the first config from `source` (for Kubernetes, the first full sync).
async fn load_config(
    source: ConfigSource,
    trust_domain: &TrustDomain,
    #[cfg_attr(not(feature = "kubernetes"), allow(unused_variables))] namespace: &str,
) -> Result<LoadedConfig, StartError> {
    Ok(match source {
        ConfigSource::File(path) => {
            let (initial, bytes) = file::load(&path, trust_domain).await?;
            LoadedConfig {
                initial,
                follow: Follow::File { path, bytes },
            }
        }
        ConfigSource::Inline(text) => LoadedConfig {
            initial: file::parse(&text, trust_domain).map_err(StartError::InlineConfig)?,
            follow: Follow::Nothing,
        },
        #[cfg(feature = "kubernetes")]
        ConfigSource::Kubernetes(source) => {
            let (mesh, syncer) = kubernetes::sync::sync(&source, trust_domain, namespace).await?;
            let authn = kubernetes::TokenReviewAuthenticator::new(
                source.client.clone(),
                source.audience.clone(),
                trust_domain.clone(),
            );
            LoadedConfig {
                initial: ControlConfig {
                    mesh,
                    tokens: Vec::new(),
                },
                follow: Follow::Kubernetes {
                    syncer: Box::new(syncer),
                    authn: Arc::new(authn),
                    client: source.client,
                },
            }
        }
    })
}

/// The state an automatic rotation resumes from, when one is asked for: the schedule checked
/// against the leaf lifetime, the state read from where it is kept (a Secret in the control
/// service's namespace when the config comes from Kubernetes), or a fresh root.
async fn rotation_state(
    schedule: Option<&RotationSchedule>,
    source: &CaSource,
    trust_domain: &TrustDomain,
    cert_lifetime: Duration,
    follow: &Follow,
    #[cfg_attr(not(feature = "kubernetes"), allow(unused_variables))] namespace: &str,
) -> Result<Option<(Resumed, RotationStore)>, StartError> {
    let Some(schedule) = schedule else {
        return Ok(None);
    };
    schedule.check(cert_lifetime)?;
    let dev_dir = match source {
        CaSource::Files { .. } => return Err(StartError::RootRotationSource),
        CaSource::Dev { state_dir } => Some(state_dir.clone()),
        CaSource::Ephemeral => None,
    };
    let mut store = match (follow, &dev_dir) {
        #[cfg(feature = "kubernetes")]
        (Follow::Kubernetes { client, .. }, _) => RotationStore::Secret {
            secret: kubernetes::ca_secret::CaSecret::new(client.clone(), namespace),
            version: None,
        },
        (_, Some(dir)) => RotationStore::Dir(dir.clone()),
        (_, None) => RotationStore::Memory,
    };
    // A dev CA rotates from the root already in its state directory, so workloads that
    // trust it keep doing so; otherwise from a fresh root of the schedule's lifetime.
    let seed = || match &dev_dir {
        Some(dir) => RootPair::dev(dir, trust_domain, schedule.root_lifetime),
        None => RootPair::generate(trust_domain, schedule.root_lifetime),
    };
    let state = ca::rotation::resume(&mut store, seed, cert_lifetime)
        .await
        .map_err(|e| StartError::RootRotationState(Box::new(e)))?;
    Ok(Some((state, store)))
}

/// Loads (or creates) the CA, or builds it on a rotation's first root, and, when asked,
/// writes its trust bundle file.
fn build_ca(
    source: &CaSource,
    rotating: Option<&Resumed>,
    trust_domain: &TrustDomain,
    trust_bundle_out: Option<&Path>,
) -> Result<CaHandle, StartError> {
    // Synchronous on purpose: a key generation and a few small file reads, once.
    let ca = match rotating {
        Some(state) => ca::rotation::ca_for(trust_domain, state)?,
        None => Ca::load(source, trust_domain)?,
    };
    let ca: CaHandle = Arc::new(arc_swap::ArcSwap::from_pointee(ca));
    if let Some(path) = trust_bundle_out {
        trust_bundle::write(path, &ca.load().trust_bundle_pem()).map_err(|e| {
            StartError::TrustBundleOut {
                path: e.path,
                source: e.source,
            }
        })?;
    }
    Ok(ca)
}

/// The control service's own TLS: its certificate (renewed later), the trust it checks
/// clients against (updated when the CA reloads), and the acceptor built from both.
struct OwnTls {
    resolver: Arc<SvidResolver>,
    not_after: SystemTime,
    trust: TrustStore,
    acceptor: TlsAcceptor,
}

/// The names of the service's own certificate besides its SPIFFE ID: its Service's DNS names
/// (`mesh-control.<namespace>.<suffix>`), then `extra` (each checked: a DNS name or an IP).
fn own_names(
    identity: &SpiffeId,
    suffixes: &DnsSanSuffixes,
    extra: Vec<String>,
) -> Result<Vec<String>, StartError> {
    let mut names: Vec<String> = identity
        .namespace()
        .and_then(|namespace| ServiceName::new(namespace, SERVICE_ACCOUNT).ok())
        .map(|service| suffixes.names_of(&service).collect())
        .unwrap_or_default();
    for name in extra {
        if name.parse::<std::net::IpAddr>().is_err() {
            mesh_core::dns::check_dns_subdomain(&name).map_err(|reason| {
                StartError::ServerName {
                    name: name.clone(),
                    reason,
                }
            })?;
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Issues the service's own certificate (with `names` beside its SPIFFE ID) and builds its
/// TLS config.
fn own_tls(
    ca: &CaHandle,
    identity: &SpiffeId,
    names: Vec<String>,
    lifetime: Duration,
) -> Result<OwnTls, StartError> {
    let (resolver, not_after) = SvidResolver::issue(&ca.load(), identity, names, lifetime)?;
    let resolver = Arc::new(resolver);
    let trust = TrustStore::new(ca.load().trust_bundle());
    let config = tls::tls_config(trust.clone(), resolver.clone()).map_err(StartError::Tls)?;
    Ok(OwnTls {
        resolver,
        not_after,
        trust,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}

/// The bound ports and the addresses they got.
struct Listeners {
    grpc: TcpListener,
    addr: SocketAddr,
    admin: Option<TcpListener>,
    admin_addr: Option<SocketAddr>,
}

/// Binds the gRPC port and, when asked, the admin port.
async fn bind_listeners(
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
) -> Result<Listeners, StartError> {
    let bind_error = |source| StartError::Bind {
        addr: listen,
        source,
    };
    let grpc = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = grpc.local_addr().map_err(bind_error)?;
    let (admin, admin_addr) = match admin_listen {
        Some(admin) => {
            let admin_error = |source| StartError::AdminBind {
                addr: admin,
                source,
            };
            let listener = TcpListener::bind(admin).await.map_err(admin_error)?;
            let addr = listener.local_addr().map_err(admin_error)?;
            (Some(listener), Some(addr))
        }
        None => (None, None),
    };
    Ok(Listeners {
        grpc,
        addr,
        admin,
        admin_addr,
    })
}

/// What the service's tasks share: the config in force and who reads it.
struct Shared {
    tokens: Arc<BootstrapTokens>,
    state: Arc<StateStore>,
    registry: Arc<Registry>,
    /// What subscribers report of their calls, for the live view.
    edges: Arc<EdgeStore>,
    /// Set once everything is spawned; `/readyz` reports it.
    ready: Arc<AtomicBool>,
    /// The root rotation's state, when the CA rotates its own root.
    rotation: Option<Arc<RotationStatus>>,
}

impl Shared {
    fn new(initial: ControlConfig, ca: &CaHandle, edge_report_interval: Duration) -> Self {
        Self {
            tokens: Arc::new(BootstrapTokens::new(initial.tokens)),
            state: Arc::new(StateStore::new(
                initial.mesh,
                ca.load().trust_bundle().roots().to_vec(),
            )),
            registry: Arc::new(Registry::default()),
            edges: Arc::new(EdgeStore::new(edge_report_interval)),
            ready: Arc::new(AtomicBool::new(false)),
            rotation: None,
        }
    }
}

/// Who `Certify` believes: the control file's bootstrap tokens, or TokenReview when the
/// config comes from Kubernetes.
fn authenticator(tokens: &Arc<BootstrapTokens>, follow: &Follow) -> Arc<dyn Authenticator> {
    match follow {
        #[cfg(feature = "kubernetes")]
        Follow::Kubernetes { authn, .. } => authn.clone(),
        _ => tokens.clone(),
    }
}

/// The `Control` service: Certify and Watch.
fn control_service(
    certifier: Certifier,
    shared: &Shared,
    shutdown: tokio::sync::watch::Receiver<bool>,
    wire_transform: WireTransform,
    watch_limits: WatchLimits,
    local: Arc<LocalReplica>,
) -> ControlService {
    ControlService::new(
        certifier,
        WatchHub::new(
            shared.state.subscribe(),
            shutdown,
            shared.registry.clone(),
            wire_transform,
            watch_limits,
            shared.edges.clone(),
        ),
        local,
    )
}

/// Spawns the accept loop (returned in the task list) and the server that serves every
/// accepted connection until `shutdown` (returned on its own: shutting down waits for it).
fn spawn_server(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    service: ControlService,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> (JoinHandle<()>, Vec<JoinHandle<()>>) {
    let (accept, incoming) = tls::spawn_accept_loop(listener, acceptor, limits);
    let server = tokio::spawn(conn::serve(
        ControlRoutes::new(service, MAX_MESSAGE_BYTES),
        incoming,
        shutdown,
        SHUTDOWN_GRACE,
        limits.idle_timeout,
    ));
    (server, vec![accept])
}

/// Spawns what keeps the config current: the control file's poller, or the Kubernetes
/// watchers and the trust bundle publisher.
fn spawn_config_followers(
    follow: Follow,
    shared: &Shared,
    trust_domain: &TrustDomain,
    #[cfg_attr(not(feature = "kubernetes"), allow(unused_variables))] namespace: &str,
    file_poll_interval: Duration,
) -> Vec<JoinHandle<()>> {
    match follow {
        Follow::Nothing => Vec::new(),
        Follow::File { path, bytes } => {
            let (tokens, state) = (shared.tokens.clone(), shared.state.clone());
            vec![file::spawn_poller(
                path,
                file_poll_interval,
                trust_domain.clone(),
                bytes,
                move |config| apply(&tokens, &state, config),
            )]
        }
        #[cfg(feature = "kubernetes")]
        Follow::Kubernetes { syncer, client, .. } => {
            let mut tasks = (*syncer).spawn(shared.state.clone());
            tasks.push(kubernetes::bundle::spawn_publisher(
                client,
                trust_domain.clone(),
                namespace.to_owned(),
                shared.state.subscribe(),
            ));
            tasks
        }
    }
}

/// Applies a new valid control file: tokens at once, services as the next version if they
/// changed.
fn apply(tokens: &BootstrapTokens, state: &StateStore, config: ControlConfig) {
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

/// Installs the Prometheus recorder (unless one is in place) and serves the admin port.
fn spawn_admin(
    listener: TcpListener,
    shared: &Shared,
    local: Arc<LocalReplica>,
    peers: Option<Arc<Peers>>,
) -> JoinHandle<()> {
    if mesh_process::prometheus::install().is_none() {
        tracing::info!("a metrics recorder is already installed; /metrics has nothing to render");
    }
    metrics::describe();
    admin::spawn(
        listener,
        admin::AdminState {
            ready: shared.ready.clone(),
            registry: shared.registry.clone(),
            state: shared.state.subscribe(),
            seen: Arc::default(),
            edges: shared.edges.clone(),
            rotation: shared.rotation.clone(),
            local,
            peers,
        },
    )
}
