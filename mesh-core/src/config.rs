//! The configuration model as written by people (YAML) and read by the control service:
//! services, their endpoints and routes, authorization policies and local rate limits.
//!
//! These types are deliberately loose (addresses and identities are strings) so that
//! [`MeshConfig::validate`] can report *every* problem with the path of the field, instead of
//! stopping at the first one as a typed deserializer would.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The services of a mesh, their replicas and their routes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    /// Every service the mesh knows.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Authorization policies, each targeting a service or one of its routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicySpec>,
    /// End-user authentication: the JWT issuers each service accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_authentications: Vec<RequestAuthenticationSpec>,
    /// Local rate-limit policies, each targeting a service or one of its routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitSpec>,
    /// The mesh-wide default policy (`all-unauthenticated`, `all-authenticated`, `deny` or
    /// `audit`) for services that set none; `all-unauthenticated` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_policy: Option<String>,
    /// The zone of each workload instance, by `<namespace>/<instance>` (the instance is what it
    /// reports as its node name: `MESH_NODE_NAME`, a pod's name in Kubernetes). The control
    /// service tells each subscriber its zone from this; the Kubernetes source fills it from
    /// Pods and the zones of their nodes. Zones at most 63 bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instance_zones: BTreeMap<String, String>,
}

/// One logical service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name (a DNS label).
    pub name: String,
    /// Its namespace (a DNS label); `default` when omitted.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The service port its `endpoints` serve (Kubernetes: the Service's first port), 1 to
    /// 65535. Clients that name no port call this one. Omitted: the service has one port and
    /// clients may name any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Its replicas (serving `port`).
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// Further ports, each with its own replicas (a multi-port Kubernetes Service); needs
    /// `port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePortSpec>,
    /// Routes attached to it.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// `strict` (when omitted: a client certificate is required) or `permissive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<String>,
    /// The service's default policy; the mesh-wide one when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_policy: Option<String>,
    /// Paths that always pass authorization (health probes): exact, or with a trailing `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt_paths: Vec<String>,
    /// SPIFFE IDs that run the service besides its endpoints' identities: a replica that is
    /// starting, and not yet an endpoint, may subscribe as this service. The Kubernetes
    /// source fills it with the service accounts of the Service's pods that are not ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
}

/// One more port of a service, with the replicas serving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePortSpec {
    /// The service port, 1 to 65535.
    pub port: u32,
    /// The replicas serving it.
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

/// One replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSpec {
    /// `ip:port`.
    pub address: String,
    /// Relative weight, 1 to 1,000,000; 1 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Failure domain (at most 63 bytes): clients in the same zone prefer it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Topology hints (EndpointSlice `hints.forZones`): the zones whose clients should use this
    /// endpoint, at most 8. When any endpoint of a service has hints, clients follow the hints
    /// instead of `zone`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub for_zones: Vec<String>,
    /// Labels such as `version: v1` (keys at most 317 bytes, values at most 63, as in
    /// Kubernetes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The SPIFFE ID the replica presents (`spiffe://<td>/ns/<ns>/sa/<sa>`).
    pub identity: String,
}

/// A weighted reference to a backend service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRefSpec {
    /// The backend service's name.
    pub name: String,
    /// Its namespace; the route's own when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The backend service's port (1 to 65535), as in Gateway API; carried to clients as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Relative weight; 1 when omitted, 0 sends nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

mod fault;
mod hedging;
mod jwt;
mod policy;
mod rate_limit;
mod route;
mod validate;

pub use fault::{FaultAbortSpec, FaultDelaySpec, FaultInjectionSpec, Percent};
pub use hedging::HedgingSpec;
pub use jwt::{
    ClaimConditionSpec, JwtHeaderSpec, JwtRuleSpec, PolicyPrincipalSpec, RequestAuthenticationSpec,
};
pub use policy::{
    GrpcOperationSpec, PolicyFromSpec, PolicyRuleSpec, PolicySpec, PolicyTargetSpec, PolicyToSpec,
};
pub use rate_limit::{ClientsSpec, LimitSpec, OverrideSpec, RateLimitSpec};

pub use route::{
    CreationTimestamp, FilterSpec, GrpcMethodMatchSpec, HeaderModifierSpec, HeaderSpec,
    MethodMatchSpec, MirrorBackendRefSpec, PathMatchSpec, RequestMirrorSpec, RetrySpec,
    RouteMatchSpec, RouteRuleSpec, RouteSpec, TimeoutsSpec, ValueMatchSpec,
};
pub use validate::{
    CLIENT_MAX_SNAPSHOT_BYTES, MAX_DESTINATION_BYTES, MAX_INBOUND_BYTES, MAX_LABEL_KEY_BYTES,
    MAX_LABEL_VALUE_BYTES, MAX_ZONE_BYTES, MAX_ZONE_HINTS, ReplicasError, ValidConfig, ZoneChange,
};
