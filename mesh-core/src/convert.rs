//! Conversions between the model ([`crate::snapshot`]) and the wire ([`crate::proto`]).
//!
//! Model to wire cannot fail. Wire to model validates everything again, so a client never
//! trusts the control service blindly, and reports each error with its path
//! (`destinations[0].endpoints[1].address: ...`), in the proto's camelCase JSON spelling.
//!
//! Beyond the checks [`crate::config`] makes, the wire is checked for consistency: a
//! destination or backend appears once, one that is not found carries nothing, and every
//! service a backend reference or request mirror names is listed in the destination's
//! `backends` (otherwise the client could not resolve it).
//!
//! Route rules are turned into the config's shapes and checked by the same code as the config
//! (`check::route`), so both refuse the same things with the same messages. The wire carries
//! Gateway API's own strings for enumerations and durations; an empty string is unset. One
//! spelling differs: a gRPC method match travels as `grpcMethod` but is reported at `method`,
//! as in the config. On the wire an endpoint weight of 0 means the default, 1.
//! Identities are not tied to a trust domain here; the TLS verifier checks that at connect time.
//!
//! The subscriber's inbound policy travels as `inbound` and is checked like the config's
//! policies (`inbound.policies[0].rules[1].from.identities[0]: ...`); see `convert/policy.rs`.

use crate::check::{self, EndpointAt, EndpointFields, FirstSeen};
use crate::config::{
    FilterSpec, GrpcMethodMatchSpec, HeaderModifierSpec, HeaderSpec, HedgingSpec, MethodMatchSpec,
    MirrorBackendRefSpec, PathMatchSpec, RequestMirrorSpec, RetrySpec, RouteMatchSpec,
    RouteRuleSpec, TimeoutsSpec, ValueMatchSpec,
};
use crate::duration;
use crate::error::{FieldError, ValidationErrors};
use crate::proto;
use crate::snapshot::{
    Backend, BackendRef, Destination, DestinationKey, Endpoint, HeaderMatch, HeaderModifier, Route,
    RouteFilter, RouteMatch, RouteRule, ServiceName, ServiceNameError, Snapshot, Timeouts,
    ValueMatch,
};

impl From<&ServiceName> for proto::ServiceRef {
    fn from(name: &ServiceName) -> Self {
        Self {
            namespace: name.namespace.clone(),
            name: name.name.clone(),
            port: 0,
        }
    }
}

impl From<&DestinationKey> for proto::ServiceRef {
    fn from(key: &DestinationKey) -> Self {
        Self {
            port: key.port.map_or(0, u32::from),
            ..(&key.service).into()
        }
    }
}

impl TryFrom<&proto::ServiceRef> for ServiceName {
    type Error = ServiceNameError;
    fn try_from(wire: &proto::ServiceRef) -> Result<Self, Self::Error> {
        ServiceName::new(&wire.namespace, &wire.name)
    }
}

impl TryFrom<&proto::ServiceRef> for DestinationKey {
    type Error = ServiceNameError;
    fn try_from(wire: &proto::ServiceRef) -> Result<Self, Self::Error> {
        let service = ServiceName::try_from(wire)?;
        let port = wire_port(wire.port).map_err(|reason| ServiceNameError {
            input: format!("{service}:{}", wire.port),
            reason,
        })?;
        Ok(Self { service, port })
    }
}

/// A wire port: 0 for none, else 1 to 65535.
fn wire_port(port: u32) -> Result<Option<u16>, &'static str> {
    match port {
        0 => Ok(None),
        p => u16::try_from(p)
            .map(Some)
            .map_err(|_| "the port must be a number from 1 to 65535"),
    }
}

// === model to wire ===

impl From<&Snapshot> for proto::Snapshot {
    fn from(snapshot: &Snapshot) -> Self {
        Self {
            version: snapshot.version,
            destinations: snapshot.destinations.iter().map(Into::into).collect(),
            inbound: snapshot.inbound.as_ref().map(Into::into),
            trust_bundle_der: snapshot
                .trust_bundle
                .iter()
                .map(|root| root.as_ref().to_vec())
                .collect(),
            // Not part of the model: the control service sets it on the wire form it sends.
            edge_report_interval_ms: 0,
            zone: snapshot.zone.clone(),
            // A full snapshot; increments are made from two of these (`crate::delta`).
            base_version: 0,
            changes: Vec::new(),
        }
    }
}

impl From<&Destination> for proto::Destination {
    fn from(destination: &Destination) -> Self {
        Self {
            service: Some((&destination.key()).into()),
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
            service: Some(
                (&DestinationKey {
                    service: backend.service.clone(),
                    port: backend.port,
                })
                    .into(),
            ),
            endpoints: backend.endpoints.iter().map(Into::into).collect(),
            found: backend.found,
        }
    }
}

impl From<&Endpoint> for proto::Endpoint {
    fn from(endpoint: &Endpoint) -> Self {
        Self {
            address: address::to_wire(&endpoint.address),
            weight: endpoint.weight,
            zone: endpoint.zone.clone(),
            labels: endpoint
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            // The ID's own text, copied: `to_string` would format it.
            identity: endpoint.identity.as_str().to_owned(),
            for_zones: endpoint.for_zones.clone(),
        }
    }
}

impl From<&Route> for proto::Route {
    fn from(route: &Route) -> Self {
        Self {
            name: route.name.clone(),
            rules: route.rules.iter().map(Into::into).collect(),
            kind: route.kind.as_str().to_owned(),
            creation_timestamp: route.created,
        }
    }
}

impl From<&RouteRule> for proto::RouteRule {
    fn from(rule: &RouteRule) -> Self {
        Self {
            name: rule.name.clone(),
            backend_refs: rule.backend_refs.iter().map(Into::into).collect(),
            matches: rule.matches.iter().map(Into::into).collect(),
            filters: rule.filters.iter().map(Into::into).collect(),
            timeouts: (rule.timeouts != Timeouts::default()).then(|| proto::Timeouts {
                request: rule
                    .timeouts
                    .request
                    .map(duration::format)
                    .unwrap_or_default(),
                backend_request: rule
                    .timeouts
                    .backend_request
                    .map(duration::format)
                    .unwrap_or_default(),
            }),
            retry: rule.retry.as_ref().map(|retry| proto::RetryPolicy {
                codes: retry.codes.iter().map(|c| u32::from(c.as_u16())).collect(),
                statuses: retry
                    .grpc_codes
                    .iter()
                    .map(|&c| check::route::grpc_status_name(c).to_owned())
                    .collect(),
                attempts: retry.attempts,
                backoff: retry.backoff.map(duration::format).unwrap_or_default(),
            }),
            hedging: rule.hedging.as_ref().map(|hedging| proto::HedgingPolicy {
                max_attempts: hedging.max_attempts,
                delay: hedging.delay.to_string(),
                non_fatal_codes: hedging
                    .non_fatal_codes
                    .iter()
                    .map(|c| u32::from(c.as_u16()))
                    .collect(),
                non_fatal_statuses: hedging
                    .non_fatal_grpc_codes
                    .iter()
                    .map(|&c| check::route::grpc_status_name(c).to_owned())
                    .collect(),
            }),
        }
    }
}

impl From<&BackendRef> for proto::BackendRef {
    fn from(backend_ref: &BackendRef) -> Self {
        Self {
            service: Some((&backend_ref.service).into()),
            weight: backend_ref.weight,
            port: backend_ref.port.map(u32::from).unwrap_or(0),
        }
    }
}

impl From<&ValueMatch> for proto::ValueMatch {
    /// The type and value; the caller sets the name.
    fn from(value: &ValueMatch) -> Self {
        Self {
            r#type: value.type_name().to_owned(),
            name: String::new(),
            value: value.value().to_owned(),
        }
    }
}

fn header_match_to_wire(header: &HeaderMatch) -> proto::ValueMatch {
    proto::ValueMatch {
        name: header.name.as_str().to_owned(),
        ..(&header.value).into()
    }
}

impl From<&RouteMatch> for proto::RouteMatch {
    fn from(route_match: &RouteMatch) -> Self {
        match route_match {
            RouteMatch::Http(m) => Self {
                path: Some(proto::PathMatch {
                    r#type: m.path.type_name().to_owned(),
                    value: m.path.value().to_owned(),
                }),
                method: m
                    .method
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                headers: m.headers.iter().map(header_match_to_wire).collect(),
                query_params: m
                    .query_params
                    .iter()
                    .map(|q| proto::ValueMatch {
                        name: q.name.clone(),
                        ..(&q.value).into()
                    })
                    .collect(),
                grpc_method: None,
            },
            RouteMatch::Grpc(m) => Self {
                headers: m.headers.iter().map(header_match_to_wire).collect(),
                grpc_method: m.method.as_ref().map(|method| {
                    let kind = method.service.as_ref().or(method.method.as_ref());
                    proto::GrpcMethodMatch {
                        r#type: kind
                            .map(ValueMatch::type_name)
                            .unwrap_or("Exact")
                            .to_owned(),
                        service: method
                            .service
                            .as_ref()
                            .map(|v| v.value().to_owned())
                            .unwrap_or_default(),
                        method: method
                            .method
                            .as_ref()
                            .map(|v| v.value().to_owned())
                            .unwrap_or_default(),
                    }
                }),
                ..Default::default()
            },
        }
    }
}

impl From<&HeaderModifier> for proto::HeaderModifier {
    fn from(modifier: &HeaderModifier) -> Self {
        let headers = |list: &[(http::HeaderName, http::HeaderValue)]| {
            list.iter()
                .map(|(name, value)| proto::Header {
                    name: name.as_str().to_owned(),
                    // Validated values are visible ASCII (they came from strings), so this is
                    // lossless; anything else would have been refused before reaching here.
                    value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                })
                .collect()
        };
        Self {
            set: headers(&modifier.set),
            add: headers(&modifier.add),
            remove: modifier
                .remove
                .iter()
                .map(|n| n.as_str().to_owned())
                .collect(),
        }
    }
}

impl From<&RouteFilter> for proto::RouteFilter {
    fn from(filter: &RouteFilter) -> Self {
        match filter {
            RouteFilter::RequestHeaderModifier(m) => Self {
                r#type: "RequestHeaderModifier".to_owned(),
                request_header_modifier: Some(m.into()),
                ..Default::default()
            },
            RouteFilter::ResponseHeaderModifier(m) => Self {
                r#type: "ResponseHeaderModifier".to_owned(),
                response_header_modifier: Some(m.into()),
                ..Default::default()
            },
            RouteFilter::RequestMirror(m) => Self {
                r#type: "RequestMirror".to_owned(),
                request_mirror: Some(proto::RequestMirror {
                    backend_ref: Some((&m.backend).into()),
                    port: m.port.map(u32::from).unwrap_or(0),
                    percent: m.percent,
                }),
                ..Default::default()
            },
            RouteFilter::FaultInjection(f) => Self {
                r#type: "FaultInjection".to_owned(),
                fault_injection: Some(fault::to_wire(f)),
                ..Default::default()
            },
        }
    }
}

// === wire to model ===

impl TryFrom<proto::Snapshot> for Snapshot {
    type Error = ValidationErrors;
    fn try_from(wire: proto::Snapshot) -> Result<Self, Self::Error> {
        let mut errors = Vec::new();
        if wire.base_version != 0 {
            // Increments are applied to a full snapshot first (`crate::delta::apply`).
            errors.push(FieldError::new(
                "baseVersion",
                "an increment, not a full snapshot",
            ));
        }
        let mut seen = FirstSeen::new();
        let mut destinations = Vec::with_capacity(wire.destinations.len());
        for (i, wire) in wire.destinations.into_iter().enumerate() {
            let path = format!("destinations[{i}]");
            if let Some(destination) = destination(&path, wire, &mut seen, &mut errors) {
                destinations.push(destination);
            }
        }
        let inbound = wire
            .inbound
            .and_then(|inbound| policy::inbound("inbound", inbound, &mut errors));
        // The roots are parsed as trust anchors by the client when it builds its bundle (it
        // knows the trust domain); here they are carried as they came.
        let trust_bundle = wire
            .trust_bundle_der
            .into_iter()
            .map(rustls_pki_types::CertificateDer::from)
            .collect();
        let zone = check::zone("zone", wire.zone, &mut errors);
        ValidationErrors::check(
            errors,
            Snapshot {
                version: wire.version,
                destinations,
                inbound,
                trust_bundle,
                zone,
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
    check::service_name(path, &wire.namespace, &wire.name, errors)
}

/// A service reference with its port at `path`.
fn destination_key(
    path: &str,
    wire: Option<&proto::ServiceRef>,
    errors: &mut Vec<FieldError>,
) -> Option<DestinationKey> {
    let service = service_ref(path, wire, errors)?;
    let port = wire_port(wire.map_or(0, |w| w.port))
        .map_err(|message| errors.push(FieldError::new(format!("{path}.port"), message)))
        .ok()?;
    Some(DestinationKey { service, port })
}

fn destination(
    path: &str,
    wire: proto::Destination,
    seen: &mut FirstSeen<DestinationKey>,
    errors: &mut Vec<FieldError>,
) -> Option<Destination> {
    let service_path = format!("{path}.service");
    let service = destination_key(&service_path, wire.service.as_ref(), errors);
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
    let namespace = wire.service.as_ref().map(|s| s.namespace.as_str());
    let routes = routes(path, namespace, &wire.routes, errors);

    let mut backends = Vec::with_capacity(wire.backends.len());
    let mut listed = FirstSeen::new();
    for (i, backend) in wire.backends.into_iter().enumerate() {
        let backend_path = format!("{path}.backends[{i}]");
        let service_path = format!("{backend_path}.service");
        let service = destination_key(&service_path, backend.service.as_ref(), errors);
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
        if let Some(key) = service {
            backends.push(Backend {
                service: key.service,
                port: key.port,
                found: backend.found,
                endpoints: backend_endpoints,
            });
        }
    }
    // Every referenced service must be resolvable by the client; report each unlisted one at
    // the references that name it.
    for (i, route) in routes.iter().enumerate() {
        for (j, rule) in route.rules.iter().enumerate() {
            let rule_path = format!("{path}.routes[{i}].rules[{j}]");
            let refs = rule
                .backend_refs
                .iter()
                .enumerate()
                .map(|(k, backend_ref)| {
                    (
                        format!("{rule_path}.backendRefs[{k}].service"),
                        (&backend_ref.service, backend_ref.port),
                    )
                });
            let mirrors = rule
                .filters
                .iter()
                .enumerate()
                .filter_map(|(f, filter)| match filter {
                    RouteFilter::RequestMirror(mirror) => Some((
                        format!("{rule_path}.filters[{f}].requestMirror.backendRef"),
                        (&mirror.backend, mirror.port),
                    )),
                    _ => None,
                });
            for (ref_path, (service, port)) in refs.chain(mirrors) {
                if !backends
                    .iter()
                    .any(|b| &b.service == service && b.port == port)
                {
                    let key = DestinationKey {
                        service: service.clone(),
                        port,
                    };
                    errors.push(FieldError::new(
                        ref_path,
                        format!("backend \"{key}\" is not listed in {path}.backends"),
                    ));
                }
            }
        }
    }
    let key = service?;
    Some(Destination {
        service: key.service,
        port: key.port,
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
    let list = format!("{parent}.endpoints");
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
                for_zones: endpoint.for_zones,
                labels: endpoint.labels.into_iter().collect(),
                identity: &endpoint.identity,
            };
            let at = EndpointAt {
                list: &list,
                index: i,
            };
            check::endpoint(at, fields, None, &mut addresses, errors)
        })
        .collect()
}

fn routes(
    parent: &str,
    namespace: Option<&str>,
    wire: &[proto::Route],
    errors: &mut Vec<FieldError>,
) -> Vec<Route> {
    // References without a namespace never reach the wire (the model always has one), so the
    // destination's namespace is only a fallback for hand-written messages.
    let namespace = namespace.unwrap_or("default");
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
        let kind =
            check::route::route_kind(&format!("{path}.kind"), non_empty(&route.kind), errors);
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
            let spec = rule_spec(&rule_path, rule, errors);
            let parts = check::route::rule_parts(&rule_path, kind, namespace, &spec, errors);
            let mut backend_refs = Vec::with_capacity(rule.backend_refs.len());
            for (k, backend_ref) in rule.backend_refs.iter().enumerate() {
                let ref_path = format!("{rule_path}.backendRefs[{k}]");
                let service = service_ref(
                    &format!("{ref_path}.service"),
                    backend_ref.service.as_ref(),
                    errors,
                );
                let port = check::route::port(
                    &format!("{ref_path}.port"),
                    (backend_ref.port != 0).then_some(backend_ref.port),
                    errors,
                );
                let weight = check::backend_weight(backend_ref.weight)
                    .map_err(|m| errors.push(FieldError::new(format!("{ref_path}.weight"), m)))
                    .ok();
                if let (Some(service), Some(port), Some(weight)) = (service, port, weight) {
                    backend_refs.push(BackendRef {
                        service,
                        port,
                        weight,
                    });
                }
            }
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
        routes.push(Route {
            name: route.name.clone(),
            kind,
            created: route.creation_timestamp,
            rules,
        });
    }
    routes
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn non_empty_owned(s: &str) -> Option<String> {
    non_empty(s).map(str::to_owned)
}

/// The wire rule in the config's shape (backend references aside, which the caller checks), so
/// that [`check::route::rule_parts`] checks both the same way. Only what the config shape cannot
/// say is reported here.
fn rule_spec(path: &str, wire: &proto::RouteRule, errors: &mut Vec<FieldError>) -> RouteRuleSpec {
    let value_match = |m: &proto::ValueMatch| ValueMatchSpec {
        kind: non_empty_owned(&m.r#type),
        name: m.name.clone(),
        value: m.value.clone(),
    };
    let matches = wire
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let method = match (non_empty(&m.method), &m.grpc_method) {
                (Some(_), Some(_)) => {
                    errors.push(FieldError::new(
                        format!("{path}.matches[{i}].grpcMethod"),
                        "set together with method",
                    ));
                    None
                }
                (Some(method), None) => Some(MethodMatchSpec::Http(method.to_owned())),
                (None, Some(g)) => Some(MethodMatchSpec::Grpc(GrpcMethodMatchSpec {
                    kind: non_empty_owned(&g.r#type),
                    service: non_empty_owned(&g.service),
                    method: non_empty_owned(&g.method),
                })),
                (None, None) => None,
            };
            RouteMatchSpec {
                path: m.path.as_ref().map(|p| PathMatchSpec {
                    kind: non_empty_owned(&p.r#type),
                    value: non_empty_owned(&p.value),
                }),
                method,
                headers: m.headers.iter().map(value_match).collect(),
                query_params: m.query_params.iter().map(value_match).collect(),
            }
        })
        .collect();
    let modifier = |m: &proto::HeaderModifier| HeaderModifierSpec {
        set: m.set.iter().map(header_spec).collect(),
        add: m.add.iter().map(header_spec).collect(),
        remove: m.remove.clone(),
    };
    let filters = wire
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| FilterSpec {
            kind: f.r#type.clone(),
            request_header_modifier: f.request_header_modifier.as_ref().map(modifier),
            response_header_modifier: f.response_header_modifier.as_ref().map(modifier),
            request_mirror: f.request_mirror.as_ref().map(|m| {
                let (name, namespace) = match &m.backend_ref {
                    Some(r) => (r.name.clone(), Some(r.namespace.clone())),
                    None => {
                        errors.push(FieldError::new(
                            format!("{path}.filters[{i}].requestMirror.backendRef"),
                            "missing",
                        ));
                        // Left empty: the name check below reports nothing more useful.
                        (String::new(), None)
                    }
                };
                RequestMirrorSpec {
                    backend_ref: MirrorBackendRefSpec {
                        name,
                        namespace,
                        port: (m.port != 0).then_some(m.port),
                    },
                    percent: Some(m.percent),
                }
            }),
            fault_injection: f.fault_injection.as_ref().map(fault::from_wire),
        })
        .collect();
    RouteRuleSpec {
        name: wire.name.clone(),
        matches,
        filters,
        backend_refs: Vec::new(),
        timeouts: wire.timeouts.as_ref().map(|t| TimeoutsSpec {
            request: non_empty_owned(&t.request),
            backend_request: non_empty_owned(&t.backend_request),
        }),
        retry: wire.retry.as_ref().map(|r| RetrySpec {
            codes: r.codes.clone(),
            statuses: r.statuses.clone(),
            attempts: Some(r.attempts),
            backoff: non_empty_owned(&r.backoff),
        }),
        hedging: wire.hedging.as_ref().map(|h| HedgingSpec {
            max_attempts: Some(h.max_attempts),
            delay: non_empty_owned(&h.delay),
            non_fatal_codes: h.non_fatal_codes.clone(),
            non_fatal_statuses: h.non_fatal_statuses.clone(),
        }),
    }
}

fn header_spec(h: &proto::Header) -> HeaderSpec {
    HeaderSpec {
        name: h.name.clone(),
        value: h.value.clone(),
    }
}

mod address;
mod fault;
mod policy;
mod rate_limit;
#[cfg(test)]
mod rate_limit_tests;
#[cfg(test)]
mod tests;
