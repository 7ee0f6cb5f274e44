//! The validated view of destinations that a client receives from the control service.
//!
//! Every value here has passed validation: addresses parse, identities are SPIFFE IDs, names are
//! DNS labels. The control service builds these from its config; a client builds them from the
//! wire with [`crate::convert`], validating again.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::authz::InboundPolicy;
use crate::spiffe::SpiffeId;

/// The name checks, where they were first published (see [`crate::dns`]).
pub use crate::dns::{check_dns_label, check_dns_subdomain};

/// A service's name within its namespace, written `name.namespace` (`greeter.default`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    /// The Kubernetes-style namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
}

/// A service name that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid service name {input:?}: {reason}")]
pub struct ServiceNameError {
    /// What was given.
    pub input: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl ServiceName {
    /// A name from its parts, validated as DNS-1123 labels.
    pub fn new(namespace: &str, name: &str) -> Result<Self, ServiceNameError> {
        for part in [namespace, name] {
            if let Err(reason) = check_dns_label(part) {
                return Err(ServiceNameError {
                    input: format!("{name}.{namespace}"),
                    reason,
                });
            }
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl FromStr for ServiceName {
    type Err = ServiceNameError;

    /// Parses `name.namespace`; a bare `name` is refused (the namespace is never guessed here).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, namespace) = s.split_once('.').ok_or_else(|| ServiceNameError {
            input: s.to_owned(),
            reason: "expected name.namespace",
        })?;
        let namespace = namespace
            .strip_suffix(".svc.cluster.local")
            .or_else(|| namespace.strip_suffix(".svc"))
            .unwrap_or(namespace);
        Self::new(namespace, name).map_err(|e| ServiceNameError {
            input: s.to_owned(),
            reason: e.reason,
        })
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// Everything a subscriber needs at one version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Increases with every change the control service makes.
    pub version: u64,
    /// The destinations the subscriber asked for, in the order it asked.
    pub destinations: Vec<Destination>,
    /// The inbound policy of the subscriber's own service; `None` when it named none.
    pub inbound: Option<InboundPolicy>,
    /// The trust domain's roots (DER), several while roots rotate; empty when the control
    /// service sent none. A client checks them when it builds its trust bundle.
    pub trust_bundle: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The subscriber's own zone as the control service knows it; empty when unknown.
    pub zone: String,
}

impl Snapshot {
    /// The destination `key` names, if the snapshot has it.
    pub fn destination(&self, key: &DestinationKey) -> Option<&Destination> {
        self.destinations
            .iter()
            .find(|d| d.service == key.service && d.port == key.port)
    }
}

/// What a client calls: a service and, when the service has several ports, which one
/// (`echo.default:7070`). Without a port, the service's first port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestinationKey {
    /// The service.
    pub service: ServiceName,
    /// The service port; `None` for the service's first (or only) port.
    pub port: Option<u16>,
}

impl DestinationKey {
    /// A key for `service`'s first port.
    pub fn service(service: ServiceName) -> Self {
        Self {
            service,
            port: None,
        }
    }
}

impl From<ServiceName> for DestinationKey {
    fn from(service: ServiceName) -> Self {
        Self::service(service)
    }
}

impl FromStr for DestinationKey {
    type Err = ServiceNameError;

    /// Parses `name.namespace` or `name.namespace:port` (the `.svc` and `.svc.cluster.local`
    /// suffixes are accepted before the port).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, port) = match s.rsplit_once(':') {
            Some((name, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| ServiceNameError {
                        input: s.to_owned(),
                        reason: "the port must be a number from 1 to 65535",
                    })?;
                (name, Some(port))
            }
            None => (s, None),
        };
        let service = name.parse::<ServiceName>().map_err(|e| ServiceNameError {
            input: s.to_owned(),
            reason: e.reason,
        })?;
        Ok(Self { service, port })
    }
}

impl fmt::Display for DestinationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.service),
            None => write!(f, "{}", self.service),
        }
    }
}

/// One destination service as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Which service.
    pub service: ServiceName,
    /// Which of its ports, as the client asked; `None` for the first (or only) one.
    pub port: Option<u16>,
    /// False when the control service knows no such service.
    pub found: bool,
    /// The service's own replicas serving that port, used when no route is attached.
    pub endpoints: Vec<Endpoint>,
    /// Routes that apply to this client's calls to that port: the consumer routes of the
    /// client's namespace when it has any, else the service's own (producer) routes.
    pub routes: Vec<Route>,
    /// The services (and ports) that `routes` reference, resolved to their endpoints.
    pub backends: Vec<Backend>,
}

impl Destination {
    /// The key a client names this destination by.
    pub fn key(&self) -> DestinationKey {
        DestinationKey {
            service: self.service.clone(),
            port: self.port,
        }
    }
}

impl Destination {
    /// A destination the control service does not know.
    pub fn not_found(key: DestinationKey) -> Self {
        Self {
            service: key.service,
            port: key.port,
            found: false,
            endpoints: Vec::new(),
            routes: Vec::new(),
            backends: Vec::new(),
        }
    }
}

/// A backend service that a route references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Which service.
    pub service: ServiceName,
    /// Which of its ports, as the route's `backendRef` names it; `None` for the first.
    pub port: Option<u16>,
    /// False when no such service (or port) exists: its share of traffic fails (500 / UNAVAILABLE).
    pub found: bool,
    /// Its replicas.
    pub endpoints: Vec<Endpoint>,
}

/// One replica of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where it listens.
    pub address: SocketAddr,
    /// Relative weight for balancing, at least 1.
    pub weight: u32,
    /// Failure domain; empty when unknown.
    pub zone: String,
    /// Topology hints: the zones whose clients should use this endpoint (EndpointSlice
    /// `hints.forZones`); empty when there are none.
    pub for_zones: Vec<String>,
    /// Labels such as `version: v2`.
    pub labels: BTreeMap<String, String>,
    /// The SPIFFE ID the replica must present when a client connects.
    pub identity: SpiffeId,
}

/// A route attached to a destination (Gateway API HTTPRoute/GRPCRoute with a Service parent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// The route's name, unique within the destination.
    pub name: String,
    /// HTTPRoute or GRPCRoute.
    pub kind: RouteKind,
    /// Creation time in Unix seconds, when known: older routes win precedence ties.
    pub created: Option<i64>,
    /// Its rules, in order.
    pub rules: Vec<RouteRule>,
}

/// One rule of a route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteRule {
    /// Optional name (Gateway API named rules); empty when unnamed.
    pub name: String,
    /// Alternatives, ORed; empty matches every request (as `PathPrefix /` for HTTP).
    pub matches: Vec<RouteMatch>,
    /// Filters applied to matching requests, in order.
    pub filters: Vec<RouteFilter>,
    /// Where matching traffic goes, by weight.
    pub backend_refs: Vec<BackendRef>,
    /// Request and per-try timeouts.
    pub timeouts: Timeouts,
    /// Retry policy; none means no retries.
    pub retry: Option<RetryPolicy>,
    /// Hedging policy; none means no hedging (never set together with `retry`).
    pub hedging: Option<HedgingPolicy>,
}

/// A weighted reference to a backend service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    /// The backend service.
    pub service: ServiceName,
    /// The service port the route names (Gateway API `port`), if any.
    pub port: Option<u16>,
    /// Relative weight; 0 sends nothing.
    pub weight: u32,
}

mod hedging;
mod route;

pub use hedging::{HedgeDelay, HedgingPolicy};

pub use route::{
    GrpcMethodMatch, GrpcRouteMatch, HeaderMatch, HeaderModifier, HttpRouteMatch, PathMatch,
    Pattern, QueryParamMatch, RequestMirror, RetryPolicy, RouteFilter, RouteKind, RouteMatch,
    Timeouts, ValueMatch,
};
