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
//!   attempts 0 to 10, HTTP retry codes 400 to 599 and gRPC statuses known names.
//!
//! - policies: names are DNS-1123 subdomains, unique within their target's namespace; the
//!   target is a service of the config (and one of its routes, when named); action, mode,
//!   rules and the services' `mtls`, `defaultPolicy` and `exemptPaths` as `crate::check::policy`
//!   describes (identities in the mesh's trust domain, wildcards only at the end).
//!
//! A backend reference to a service the config does not have is *not* an error: as in Gateway
//! API, it resolves to a backend with `found = false`, whose share of traffic fails.

use std::collections::BTreeMap;

use std::sync::Arc;

use super::{BackendRefSpec, EndpointSpec, MeshConfig, PolicySpec, RouteSpec, ServiceSpec};
use crate::authz::{AuthorizationPolicy, DefaultPolicy, InboundPolicy, MtlsMode, PathPattern};
use crate::check::{self, EndpointFields, FirstSeen};
use crate::error::{FieldError, ValidationErrors};
use crate::snapshot::{
    Backend, BackendRef, Destination, Endpoint, Route, RouteFilter, RouteRule, ServiceName,
};
use crate::spiffe::TrustDomain;

/// A config that passed validation, indexed by service, ready to project destinations from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidConfig {
    services: BTreeMap<ServiceName, ValidService>,
    /// The mesh-wide default policy.
    default_policy: DefaultPolicy,
}

/// One validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ValidService {
    endpoints: Vec<Endpoint>,
    routes: Vec<Route>,
    mtls: MtlsMode,
    /// Its own default policy, when it sets one.
    default_policy: Option<DefaultPolicy>,
    exempt_paths: Vec<PathPattern>,
    /// The policies that target it, in config order.
    policies: Vec<AuthorizationPolicy>,
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
            let endpoints = endpoints(&path, &spec.endpoints, trust_domain, &mut errors);
            let routes = routes(&path, &spec.namespace, &spec.routes, &mut errors);
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
            if let (Some(name), None) = (name, duplicate) {
                services.insert(
                    name,
                    ValidService {
                        endpoints,
                        routes,
                        mtls,
                        default_policy,
                        exempt_paths,
                        policies: Vec::new(),
                    },
                );
            }
        }
        policies(self, trust_domain, &mut services, &mut errors);
        let default_policy = check::policy::default_policy(
            "defaultPolicy",
            self.default_policy.as_deref(),
            &mut errors,
        )
        .unwrap_or_default();
        ValidationErrors::check(
            errors,
            ValidConfig {
                services,
                default_policy,
            },
        )
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
        let target = policy_target(&path, config, spec, errors);
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

/// The service (and route) a policy targets, checked against the config's services.
fn policy_target<'a>(
    path: &str,
    config: &MeshConfig,
    spec: &'a PolicySpec,
    errors: &mut Vec<FieldError>,
) -> Option<(ServiceName, Option<&'a str>)> {
    let target_path = format!("{path}.target");
    let namespace = spec.target.namespace.as_deref().unwrap_or("default");
    let mut ok = true;
    if let Err(message) = check::dns_label("name", &spec.target.service) {
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
        name: spec.target.service.clone(),
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
    let route = spec.target.route.as_deref();
    if let Some(route) = route
        && !target.routes.iter().any(|r| r.name == route)
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

fn endpoints(
    service_path: &str,
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
                labels: spec.labels.clone(),
                identity: &spec.identity,
            };
            let path = format!("{service_path}.endpoints[{i}]");
            check::endpoint(&path, fields, Some(trust_domain), &mut addresses, errors)
        })
        .collect()
}

fn routes(
    service_path: &str,
    namespace: &str,
    specs: &[RouteSpec],
    errors: &mut Vec<FieldError>,
) -> Vec<Route> {
    let mut names = FirstSeen::new();
    let mut routes = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let path = format!("{service_path}.routes[{i}]");
        let name_path = format!("{path}.name");
        if let Err(message) = check::route_name(&spec.name) {
            errors.push(FieldError::new(&name_path, message));
        } else if let Some(first) = names.check(spec.name.as_str(), &name_path) {
            errors.push(FieldError::new(
                &name_path,
                format!("duplicate route name {:?} (first at {first})", spec.name),
            ));
        }
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
            });
        }
        routes.push(Route {
            name: spec.name.clone(),
            kind,
            created,
            rules,
        });
    }
    routes
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
    /// The destination as a client sees it, with every backend its routes reference resolved.
    ///
    /// An unknown service gives [`Destination::not_found`]. `backends` holds each distinct
    /// service that any backend reference or request mirror of the routes names, in order of
    /// first reference; one the config does not have has `found = false` and no endpoints.
    pub fn destination(&self, service: &ServiceName) -> Destination {
        let Some(valid) = self.services.get(service) else {
            return Destination::not_found(service.clone());
        };
        let mut backends: Vec<Backend> = Vec::new();
        for name in referenced_services(&valid.routes) {
            // Routes reference a handful of services, so a linear search beats a set here.
            if backends.iter().any(|b| &b.service == name) {
                continue;
            }
            backends.push(match self.services.get(name) {
                Some(target) => Backend {
                    service: name.clone(),
                    found: true,
                    endpoints: target.endpoints.clone(),
                },
                None => Backend {
                    service: name.clone(),
                    found: false,
                    endpoints: Vec::new(),
                },
            });
        }
        Destination {
            service: service.clone(),
            found: true,
            endpoints: valid.endpoints.clone(),
            routes: valid.routes.clone(),
            backends,
        }
    }

    /// The inbound policy of `service`: its own settings and the policies that target it, or,
    /// for a service the config does not have, strict mTLS and the mesh-wide default.
    pub fn inbound(&self, service: &ServiceName) -> InboundPolicy {
        let Some(valid) = self.services.get(service) else {
            return InboundPolicy::defaults(service.clone(), self.default_policy);
        };
        InboundPolicy {
            service: service.clone(),
            mtls: valid.mtls,
            default_policy: valid.default_policy.unwrap_or(self.default_policy),
            exempt_paths: valid.exempt_paths.clone(),
            policies: valid.policies.clone(),
        }
    }

    /// The mesh-wide default policy.
    pub fn default_policy(&self) -> DefaultPolicy {
        self.default_policy
    }

    /// Whether the config has `service`.
    pub fn contains(&self, service: &ServiceName) -> bool {
        self.services.contains_key(service)
    }

    /// Every service, in name order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceName> {
        self.services.keys()
    }
}

/// Every service the routes send traffic to (backend references, then each rule's mirrors),
/// in document order, with repeats.
pub(crate) fn referenced_services(routes: &[Route]) -> impl Iterator<Item = &ServiceName> {
    routes
        .iter()
        .flat_map(|route| &route.rules)
        .flat_map(|rule| {
            let mirrors = rule.filters.iter().filter_map(|filter| match filter {
                RouteFilter::RequestMirror(mirror) => Some(&mirror.backend),
                _ => None,
            });
            rule.backend_refs.iter().map(|b| &b.service).chain(mirrors)
        })
}

#[cfg(test)]
mod tests;
