//! Conversions between the model ([`crate::snapshot`]) and the wire ([`crate::proto`]).
//!
//! Model to wire cannot fail. Wire to model validates everything again, so a client never
//! trusts the control service blindly, and reports each error with its path
//! (`destinations[0].endpoints[1].address: ...`), in the proto's camelCase JSON spelling.
//!
//! Beyond the checks [`crate::config`] makes, the wire is checked for consistency: a
//! destination or backend appears once, one that is not found carries nothing, and every
//! service a backend reference names is listed in the destination's `backends` (otherwise the
//! client could not resolve it). On the wire an endpoint weight of 0 means the default, 1.
//! Identities are not tied to a trust domain here; the TLS verifier checks that at connect time.

use crate::check::{self, EndpointFields, FirstSeen};
use crate::error::{FieldError, ValidationErrors};
use crate::proto;
use crate::snapshot::{
    Backend, BackendRef, Destination, Endpoint, Route, RouteRule, ServiceName, ServiceNameError,
    Snapshot,
};

impl From<&ServiceName> for proto::ServiceRef {
    fn from(name: &ServiceName) -> Self {
        Self {
            namespace: name.namespace.clone(),
            name: name.name.clone(),
        }
    }
}

impl TryFrom<&proto::ServiceRef> for ServiceName {
    type Error = ServiceNameError;
    fn try_from(wire: &proto::ServiceRef) -> Result<Self, Self::Error> {
        ServiceName::new(&wire.namespace, &wire.name)
    }
}

// === model to wire ===

impl From<&Snapshot> for proto::Snapshot {
    fn from(snapshot: &Snapshot) -> Self {
        Self {
            version: snapshot.version,
            destinations: snapshot.destinations.iter().map(Into::into).collect(),
        }
    }
}

impl From<&Destination> for proto::Destination {
    fn from(destination: &Destination) -> Self {
        Self {
            service: Some((&destination.service).into()),
            found: destination.found,
            endpoints: destination.endpoints.iter().map(Into::into).collect(),
            routes: destination.routes.iter().map(Into::into).collect(),
            backends: destination.backends.iter().map(Into::into).collect(),
        }
    }
}

impl From<&Backend> for proto::Backend {
    fn from(backend: &Backend) -> Self {
        Self {
            service: Some((&backend.service).into()),
            endpoints: backend.endpoints.iter().map(Into::into).collect(),
            found: backend.found,
        }
    }
}

impl From<&Endpoint> for proto::Endpoint {
    fn from(endpoint: &Endpoint) -> Self {
        Self {
            address: endpoint.address.to_string(),
            weight: endpoint.weight,
            zone: endpoint.zone.clone(),
            labels: endpoint
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            identity: endpoint.identity.to_string(),
        }
    }
}

impl From<&Route> for proto::Route {
    fn from(route: &Route) -> Self {
        Self {
            name: route.name.clone(),
            rules: route.rules.iter().map(Into::into).collect(),
        }
    }
}

impl From<&RouteRule> for proto::RouteRule {
    fn from(rule: &RouteRule) -> Self {
        Self {
            name: rule.name.clone(),
            backend_refs: rule.backend_refs.iter().map(Into::into).collect(),
        }
    }
}

impl From<&BackendRef> for proto::BackendRef {
    fn from(backend_ref: &BackendRef) -> Self {
        Self {
            service: Some((&backend_ref.service).into()),
            weight: backend_ref.weight,
        }
    }
}

// === wire to model ===

impl TryFrom<proto::Snapshot> for Snapshot {
    type Error = ValidationErrors;
    fn try_from(wire: proto::Snapshot) -> Result<Self, Self::Error> {
        let mut errors = Vec::new();
        let mut seen = FirstSeen::new();
        let mut destinations = Vec::with_capacity(wire.destinations.len());
        for (i, wire) in wire.destinations.into_iter().enumerate() {
            let path = format!("destinations[{i}]");
            if let Some(destination) = destination(&path, wire, &mut seen, &mut errors) {
                destinations.push(destination);
            }
        }
        ValidationErrors::check(
            errors,
            Snapshot {
                version: wire.version,
                destinations,
            },
        )
    }
}

/// A service reference at `path` (`destinations[0].service`).
fn service_ref(
    path: &str,
    wire: Option<&proto::ServiceRef>,
    errors: &mut Vec<FieldError>,
) -> Option<ServiceName> {
    let Some(wire) = wire else {
        errors.push(FieldError::new(path, "missing"));
        return None;
    };
    let mut ok = true;
    if let Err(message) = check::dns_label("name", &wire.name) {
        errors.push(FieldError::new(format!("{path}.name"), message));
        ok = false;
    }
    if let Err(message) = check::dns_label("namespace", &wire.namespace) {
        errors.push(FieldError::new(format!("{path}.namespace"), message));
        ok = false;
    }
    ok.then(|| ServiceName {
        namespace: wire.namespace.clone(),
        name: wire.name.clone(),
    })
}

fn destination(
    path: &str,
    wire: proto::Destination,
    seen: &mut FirstSeen<ServiceName>,
    errors: &mut Vec<FieldError>,
) -> Option<Destination> {
    let service_path = format!("{path}.service");
    let service = service_ref(&service_path, wire.service.as_ref(), errors);
    if let Some(service) = &service
        && let Some(first) = seen.check(service.clone(), path)
    {
        errors.push(FieldError::new(
            &service_path,
            format!("duplicate destination \"{service}\" (first at {first})"),
        ));
    }
    let empty = wire.endpoints.is_empty() && wire.routes.is_empty() && wire.backends.is_empty();
    if !wire.found && !empty {
        errors.push(FieldError::new(
            format!("{path}.found"),
            "a destination that was not found must have no endpoints, routes or backends",
        ));
    }
    let own_endpoints = endpoints(path, wire.endpoints, errors);
    let routes = routes(path, &wire.routes, errors);

    let mut backends = Vec::with_capacity(wire.backends.len());
    let mut listed = FirstSeen::new();
    for (i, backend) in wire.backends.into_iter().enumerate() {
        let backend_path = format!("{path}.backends[{i}]");
        let service_path = format!("{backend_path}.service");
        let service = service_ref(&service_path, backend.service.as_ref(), errors);
        if let Some(service) = &service
            && let Some(first) = listed.check(service.clone(), &service_path)
        {
            errors.push(FieldError::new(
                &service_path,
                format!("duplicate backend \"{service}\" (first at {first})"),
            ));
        }
        if !backend.found && !backend.endpoints.is_empty() {
            errors.push(FieldError::new(
                format!("{backend_path}.found"),
                "a backend that was not found must have no endpoints",
            ));
        }
        let backend_endpoints = endpoints(&backend_path, backend.endpoints, errors);
        if let Some(service) = service {
            backends.push(Backend {
                service,
                found: backend.found,
                endpoints: backend_endpoints,
            });
        }
    }
    // Every referenced service must be resolvable by the client; report each unlisted one at
    // the references that name it.
    for (i, route) in routes.iter().enumerate() {
        for (j, rule) in route.rules.iter().enumerate() {
            for (k, backend_ref) in rule.backend_refs.iter().enumerate() {
                if !backends.iter().any(|b| b.service == backend_ref.service) {
                    errors.push(FieldError::new(
                        format!("{path}.routes[{i}].rules[{j}].backendRefs[{k}].service"),
                        format!(
                            "backend \"{}\" is not listed in {path}.backends",
                            backend_ref.service
                        ),
                    ));
                }
            }
        }
    }
    Some(Destination {
        service: service?,
        found: wire.found,
        endpoints: own_endpoints,
        routes,
        backends,
    })
}

fn endpoints(
    parent: &str,
    wire: Vec<proto::Endpoint>,
    errors: &mut Vec<FieldError>,
) -> Vec<Endpoint> {
    let mut addresses = FirstSeen::new();
    wire.into_iter()
        .enumerate()
        .filter_map(|(i, endpoint)| {
            let fields = EndpointFields {
                address: &endpoint.address,
                // proto3 cannot tell an unset weight from 0, so 0 is the default.
                weight: if endpoint.weight == 0 {
                    1
                } else {
                    endpoint.weight
                },
                zone: &endpoint.zone,
                labels: endpoint.labels.into_iter().collect(),
                identity: &endpoint.identity,
            };
            let path = format!("{parent}.endpoints[{i}]");
            check::endpoint(&path, fields, None, &mut addresses, errors)
        })
        .collect()
}

fn routes(parent: &str, wire: &[proto::Route], errors: &mut Vec<FieldError>) -> Vec<Route> {
    let mut names: FirstSeen<&str> = FirstSeen::new();
    let mut routes = Vec::with_capacity(wire.len());
    for (i, route) in wire.iter().enumerate() {
        let path = format!("{parent}.routes[{i}]");
        let name_path = format!("{path}.name");
        if let Err(message) = check::route_name(&route.name) {
            errors.push(FieldError::new(&name_path, message));
        } else if let Some(first) = names.check(&route.name, &name_path) {
            errors.push(FieldError::new(
                &name_path,
                format!("duplicate route name {:?} (first at {first})", route.name),
            ));
        }
        let mut rule_names: FirstSeen<&str> = FirstSeen::new();
        let mut rules = Vec::with_capacity(route.rules.len());
        for (j, rule) in route.rules.iter().enumerate() {
            let rule_path = format!("{path}.rules[{j}]");
            let rule_name_path = format!("{rule_path}.name");
            if let Err(message) = check::rule_name(&rule.name) {
                errors.push(FieldError::new(&rule_name_path, message));
            } else if !rule.name.is_empty()
                && let Some(first) = rule_names.check(&rule.name, &rule_name_path)
            {
                errors.push(FieldError::new(
                    &rule_name_path,
                    format!("duplicate rule name {:?} (first at {first})", rule.name),
                ));
            }
            let mut backend_refs = Vec::with_capacity(rule.backend_refs.len());
            for (k, backend_ref) in rule.backend_refs.iter().enumerate() {
                let ref_path = format!("{rule_path}.backendRefs[{k}]");
                let service = service_ref(
                    &format!("{ref_path}.service"),
                    backend_ref.service.as_ref(),
                    errors,
                );
                let weight = check::backend_weight(backend_ref.weight)
                    .map_err(|m| errors.push(FieldError::new(format!("{ref_path}.weight"), m)))
                    .ok();
                if let (Some(service), Some(weight)) = (service, weight) {
                    backend_refs.push(BackendRef { service, weight });
                }
            }
            rules.push(RouteRule {
                name: rule.name.clone(),
                backend_refs,
            });
        }
        routes.push(Route {
            name: route.name.clone(),
            rules,
        });
    }
    routes
}

#[cfg(test)]
mod tests;
