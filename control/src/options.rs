//! How to run the control service ([`ControlOptions`]) and why it may not start
//! ([`StartError`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_core::TrustDomain;
use mesh_core::anchor_rotation::{RotationSchedule, ScheduleError};

use crate::ca::certify::CertifyRateLimit;
use crate::ca::dns_names::DnsSanSuffixes;
use crate::ca::{self, CaError, CaSource};
use crate::jwks::JwksOptions;
use crate::replicas::{InvalidPeer, PeerLimits};
use crate::serve::limits::{ConnectionLimits, InvalidLimit};
use crate::serve::tls::ServerCertError;
use crate::source::ConfigSource;
use crate::source::file::{self, LoadError, ParseError};
#[cfg(feature = "kubernetes")]
use crate::source::kubernetes;
use crate::watch::limits::WatchLimits;
use crate::watch::skew;

/// The namespace of the control service's own identity unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "mesh-system";

/// The service account in the control service's own identity.
pub const SERVICE_ACCOUNT: &str = "mesh-control";

/// How often subscribers report their calls unless told otherwise.
pub const DEFAULT_EDGE_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// How to run the control service.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Where gRPC listens; port 0 picks a free port
    /// ([`RunningControl::addr`](crate::RunningControl::addr) tells which).
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
    /// Bounds on the gRPC port's connections and TLS handshakes in progress (defaults: 10,000
    /// connections, 256 handshakes, 32 per source address, 10 s per handshake).
    pub connection_limits: ConnectionLimits,
    /// How many certificates `Certify` issues per identity (default: 128 at once, then one a
    /// second; see [`CertifyRateLimit`]).
    pub certify_rate: CertifyRateLimit,
    /// How many Watch streams and destinations one identity may hold (default: 1,024 streams,
    /// 1,024 destinations a stream, 65,536 in all; see [`WatchLimits`]).
    pub watch_limits: WatchLimits,
    /// How often subscribers are asked to report their calls for the live view on the admin
    /// port (`/ui`; default 5 s, which should stay well below the view's 30 s window). Zero
    /// asks for no reports.
    pub edge_report_interval: Duration,
    /// How the JWK Sets of `jwksUri` issuers are refreshed.
    pub jwks: JwksOptions,
    /// Rotates the CA's own root automatically on this schedule (default: off). Needs a dev
    /// or in-memory CA: a CA in files is rotated by its operator (see `ca::reload`). The state
    /// (roots, keys, phase) is kept in the Secret `mesh-control-ca` when the config comes from
    /// Kubernetes, else in the dev CA's state directory (`ca-rotation.json`), else in memory. The schedule's defaults: roots of one year, rotated at 66 % of their
    /// life, ten minutes at most waiting for ACKs.
    pub root_rotation: Option<RotationSchedule>,
    /// The suffixes of the DNS names workload certificates carry: `<service>.<namespace>.<suffix>`
    /// for each service the workload's identity serves (default `svc` and
    /// `svc.cluster.local`; empty for none). See [`DnsSanSuffixes`].
    pub dns_san_suffixes: DnsSanSuffixes,
    /// Names the control service's own certificate carries besides its SPIFFE ID and
    /// `mesh-control.<namespace>.<suffix>` for each of `dns_san_suffixes`: DNS names, or IP
    /// addresses (IP SANs). A gRPC client in another language checks the name it dialled
    /// (the bootstrap's `server_uri`) against these.
    pub server_names: Vec<String>,
    /// The other replicas of this control service (`host:port` of their gRPC ports; a name
    /// that resolves to several addresses, such as the headless Service of the control
    /// Deployment, is each of them, this replica skipped), whose subscribers `/subscribers`
    /// lists beside this replica's (see [`crate::replicas`]). Empty for none (the default).
    pub peers: Vec<String>,
    /// The name this replica's subscribers are marked with in the view (e.g. the pod's name);
    /// by default the address its gRPC port is bound to.
    pub replica_name: Option<String>,
    /// Bounds on asking the peers (defaults: 16 addresses, 2 s, 16 MiB an answer).
    pub peer_limits: PeerLimits,
}

/// Why the control service did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `cert_lifetime` is below one second.
    #[error("cert_lifetime: must be at least 1s")]
    CertLifetime,
    /// A bound in `connection_limits` lets nothing through (the message names the field).
    #[error("connection_limits.{0}")]
    ConnectionLimits(InvalidLimit),
    /// A bound in `jwks` is out of range.
    #[error("{0}")]
    Jwks(String),
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
    Kubernetes(#[from] kubernetes::SyncError),
    /// `root_rotation` is out of bounds, or too short for `cert_lifetime`.
    #[error(transparent)]
    RootRotation(#[from] ScheduleError),
    /// `root_rotation` was asked for a CA in files.
    #[error(
        "root_rotation: needs a CA the control service keeps itself (dev or in-memory); a CA \
         in files is rotated by its operator"
    )]
    RootRotationSource,
    /// The rotation's stored state (the Kubernetes Secret, or the dev CA's
    /// `ca-rotation.json`) could not be read or written.
    #[error("root_rotation: the CA state: {0}")]
    RootRotationState(#[source] Box<dyn std::error::Error + Send + Sync>),
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
    /// A name of `server_names` is neither a DNS name nor an IP address.
    #[error("server_names: {name:?} is neither a DNS name nor an IP address: {reason}")]
    ServerName {
        /// The name given.
        name: String,
        /// Why it is not a DNS name.
        reason: &'static str,
    },
    /// A peer of `peers`, or a bound of `peer_limits`, is refused (the error names it).
    #[error("peers: {0}")]
    Peer(InvalidPeer),
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
            connection_limits: ConnectionLimits::default(),
            certify_rate: CertifyRateLimit::default(),
            watch_limits: WatchLimits::default(),
            edge_report_interval: DEFAULT_EDGE_REPORT_INTERVAL,
            jwks: JwksOptions::default(),
            root_rotation: None,
            dns_san_suffixes: DnsSanSuffixes::default(),
            server_names: Vec::new(),
            peers: Vec::new(),
            replica_name: None,
            peer_limits: PeerLimits::default(),
        }
    }
}
