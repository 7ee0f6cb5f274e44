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
//!   with a weight of 0 to 1,000,000 (1 when omitted; 0 sends nothing).
//!
//! A backend reference to a service the config does not have is *not* an error: as in Gateway
//! API, it resolves to a backend with `found = false`, whose share of traffic fails.

use std::collections::BTreeMap;

use super::{BackendRefSpec, EndpointSpec, MeshConfig, RouteSpec, ServiceSpec};
use crate::check::{self, EndpointFields, FirstSeen};
use crate::error::{FieldError, ValidationErrors};
use crate::snapshot::{Backend, BackendRef, Destination, Endpoint, Route, RouteRule, ServiceName};
use crate::spiffe::TrustDomain;

/// A config that passed validation, indexed by service, ready to project destinations from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidConfig {
    services: BTreeMap<ServiceName, ValidService>,
}

/// One validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ValidService {
    endpoints: Vec<Endpoint>,
    routes: Vec<Route>,
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
            if let (Some(name), None) = (name, duplicate) {
                services.insert(name, ValidService { endpoints, routes });
            }
        }
        ValidationErrors::check(errors, ValidConfig { services })
    }
}

fn service_name(
    path: &str,
    spec: &ServiceSpec,
    errors: &mut Vec<FieldError>,
) -> Option<ServiceName> {
    let mut ok = true;
    if let Err(message) = check::dns_label("name", &spec.name) {
        errors.push(FieldError::new(format!("{path}.name"), message));
        ok = false;
    }
    if let Err(message) = check::dns_label("namespace", &spec.namespace) {
        errors.push(FieldError::new(format!("{path}.namespace"), message));
        ok = false;
    }
    ok.then(|| ServiceName {
        namespace: spec.namespace.clone(),
        name: spec.name.clone(),
    })
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
                backend_refs,
            });
        }
        routes.push(Route {
            name: spec.name.clone(),
            rules,
        });
    }
    routes
}

fn backend_ref(
    path: &str,
    route_namespace: &str,
    spec: &BackendRefSpec,
    errors: &mut Vec<FieldError>,
) -> Option<BackendRef> {
    let mut ok = true;
    if let Err(message) = check::dns_label("name", &spec.name) {
        errors.push(FieldError::new(format!("{path}.name"), message));
        ok = false;
    }
    // Gateway API: a reference without a namespace means the route's own, and a route listed
    // under a service lives in that service's namespace.
    let namespace = spec.namespace.as_deref().unwrap_or(route_namespace);
    if let Err(message) = check::dns_label("namespace", namespace) {
        // An omitted namespace inherits the service's, which is reported there already.
        if spec.namespace.is_some() {
            errors.push(FieldError::new(format!("{path}.namespace"), message));
        }
        ok = false;
    }
    let weight = match check::backend_weight(spec.weight.unwrap_or(1)) {
        Ok(weight) => weight,
        Err(message) => {
            errors.push(FieldError::new(format!("{path}.weight"), message));
            return None;
        }
    };
    ok.then(|| BackendRef {
        service: ServiceName {
            namespace: namespace.to_owned(),
            name: spec.name.clone(),
        },
        weight,
    })
}

// === impl ValidConfig ===

impl ValidConfig {
    /// The destination as a client sees it, with every backend its routes reference resolved.
    ///
    /// An unknown service gives [`Destination::not_found`]. `backends` holds each distinct
    /// service that any backend reference of the routes names, in order of first reference;
    /// one the config does not have has `found = false` and no endpoints.
    pub fn destination(&self, service: &ServiceName) -> Destination {
        let Some(valid) = self.services.get(service) else {
            return Destination::not_found(service.clone());
        };
        let mut backends: Vec<Backend> = Vec::new();
        let referenced = valid
            .routes
            .iter()
            .flat_map(|route| &route.rules)
            .flat_map(|rule| &rule.backend_refs)
            .map(|backend_ref| &backend_ref.service);
        for name in referenced {
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

    /// Whether the config has `service`.
    pub fn contains(&self, service: &ServiceName) -> bool {
        self.services.contains_key(service)
    }

    /// Every service, in name order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceName> {
        self.services.keys()
    }
}

#[cfg(test)]
mod tests;
