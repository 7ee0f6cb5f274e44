//! The cluster index: a pure state machine fed with watch events that builds the same
//! [`MeshConfig`] (and so [`ValidConfig`]) the file source does.
//!
//! Each watched kind is kept as a small summary per object (a Pod is kept as its service
//! account and labels, not its whole spec), so memory follows what the mesh reads. Events are
//! kube-runtime's [`watcher::Event`]s: `Init` / `InitApply` / `InitDone` replace a kind's
//! objects as a whole after a relist (so objects deleted while the watch was down disappear),
//! `Apply` and `Delete` change one object.
//!
//! Each Service's own spec (ports, endpoints, starting identities) is kept between builds and
//! rebuilt only when an event touches it: an EndpointSlice its Service, a Pod the Services with
//! an endpoint on it (looked up among its namespace's slices), a relist of Services, slices or
//! Pods every one. A change of slices and pods only (replicas) then updates the last config
//! for those Services ([`ValidConfig::with_replicas`], see `replicas`), with the instance
//! zones that moved (see `zones`): one EndpointSlice event costs one Service's worth of work
//! (and its namespace's), not the cluster's. Any other change (a Service, a route, a policy,
//! a relist) assembles and validates the whole config, as the file source does.
//!
//! How objects become config:
//! - a **Service** (not `ExternalName`) is a mesh service `name.namespace`, with each of its
//!   ports (clients that name no port get the first); the annotations `mesh.dev/mtls`, `mesh.dev/default-policy` and
//!   `mesh.dev/exempt-paths` (comma-separated) set its inbound settings. When they are invalid
//!   the service falls back to default policy `deny`: a typo must not open a service;
//! - an **EndpointSlice** belongs to the Service named by its `kubernetes.io/service-name`
//!   label; for each service port, each endpoint address becomes `ip:<the slice's port of
//!   the same name>` (the target port). Endpoints
//!   that are `ready` are used; when a service has none, its `serving` (terminating)
//!   endpoints are, so that a rollout's last replicas still get traffic while they drain, as
//!   kube-proxy does;
//! - an endpoint's **Pod** (its `targetRef`) gives the service account and so the identity the
//!   client expects, `spiffe://<td>/ns/<ns>/sa/<sa>`; pod labels (less the controllers'
//!   hash labels) become endpoint labels. An endpoint whose pod is not (yet) known is left out:
//!   the identity a client would check could only be guessed;
//! - **HTTPRoute** / **GRPCRoute**: see [`super::route`]; a route attaches to each Service
//!   parent, to one port when the parent names one. A route in the Service's namespace is a
//!   producer route (for every caller); one in another namespace is a consumer route (for
//!   callers in its namespace only, in place of the producer routes). Each is checked on its
//!   own with mesh-core's validation, and one that fails is left out (and reported), so one
//!   bad object never holds back everybody else's changes;
//! - **AuthorizationPolicy** ([`super::crd`]): checked on its own against its target;
//! - **RequestAuthentication** ([`super::crd`]): the JWT issuers of its Service, checked on its
//!   own against it (a Service accepts at most 4 issuers in all: objects past that, in name
//!   order, are refused);
//! - **LocalRateLimitPolicy** ([`super::crd::rate_limit`]): likewise;
//! - **FaultInjection** ([`super::crd`]): inlined into the rules whose `ExtensionRef` filter
//!   names it (in the route's namespace); a rule naming one that does not exist answers 500
//!   and its route's `ResolvedRefs` is false (see [`super::route`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::watcher;
use mesh_core::config::{
    EndpointSpec, JwtRuleSpec, MeshConfig, PolicyRuleSpec, PolicySpec, PolicyTargetSpec,
    RateLimitSpec, RequestAuthenticationSpec, RouteSpec, ServicePortSpec, ServiceSpec, ValidConfig,
};
use mesh_core::{SpiffeId, TrustDomain, ValidationErrors};

use super::crd::{
    AuthorizationPolicy, FaultInjection, LocalRateLimitPolicy, PolicyAction, PolicyMode,
    RequestAuthentication,
};
use super::route::{GammaRoute, ParentRef, Refusal, RouteKind};

/// The label that joins an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Service annotation: `strict` or `permissive`.
pub(crate) const MTLS_ANNOTATION: &str = "mesh.dev/mtls";
/// Service annotation: the service's default policy.
pub(crate) const DEFAULT_POLICY_ANNOTATION: &str = "mesh.dev/default-policy";
/// Service annotation: comma-separated paths that always pass authorization.
pub(crate) const EXEMPT_PATHS_ANNOTATION: &str = "mesh.dev/exempt-paths";

/// Pod labels that controllers add to tell revisions apart; as endpoint labels they would only
/// churn snapshots on every rollout.
const IGNORED_POD_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
];

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjectKey {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn key_of<K: ResourceExt>(obj: &K) -> ObjectKey {
    ObjectKey {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
    }
}

/// One kind's objects, with the relist in progress if any.
#[derive(Debug)]
pub(crate) struct Store<T> {
    items: BTreeMap<ObjectKey, T>,
    relist: Option<BTreeMap<ObjectKey, T>>,
    synced: bool,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<T: PartialEq> Store<T> {
    /// Applies one event, `summary` being `None` for an object the mesh ignores. Returns
    /// whether the kind's objects changed.
    fn apply(&mut self, event: watcher::Event<(ObjectKey, Option<T>)>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply((key, summary)) => {
                let relist = self.relist.get_or_insert_with(BTreeMap::new);
                if let Some(summary) = summary {
                    relist.insert(key, summary);
                }
                false
            }
            watcher::Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let first = !self.synced;
                self.synced = true;
                let changed = listed != self.items;
                self.items = listed;
                changed || first
            }
            watcher::Event::Apply((key, Some(summary))) => {
                if self.items.get(&key) == Some(&summary) {
                    return false;
                }
                self.items.insert(key, summary);
                true
            }
            watcher::Event::Apply((key, None)) | watcher::Event::Delete((key, _)) => {
                self.items.remove(&key).is_some()
            }
        }
    }
}

/// An object kind the index follows.
pub(crate) trait Indexed: Sized {
    /// What the index keeps of one object.
    type Summary: PartialEq;
    /// The summary, or `None` when the mesh ignores the object.
    fn summarize(&self) -> Option<Self::Summary>;
    /// The kind's store in `index`.
    fn store(index: &mut ClusterIndex) -> &mut Store<Self::Summary>;
    /// Whether a Service's own spec (ports, endpoints, identities) is built from this kind:
    /// a relist of it rebuilds every spec.
    const SHAPES_SPECS: bool = false;
    /// Whether a change of this kind changes only replicas (Services' endpoints and
    /// identities, instance zones): the config is then updated for the Services touched
    /// rather than assembled and validated whole. A change of any other kind rebuilds it.
    const REPLICAS_ONLY: bool = false;
    /// Marks the Services whose own spec an event on the object `key` (whose summary becomes
    /// `summary`) may change, before the event is applied; by default none.
    fn touch(_index: &mut ClusterIndex, _key: &ObjectKey, _summary: Option<&Self::Summary>) {}
}

/// What the index keeps of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceSummary {
    /// Its ports in order (the first is the one clients get when they name none): name and
    /// number.
    ports: Vec<(String, i32)>,
    mtls: Option<String>,
    default_policy: Option<String>,
    exempt_paths: Vec<String>,
}

/// What the index keeps of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceSummary {
    service: String,
    /// Port name to port number.
    ports: Vec<(String, i32)>,
    endpoints: Vec<SliceEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SliceEndpoint {
    addresses: Vec<IpAddr>,
    ready: bool,
    serving: bool,
    /// The pod's name (in the slice's namespace).
    pod: Option<String>,
    zone: String,
    /// The node it runs on: the zones of nodes are learnt from their endpoints.
    node: Option<String>,
    /// Topology hints (`hints.forZones`).
    for_zones: Vec<String>,
}

/// What the index keeps of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodSummary {
    service_account: String,
    labels: BTreeMap<String, String>,
    /// The node it is scheduled on, once it is.
    node: Option<String>,
}

// === impl Indexed ===

impl Indexed for Service {
    type Summary = ServiceSummary;

    fn summarize(&self) -> Option<ServiceSummary> {
        let spec = self.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let annotation = |name: &str| self.annotations().get(name).map(|v| v.trim().to_owned());
        Some(ServiceSummary {
            ports: spec
                .ports
                .iter()
                .flatten()
                .map(|p| (p.name.clone().unwrap_or_default(), p.port))
                .collect(),
            mtls: annotation(MTLS_ANNOTATION),
            default_policy: annotation(DEFAULT_POLICY_ANNOTATION),
            exempt_paths: annotation(EXEMPT_PATHS_ANNOTATION)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    fn store(index: &mut ClusterIndex) -> &mut Store<ServiceSummary> {
        &mut index.services
    }

    const SHAPES_SPECS: bool = true;

    fn touch(index: &mut ClusterIndex, key: &ObjectKey, _summary: Option<&ServiceSummary>) {
        index.cache().dirty.insert(key.clone());
    }
}

impl Indexed for EndpointSlice {
    type Summary = SliceSummary;

    fn summarize(&self) -> Option<SliceSummary> {
        // FQDN slices name hosts, not addresses the mesh can dial and check.
        if self.address_type == "FQDN" {
            return None;
        }
        let service = self.labels().get(SERVICE_NAME_LABEL)?.clone();
        let ports = self
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.port?)))
            .collect();
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| {
                let conditions = e.conditions.as_ref();
                // Unset `ready` means ready; unset `serving` means the same as `ready`
                // (discovery.k8s.io/v1 EndpointConditions).
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
                SliceEndpoint {
                    addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                    ready,
                    serving,
                    pod: e
                        .target_ref
                        .as_ref()
                        .filter(|t| t.kind.as_deref() == Some("Pod"))
                        .and_then(|t| t.name.clone()),
                    zone: e.zone.clone().unwrap_or_default(),
                    node: e.node_name.clone(),
                    for_zones: e
                        .hints
                        .iter()
                        .flat_map(|h| h.for_zones.iter().flatten())
                        .map(|z| z.name.clone())
                        .collect(),
                }
            })
            .collect();
        Some(SliceSummary {
            service,
            ports,
            endpoints,
        })
    }

    fn store(index: &mut ClusterIndex) -> &mut Store<SliceSummary> {
        &mut index.slices
    }

    const SHAPES_SPECS: bool = true;
    const REPLICAS_ONLY: bool = true;

    fn touch(index: &mut ClusterIndex, key: &ObjectKey, summary: Option<&SliceSummary>) {
        // The Service it belonged to and the one it belongs to now (a relabel moves it).
        let old = index
            .slices
            .items
            .get(key)
            .map(|slice| slice.service.clone());
        let new = summary.map(|slice| slice.service.clone());
        zones::touch_slice(index, key, summary);
        let cache = index.cache();
        for service in old.into_iter().chain(new) {
            cache.dirty.insert(ObjectKey {
                namespace: key.namespace.clone(),
                name: service,
            });
        }
    }
}

impl Indexed for Pod {
    type Summary = PodSummary;

    fn summarize(&self) -> Option<PodSummary> {
        let spec = self.spec.as_ref()?;
        Some(PodSummary {
            service_account: spec
                .service_account_name
                .clone()
                .filter(|sa| !sa.is_empty())
                .unwrap_or_else(|| "default".to_owned()),
            labels: self
                .labels()
                .iter()
                .filter(|(k, _)| !IGNORED_POD_LABELS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            node: spec.node_name.clone().filter(|n| !n.is_empty()),
        })
    }

    fn store(index: &mut ClusterIndex) -> &mut Store<PodSummary> {
        &mut index.pods
    }

    const SHAPES_SPECS: bool = true;
    const REPLICAS_ONLY: bool = true;

    /// The Services with an endpoint on this pod: found among the slices of its namespace
    /// (a pod is an endpoint only in its own namespace's slices), so the work follows the
    /// namespace, not the cluster.
    fn touch(index: &mut ClusterIndex, key: &ObjectKey, summary: Option<&PodSummary>) {
        zones::touch_pod(index, key, summary);
        let services: Vec<String> = in_namespace(&index.slices.items, &key.namespace)
            .filter(|(_, slice)| {
                slice
                    .endpoints
                    .iter()
                    .any(|e| e.pod.as_deref() == Some(key.name.as_str()))
            })
            .map(|(_, slice)| slice.service.clone())
            .collect();
        let cache = index.cache();
        for service in services {
            cache.dirty.insert(ObjectKey {
                namespace: key.namespace.clone(),
                name: service,
            });
        }
    }
}

impl Indexed for HttpRoute {
    type Summary = Result<GammaRoute, RouteSpecError>;

    fn summarize(&self) -> Option<Self::Summary> {
        Some(gamma(RouteKind::Http, &self.metadata, &self.spec))
    }

    fn store(index: &mut ClusterIndex) -> &mut Store<Self::Summary> {
        &mut index.http_routes
    }
}

impl Indexed for GrpcRoute {
    type Summary = Result<GammaRoute, RouteSpecError>;

    fn summarize(&self) -> Option<Self::Summary> {
        Some(gamma(RouteKind::Grpc, &self.metadata, &self.spec))
    }

    fn store(index: &mut ClusterIndex) -> &mut Store<Self::Summary> {
        &mut index.grpc_routes
    }
}

fn gamma<S: serde::Serialize>(
    kind: RouteKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: &S,
) -> Result<GammaRoute, RouteSpecError> {
    serde_json::to_value(spec)
        .and_then(|spec| GammaRoute::from_parts(kind, meta, spec))
        .map_err(|e| RouteSpecError {
            message: e.to_string(),
        })
}

/// A route whose spec does not have the shape the mesh reads. Kept in the index in place of
/// the route (so it compares by its message, not by the JSON error, which has no equality).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec: {message}")]
pub(crate) struct RouteSpecError {
    message: String,
}

/// An `AuthorizationPolicy` whose rules do not have the file source's shape.
#[derive(Debug, thiserror::Error)]
#[error("spec.rules: {0}")]
struct PolicyRulesError(#[from] serde_json::Error);

impl Indexed for AuthorizationPolicy {
    type Summary = super::crd::AuthorizationPolicySpec;

    fn summarize(&self) -> Option<Self::Summary> {
        Some(self.spec.clone())
    }

    fn store(index: &mut ClusterIndex) -> &mut Store<Self::Summary> {
        &mut index.policies
    }
}

impl Indexed for RequestAuthentication {
    type Summary = super::crd::RequestAuthenticationSpec;

    fn summarize(&self) -> Option<Self::Summary> {
        Some(self.spec.clone())
    }

    fn store(index: &mut ClusterIndex) -> &mut Store<Self::Summary> {
        &mut index.authns
    }
}

impl Indexed for FaultInjection {
    type Summary = super::crd::FaultInjectionSpec;

    fn summarize(&self) -> Option<Self::Summary> {
        Some(self.spec.clone())
    }

    fn store(index: &mut ClusterIndex) -> &mut Store<Self::Summary> {
        &mut index.faults
    }
}

/// A `LocalRateLimitPolicy` whose spec does not have the file source's shape.
#[derive(Debug, thiserror::Error)]
#[error("spec: {0}")]
struct RateLimitSpecError(#[from] serde_json::Error);

impl Indexed for LocalRateLimitPolicy {
    type Summary = super::crd::LocalRateLimitPolicySpec;

    fn summarize(&self) -> Option<Self::Summary> {
        Some(self.spec.clone())
    }

    fn store(index: &mut ClusterIndex) -> &mut Store<Self::Summary> {
        &mut index.rate_limits
    }
}

/// Every object the mesh reads, summarized, and the settings that turn them into config.
#[derive(Debug)]
pub(crate) struct ClusterIndex {
    trust_domain: TrustDomain,
    default_policy: Option<String>,
    services: Store<ServiceSummary>,
    slices: Store<SliceSummary>,
    pods: Store<PodSummary>,
    http_routes: Store<Result<GammaRoute, RouteSpecError>>,
    grpc_routes: Store<Result<GammaRoute, RouteSpecError>>,
    policies: Store<super::crd::AuthorizationPolicySpec>,
    authns: Store<super::crd::RequestAuthenticationSpec>,
    faults: Store<super::crd::FaultInjectionSpec>,
    rate_limits: Store<super::crd::LocalRateLimitPolicySpec>,
    /// Each Service's own spec, rebuilt only when one of its objects changed (behind a lock
    /// only because [`ClusterIndex::build`] takes `&self`; one task uses the index).
    specs: Mutex<SpecCache>,
}

/// Each Service's spec as its Service, EndpointSlices and Pods make it (before routes,
/// policies and the like attach), so that one EndpointSlice event rebuilds one Service's
/// endpoints, not every Service's; and the last config built, so that such an event updates
/// it for that Service rather than assembling and validating it whole.
#[derive(Debug, Default)]
struct SpecCache {
    /// The spec and what was left out building it (for logs), by Service.
    specs: BTreeMap<ObjectKey, (ServiceSpec, Vec<String>)>,
    /// Services to rebuild at the next build.
    dirty: BTreeSet<ObjectKey>,
    /// The Services whose spec left something out: an update of replicas gathers what was
    /// refused from these, not from every spec.
    refusing: BTreeSet<ObjectKey>,
    /// Rebuild every spec (at first, and after a relist of a kind specs are made from).
    all: bool,
    /// Something besides replicas changed (a Service, a route, a policy...): assemble and
    /// validate the config whole at the next build.
    shape: bool,
    /// The last config built and what goes with it; `None` until one is built, and after a
    /// build failed.
    last: Option<Last>,
    /// The zones of nodes and the pods on each, kept as slices and pods change.
    zones: zones::ZoneIndex,
    /// How many specs were built so far: what tests count to check an event's scope.
    built: u64,
    /// How many times the config was assembled and validated whole.
    whole: u64,
    /// How many Services' replicas were validated on their own (by `with_replicas`).
    revalidated: u64,
}

/// The last config built, with what was left out besides Services' own specs and the
/// routes' status: what an update of replicas keeps.
#[derive(Debug)]
struct Last {
    config: ValidConfig,
    refused: Vec<String>,
    routes: Arc<Vec<RouteStatus>>,
}

/// The entries of `items` in `namespace`, in name order.
fn in_namespace<'a, T>(
    items: &'a BTreeMap<ObjectKey, T>,
    namespace: &'a str,
) -> impl Iterator<Item = (&'a ObjectKey, &'a T)> + 'a {
    let start = ObjectKey {
        namespace: namespace.to_owned(),
        name: String::new(),
    };
    items
        .range(start..)
        .take_while(move |(key, _)| key.namespace == namespace)
}

/// A route object the index refused or could only partly attach, per parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteStatus {
    pub(crate) kind: RouteKind,
    pub(crate) route: ObjectKey,
    pub(crate) generation: Option<i64>,
    /// One entry per Service parentRef, in spec order.
    pub(crate) parents: Vec<ParentStatus>,
}

/// The mesh's conditions for one parent of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParentStatus {
    pub(crate) parent: ParentRef,
    /// `Accepted`: `Ok` or why not.
    pub(crate) accepted: Result<(), Refusal>,
    /// `ResolvedRefs`: `Ok` or which reference did not resolve.
    pub(crate) resolved_refs: Result<(), Refusal>,
}

/// What one build of the index gives.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Built {
    /// The config to publish.
    pub(crate) config: ValidConfig,
    /// Objects left out, each with why (for logs).
    pub(crate) refused: Vec<String>,
    /// The mesh's view of every GAMMA route, for route status (the same `Arc` while no
    /// route's status changed).
    pub(crate) routes: Arc<Vec<RouteStatus>>,
}

/// The assembled config failed validation although each part passed on its own: a bug in the
/// index, never the cluster's fault. The last good config keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the assembled cluster config is invalid (a mesh-control bug): {0}")]
pub(crate) struct BuildError(#[source] pub(crate) ValidationErrors);

// === impl ClusterIndex ===

impl ClusterIndex {
    /// An empty index for `trust_domain`; `default_policy` is the mesh-wide default.
    pub(crate) fn new(trust_domain: TrustDomain, default_policy: Option<String>) -> Self {
        Self {
            trust_domain,
            default_policy,
            services: Store::default(),
            slices: Store::default(),
            pods: Store::default(),
            http_routes: Store::default(),
            grpc_routes: Store::default(),
            policies: Store::default(),
            authns: Store::default(),
            faults: Store::default(),
            rate_limits: Store::default(),
            specs: Mutex::new(SpecCache {
                all: true,
                shape: true,
                ..SpecCache::default()
            }),
        }
    }

    /// The spec cache, for the one task that changes the index.
    fn cache(&mut self) -> &mut SpecCache {
        // A panic while building left specs that are each whole; a full rebuild is safest.
        self.specs.get_mut().unwrap_or_else(|poisoned| {
            let cache = poisoned.into_inner();
            cache.all = true;
            cache
        })
    }

    /// How many Service specs were built so far.
    #[cfg(test)]
    pub(crate) fn specs_built(&self) -> u64 {
        self.specs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .built
    }

    /// How many times the config was assembled and validated whole, and how many Services'
    /// replicas were validated on their own, so far.
    #[cfg(test)]
    pub(crate) fn validations(&self) -> (u64, u64) {
        let cache = self.specs.lock().unwrap_or_else(PoisonError::into_inner);
        (cache.whole, cache.revalidated)
    }

    /// Feeds one watch event; returns whether anything the config is built from changed.
    pub(crate) fn apply<K: Indexed + ResourceExt>(&mut self, event: watcher::Event<K>) -> bool {
        let event: watcher::Event<(ObjectKey, Option<K::Summary>)> = match event {
            watcher::Event::Apply(obj) => watcher::Event::Apply((key_of(&obj), obj.summarize())),
            watcher::Event::Delete(obj) => watcher::Event::Delete((key_of(&obj), None)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitApply(obj) => {
                watcher::Event::InitApply((key_of(&obj), obj.summarize()))
            }
            watcher::Event::InitDone => watcher::Event::InitDone,
        };
        match &event {
            watcher::Event::Apply((key, summary)) => K::touch(self, key, summary.as_ref()),
            watcher::Event::Delete((key, _)) => K::touch(self, key, None),
            watcher::Event::InitDone if K::SHAPES_SPECS => self.cache().all = true,
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {}
        }
        let changed = K::store(self).apply(event);
        if changed && !K::REPLICAS_ONLY {
            self.cache().shape = true;
        }
        changed
    }

    /// The kinds not yet listed once; the index is synced when there are none. Before that a
    /// build would withdraw endpoints and routes that exist.
    pub(crate) fn unsynced(&self) -> Vec<&'static str> {
        [
            ("services", self.services.synced),
            ("endpointslices", self.slices.synced),
            ("pods", self.pods.synced),
            ("httproutes", self.http_routes.synced),
            ("grpcroutes", self.grpc_routes.synced),
            ("authorizationpolicies", self.policies.synced),
            ("requestauthentications", self.authns.synced),
            ("faultinjections", self.faults.synced),
            ("localratelimitpolicies", self.rate_limits.synced),
        ]
        .into_iter()
        .filter_map(|(kind, synced)| (!synced).then_some(kind))
        .collect()
    }

    /// Builds the config from the objects known now: when only replicas changed since the
    /// last build, by updating its config for the Services they touched (see
    /// [`ValidConfig::with_replicas`]); else whole.
    pub(crate) fn build(&self) -> Result<Built, BuildError> {
        let mut cache = self.specs.lock().unwrap_or_else(PoisonError::into_inner);
        if !cache.all
            && !cache.shape
            && let Some(built) = self.update_replicas(&mut cache)
        {
            return built;
        }
        let built = self.build_whole(&mut cache);
        match &built {
            Ok(built) => {
                let own = cache
                    .specs
                    .values()
                    .map(|(_, refused)| refused.len())
                    .sum::<usize>();
                cache.last = Some(Last {
                    config: built.config.clone(),
                    refused: built.refused[own..].to_vec(),
                    routes: built.routes.clone(),
                });
                cache.shape = false;
            }
            Err(_) => cache.last = None,
        }
        built
    }

    /// A whole build from the index as it is, leaving the last config alone: what tests
    /// compare an update of replicas with.
    #[cfg(test)]
    pub(crate) fn build_whole_for_test(&self) -> Result<Built, BuildError> {
        let mut cache = self.specs.lock().unwrap_or_else(PoisonError::into_inner);
        self.build_whole(&mut cache)
    }

    /// Assembles the config from every Service's spec and every route and policy, and
    /// validates it whole.
    fn build_whole(&self, cache: &mut SpecCache) -> Result<Built, BuildError> {
        cache.whole += 1;
        self.refresh_specs(cache);
        zones::rebuild(self, cache);
        let mut refused: Vec<String> = cache
            .specs
            .values()
            .flat_map(|(_, refused)| refused.iter().cloned())
            .collect();
        let mut services: BTreeMap<ObjectKey, ServiceSpec> = cache
            .specs
            .iter()
            .map(|(key, (spec, _))| (key.clone(), spec.clone()))
            .collect();

        let routes = self.attach_routes(&mut services, &mut refused);
        let policies = self.policies(&services, &mut refused);
        let request_authentications = self.request_authentications(&services, &mut refused);
        let rate_limits = self.rate_limits(&services, &mut refused);

        let config = MeshConfig {
            services: services.into_values().collect(),
            policies,
            request_authentications,
            rate_limits,
            default_policy: self.default_policy.clone(),
            instance_zones: self.instance_zones(),
        };
        let config = config.validate(&self.trust_domain).map_err(BuildError)?;
        Ok(Built {
            config,
            refused,
            routes: Arc::new(routes),
        })
    }

    /// Brings `cache` up to date: every spec after a relist, else only the dirty ones.
    fn refresh_specs(&self, cache: &mut SpecCache) {
        if cache.all {
            cache.all = false;
            cache.dirty.clear();
            cache.specs.clear();
            cache.refusing.clear();
            // Slices grouped by their Service once, so a full build stays linear.
            let mut slices: BTreeMap<ObjectKey, Vec<&SliceSummary>> = BTreeMap::new();
            for (key, slice) in &self.slices.items {
                let service = ObjectKey {
                    namespace: key.namespace.clone(),
                    name: slice.service.clone(),
                };
                slices.entry(service).or_default().push(slice);
            }
            for (key, summary) in &self.services.items {
                let own = slices.get(key).map_or(&[][..], Vec::as_slice);
                let built = self.service_spec(key, summary, own);
                if !built.1.is_empty() {
                    cache.refusing.insert(key.clone());
                }
                cache.specs.insert(key.clone(), built);
                cache.built += 1;
            }
            return;
        }
        for key in std::mem::take(&mut cache.dirty) {
            self.refresh_spec(cache, key);
        }
    }

    /// Rebuilds the spec of the Service `key`, or drops it when the cluster has no such
    /// Service.
    fn refresh_spec(&self, cache: &mut SpecCache, key: ObjectKey) {
        let Some(summary) = self.services.items.get(&key) else {
            cache.specs.remove(&key);
            cache.refusing.remove(&key);
            return;
        };
        let own: Vec<&SliceSummary> = in_namespace(&self.slices.items, &key.namespace)
            .map(|(_, slice)| slice)
            .filter(|slice| slice.service == key.name)
            .collect();
        let built = self.service_spec(&key, summary, &own);
        if built.1.is_empty() {
            cache.refusing.remove(&key);
        } else {
            cache.refusing.insert(key.clone());
        }
        cache.specs.insert(key, built);
        cache.built += 1;
    }

    /// One Service's own spec from its summary, its slices and their pods, with what was
    /// left out.
    fn service_spec(
        &self,
        key: &ObjectKey,
        summary: &ServiceSummary,
        own_slices: &[&SliceSummary],
    ) -> (ServiceSpec, Vec<String>) {
        let mut refused = Vec::new();
        let mut spec = ServiceSpec {
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            port: None,
            endpoints: Vec::new(),
            ports: Vec::new(),
            routes: Vec::new(),
            mtls: summary.mtls.clone(),
            default_policy: summary.default_policy.clone(),
            exempt_paths: summary.exempt_paths.clone(),
            identities: Vec::new(),
        };
        if let Err(e) = self.check(std::slice::from_ref(&spec), &[]) {
            refused.push(format!(
                "Service {key}: annotations: {e}; falling back to default policy deny"
            ));
            spec.mtls = None;
            spec.exempt_paths = Vec::new();
            spec.default_policy = Some("deny".to_owned());
        }
        for (i, (port_name, port)) in summary.ports.iter().enumerate() {
            let endpoints = self.endpoints(key, port_name, own_slices, &mut refused);
            let port = u32::try_from(*port).ok();
            if i == 0 {
                spec.port = port;
                spec.endpoints = endpoints;
            } else if let Some(port) = port {
                spec.ports.push(ServicePortSpec { port, endpoints });
            }
        }
        spec.identities = self.starting_identities(key, own_slices, &spec);
        (spec, refused)
    }

    /// Validates a config of `services` and `policies` alone.
    fn check(
        &self,
        services: &[ServiceSpec],
        policies: &[PolicySpec],
    ) -> Result<(), ValidationErrors> {
        MeshConfig {
            services: services.to_vec(),
            policies: policies.to_vec(),
            request_authentications: Vec::new(),
            rate_limits: Vec::new(),
            default_policy: None,
            instance_zones: BTreeMap::new(),
        }
        .validate(&self.trust_domain)
        .map(drop)
    }

    /// The zone of every pod whose node's zone is known, by `<namespace>/<pod>`: a workload's
    /// instance name is its pod's name, and a node's zone is the zone EndpointSlices give the
    /// endpoints on it (the EndpointSlice controller copies it from the Node's
    /// `topology.kubernetes.io/zone` label), so no Node needs to be read.
    fn instance_zones(&self) -> BTreeMap<String, String> {
        let mut node_zones: BTreeMap<&str, &str> = BTreeMap::new();
        for endpoint in self.slices.items.values().flat_map(|s| &s.endpoints) {
            if let (Some(node), false) = (&endpoint.node, endpoint.zone.is_empty()) {
                node_zones.insert(node, &endpoint.zone);
            }
        }
        if node_zones.is_empty() {
            return BTreeMap::new();
        }
        self.pods
            .items
            .iter()
            .filter_map(|(key, pod)| {
                let zone = node_zones.get(pod.node.as_deref()?)?;
                Some((
                    format!("{}/{}", key.namespace, key.name),
                    (*zone).to_owned(),
                ))
            })
            .filter(|(_, zone)| zone.len() <= mesh_core::config::MAX_ZONE_BYTES)
            .collect()
    }

    /// The identities of `service`'s pods that are in its slices but not among `spec`'s
    /// endpoints (not ready yet): a replica subscribes as its service before its readiness
    /// probe passes (the mesh's `/ready` waits for that subscription), so the first pods of a
    /// Service must be let in before any of them is ready.
    fn starting_identities(
        &self,
        service: &ObjectKey,
        slices: &[&SliceSummary],
        spec: &ServiceSpec,
    ) -> Vec<String> {
        let serving: BTreeSet<&str> = spec
            .endpoints
            .iter()
            .chain(spec.ports.iter().flat_map(|port| &port.endpoints))
            .map(|endpoint| endpoint.identity.as_str())
            .collect();
        let mut starting = BTreeSet::new();
        for endpoint in slices.iter().flat_map(|slice| &slice.endpoints) {
            let Some(pod) = endpoint.pod.as_ref().and_then(|name| {
                self.pods.items.get(&ObjectKey {
                    namespace: service.namespace.clone(),
                    name: name.clone(),
                })
            }) else {
                continue;
            };
            // An invalid service account is reported where the pod is an endpoint.
            if let Ok(id) = SpiffeId::from_service_account(
                &self.trust_domain,
                &service.namespace,
                &pod.service_account,
            ) {
                let id = id.to_string();
                if !serving.contains(id.as_str()) {
                    starting.insert(id);
                }
            }
        }
        starting.into_iter().collect()
    }

    /// The endpoints serving one port (by its name) of a service, from its slices and their
    /// pods.
    fn endpoints(
        &self,
        service: &ObjectKey,
        port_name: &str,
        slices: &[&SliceSummary],
        refused: &mut Vec<String>,
    ) -> Vec<EndpointSpec> {
        let mut ready = Vec::new();
        let mut serving = Vec::new();
        let mut seen = BTreeSet::new();
        for slice in slices {
            // The slice's port for a service port carries the same name.
            let Some(port) = slice
                .ports
                .iter()
                .find(|(name, _)| name == port_name)
                .and_then(|(_, port)| u16::try_from(*port).ok())
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                if !endpoint.serving {
                    continue;
                }
                let Some(pod_name) = &endpoint.pod else {
                    continue;
                };
                let pod_key = ObjectKey {
                    namespace: service.namespace.clone(),
                    name: pod_name.clone(),
                };
                let Some(pod) = self.pods.items.get(&pod_key) else {
                    continue;
                };
                let identity = match SpiffeId::from_service_account(
                    &self.trust_domain,
                    &pod_key.namespace,
                    &pod.service_account,
                ) {
                    Ok(id) => id,
                    Err(e) => {
                        refused.push(format!("Pod {pod_key}: service account: {e}"));
                        continue;
                    }
                };
                for ip in &endpoint.addresses {
                    let address = SocketAddr::new(*ip, port);
                    // The same address may sit in two slices while the controller moves it.
                    if !seen.insert(address) {
                        continue;
                    }
                    let spec = EndpointSpec {
                        address: address.to_string(),
                        weight: None,
                        zone: endpoint.zone.clone(),
                        for_zones: endpoint.for_zones.clone(),
                        labels: pod.labels.clone(),
                        identity: identity.to_string(),
                    };
                    if endpoint.ready {
                        ready.push(spec);
                    } else {
                        serving.push(spec);
                    }
                }
            }
        }
        let mut endpoints = if ready.is_empty() { serving } else { ready };
        endpoints.sort_by(|a, b| a.address.cmp(&b.address));
        endpoints
    }

    /// Attaches every producer route to its services and returns each route's status.
    fn attach_routes(
        &self,
        services: &mut BTreeMap<ObjectKey, ServiceSpec>,
        refused: &mut Vec<String>,
    ) -> Vec<RouteStatus> {
        // Oldest first, then by name, as Gateway API breaks ties; this also decides which of
        // two same-named routes (an HTTPRoute and a GRPCRoute) a service keeps.
        let mut all: Vec<(RouteKind, &ObjectKey, &Result<GammaRoute, RouteSpecError>)> = self
            .http_routes
            .items
            .iter()
            .map(|(k, r)| (RouteKind::Http, k, r))
            .chain(
                self.grpc_routes
                    .items
                    .iter()
                    .map(|(k, r)| (RouteKind::Grpc, k, r)),
            )
            .collect();
        all.sort_by(|a, b| {
            let created = |r: &Result<GammaRoute, RouteSpecError>| {
                r.as_ref().ok().and_then(|r| r.created.clone())
            };
            (created(a.2).is_none(), created(a.2), a.1, a.0).cmp(&(
                created(b.2).is_none(),
                created(b.2),
                b.1,
                b.0,
            ))
        });
        let mut statuses = Vec::new();
        for (kind, key, route) in all {
            let label = match kind {
                RouteKind::Http => "HTTPRoute",
                RouteKind::Grpc => "GRPCRoute",
            };
            let route = match route {
                Ok(route) => route,
                Err(e) => {
                    refused.push(format!("{label} {key}: {e}"));
                    continue;
                }
            };
            let mut status = RouteStatus {
                kind,
                route: key.clone(),
                generation: route.generation,
                parents: Vec::new(),
            };
            let resolved = self.resolved_refs(route, &key.namespace);
            for parent in route.spec.parent_refs.iter().filter(|p| p.is_service()) {
                let accepted = self.attach(route, key, parent, services);
                if let Err(refusal) = &accepted {
                    refused.push(format!(
                        "{label} {key} (parent Service {}): {}",
                        parent.name, refusal.message
                    ));
                }
                status.parents.push(ParentStatus {
                    parent: parent.clone(),
                    accepted,
                    resolved_refs: resolved.clone(),
                });
            }
            if !status.parents.is_empty() {
                statuses.push(status);
            }
        }
        statuses
    }

    /// Attaches `route` under the Service `parent`, or says why it cannot be.
    fn attach(
        &self,
        route: &GammaRoute,
        key: &ObjectKey,
        parent: &ParentRef,
        services: &mut BTreeMap<ObjectKey, ServiceSpec>,
    ) -> Result<(), Refusal> {
        let service_key = ObjectKey {
            namespace: parent
                .namespace
                .clone()
                .unwrap_or_else(|| key.namespace.clone()),
            name: parent.name.clone(),
        };
        if parent.section_name.is_some() {
            return Err(Refusal::new(
                "UnsupportedValue",
                "sectionName on a Service parent is not supported; use port",
            ));
        }
        let (Some(summary), Some(spec)) = (
            self.services.items.get(&service_key),
            services.get_mut(&service_key),
        ) else {
            return Err(Refusal::new(
                "NoMatchingParent",
                format!("Service {service_key} not found"),
            ));
        };
        if let Some(port) = parent.port
            && !summary.ports.iter().any(|(_, p)| *p == port)
        {
            return Err(Refusal::new(
                "NoMatchingParent",
                format!("Service {service_key} has no port {port}"),
            ));
        }
        // A consumer route (in another namespace than its Service) applies to callers in its
        // own namespace; GAMMA gives it precedence over the Service's routes for them.
        let consumer = (service_key.namespace != key.namespace).then(|| key.namespace.clone());
        let kind = match route.kind {
            RouteKind::Http => "http",
            RouteKind::Grpc => "grpc",
        };
        let port = parent.port.and_then(|p| u32::try_from(p).ok());
        let same_name = |r: &&mut RouteSpec| r.name == key.name && r.namespace == consumer;
        if let Some(other) = spec.routes.iter_mut().find(same_name) {
            if other.kind.as_deref() != Some(kind) {
                return Err(Refusal::new(
                    "NotAllowedByParent",
                    format!(
                        "an older route named {:?} of the other kind is already attached",
                        key.name
                    ),
                ));
            }
            if port.is_none() {
                // Another parentRef to the same Service without a port: every port.
                other.port = None;
                return Ok(());
            }
            if other.port.is_none() || other.port == port {
                // A second parentRef to the same Service (and port) adds nothing.
                return Ok(());
            }
        }
        let faults = |name: &str| self.fault(&key.namespace, name);
        let mut route_spec: RouteSpec = route.to_spec(&key.name, &key.namespace, &faults)?;
        route_spec.namespace = consumer;
        route_spec.port = port;
        let candidate = ServiceSpec {
            mtls: None,
            default_policy: None,
            exempt_paths: Vec::new(),
            ..without_endpoints(spec, vec![route_spec.clone()])
        };
        self.check(&[candidate], &[]).map_err(|e| {
            Refusal::new(
                "UnsupportedValue",
                e.to_string().replace("services[0].routes[0].", "spec."),
            )
        })?;
        spec.routes.push(route_spec);
        Ok(())
    }

    /// The `FaultInjection` `namespace/name` in the file's shape, if it exists and reads as
    /// one (the API server has checked its schema, so it always does).
    fn fault(&self, namespace: &str, name: &str) -> Option<mesh_core::config::FaultInjectionSpec> {
        let key = ObjectKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.faults.items.get(&key)?.to_config().ok()
    }

    /// `ResolvedRefs`: every backend names a Service the index knows, and every
    /// `ExtensionRef` filter a `FaultInjection` it knows.
    fn resolved_refs(&self, route: &GammaRoute, namespace: &str) -> Result<(), Refusal> {
        for name in route.fault_refs() {
            if self.fault(namespace, name).is_none() {
                return Err(Refusal::new(
                    "FilterNotFound",
                    format!(
                        "FaultInjection {namespace}/{name} not found: the rules that name it \
                         answer 500"
                    ),
                ));
            }
        }
        for (ns, name) in route.referenced_services(namespace) {
            let key = ObjectKey {
                namespace: ns,
                name,
            };
            if !self.services.items.contains_key(&key) {
                return Err(Refusal::new(
                    "BackendNotFound",
                    format!("backend Service {key} not found"),
                ));
            }
        }
        Ok(())
    }

    /// Every policy that passes validation on its own against its target.
    fn policies(
        &self,
        services: &BTreeMap<ObjectKey, ServiceSpec>,
        refused: &mut Vec<String>,
    ) -> Vec<PolicySpec> {
        let mut out = Vec::new();
        for (key, policy) in &self.policies.items {
            let spec = match policy_spec(key, policy) {
                Ok(spec) => spec,
                Err(e) => {
                    refused.push(format!("AuthorizationPolicy {key}: {e}"));
                    continue;
                }
            };
            let Some((_, service)) = target_service(
                "AuthorizationPolicy",
                key,
                &policy.target.service,
                services,
                refused,
            ) else {
                continue;
            };
            if let Err(e) = self.check(
                &[without_endpoints(service, service.routes.clone())],
                std::slice::from_ref(&spec),
            ) {
                refused.push(format!(
                    "AuthorizationPolicy {key}: {}",
                    e.to_string().replace("policies[0].", "spec.")
                ));
                continue;
            }
            out.push(spec);
        }
        out
    }
}

// === request authentications ===

impl ClusterIndex {
    /// Every request authentication that passes validation on its own against its Service,
    /// and together with those before it (in name order: at most 4 issuers per Service, each
    /// once).
    fn request_authentications(
        &self,
        services: &BTreeMap<ObjectKey, ServiceSpec>,
        refused: &mut Vec<String>,
    ) -> Vec<RequestAuthenticationSpec> {
        let mut out: Vec<RequestAuthenticationSpec> = Vec::new();
        for (key, authn) in &self.authns.items {
            let spec = match authn_spec(key, authn) {
                Ok(spec) => spec,
                Err(e) => {
                    refused.push(format!("RequestAuthentication {key}: spec.jwtRules: {e}"));
                    continue;
                }
            };
            let Some((target, service)) = target_service(
                "RequestAuthentication",
                key,
                &authn.target.service,
                services,
                refused,
            ) else {
                continue;
            };
            // Checked with the ones already taken for the same Service: issuers are unique
            // and bounded per Service.
            let mut together: Vec<RequestAuthenticationSpec> = out
                .iter()
                .filter(|s| {
                    s.target.service == target.name && s.target.namespace == spec.target.namespace
                })
                .cloned()
                .collect();
            let index = together.len();
            together.push(spec.clone());
            let check = MeshConfig {
                services: vec![without_endpoints(service, Vec::new())],
                request_authentications: together,
                ..MeshConfig::default()
            }
            .validate(&self.trust_domain);
            if let Err(e) = check {
                refused.push(format!(
                    "RequestAuthentication {key}: {}",
                    e.to_string()
                        .replace(&format!("requestAuthentications[{index}]."), "spec.")
                ));
                continue;
            }
            out.push(spec);
        }
        out
    }
}

/// The file source's request authentication for a CRD object.
fn authn_spec(
    key: &ObjectKey,
    authn: &super::crd::RequestAuthenticationSpec,
) -> Result<RequestAuthenticationSpec, serde_json::Error> {
    // The CRD's rules have the file's JSON shape by design, as for policies.
    let jwt_rules: Vec<JwtRuleSpec> =
        serde_json::to_value(&authn.jwt_rules).and_then(serde_json::from_value)?;
    Ok(RequestAuthenticationSpec {
        name: key.name.clone(),
        target: PolicyTargetSpec {
            service: authn.target.service.clone(),
            namespace: Some(key.namespace.clone()),
            route: None,
        },
        jwt_rules,
    })
}

impl ClusterIndex {
    /// Every rate-limit policy that passes validation on its own against its target.
    fn rate_limits(
        &self,
        services: &BTreeMap<ObjectKey, ServiceSpec>,
        refused: &mut Vec<String>,
    ) -> Vec<RateLimitSpec> {
        let mut out = Vec::new();
        for (key, policy) in &self.rate_limits.items {
            let spec = match rate_limit_spec(key, policy) {
                Ok(spec) => spec,
                Err(e) => {
                    refused.push(format!("LocalRateLimitPolicy {key}: {e}"));
                    continue;
                }
            };
            let Some((_, service)) = target_service(
                "LocalRateLimitPolicy",
                key,
                &policy.target.service,
                services,
                refused,
            ) else {
                continue;
            };
            let check = MeshConfig {
                services: vec![without_endpoints(service, service.routes.clone())],
                policies: Vec::new(),
                rate_limits: vec![spec.clone()],
                ..MeshConfig::default()
            }
            .validate(&self.trust_domain);
            if let Err(e) = check {
                refused.push(format!(
                    "LocalRateLimitPolicy {key}: {}",
                    e.to_string().replace("rateLimits[0].", "spec.")
                ));
                continue;
            }
            out.push(spec);
        }
        out
    }
}

/// The file source's rate-limit policy for a CRD object.
fn rate_limit_spec(
    key: &ObjectKey,
    policy: &super::crd::LocalRateLimitPolicySpec,
) -> Result<RateLimitSpec, RateLimitSpecError> {
    // The CRD's limits have the file's JSON shape by design; going through JSON keeps the two
    // from drifting apart field by field.
    fn convert<T: serde::Serialize, U: serde::de::DeserializeOwned>(
        value: &T,
    ) -> Result<U, serde_json::Error> {
        serde_json::to_value(value).and_then(serde_json::from_value)
    }
    Ok(RateLimitSpec {
        name: key.name.clone(),
        target: PolicyTargetSpec {
            service: policy.target.service.clone(),
            namespace: Some(key.namespace.clone()),
            route: policy.target.route.clone(),
        },
        total: convert(&policy.total)?,
        identity: convert(&policy.identity)?,
        overrides: convert(&policy.overrides)?,
    })
}

/// The Service named `service` in `key`'s namespace, which an object of `kind` (a policy, a
/// rate limit, a request authentication) targets; `None`, with the reason in `refused`, when
/// the cluster has no such Service.
fn target_service<'a>(
    kind: &str,
    key: &ObjectKey,
    service: &str,
    services: &'a BTreeMap<ObjectKey, ServiceSpec>,
    refused: &mut Vec<String>,
) -> Option<(ObjectKey, &'a ServiceSpec)> {
    let target = ObjectKey {
        namespace: key.namespace.clone(),
        name: service.to_owned(),
    };
    match services.get(&target) {
        Some(spec) => Some((target, spec)),
        None => {
            refused.push(format!(
                "{kind} {key}: spec.target.service: Service {target} not found"
            ));
            None
        }
    }
}

/// `spec` without its endpoints and with `routes` (what checking a route or a policy against
/// it needs): a service's endpoints are most of its size.
fn without_endpoints(spec: &ServiceSpec, routes: Vec<RouteSpec>) -> ServiceSpec {
    ServiceSpec {
        name: spec.name.clone(),
        namespace: spec.namespace.clone(),
        port: spec.port,
        endpoints: Vec::new(),
        ports: spec
            .ports
            .iter()
            .map(|p| ServicePortSpec {
                port: p.port,
                endpoints: Vec::new(),
            })
            .collect(),
        routes,
        mtls: spec.mtls.clone(),
        default_policy: spec.default_policy.clone(),
        exempt_paths: spec.exempt_paths.clone(),
        identities: Vec::new(),
    }
}

/// The file source's policy for a CRD object.
fn policy_spec(
    key: &ObjectKey,
    policy: &super::crd::AuthorizationPolicySpec,
) -> Result<PolicySpec, PolicyRulesError> {
    // The CRD's rules have the file's JSON shape by design; going through JSON keeps the two
    // from drifting apart field by field.
    let rules: Vec<PolicyRuleSpec> =
        serde_json::to_value(&policy.rules).and_then(serde_json::from_value)?;
    Ok(PolicySpec {
        name: key.name.clone(),
        target: PolicyTargetSpec {
            service: policy.target.service.clone(),
            namespace: Some(key.namespace.clone()),
            route: policy.target.route.clone(),
        },
        action: Some(
            match policy.action {
                PolicyAction::Allow => "ALLOW",
                PolicyAction::Deny => "DENY",
            }
            .to_owned(),
        ),
        mode: policy.mode.map(|m| {
            match m {
                PolicyMode::Enforce => "enforce",
                PolicyMode::Audit => "audit",
            }
            .to_owned()
        }),
        rules,
    })
}

mod replicas;
mod zones;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;
