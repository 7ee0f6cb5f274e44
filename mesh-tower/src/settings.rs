//! The mesh's settings: read once from `MESH_*` environment variables, or built in code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_core::snapshot::{DestinationKey, ServiceName, ServiceNameError};
use mesh_core::{SpiffeId, TrustDomain};

use crate::server::ServerLimits;

/// A setting that is missing or malformed; names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct SettingsError {
    /// The environment variable (or builder field) that is wrong.
    pub var: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SettingsError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

/// How the workload proves who it is when it asks for a certificate.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file read at every request, so a rotated projected token is picked up (`MESH_TOKEN_FILE`).
    File(PathBuf),
    /// A token given directly (`MESH_TOKEN`), for development.
    Inline(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            // Tokens are credentials: never in logs.
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

/// Everything the mesh needs to start in a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// Addresses of the control service's replicas (`host:port`; a name that resolves to
    /// several addresses counts as each of them), `MESH_CONTROL_ADDR`, comma-separated. A
    /// workload starts from the replica a hash of its [`node`](Self::node) picks, so that
    /// workloads spread over the replicas, and moves to the next when one fails.
    pub control_addrs: Vec<String>,
    /// The identity the control service must present (`MESH_CONTROL_IDENTITY`; default
    /// `spiffe://<td>/ns/mesh-system/sa/mesh-control`).
    pub control_identity: SpiffeId,
    /// The trust domain (`MESH_TRUST_DOMAIN`, default `mesh.local`).
    pub trust_domain: TrustDomain,
    /// The service this process serves, if any (`MESH_SERVICE`: `name` or `name.namespace`).
    pub service: Option<ServiceName>,
    /// The workload's namespace (`MESH_POD_NAMESPACE`, default `default`).
    pub namespace: String,
    /// The workload's service account (`MESH_SERVICE_ACCOUNT`, default `default`).
    pub service_account: String,
    /// A PEM file with the roots to trust at start-up (`MESH_TRUST_ANCHORS_FILE`).
    pub trust_anchors_file: PathBuf,
    /// The proof of identity for `Certify` (`MESH_TOKEN_FILE` or `MESH_TOKEN`).
    pub token: TokenSource,
    /// This instance's name, for operators (`MESH_NODE_NAME`, else `HOSTNAME`, else the pid).
    /// In Kubernetes, the pod's name: the control service finds the pod's zone by it.
    pub node: String,
    /// The zone this workload runs in (`MESH_ZONE`, at most 63 bytes): its clients prefer
    /// endpoints in the same zone. Unset: the zone the control service tells (in Kubernetes,
    /// the zone of the pod's node), else none (no zone preference).
    pub zone: Option<String>,
    /// How long to wait for the control service at start-up before failing
    /// (`MESH_STARTUP_TIMEOUT`, seconds, default 30).
    pub startup_timeout: Duration,
    /// How long a call waits for some endpoint of its destination to become reachable before
    /// failing with UNAVAILABLE (`MESH_READY_TIMEOUT`, seconds, default 10).
    pub ready_timeout: Duration,
    /// Failure accrual (outlier ejection) for every backend this workload calls: consecutive
    /// failures (`MESH_OUTLIER_CONSECUTIVE_FAILURES`, default 5) and, optionally, a success
    /// rate (`MESH_OUTLIER_SUCCESS_RATE`, `<percent>/<requests>`: eject an endpoint whose
    /// success average over that many answers falls below the percentage; off by default);
    /// the floor: at most `MESH_OUTLIER_MAX_EJECTION_PERCENT` (0 to 100, default 50) of a
    /// backend ejected, at least `MESH_OUTLIER_MIN_READY` (default 1) left in service.
    pub outlier: mesh_core::outlier::OutlierConfig,
    /// HTTP/2 connections a client keeps open to each endpoint it calls, calls spread round
    /// robin over those that are up (`MESH_CONNECTIONS_PER_ENDPOINT`, 1 to 64, default 1).
    /// More than one lets a caller with many calls in flight to few replicas use more than
    /// one connection task on each side.
    pub connections_per_endpoint: usize,
    /// Where the admin HTTP server listens (`/metrics`, `/live`, `/ready`, `/debug/*`);
    /// off when unset (`MESH_ADMIN_ADDR`: `ip:port`, e.g. `0.0.0.0:9990`, or a port alone,
    /// which binds 127.0.0.1: the port is plaintext and unauthenticated, so reaching it from
    /// elsewhere is a choice to write down).
    pub admin_addr: Option<SocketAddr>,
    /// Whether the admin server serves `/debug/*` (`MESH_ADMIN_DEBUG`, `true`/`false`,
    /// default `true`): they show the snapshot, the peers' identities and the endpoints'
    /// state to whoever reaches the port.
    pub admin_debug: bool,
    /// Callers (verified SPIFFE IDs) told the authorization verdict on their requests when
    /// they send `x-mesh-explain: 1` (`MESH_EXPLAIN_TO`, comma-separated; default none). See
    /// [`crate::explain`].
    pub explain_to: Vec<SpiffeId>,
    /// Where the last good snapshot is kept, so that a restart while the control service is
    /// down can start from it (`MESH_STATE_DIR`; off when unset). See [`crate::persist`].
    pub state_dir: Option<PathBuf>,
    /// Whether the still-valid certificate and its private key are kept in `state_dir` too
    /// (`MESH_PERSIST_IDENTITY`, `true`/`false`, default `false`). The key then leaves the
    /// process's memory, into one file of mode 0600; without it a restart needs the control
    /// service to issue a certificate.
    pub persist_identity: bool,
    /// The limits of the servers this workload runs ([`crate::Mesh::serve`],
    /// [`crate::Mesh::incoming`], and tonic's through `mesh-tonic`); each defaults to its
    /// `DEFAULT_*` in [`crate::server::limits`] and is read from its own variable:
    ///
    /// | variable                            | limit                          | default |
    /// |-------------------------------------|--------------------------------|---------|
    /// | `MESH_SERVER_MAX_CONNECTIONS`       | established connections per listener | 4096 |
    /// | `MESH_SERVER_MAX_HANDSHAKES`        | handshakes in progress per listener | 256 |
    /// | `MESH_SERVER_MAX_HANDSHAKES_PER_IP` | handshakes in progress per source IP | 32 |
    /// | `MESH_SERVER_HANDSHAKE_TIMEOUT`     | TLS handshake time, seconds    | 10 |
    /// | `MESH_SERVER_HEADER_TIMEOUT`        | time to the first request's headers, seconds | 10 |
    /// | `MESH_SERVER_IDLE_TIMEOUT`          | time with no call in flight, seconds (0: no limit) | 600 |
    /// | `MESH_SERVER_MAX_CONCURRENT_STREAMS`| HTTP/2 streams per connection  | 256 |
    /// | `MESH_SERVER_MAX_HEADER_LIST_SIZE`  | request header list, bytes     | 65536 |
    /// | `MESH_SERVER_MAX_BODY_SIZE`         | request body, bytes (not gRPC: see [`crate::server::limits`]) | 16777216 |
    pub server_limits: ServerLimits,
}

impl MeshSettings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let trust_domain = match get("MESH_TRUST_DOMAIN") {
            Some(td) => TrustDomain::new(td.trim())
                .map_err(|e| SettingsError::new("MESH_TRUST_DOMAIN", e.to_string()))?,
            None => default_trust_domain(),
        };
        let control_addrs: Vec<String> = get("MESH_CONTROL_ADDR")
            .ok_or_else(|| {
                SettingsError::new("MESH_CONTROL_ADDR", "not set (host:port of mesh-control)")
            })?
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        for addr in &control_addrs {
            check_host_port(addr)
                .map_err(|e| SettingsError::new("MESH_CONTROL_ADDR", e.to_string()))?;
        }
        let control_identity = match get("MESH_CONTROL_IDENTITY") {
            Some(id) => SpiffeId::parse(id.trim())
                .map_err(|e| SettingsError::new("MESH_CONTROL_IDENTITY", e.to_string()))?,
            None => default_control_identity(&trust_domain),
        };
        let namespace = get("MESH_POD_NAMESPACE").unwrap_or_else(|| "default".to_owned());
        mesh_core::dns::check_dns_label(&namespace)
            .map_err(|m| SettingsError::new("MESH_POD_NAMESPACE", m))?;
        let service_account = get("MESH_SERVICE_ACCOUNT").unwrap_or_else(|| "default".to_owned());
        mesh_core::dns::check_dns_label(&service_account)
            .map_err(|m| SettingsError::new("MESH_SERVICE_ACCOUNT", m))?;
        let service = get("MESH_SERVICE")
            .map(|s| parse_service(s.trim(), &namespace))
            .transpose()
            .map_err(|e| SettingsError::new("MESH_SERVICE", e.to_string()))?;
        let trust_anchors_file = get("MESH_TRUST_ANCHORS_FILE")
            .map(PathBuf::from)
            .ok_or_else(|| {
                SettingsError::new(
                    "MESH_TRUST_ANCHORS_FILE",
                    "not set (PEM file of trust roots)",
                )
            })?;
        let token = match (get("MESH_TOKEN_FILE"), get("MESH_TOKEN")) {
            (Some(path), _) => TokenSource::File(PathBuf::from(path)),
            (None, Some(token)) => TokenSource::Inline(token.trim().to_owned()),
            (None, None) => {
                return Err(SettingsError::new(
                    "MESH_TOKEN_FILE",
                    "not set (nor MESH_TOKEN): the workload needs a token to get a certificate",
                ));
            }
        };
        let node = get("MESH_NODE_NAME")
            .or_else(|| get("HOSTNAME"))
            .unwrap_or_else(|| format!("pid-{}", std::process::id()));
        let zone = match get("MESH_ZONE").map(|z| z.trim().to_owned()) {
            Some(z) if z.len() > mesh_core::config::MAX_ZONE_BYTES => {
                return Err(SettingsError::new(
                    "MESH_ZONE",
                    format!("longer than {} bytes", mesh_core::config::MAX_ZONE_BYTES),
                ));
            }
            Some(z) if !z.is_empty() => Some(z),
            _ => None,
        };
        let startup_timeout = match get("MESH_STARTUP_TIMEOUT") {
            Some(s) => Duration::from_secs(s.trim().parse::<u64>().map_err(|_| {
                SettingsError::new(
                    "MESH_STARTUP_TIMEOUT",
                    format!("expected whole seconds, got {s:?}"),
                )
            })?),
            None => DEFAULT_STARTUP_TIMEOUT,
        };
        let ready_timeout = match get("MESH_READY_TIMEOUT") {
            Some(s) => Duration::from_secs(s.trim().parse::<u64>().map_err(|_| {
                SettingsError::new(
                    "MESH_READY_TIMEOUT",
                    format!("expected whole seconds, got {s:?}"),
                )
            })?),
            None => DEFAULT_READY_TIMEOUT,
        };
        let outlier = outlier_config(&get)?;
        let connections_per_endpoint = match get("MESH_CONNECTIONS_PER_ENDPOINT") {
            Some(n) => n
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_CONNECTIONS_PER_ENDPOINT).contains(n))
                .ok_or_else(|| {
                    SettingsError::new(
                        "MESH_CONNECTIONS_PER_ENDPOINT",
                        format!(
                            "expected a whole number from 1 to {MAX_CONNECTIONS_PER_ENDPOINT}, got {n:?}"
                        ),
                    )
                })?,
            None => DEFAULT_CONNECTIONS_PER_ENDPOINT,
        };
        let admin_addr = get("MESH_ADMIN_ADDR")
            .map(|a| {
                let a = a.trim();
                a.parse::<SocketAddr>()
                    .or_else(|_| {
                        a.parse::<u16>()
                            .map(|port| SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)))
                    })
                    .map_err(|_| {
                        SettingsError::new(
                            "MESH_ADMIN_ADDR",
                            format!("expected ip:port or a port, got {a:?}"),
                        )
                    })
            })
            .transpose()?;
        let explain_to = get("MESH_EXPLAIN_TO")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(|id| {
                        SpiffeId::parse(id).map_err(|e| {
                            SettingsError::new("MESH_EXPLAIN_TO", format!("{id:?}: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let admin_debug = match get("MESH_ADMIN_DEBUG") {
            Some(v) => parse_bool(&v).ok_or_else(|| {
                SettingsError::new(
                    "MESH_ADMIN_DEBUG",
                    format!("expected true or false, got {v:?}"),
                )
            })?,
            None => true,
        };
        let state_dir = get("MESH_STATE_DIR").map(|d| PathBuf::from(d.trim()));
        let persist_identity = match get("MESH_PERSIST_IDENTITY") {
            Some(v) => parse_bool(&v).ok_or_else(|| {
                SettingsError::new(
                    "MESH_PERSIST_IDENTITY",
                    format!("expected true or false, got {v:?}"),
                )
            })?,
            None => false,
        };
        let server_limits = server_limits(&get)?;
        if persist_identity && state_dir.is_none() {
            return Err(SettingsError::new(
                "MESH_PERSIST_IDENTITY",
                "is true but MESH_STATE_DIR is not set: there is nowhere to keep the identity",
            ));
        }
        Ok(Self {
            control_addrs,
            control_identity,
            trust_domain,
            service,
            namespace,
            service_account,
            trust_anchors_file,
            token,
            node,
            zone,
            startup_timeout,
            ready_timeout,
            outlier,
            connections_per_endpoint,
            admin_addr,
            admin_debug,
            explain_to,
            state_dir,
            persist_identity,
            server_limits,
        })
    }

    /// Settings built in code: the control service at `control_addr`, trust roots in
    /// `trust_anchors_file`, a bootstrap `token`; everything else defaulted.
    pub fn new(
        control_addr: impl Into<String>,
        trust_domain: TrustDomain,
        trust_anchors_file: impl Into<PathBuf>,
        token: TokenSource,
    ) -> Self {
        let control_identity = default_control_identity(&trust_domain);
        Self {
            control_addrs: vec![control_addr.into()],
            control_identity,
            trust_domain,
            service: None,
            namespace: "default".to_owned(),
            service_account: "default".to_owned(),
            trust_anchors_file: trust_anchors_file.into(),
            token,
            node: format!("pid-{}", std::process::id()),
            zone: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            outlier: mesh_core::outlier::OutlierConfig::default(),
            connections_per_endpoint: DEFAULT_CONNECTIONS_PER_ENDPOINT,
            admin_addr: None,
            admin_debug: true,
            explain_to: Vec::new(),
            state_dir: None,
            persist_identity: false,
            server_limits: ServerLimits::default(),
        }
    }

    /// Sets the limits of this workload's servers; see [`MeshSettings::server_limits`].
    pub fn with_server_limits(mut self, limits: ServerLimits) -> Self {
        self.server_limits = limits;
        self
    }

    /// Sets the service this process serves.
    pub fn with_service(mut self, service: ServiceName) -> Self {
        self.service = Some(service);
        self
    }

    /// Serves the admin endpoints on `addr`.
    pub fn with_admin_addr(mut self, addr: SocketAddr) -> Self {
        self.admin_addr = Some(addr);
        self
    }

    /// Tells these callers the authorization verdict when they ask; see
    /// [`MeshSettings::explain_to`].
    pub fn with_explain_to(mut self, identities: Vec<SpiffeId>) -> Self {
        self.explain_to = identities;
        self
    }

    /// Whether the admin server serves `/debug/*`; see [`MeshSettings::admin_debug`].
    pub fn with_admin_debug(mut self, debug: bool) -> Self {
        self.admin_debug = debug;
        self
    }

    /// Keeps the last good snapshot in `dir` and, when `persist_identity` is true, the
    /// certificate and its key too (see [`MeshSettings::persist_identity`]).
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>, persist_identity: bool) -> Self {
        self.state_dir = Some(dir.into());
        self.persist_identity = persist_identity;
        self
    }

    /// Keeps `n` HTTP/2 connections open to each endpoint (at least 1); see
    /// [`MeshSettings::connections_per_endpoint`].
    pub fn with_connections_per_endpoint(mut self, n: usize) -> Self {
        self.connections_per_endpoint = n.max(1);
        self
    }

    /// Sets the instance name.
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// These settings with the workload's zone set (as `MESH_ZONE` does).
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Resolves a destination name as a client would write it: `name.namespace`, or a bare
    /// `name` in the workload's own namespace, either with `:port` to pick one port of a
    /// service that has several (`echo.default:7070`).
    pub fn destination(&self, name: &str) -> Result<DestinationKey, SettingsError> {
        let error = |m| SettingsError::new("destination", m);
        let (service, port) = match name.rsplit_once(':') {
            Some((service, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        error(format!(
                            "{name:?}: the port must be a number from 1 to 65535"
                        ))
                    })?;
                (service, Some(port))
            }
            None => (name, None),
        };
        let service = parse_service(service, &self.namespace).map_err(|e| error(e.to_string()))?;
        Ok(DestinationKey { service, port })
    }
}

const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CONNECTIONS_PER_ENDPOINT: usize = 1;
/// A bound that catches a typo (`400` for `4`) before it opens hundreds of connections.
const MAX_CONNECTIONS_PER_ENDPOINT: usize = 64;

fn default_trust_domain() -> TrustDomain {
    match TrustDomain::new("mesh.local") {
        Ok(td) => td,
        // "mesh.local" is a constant that satisfies the trust-domain grammar.
        Err(e) => unreachable!("default trust domain is valid: {e}"),
    }
}

/// The control service's identity when `MESH_CONTROL_IDENTITY` is not set.
pub fn default_control_identity(trust_domain: &TrustDomain) -> SpiffeId {
    match SpiffeId::from_service_account(trust_domain, "mesh-system", "mesh-control") {
        Ok(id) => id,
        // A valid trust domain with two constant DNS labels always makes a valid ID.
        Err(e) => unreachable!("control identity is valid: {e}"),
    }
}

/// Failure-accrual settings from the `MESH_OUTLIER_*` variables, defaults for those not set.
fn outlier_config(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<mesh_core::outlier::OutlierConfig, SettingsError> {
    let mut config = mesh_core::outlier::OutlierConfig::default();
    if let Some(n) = get("MESH_OUTLIER_MAX_EJECTION_PERCENT") {
        config.max_ejection_percent = n
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| {
                SettingsError::new(
                    "MESH_OUTLIER_MAX_EJECTION_PERCENT",
                    format!("expected a percentage from 0 to 100, got {n:?}"),
                )
            })?;
    }
    if let Some(n) = get("MESH_OUTLIER_MIN_READY") {
        config.min_ready = n
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                SettingsError::new(
                    "MESH_OUTLIER_MIN_READY",
                    format!("expected a whole number above 0, got {n:?}"),
                )
            })?;
    }
    if let Some(n) = get("MESH_OUTLIER_CONSECUTIVE_FAILURES").as_deref() {
        config.consecutive_failures =
            n.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    SettingsError::new(
                        "MESH_OUTLIER_CONSECUTIVE_FAILURES",
                        format!("expected a whole number above 0, got {n:?}"),
                    )
                })?;
    }
    if let Some(rate) = get("MESH_OUTLIER_SUCCESS_RATE").as_deref() {
        let bad = || {
            SettingsError::new(
                "MESH_OUTLIER_SUCCESS_RATE",
                format!("expected <percent 1-100>/<requests above 0>, e.g. 90/20; got {rate:?}"),
            )
        };
        let (percent, requests) = rate.trim().split_once('/').ok_or_else(bad)?;
        let threshold_percent = percent.trim().parse::<u32>().map_err(|_| bad())?;
        let min_requests = requests.trim().parse::<u32>().map_err(|_| bad())?;
        if !(1..=100).contains(&threshold_percent) || min_requests == 0 {
            return Err(bad());
        }
        config.success_rate = Some(mesh_core::outlier::SuccessRateConfig {
            min_requests,
            threshold_percent,
        });
    }
    Ok(config)
}

/// The server limits from the `MESH_SERVER_*` variables, defaults for those not set.
fn server_limits(get: &impl Fn(&str) -> Option<String>) -> Result<ServerLimits, SettingsError> {
    /// A whole number at least 1 from `var`, if it is set.
    fn number<T: std::str::FromStr + PartialOrd + From<u8>>(
        get: &impl Fn(&str) -> Option<String>,
        var: &'static str,
    ) -> Result<Option<T>, SettingsError> {
        get(var)
            .map(|v| {
                v.trim()
                    .parse::<T>()
                    .ok()
                    .filter(|n| *n >= T::from(1))
                    .ok_or_else(|| {
                        SettingsError::new(
                            var,
                            format!("expected a whole number above 0, got {v:?}"),
                        )
                    })
            })
            .transpose()
    }
    let mut limits = ServerLimits::default();
    if let Some(n) = number(get, "MESH_SERVER_MAX_CONNECTIONS")? {
        limits = limits.with_max_connections(n);
    }
    if let Some(n) = number(get, "MESH_SERVER_MAX_HANDSHAKES")? {
        limits = limits.with_max_handshakes(n);
    }
    if let Some(n) = number(get, "MESH_SERVER_MAX_HANDSHAKES_PER_IP")? {
        limits = limits.with_max_handshakes_per_ip(n);
    }
    if let Some(s) = number::<u64>(get, "MESH_SERVER_HANDSHAKE_TIMEOUT")? {
        limits = limits.with_handshake_timeout(Duration::from_secs(s));
    }
    if let Some(s) = number::<u64>(get, "MESH_SERVER_HEADER_TIMEOUT")? {
        limits = limits.with_header_timeout(Duration::from_secs(s));
    }
    if let Some(v) = get("MESH_SERVER_IDLE_TIMEOUT") {
        let seconds = v.trim().parse::<u64>().map_err(|_| {
            SettingsError::new(
                "MESH_SERVER_IDLE_TIMEOUT",
                format!("expected a whole number of seconds (0: no limit), got {v:?}"),
            )
        })?;
        limits = limits.with_idle_timeout((seconds > 0).then(|| Duration::from_secs(seconds)));
    }
    if let Some(n) = number(get, "MESH_SERVER_MAX_CONCURRENT_STREAMS")? {
        limits = limits.with_max_concurrent_streams(n);
    }
    if let Some(n) = number(get, "MESH_SERVER_MAX_HEADER_LIST_SIZE")? {
        limits = limits.with_max_header_list_size(n);
    }
    if let Some(n) = number(get, "MESH_SERVER_MAX_BODY_SIZE")? {
        limits = limits.with_max_body_size(n);
    }
    Ok(limits)
}

fn parse_service(s: &str, default_namespace: &str) -> Result<ServiceName, ServiceNameError> {
    if s.contains('.') {
        s.parse::<ServiceName>()
    } else {
        ServiceName::new(default_namespace, s)
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// What is wrong with a `host:port` address.
#[derive(Debug, thiserror::Error)]
enum HostPortError {
    #[error("{0:?} is not host:port")]
    NotHostPort(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{0:?} has no valid port")]
    BadPort(String),
}

fn check_host_port(addr: &str) -> Result<(), HostPortError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| HostPortError::NotHostPort(addr.to_owned()))?;
    if host.is_empty() {
        return Err(HostPortError::NoHost(addr.to_owned()));
    }
    port.parse::<u16>()
        .map_err(|_| HostPortError::BadPort(addr.to_owned()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("MESH_CONTROL_ADDR", "127.0.0.1:7400"),
        ("MESH_TRUST_ANCHORS_FILE", "/tmp/bundle.pem"),
        ("MESH_TOKEN", "tok"),
    ];

    #[test]
    fn defaults_fill_in() {
        let s = MeshSettings::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(s.trust_domain.as_str(), "mesh.local");
        assert_eq!(
            s.control_identity.as_str(),
            "spiffe://mesh.local/ns/mesh-system/sa/mesh-control"
        );
        assert_eq!(s.namespace, "default");
        assert_eq!(s.service, None);
        assert_eq!(s.token, TokenSource::Inline("tok".into()));
    }

    #[test]
    fn outlier_settings_are_read() {
        let mut vars = BASE.to_vec();
        vars.push(("MESH_OUTLIER_CONSECUTIVE_FAILURES", "3"));
        vars.push(("MESH_OUTLIER_SUCCESS_RATE", "90/20"));
        vars.push(("MESH_OUTLIER_MAX_EJECTION_PERCENT", "100"));
        vars.push(("MESH_OUTLIER_MIN_READY", "2"));
        let s = MeshSettings::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(s.outlier.consecutive_failures, 3);
        assert_eq!(
            (s.outlier.max_ejection_percent, s.outlier.min_ready),
            (100, 2)
        );
        for (var, bad) in [
            ("MESH_OUTLIER_MAX_EJECTION_PERCENT", "101"),
            ("MESH_OUTLIER_MIN_READY", "0"),
        ] {
            let mut vars = BASE.to_vec();
            vars.push((var, bad));
            let e = MeshSettings::from_lookup(lookup(&vars)).unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
        let rate = s.outlier.success_rate.unwrap();
        assert_eq!((rate.threshold_percent, rate.min_requests), (90, 20));
        let defaults = MeshSettings::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(
            defaults.outlier,
            mesh_core::outlier::OutlierConfig::default()
        );
    }

    #[test]
    fn connections_per_endpoint_is_read() {
        let defaults = MeshSettings::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(defaults.connections_per_endpoint, 1);
        let mut vars = BASE.to_vec();
        vars.push(("MESH_CONNECTIONS_PER_ENDPOINT", " 4 "));
        let s = MeshSettings::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(s.connections_per_endpoint, 4);
    }

    #[test]
    fn server_limits_are_read_and_default() {
        let defaults = MeshSettings::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(defaults.server_limits, ServerLimits::default());
        let mut vars = BASE.to_vec();
        vars.extend([
            ("MESH_SERVER_MAX_CONNECTIONS", "100"),
            ("MESH_SERVER_MAX_HANDSHAKES", "20"),
            ("MESH_SERVER_MAX_HANDSHAKES_PER_IP", " 4 "),
            ("MESH_SERVER_HANDSHAKE_TIMEOUT", "3"),
            ("MESH_SERVER_HEADER_TIMEOUT", "5"),
            ("MESH_SERVER_IDLE_TIMEOUT", "120"),
            ("MESH_SERVER_MAX_CONCURRENT_STREAMS", "64"),
            ("MESH_SERVER_MAX_HEADER_LIST_SIZE", "16384"),
            ("MESH_SERVER_MAX_BODY_SIZE", "1048576"),
        ]);
        let s = MeshSettings::from_lookup(lookup(&vars)).unwrap();
        let expected = ServerLimits::default()
            .with_max_connections(100)
            .with_max_handshakes(20)
            .with_max_handshakes_per_ip(4)
            .with_handshake_timeout(Duration::from_secs(3))
            .with_header_timeout(Duration::from_secs(5))
            .with_idle_timeout(Some(Duration::from_secs(120)))
            .with_max_concurrent_streams(64)
            .with_max_header_list_size(16384)
            .with_max_body_size(1 << 20);
        assert_eq!(s.server_limits, expected);
    }

    #[test]
    fn service_takes_the_pod_namespace() {
        let mut vars = BASE.to_vec();
        vars.push(("MESH_SERVICE", "greeter"));
        vars.push(("MESH_POD_NAMESPACE", "shop"));
        let s = MeshSettings::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(s.service.as_ref().unwrap().to_string(), "greeter.shop");
        assert_eq!(s.destination("cart").unwrap().to_string(), "cart.shop");
        assert_eq!(
            s.destination("cart.other").unwrap().to_string(),
            "cart.other"
        );
    }

    #[test]
    fn each_bad_variable_is_named() {
        let cases: &[(&str, &str, &str)] = &[
            ("MESH_CONTROL_ADDR", "nope", "MESH_CONTROL_ADDR"),
            ("MESH_TRUST_DOMAIN", "Bad_Domain!", "MESH_TRUST_DOMAIN"),
            ("MESH_POD_NAMESPACE", "Not_A_Label", "MESH_POD_NAMESPACE"),
            ("MESH_SERVICE_ACCOUNT", "-sa", "MESH_SERVICE_ACCOUNT"),
            ("MESH_SERVICE", "UPPER", "MESH_SERVICE"),
            ("MESH_CONTROL_IDENTITY", "http://x", "MESH_CONTROL_IDENTITY"),
            ("MESH_STARTUP_TIMEOUT", "soon", "MESH_STARTUP_TIMEOUT"),
            ("MESH_READY_TIMEOUT", "-1", "MESH_READY_TIMEOUT"),
            (
                "MESH_OUTLIER_CONSECUTIVE_FAILURES",
                "0",
                "MESH_OUTLIER_CONSECUTIVE_FAILURES",
            ),
            (
                "MESH_OUTLIER_SUCCESS_RATE",
                "90",
                "MESH_OUTLIER_SUCCESS_RATE",
            ),
            (
                "MESH_OUTLIER_SUCCESS_RATE",
                "101/5",
                "MESH_OUTLIER_SUCCESS_RATE",
            ),
            ("MESH_ADMIN_ADDR", "localhost", "MESH_ADMIN_ADDR"),
            ("MESH_ADMIN_DEBUG", "sometimes", "MESH_ADMIN_DEBUG"),
            ("MESH_EXPLAIN_TO", "spiffe://a/b, nope", "MESH_EXPLAIN_TO"),
            (
                "MESH_CONNECTIONS_PER_ENDPOINT",
                "0",
                "MESH_CONNECTIONS_PER_ENDPOINT",
            ),
            (
                "MESH_CONNECTIONS_PER_ENDPOINT",
                "400",
                "MESH_CONNECTIONS_PER_ENDPOINT",
            ),
            ("MESH_PERSIST_IDENTITY", "maybe", "MESH_PERSIST_IDENTITY"),
            (
                "MESH_SERVER_MAX_CONNECTIONS",
                "0",
                "MESH_SERVER_MAX_CONNECTIONS",
            ),
            (
                "MESH_SERVER_MAX_HANDSHAKES_PER_IP",
                "many",
                "MESH_SERVER_MAX_HANDSHAKES_PER_IP",
            ),
            (
                "MESH_SERVER_HEADER_TIMEOUT",
                "1.5",
                "MESH_SERVER_HEADER_TIMEOUT",
            ),
            (
                "MESH_SERVER_MAX_BODY_SIZE",
                "-1",
                "MESH_SERVER_MAX_BODY_SIZE",
            ),
            (
                "MESH_SERVER_IDLE_TIMEOUT",
                "10m",
                "MESH_SERVER_IDLE_TIMEOUT",
            ),
        ];
        for (var, value, named) in cases {
            let mut vars: Vec<(&str, &str)> =
                BASE.iter().filter(|(k, _)| k != var).copied().collect();
            vars.push((var, value));
            let err = MeshSettings::from_lookup(lookup(&vars)).unwrap_err();
            assert_eq!(err.var, *named, "{var}={value}: {err}");
        }
    }

    #[test]
    fn the_admin_server_is_off_unless_its_address_is_set() {
        let settings = MeshSettings::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(settings.admin_addr, None);
        let mut vars = BASE.to_vec();
        vars.push(("MESH_ADMIN_ADDR", " 0.0.0.0:9990 "));
        let settings = MeshSettings::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(settings.admin_addr, Some("0.0.0.0:9990".parse().unwrap()));
        assert!(settings.admin_debug);
        // A port alone binds the loopback address; the debug endpoints can be switched off.
        let mut vars = BASE.to_vec();
        vars.push(("MESH_ADMIN_ADDR", "9990"));
        vars.push(("MESH_ADMIN_DEBUG", "false"));
        let settings = MeshSettings::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(settings.admin_addr, Some("127.0.0.1:9990".parse().unwrap()));
        assert!(!settings.admin_debug);
    }

    #[test]
    fn state_is_persisted_only_when_asked_and_identity_only_with_a_directory() {
        let settings = MeshSettings::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(settings.state_dir, None);
        assert!(!settings.persist_identity);

        let mut vars = BASE.to_vec();
        vars.push(("MESH_STATE_DIR", " /var/lib/mesh "));
        let settings = MeshSettings::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(settings.state_dir, Some(PathBuf::from("/var/lib/mesh")));
        assert!(!settings.persist_identity);

        vars.push(("MESH_PERSIST_IDENTITY", "TRUE"));
        let settings = MeshSettings::from_lookup(lookup(&vars)).unwrap();
        assert!(settings.persist_identity);

        // Persisting the identity without a directory is a mistake to report, not to ignore.
        let mut vars = BASE.to_vec();
        vars.push(("MESH_PERSIST_IDENTITY", "true"));
        let err = MeshSettings::from_lookup(lookup(&vars)).unwrap_err();
        assert_eq!(err.var, "MESH_PERSIST_IDENTITY");
        assert!(err.message.contains("MESH_STATE_DIR"), "{err}");
    }

    #[test]
    fn missing_required_variables_are_named() {
        for var in ["MESH_CONTROL_ADDR", "MESH_TRUST_ANCHORS_FILE", "MESH_TOKEN"] {
            let vars: Vec<(&str, &str)> = BASE.iter().filter(|(k, _)| *k != var).copied().collect();
            let err = MeshSettings::from_lookup(lookup(&vars)).unwrap_err();
            let expected = if var == "MESH_TOKEN" {
                "MESH_TOKEN_FILE"
            } else {
                var
            };
            assert_eq!(err.var, expected);
        }
    }
}
