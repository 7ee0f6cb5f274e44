//! Validation of [`MeshConfig`]: every error, each with the path of its field.
//!
//! Paths use the YAML's own camelCase spelling (`services[0].routes[1].rules[0].backendRefs[2]
//! .name`). What is checked, beyond the types themselves:
//!
//! - service names and namespaces are DNS-1123 labels, and a `name.namespace` appears once;
//! - endpoint addresses are dialable `ip:port`s, unique within their service; weights are 1 to
//!   1,000,000 (1 when omitted); identities are SPIFFE IDs in the mesh's trust domain;
//! - route names are DNS-1123 subdomains, unique within their service; rule names are empty or
//!   DNS-1123 subdomains, unique within their route;
//! - backend references name a DNS-1123 label (and namespace, the service's own when omitted)
//!   with a weight of 0 to 1,000,000 (1 when omitted; 0 sends nothing) and a port of 1 to 65535;
//! - a route's `kind` is `http` or `grpc`, its `creationTimestamp` Unix seconds or RFC 3339;
//! - matches, filters, timeouts and retry policies as `crate::check::route` describes: regular
//!   expressions compile, header names are tokens, paths start with `/`, durations are Gateway
//!   API durations with `backendRequest <= request`, mirror percentages are 0 to 100, retry
//!   attempts 0 to 10, HTTP retry codes 400 to 599 and gRPC statuses known names;
//! - hedging policies as `crate::check::hedging` describes: `maxAttempts` 2 to 5, `delay`
//!   `p50` to `p99` or a duration of at most 60 s, non-fatal statuses as retry statuses, and
//!   never on a rule that also retries.
//!
//! - policies: names are DNS-1123 subdomains, unique within their target's namespace; the
//!   target is a service of the config (and one of its routes, when named); action, mode,
//!   rules and the services' `mtls`, `defaultPolicy` and `exemptPaths` as `crate::check::policy`
//!   describes (identities in the mesh's trust domain, wildcards only at the end).
//! - rate limits (`rateLimits`): names and targets as for policies (names unique among the
//!   rate-limit policies of a namespace); at least one of `total`, `identity` and `overrides`;
//!   rates and bursts 1 to 1,000,000 (the burst one second's worth when omitted); at most 64
//!   overrides, each naming 1 to 64 callers (exact SPIFFE IDs in the trust domain, or
//!   `namespace/serviceAccount`).
//!
//! - request authentications: names as policies', the target a service of the config (no
//!   route), at most [`crate::jwt::MAX_JWT_RULES`] issuers per service, each unique, with
//!   exactly one of `jwksUri` (https, http or file) and an inline `jwks` that parses, and the
//!   bounds `crate::jwt` lists for audiences and token headers; principal conditions of policy
//!   rules likewise bounded.
//!
//! - sizes: endpoint label keys at most [`MAX_LABEL_KEY_BYTES`] and values at most
//!   [`MAX_LABEL_VALUE_BYTES`] (Kubernetes' own bounds, so every pod's labels pass), zones at
//!   most [`MAX_ZONE_BYTES`]; and, for a config otherwise valid, every destination a client can
//!   ask for (each port of each service, as each consumer namespace with routes sees it) at
//!   most [`MAX_DESTINATION_BYTES`] on the wire and every inbound policy at most
//!   [`MAX_INBOUND_BYTES`], so that no snapshot of one destination exceeds what clients accept
//!   ([`CLIENT_MAX_SNAPSHOT_BYTES`]).
//!
//! A backend reference to a service the config does not have is *not* an error: as in Gateway
//! API, it resolves to a backend with `found = false`, whose share of traffic fails.

use std::collections::BTreeMap;

use std::sync::Arc;

use prost::Message;
use sharded::Sharded;

use super::{BackendRefSpec, EndpointSpec, MeshConfig, PolicyTargetSpec, ServiceSpec};
use crate::authz::{AuthorizationPolicy, DefaultPolicy, InboundPolicy, MtlsMode, PathPattern};
use crate::check::{self, EndpointAt, EndpointFields, FirstSeen};
use crate::dns::check_dns_label;
use crate::error::{FieldError, ValidationErrors};
use crate::jwt::JwtRule;
use crate::proto;
use crate::rate::RateLimitPolicy;
use crate::snapshot::{
    Backend, BackendRef, Destination, DestinationKey, Endpoint, Route, RouteFilter, RouteRule,
    ServiceName,
};
use crate::spiffe::{SpiffeId, TrustDomain};

/// The largest snapshot a workload accepts: the gRPC decoding limit its control client keeps
/// (tonic's default, 4 MiB). A larger one would fail on every client, again at every retry.
pub const CLIENT_MAX_SNAPSHOT_BYTES: usize = 4 * 1024 * 1024;

/// The most one destination (its endpoints, routes and resolved backends) may take on the
/// wire: 3 MiB, leaving room in a snapshot for an inbound policy and the trust bundle.
pub const MAX_DESTINATION_BYTES: usize = 3 * 1024 * 1024;

/// The most one service's inbound policy may take on the wire: 512 KiB.
pub const MAX_INBOUND_BYTES: usize = 512 * 1024;

/// The longest endpoint label key: 317 bytes, a Kubernetes qualified name (a 253-byte DNS
/// prefix, `/`, a 63-byte name).
pub const MAX_LABEL_KEY_BYTES: usize = 317;

/// The longest endpoint label value: 63 bytes, as in Kubernetes.
pub const MAX_LABEL_VALUE_BYTES: usize = 63;

pub use crate::check::{MAX_ZONE_BYTES, MAX_ZONE_HINTS};

/// A config that passed validation, indexed by service, ready to project destinations from.
///
/// Services (validated and as written) and instance zones are kept per namespace behind
/// `Arc`s, so a copy is cheap and [`ValidConfig::with_replicas`] changes one service in time
/// proportional to its namespace; equality compares shared parts by pointer first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidConfig {
    services: Sharded<ServiceName, Arc<ValidService>>,
    /// The mesh-wide default policy.
    default_policy: DefaultPolicy,
    /// The config as written (or as a source built it), for operators' tools (the control
    /// service serves it so `meshctl check` can lint what is in force), less its services and
    /// instance zones, which are kept below.
    rest: Arc<MeshConfig>,
    /// Each service as written, with its position in the written list.
    written: Sharded<ServiceName, (usize, Arc<ServiceSpec>)>,
    /// `instanceZones`, by namespace then instance.
    zones: Sharded<String, String>,
    /// For each service, the services whose routes send to it (backends and mirrors): whose
    /// destinations grow when its replicas do.
    referrers: Arc<BTreeMap<ServiceName, Vec<ServiceName>>>,
    /// Every `jwksUri` of every service's issuers, once each, in service order.
    jwks_uris: Arc<Vec<String>>,
}

/// One validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ValidService {
    /// The port `endpoints` serve, when the service names one.
    port: Option<u16>,
    endpoints: Vec<Endpoint>,
    /// Further ports and their replicas.
    ports: Vec<PortEndpoints>,
    routes: Vec<AttachedRoute>,
    mtls: MtlsMode,
    /// Its own default policy, when it sets one.
    default_policy: Option<DefaultPolicy>,
    exempt_paths: Vec<PathPattern>,
    /// The policies that target it, in config order.
    policies: Vec<AuthorizationPolicy>,
    /// The rate-limit policies that target it, in config order.
    rate_limits: Vec<RateLimitPolicy>,
    /// Identities that run it besides its endpoints' (replicas starting up).
    identities: Vec<SpiffeId>,
    /// The JWT issuers it accepts, from every request authentication that targets it.
    jwt_rules: Vec<JwtRule>,
}

impl ValidService {
    /// The replicas serving `port` (`None`: the first port); `None` when the service has no
    /// such port. A service that names no port serves whatever port a client names.
    fn endpoints_at(&self, port: Option<u16>) -> Option<&[Endpoint]> {
        match (port, self.port) {
            (None, _) | (Some(_), None) => Some(&self.endpoints),
            (Some(asked), Some(first)) if asked == first => Some(&self.endpoints),
            (Some(asked), Some(_)) => self
                .ports
                .iter()
                .find(|(p, _)| *p == asked)
                .map(|(_, endpoints)| endpoints.as_slice()),
        }
    }

    /// The routes for a caller in `consumer` calling `port`: the consumer routes of that
    /// namespace when any attach to the port, else the service's own routes (GAMMA: consumer
    /// routes take precedence for their namespace).
    fn routes_for(&self, port: Option<u16>, consumer: Option<&str>) -> Vec<Route> {
        let port = port.or(self.port);
        let attached = |r: &&AttachedRoute| r.port.is_none() || r.port == port;
        let of = |namespace: Option<&str>| -> Vec<Route> {
            self.routes
                .iter()
                .filter(|r| r.consumer.as_deref() == namespace)
                .filter(attached)
                .map(|r| r.route.clone())
                .collect()
        };
        if let Some(consumer) = consumer {
            let own = of(Some(consumer));
            if !own.is_empty() {
                return own;
            }
        }
        of(None)
    }
}

/// A further port of a service and the replicas serving it.
type PortEndpoints = (u16, Vec<Endpoint>);

/// A validated route with where it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AttachedRoute {
    /// The service port it attaches to; every port when `None`.
    port: Option<u16>,
    /// The namespace of a consumer route; `None` for the service's own (producer) routes.
    consumer: Option<String>,
    route: Route,
}

// === impl MeshConfig ===

impl MeshConfig {
    /// Checks every field; endpoint identities must belong to `trust_domain`.
    ///
    /// On failure, returns every error found, in document order.
    pub fn validate(&self, trust_domain: &TrustDomain) -> Result<ValidConfig, ValidationErrors> {
        let mut errors = Vec::new();
        let mut services = BTreeMap::new();
        let mut seen = FirstSeen::new();
        for (i, spec) in self.services.iter().enumerate() {
            let path = format!("services[{i}]");
            let name = service_name(&path, spec, &mut errors);
            let duplicate = name.as_ref().and_then(|name| {
                let first = seen.check(name.clone(), &path)?;
                errors.push(FieldError::new(
                    &path,
                    format!("duplicate service \"{name}\" (first at {first})"),
                ));
                Some(())
            });
            let endpoints = endpoints(
                &format!("{path}.endpoints"),
                &spec.endpoints,
                trust_domain,
                &mut errors,
            );
            let (port, ports) = ports(&path, spec, trust_domain, &mut errors);
            let routes = routes(&path, spec, port.as_ref(), &ports, &mut errors);
            let mtls =
                check::policy::mtls(&format!("{path}.mtls"), spec.mtls.as_deref(), &mut errors);
            let default_policy = check::policy::default_policy(
                &format!("{path}.defaultPolicy"),
                spec.default_policy.as_deref(),
                &mut errors,
            );
            let exempt_paths = check::policy::exempt_paths(
                &format!("{path}.exemptPaths"),
                &spec.exempt_paths,
                &mut errors,
            );
            let identities = identities(&path, spec, trust_domain, &mut errors);
            if let (Some(name), None) = (name, duplicate) {
                services.insert(
                    name,
                    ValidService {
                        port: port.flatten(),
                        endpoints,
                        ports,
                        routes,
                        mtls,
                        default_policy,
                        exempt_paths,
                        policies: Vec::new(),
                        rate_limits: Vec::new(),
                        identities,
                        jwt_rules: Vec::new(),
                    },
                );
            }
        }
        policies(self, trust_domain, &mut services, &mut errors);
        request_authentications(self, &mut services, &mut errors);
        rate_limits(self, trust_domain, &mut services, &mut errors);
        let default_policy = check::policy::default_policy(
            "defaultPolicy",
            self.default_policy.as_deref(),
            &mut errors,
        )
        .unwrap_or_default();
        for (key, zone) in &self.instance_zones {
            instance_zone(key, zone, &mut errors);
        }
        let mut valid = ValidConfig::from_services(services, default_policy);
        // Sizes are measured on what clients would be sent, so only once all else is valid.
        if errors.is_empty() {
            snapshot_sizes(self, &valid, &mut errors);
        }
        // Kept only for a config that is taken: a refused one costs no copy.
        if errors.is_empty() {
            valid.keep_written(self);
        }
        ValidationErrors::check(errors, valid)
    }
}

/// The identities of the service at `path` (`services[0]`) besides its endpoints'.
fn identities(
    path: &str,
    spec: &ServiceSpec,
    trust_domain: &TrustDomain,
    errors: &mut Vec<FieldError>,
) -> Vec<SpiffeId> {
    spec.identities
        .iter()
        .enumerate()
        .filter_map(|(j, value)| {
            check::identity(value, Some(trust_domain))
                .map_err(|message| {
                    errors.push(FieldError::new(format!("{path}.identities[{j}]"), message));
                })
                .ok()
        })
        .collect()
}

/// Checks one entry of `instanceZones`: its key `<namespace>/<instance>` (a DNS label, then
/// at most 253 bytes), its zone at most [`MAX_ZONE_BYTES`].
fn instance_zone(key: &str, zone: &str, errors: &mut Vec<FieldError>) {
    let path = format!("instanceZones[{key:?}]");
    let well_formed = key.split_once('/').is_some_and(|(namespace, instance)| {
        check_dns_label(namespace).is_ok()
            && !instance.is_empty()
            && instance.len() <= 253
            && !instance.contains('/')
    });
    if !well_formed {
        errors.push(FieldError::new(
            &path,
            "expected <namespace>/<instance>, e.g. default/greeter-7d9f-x2x4q",
        ));
    }
    if zone.len() > MAX_ZONE_BYTES {
        errors.push(FieldError::new(
            &path,
            format!("zone longer than {MAX_ZONE_BYTES} bytes"),
        ));
    }
}

/// Checks every policy and files each valid one under the service it targets.
///
/// A target must name a service of the config (and a route of that service, when it names
/// one): a policy aimed at a typo would silently protect nothing. A service that is in the
/// config but invalid has its own errors already, so policies aimed at it add none.
fn policies(
    config: &MeshConfig,
    trust_domain: &TrustDomain,
    services: &mut BTreeMap<ServiceName, ValidService>,
    errors: &mut Vec<FieldError>,
) {
    let mut names: BTreeMap<String, FirstSeen<String>> = BTreeMap::new();
    for (i, spec) in config.policies.iter().enumerate() {
        let path = format!("policies[{i}]");
        let namespace = spec.target.namespace.as_deref().unwrap_or("default");
        check::policy::unique_policy_name(
            &format!("{path}.name"),
            &spec.name,
            names
                .entry(namespace.to_owned())
                .or_insert_with(FirstSeen::new),
            errors,
        );
        let target = policy_target(&path, config, &spec.target, errors);
        let parts = check::policy::policy_parts(
            &path,
            spec.action.as_deref(),
            spec.mode.as_deref(),
            &spec.rules,
            Some(trust_domain),
            errors,
        );
        if let (Some((service, route)), Some(parts)) = (target, parts)
            && let Some(valid) = services.get_mut(&service)
        {
            valid.policies.push(AuthorizationPolicy {
                name: Arc::from(spec.name.as_str()),
                route: route.map(Arc::from),
                action: parts.action,
                mode: parts.mode,
                rules: parts.rules,
            });
        }
    }
}

/// Checks every rate-limit policy and files each valid one under the service it targets,
/// as [`policies`] does for authorization policies (names are unique per namespace among
/// rate-limit policies, targets must exist).
fn rate_limits(
    config: &MeshConfig,
    trust_domain: &TrustDomain,
    services: &mut BTreeMap<ServiceName, ValidService>,
    errors: &mut Vec<FieldError>,
) {
    let mut names: BTreeMap<String, FirstSeen<String>> = BTreeMap::new();
    for (i, spec) in config.rate_limits.iter().enumerate() {
        let path = format!("rateLimits[{i}]");
        let namespace = spec.target.namespace.as_deref().unwrap_or("default");
        check::policy::unique_policy_name(
            &format!("{path}.name"),
            &spec.name,
            names
                .entry(namespace.to_owned())
                .or_insert_with(FirstSeen::new),
            errors,
        );
        let target = policy_target(&path, config, &spec.target, errors);
        let parts = check::rate_limit::rate_limit_parts(
            &path,
            spec.total.as_ref(),
            spec.identity.as_ref(),
            &spec.overrides,
            Some(trust_domain),
            errors,
        );
        if let (Some((service, route)), Some(parts)) = (target, parts)
            && let Some(valid) = services.get_mut(&service)
        {
            valid.rate_limits.push(RateLimitPolicy {
                name: Arc::from(spec.name.as_str()),
                route: route.map(Arc::from),
                total: parts.total,
                identity: parts.identity,
                overrides: parts.overrides,
            });
        }
    }
}

/// Checks every request authentication and files its issuers under the service it targets:
/// names unique per namespace, the target a service of the config (no route), issuers unique
/// per service and at most [`crate::jwt::MAX_JWT_RULES`] of them.
fn request_authentications(
    config: &MeshConfig,
    services: &mut BTreeMap<ServiceName, ValidService>,
    errors: &mut Vec<FieldError>,
) {
    let mut names: BTreeMap<String, FirstSeen<String>> = BTreeMap::new();
    let mut issuers: BTreeMap<ServiceName, FirstSeen<Arc<str>>> = BTreeMap::new();
    for (i, spec) in config.request_authentications.iter().enumerate() {
        let path = format!("requestAuthentications[{i}]");
        let namespace = spec.target.namespace.as_deref().unwrap_or("default");
        check::policy::unique_policy_name(
            &format!("{path}.name"),
            &spec.name,
            names
                .entry(namespace.to_owned())
                .or_insert_with(FirstSeen::new),
            errors,
        );
        if spec.target.route.is_some() {
            errors.push(FieldError::new(
                format!("{path}.target.route"),
                "authentication applies to a whole service: name no route",
            ));
        }
        if spec.jwt_rules.is_empty() {
            errors.push(FieldError::new(
                format!("{path}.jwtRules"),
                "at least one rule is required",
            ));
        }
        let target = service_target(&path, config, &spec.target.service, namespace, errors);
        for (j, rule) in spec.jwt_rules.iter().enumerate() {
            let rule_path = format!("{path}.jwtRules[{j}]");
            let Some(rule) = check::jwt::jwt_rule(&rule_path, rule, false, errors) else {
                continue;
            };
            let Some(service) = &target else { continue };
            let Some(valid) = services.get_mut(service) else {
                continue;
            };
            let seen = issuers
                .entry(service.clone())
                .or_insert_with(FirstSeen::new);
            if let Some(first) = seen.check(rule.issuer.clone(), &rule_path) {
                errors.push(FieldError::new(
                    format!("{rule_path}.issuer"),
                    format!("{service} already accepts this issuer (at {first})"),
                ));
            } else if valid.jwt_rules.len() == crate::jwt::MAX_JWT_RULES {
                errors.push(FieldError::new(
                    rule_path,
                    format!(
                        "{service} accepts at most {} issuers",
                        crate::jwt::MAX_JWT_RULES
                    ),
                ));
            } else {
                valid.jwt_rules.push(rule);
            }
        }
    }
}

/// The service named by a target, which must be in the config.
fn service_target(
    path: &str,
    config: &MeshConfig,
    service: &str,
    namespace: &str,
    errors: &mut Vec<FieldError>,
) -> Option<ServiceName> {
    let name = check::service_name(&format!("{path}.target"), namespace, service, errors)?;
    let known = config
        .services
        .iter()
        .any(|s| s.name == name.name && s.namespace == name.namespace);
    if !known {
        errors.push(FieldError::new(
            format!("{path}.target.service"),
            format!("no service {name} in the config"),
        ));
        return None;
    }
    Some(name)
}

/// The service (and route) a policy targets, checked against the config's services.
fn policy_target<'a>(
    path: &str,
    config: &MeshConfig,
    target: &'a PolicyTargetSpec,
    errors: &mut Vec<FieldError>,
) -> Option<(ServiceName, Option<&'a str>)> {
    let spec = target;
    let target_path = format!("{path}.target");
    let namespace = spec.namespace.as_deref().unwrap_or("default");
    let mut ok = true;
    if let Err(message) = check::dns_label("name", &spec.service) {
        errors.push(FieldError::new(format!("{target_path}.service"), message));
        ok = false;
    }
    if let Err(message) = check::dns_label("namespace", namespace) {
        errors.push(FieldError::new(format!("{target_path}.namespace"), message));
        ok = false;
    }
    if !ok {
        return None;
    }
    let service = ServiceName {
        namespace: namespace.to_owned(),
        name: spec.service.clone(),
    };
    let Some(target) = config
        .services
        .iter()
        .find(|s| s.name == service.name && s.namespace == service.namespace)
    else {
        errors.push(FieldError::new(
            format!("{target_path}.service"),
            format!("unknown service \"{service}\""),
        ));
        return None;
    };
    let route = spec.route.as_deref();
    if let Some(route) = route
        // Policies are enforced by the service's own replicas, which route by its own
        // (producer) routes; a consumer route is the caller's business.
        && !target.routes.iter().any(|r| {
            r.name == route
                && r.namespace
                    .as_deref()
                    .is_none_or(|ns| ns == target.namespace)
        })
    {
        errors.push(FieldError::new(
            format!("{target_path}.route"),
            format!("service \"{service}\" has no route {route:?}"),
        ));
        return None;
    }
    Some((service, route))
}

fn service_name(
    path: &str,
    spec: &ServiceSpec,
    errors: &mut Vec<FieldError>,
) -> Option<ServiceName> {
    check::service_name(path, &spec.namespace, &spec.name, errors)
}

/// The service's first port and its further ports with their replicas. The first port is
/// `None` when it is invalid (its error is recorded), `Some(None)` when the service names none.
fn ports(
    path: &str,
    spec: &ServiceSpec,
    trust_domain: &TrustDomain,
    errors: &mut Vec<FieldError>,
) -> (Option<Option<u16>>, Vec<PortEndpoints>) {
    let port = check::route::port(&format!("{path}.port"), spec.port, errors);
    if matches!(port, Some(None)) && !spec.ports.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.port"),
            "required when ports are listed: the port that endpoints serve",
        ));
    }
    let mut seen = FirstSeen::new();
    if let Some(Some(first)) = port {
        seen.check(first, &format!("{path}.port"));
    }
    let mut ports = Vec::with_capacity(spec.ports.len());
    for (i, extra) in spec.ports.iter().enumerate() {
        let port_path = format!("{path}.ports[{i}]");
        let number = check::route::port(&format!("{port_path}.port"), Some(extra.port), errors);
        let endpoints = endpoints(
            &format!("{port_path}.endpoints"),
            &extra.endpoints,
            trust_domain,
            errors,
        );
        let Some(Some(number)) = number else {
            continue;
        };
        if let Some(first) = seen.check(number, &format!("{port_path}.port")) {
            errors.push(FieldError::new(
                format!("{port_path}.port"),
                format!("duplicate port {number} (first at {first})"),
            ));
            continue;
        }
        ports.push((number, endpoints));
    }
    (port, ports)
}

/// The endpoints listed at `list_path` (`services[0].endpoints`).
fn endpoints(
    list_path: &str,
    specs: &[EndpointSpec],
    trust_domain: &TrustDomain,
    errors: &mut Vec<FieldError>,
) -> Vec<Endpoint> {
    let mut addresses = FirstSeen::new();
    specs
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| {
            let fields = EndpointFields {
                address: &spec.address,
                weight: spec.weight.unwrap_or(1),
                zone: &spec.zone,
                for_zones: spec.for_zones.clone(),
                labels: spec.labels.clone(),
                identity: &spec.identity,
            };
            let at = EndpointAt {
                list: list_path,
                index: i,
            };
            endpoint_sizes(at, spec, errors);
            check::endpoint(at, fields, Some(trust_domain), &mut addresses, errors)
        })
        .collect()
}

/// Checks that every destination of every service, as every consumer namespace with routes of
/// its own sees it, and every inbound policy fit in a client's snapshot; errors name the
/// service (`services[3]`) and the destination.
fn snapshot_sizes(config: &MeshConfig, valid: &ValidConfig, errors: &mut Vec<FieldError>) {
    for (i, spec) in config.services.iter().enumerate() {
        let name = ServiceName {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
        };
        service_sizes(&format!("services[{i}]"), &name, valid, errors);
    }
}

/// Checks that every destination of the service `name` (at `path`, `services[3]`), as every
/// consumer namespace with routes of its own sees it, and its inbound policy fit in a
/// client's snapshot.
fn service_sizes(
    path: &str,
    name: &ServiceName,
    valid: &ValidConfig,
    errors: &mut Vec<FieldError>,
) {
    let Some(service) = valid.service(name) else {
        return;
    };
    let inbound = proto::InboundPolicy::from(&valid.inbound(name)).encoded_len();
    if inbound > MAX_INBOUND_BYTES {
        errors.push(FieldError::new(
            path,
            format!(
                "the inbound policy of {name} takes {inbound} bytes, more than the \
                 {MAX_INBOUND_BYTES} one may take in a snapshot"
            ),
        ));
    }
    let mut consumers: Vec<Option<&str>> = vec![None];
    for route in &service.routes {
        if let Some(consumer) = route.consumer.as_deref()
            && !consumers.contains(&Some(consumer))
        {
            consumers.push(Some(consumer));
        }
    }
    let ports = std::iter::once(None).chain(service.ports.iter().map(|(p, _)| Some(*p)));
    'ports: for port in ports {
        let key = DestinationKey {
            service: name.clone(),
            port,
        };
        for &consumer in &consumers {
            let size =
                proto::Destination::from(&valid.destination_for(&key, consumer)).encoded_len();
            if size > MAX_DESTINATION_BYTES {
                let seen_from = consumer
                    .map(|ns| format!(" as namespace {ns} sees it"))
                    .unwrap_or_default();
                errors.push(FieldError::new(
                    path,
                    format!(
                        "destination {key}{seen_from} takes {size} bytes, more than the \
                         {MAX_DESTINATION_BYTES} one destination may take in a snapshot \
                         (clients accept {CLIENT_MAX_SNAPSHOT_BYTES} in all)"
                    ),
                ));
                // One error per destination is enough to act on.
                continue 'ports;
            }
        }
    }
}

/// Bounds on the free-form strings of one endpoint at `at` (`services[0].endpoints[1]`).
fn endpoint_sizes(at: EndpointAt<'_>, spec: &EndpointSpec, errors: &mut Vec<FieldError>) {
    if spec.zone.len() > MAX_ZONE_BYTES {
        errors.push(FieldError::new(
            format!("{at}.zone"),
            format!("longer than {MAX_ZONE_BYTES} bytes"),
        ));
    }
    for (key, value) in &spec.labels {
        if key.len() > MAX_LABEL_KEY_BYTES {
            // The key itself may be huge: name it by a prefix.
            let mut end = 32.min(key.len());
            while !key.is_char_boundary(end) {
                end -= 1;
            }
            errors.push(FieldError::new(
                format!("{at}.labels"),
                format!(
                    "key {:?}... is longer than {MAX_LABEL_KEY_BYTES} bytes",
                    &key[..end]
                ),
            ));
        } else if value.len() > MAX_LABEL_VALUE_BYTES {
            errors.push(FieldError::new(
                format!("{at}.labels.{key}"),
                format!("longer than {MAX_LABEL_VALUE_BYTES} bytes"),
            ));
        }
    }
}

/// The service's routes, each with the port and consumer namespace it applies to. `port` is
/// the service's first port as [`ports`] gave it, `ports` its further ones.
fn routes(
    service_path: &str,
    service: &ServiceSpec,
    port: Option<&Option<u16>>,
    ports: &[PortEndpoints],
    errors: &mut Vec<FieldError>,
) -> Vec<AttachedRoute> {
    let mut names = FirstSeen::new();
    let mut routes = Vec::with_capacity(service.routes.len());
    for (i, spec) in service.routes.iter().enumerate() {
        let path = format!("{service_path}.routes[{i}]");
        let name_path = format!("{path}.name");
        let namespace = spec.namespace.as_deref().unwrap_or(&service.namespace);
        if spec.namespace.is_some()
            && let Err(message) = check::dns_label("namespace", namespace)
        {
            errors.push(FieldError::new(format!("{path}.namespace"), message));
        }
        if let Err(message) = check::route_name(&spec.name) {
            errors.push(FieldError::new(&name_path, message));
        } else if let Some(first) =
            // One route may attach to several ports of the service (one parentRef each).
            names.check((namespace, spec.name.as_str(), spec.port), &name_path)
        {
            errors.push(FieldError::new(
                &name_path,
                format!("duplicate route name {:?} (first at {first})", spec.name),
            ));
        }
        let route_port = route_port(&format!("{path}.port"), spec.port, port, ports, errors);
        let kind = check::route::route_kind(&format!("{path}.kind"), spec.kind.as_deref(), errors);
        let created = check::route::creation_timestamp(
            &format!("{path}.creationTimestamp"),
            spec.creation_timestamp.as_ref(),
            errors,
        );
        let mut rule_names = FirstSeen::new();
        let mut rules = Vec::with_capacity(spec.rules.len());
        for (j, rule) in spec.rules.iter().enumerate() {
            let rule_path = format!("{path}.rules[{j}]");
            let rule_name_path = format!("{rule_path}.name");
            if let Err(message) = check::rule_name(&rule.name) {
                errors.push(FieldError::new(&rule_name_path, message));
            } else if !rule.name.is_empty()
                && let Some(first) = rule_names.check(rule.name.as_str(), &rule_name_path)
            {
                errors.push(FieldError::new(
                    &rule_name_path,
                    format!("duplicate rule name {:?} (first at {first})", rule.name),
                ));
            }
            let parts = check::route::rule_parts(&rule_path, kind, namespace, rule, errors);
            let backend_refs = rule
                .backend_refs
                .iter()
                .enumerate()
                .filter_map(|(k, backend)| {
                    let path = format!("{rule_path}.backendRefs[{k}]");
                    backend_ref(&path, namespace, backend, errors)
                })
                .collect();
            rules.push(RouteRule {
                name: rule.name.clone(),
                matches: parts.matches,
                filters: parts.filters,
                backend_refs,
                timeouts: parts.timeouts,
                retry: parts.retry,
                hedging: parts.hedging,
            });
        }
        routes.push(AttachedRoute {
            port: route_port,
            consumer: (namespace != service.namespace).then(|| namespace.to_owned()),
            route: Route {
                name: spec.name.clone(),
                kind,
                created,
                rules,
            },
        });
    }
    routes
}

/// A route's `port`: one of the service's ports, when the service names its ports.
fn route_port(
    path: &str,
    value: Option<u32>,
    first: Option<&Option<u16>>,
    further: &[PortEndpoints],
    errors: &mut Vec<FieldError>,
) -> Option<u16> {
    let port = check::route::port(path, value, errors).flatten()?;
    match first {
        // A service without ports takes calls on any port.
        Some(None) => {}
        Some(Some(first)) if *first == port || further.iter().any(|(p, _)| *p == port) => {}
        Some(Some(_)) => errors.push(FieldError::new(
            path,
            format!("the service has no port {port}"),
        )),
        // The service's own port is invalid and reported there.
        None => {}
    }
    Some(port)
}

/// One backend reference at `path`; `None` when anything is wrong (the errors say what).
fn backend_ref(
    path: &str,
    route_namespace: &str,
    spec: &BackendRefSpec,
    errors: &mut Vec<FieldError>,
) -> Option<BackendRef> {
    let service = check::route::service(
        path,
        &spec.name,
        spec.namespace.as_deref(),
        route_namespace,
        errors,
    );
    let port = check::route::port(&format!("{path}.port"), spec.port, errors);
    let weight = check::backend_weight(spec.weight.unwrap_or(1))
        .map_err(|message| errors.push(FieldError::new(format!("{path}.weight"), message)))
        .ok();
    Some(BackendRef {
        service: service?,
        port: port?,
        weight: weight?,
    })
}

// === impl ValidConfig ===

impl ValidConfig {
    /// A config of validated `services` (the written form is kept by
    /// [`ValidConfig::keep_written`], once the config is known to be valid).
    fn from_services(
        services: BTreeMap<ServiceName, ValidService>,
        default_policy: DefaultPolicy,
    ) -> Self {
        let mut referrers: BTreeMap<ServiceName, Vec<ServiceName>> = BTreeMap::new();
        let mut jwks_uris: Vec<String> = Vec::new();
        let mut sharded = Sharded::default();
        for (name, service) in services {
            for attached in &service.routes {
                for (target, _) in referenced_services(std::slice::from_ref(&attached.route)) {
                    let list = referrers.entry(target.clone()).or_default();
                    if !list.contains(&name) {
                        list.push(name.clone());
                    }
                }
            }
            for uri in service
                .jwt_rules
                .iter()
                .filter_map(|r| r.jwks_uri.as_deref())
            {
                if !jwks_uris.iter().any(|u| u == uri) {
                    jwks_uris.push(uri.to_owned());
                }
            }
            sharded.insert(&name.namespace.clone(), name, Arc::new(service));
        }
        ValidConfig {
            services: sharded,
            default_policy,
            rest: Arc::default(),
            written: Sharded::default(),
            zones: Sharded::default(),
            referrers: Arc::new(referrers),
            jwks_uris: Arc::new(jwks_uris),
        }
    }

    /// Keeps `config`, which this was validated from, for [`ValidConfig::spec`].
    fn keep_written(&mut self, config: &MeshConfig) {
        self.rest = Arc::new(MeshConfig {
            services: Vec::new(),
            policies: config.policies.clone(),
            request_authentications: config.request_authentications.clone(),
            rate_limits: config.rate_limits.clone(),
            default_policy: config.default_policy.clone(),
            instance_zones: BTreeMap::new(),
        });
        for (i, spec) in config.services.iter().enumerate() {
            let name = ServiceName {
                namespace: spec.namespace.clone(),
                name: spec.name.clone(),
            };
            self.written
                .insert(&spec.namespace, name, (i, Arc::new(spec.clone())));
        }
        for (key, zone) in &config.instance_zones {
            // Valid keys are `<namespace>/<instance>`.
            if let Some((namespace, instance)) = key.split_once('/') {
                self.zones
                    .insert(namespace, instance.to_owned(), zone.clone());
            }
        }
    }

    /// The validated service `name`.
    fn service(&self, name: &ServiceName) -> Option<&ValidService> {
        self.services.get(&name.namespace, name).map(|s| &**s)
    }

    /// The config as it was validated (assembled on each call: for operators' tools, not for
    /// a path that runs per change).
    pub fn spec(&self) -> MeshConfig {
        let mut services: Vec<(usize, &ServiceSpec)> = self
            .written
            .iter()
            .map(|(_, _, (position, spec))| (*position, &**spec))
            .collect();
        services.sort_by_key(|(position, _)| *position);
        MeshConfig {
            services: services.into_iter().map(|(_, spec)| spec.clone()).collect(),
            instance_zones: self
                .zones
                .iter()
                .map(|(namespace, instance, zone)| {
                    (format!("{namespace}/{instance}"), zone.clone())
                })
                .collect(),
            ..(*self.rest).clone()
        }
    }

    /// The service `name` as written, when the config has it.
    pub fn service_spec(&self, name: &ServiceName) -> Option<&ServiceSpec> {
        self.written
            .get(&name.namespace, name)
            .map(|(_, spec)| &**spec)
    }

    /// The zone of the workload instance `instance` in `namespace`, when the config knows it
    /// (`instanceZones`); empty otherwise.
    pub fn zone_of(&self, namespace: &str, instance: &str) -> &str {
        self.zones
            .get(namespace, instance)
            .map_or("", String::as_str)
    }

    /// The first port of `service` as a caller in the service's own namespace sees it (the
    /// producer view); see [`ValidConfig::destination_for`].
    pub fn destination(&self, service: &ServiceName) -> Destination {
        self.destination_for(&DestinationKey::service(service.clone()), None)
    }

    /// The destination `key` as a caller in namespace `consumer` sees it, with every backend
    /// its routes reference resolved.
    ///
    /// An unknown service, or a port the service does not have, gives
    /// [`Destination::not_found`]. The routes are the consumer routes of `consumer` attached
    /// to that port when there are any, else the service's own. `backends` holds each distinct
    /// service and port that any backend reference or request mirror of those routes names,
    /// in order of first reference; one the config does not have has `found = false` and no
    /// endpoints.
    pub fn destination_for(&self, key: &DestinationKey, consumer: Option<&str>) -> Destination {
        let Some((valid, endpoints)) = self
            .service(&key.service)
            .and_then(|valid| Some((valid, valid.endpoints_at(key.port)?)))
        else {
            return Destination::not_found(key.clone());
        };
        let routes = valid.routes_for(key.port, consumer);
        let mut backends: Vec<Backend> = Vec::new();
        for (name, port) in referenced_services(&routes) {
            // Routes reference a handful of services, so a linear search beats a set here.
            if backends
                .iter()
                .any(|b| &b.service == name && b.port == port)
            {
                continue;
            }
            let endpoints = self
                .service(name)
                .and_then(|target| target.endpoints_at(port));
            backends.push(Backend {
                service: name.clone(),
                port,
                found: endpoints.is_some(),
                endpoints: endpoints.map(<[Endpoint]>::to_vec).unwrap_or_default(),
            });
        }
        Destination {
            service: key.service.clone(),
            port: key.port,
            found: true,
            endpoints: endpoints.to_vec(),
            routes,
            backends,
        }
    }

    /// Whether what [`ValidConfig::destination_for`] gives for `key` (any consumer) and
    /// [`ValidConfig::inbound`] gives for `key`'s service are certainly the same in `self` and
    /// `other`: the service and every service its routes send to are shared between the two
    /// (the same copy, as [`ValidConfig::with_replicas`] leaves what it does not change), and
    /// so is the mesh-wide default policy. `false` means they may differ.
    pub fn same_service(&self, other: &Self, service: &ServiceName) -> bool {
        let shared = |name: &ServiceName| match (
            self.services.get(&name.namespace, name),
            other.services.get(&name.namespace, name),
        ) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if self.default_policy != other.default_policy || !shared(service) {
            return false;
        }
        let Some(valid) = self.service(service) else {
            return true;
        };
        valid.routes.iter().all(|attached| {
            referenced_services(std::slice::from_ref(&attached.route))
                .all(|(target, _)| shared(target))
        })
    }

    /// The inbound policy of `service`: its own settings and the policies that target it, or,
    /// for a service the config does not have, strict mTLS and the mesh-wide default.
    pub fn inbound(&self, service: &ServiceName) -> InboundPolicy {
        let Some(valid) = self.service(service) else {
            return InboundPolicy::defaults(service.clone(), self.default_policy);
        };
        InboundPolicy {
            service: service.clone(),
            mtls: valid.mtls,
            default_policy: valid.default_policy.unwrap_or(self.default_policy),
            exempt_paths: valid.exempt_paths.clone(),
            policies: valid.policies.clone(),
            jwt_rules: valid.jwt_rules.clone(),
            rate_limits: valid.rate_limits.clone(),
        }
    }

    /// Every `jwksUri` of every service's issuers, once each: what the control service fetches.
    pub fn jwks_uris(&self) -> impl Iterator<Item = &str> {
        self.jwks_uris.iter().map(String::as_str)
    }

    /// The mesh-wide default policy.
    pub fn default_policy(&self) -> DefaultPolicy {
        self.default_policy
    }

    /// Whether the config has `service`.
    pub fn contains(&self, service: &ServiceName) -> bool {
        self.service(service).is_some()
    }

    /// Every namespace that has a service, in order (without going through every service).
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.services.keys()
    }

    /// Every service, in name order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceName> {
        self.services.iter().map(|(_, name, _)| name)
    }

    /// Every service with each identity that serves it (in the sense of
    /// [`ValidConfig::is_served_by`]), services in name order, with repeats: what the CA
    /// makes a workload certificate's DNS names from.
    pub fn serving_identities(&self) -> impl Iterator<Item = (&ServiceName, &SpiffeId)> {
        self.services.iter().flat_map(|(_, name, valid)| {
            valid
                .endpoints
                .iter()
                .chain(valid.ports.iter().flat_map(|(_, endpoints)| endpoints))
                .map(|endpoint| &endpoint.identity)
                .chain(&valid.identities)
                .map(move |identity| (name, identity))
        })
    }

    /// Whether one of `service`'s endpoints, on any of its ports, runs as `identity`: what
    /// makes a workload one of the service's replicas. False for a service the config does
    /// not have.
    pub fn is_served_by(&self, service: &ServiceName, identity: &SpiffeId) -> bool {
        self.service(service).is_some_and(|valid| {
            valid
                .endpoints
                .iter()
                .chain(valid.ports.iter().flat_map(|(_, endpoints)| endpoints))
                .any(|endpoint| endpoint.identity == *identity)
                || valid.identities.contains(identity)
        })
    }
}

/// Every service and port the routes send traffic to (backend references, then each rule's
/// mirrors), in document order, with repeats.
pub(crate) fn referenced_services(
    routes: &[Route],
) -> impl Iterator<Item = (&ServiceName, Option<u16>)> {
    routes
        .iter()
        .flat_map(|route| &route.rules)
        .flat_map(|rule| {
            let mirrors = rule.filters.iter().filter_map(|filter| match filter {
                RouteFilter::RequestMirror(mirror) => Some((&mirror.backend, mirror.port)),
                _ => None,
            });
            rule.backend_refs
                .iter()
                .map(|b| (&b.service, b.port))
                .chain(mirrors)
        })
}

mod replicas;
mod sharded;

pub use replicas::{ReplicasError, ZoneChange};

#[cfg(test)]
mod tests;
