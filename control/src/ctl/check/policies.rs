//! Lints on authorization policies: rules that can match no caller or no request.
//!
//! A policy that targets a service (or route) the config does not have is already a
//! validation error, with its field path. Here, each rule of a valid policy is tried:
//!
//! - `from`: a rule that names only callers without an identity (`unauthenticated`) matches
//!   nothing on a service in strict mTLS mode, where such callers cannot connect;
//! - `to`: requests are built from the rule's own values (its methods, paths, gRPC methods,
//!   and ports, the ports being those the service's endpoints listen on when the config lists
//!   any) and each is judged by mesh-core's own [`Operation::matches`]; when none matches,
//!   no request can (a gRPC call is a `POST` to `/service/method`).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use http::Method;
use mesh_core::authz::{AuthzRequest, MtlsMode, Operation, PathPattern, Source};
use mesh_core::config::{ServiceSpec, ValidConfig};
use mesh_core::route::GrpcPath;
use mesh_core::snapshot::ServiceName;

use crate::ctl::finding::Finding;
use crate::file::ControlFile;

/// Every policy lint, in document order.
pub(super) fn lint(file: &ControlFile, config: &ValidConfig, out: &mut Vec<Finding>) {
    for (i, spec) in file.policies.iter().enumerate() {
        let namespace = spec.target.namespace.as_deref().unwrap_or("default");
        let Ok(service) = ServiceName::new(namespace, &spec.target.service) else {
            continue;
        };
        let inbound = config.inbound(&service);
        let Some(policy) = inbound.policies.iter().find(|p| *p.name == *spec.name) else {
            continue;
        };
        let ports = file
            .services
            .iter()
            .find(|s| s.name == service.name && s.namespace == service.namespace)
            .map(listening_ports)
            .unwrap_or_default();
        for (r, rule) in policy.rules.iter().enumerate() {
            let path = format!("policies[{i}].rules[{r}]");
            if inbound.mtls == MtlsMode::Strict && only_unauthenticated(&rule.from) {
                out.push(Finding::warning(
                    format!("{path}.from"),
                    format!(
                        "matches no caller: it names only callers without an identity, and {service} is in strict mTLS mode, where they cannot connect"
                    ),
                ));
            }
            if let Some(to) = &rule.to
                && let Some(why) = matches_nothing(to, &ports)
            {
                out.push(Finding::warning(
                    format!("{path}.to"),
                    format!("matches no request: {why}"),
                ));
            }
        }
    }
}

fn only_unauthenticated(from: &Source) -> bool {
    from.unauthenticated
        && from.identities.is_empty()
        && from.namespaces.is_empty()
        && from.service_accounts.is_empty()
}

/// The ports the service's endpoints listen on (a server's policies see its own port).
fn listening_ports(service: &ServiceSpec) -> BTreeSet<u16> {
    service
        .endpoints
        .iter()
        .chain(service.ports.iter().flat_map(|p| &p.endpoints))
        .filter_map(|e| e.address.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .collect()
}

/// Why no request matches `to`, or `None` when one does.
fn matches_nothing(to: &Operation, listening: &BTreeSet<u16>) -> Option<String> {
    let ports: Vec<Option<u16>> = if to.ports.is_empty() {
        vec![listening.iter().next().copied()]
    } else if listening.is_empty() {
        to.ports.iter().copied().map(Some).collect()
    } else {
        to.ports
            .iter()
            .filter(|p| listening.contains(p))
            .copied()
            .map(Some)
            .collect()
    };
    if ports.is_empty() {
        let listening: Vec<String> = listening.iter().map(u16::to_string).collect();
        return Some(format!(
            "none of its ports is one the service's endpoints listen on ({})",
            listening.join(", ")
        ));
    }
    let methods = if to.methods.is_empty() {
        vec![Method::GET, Method::POST]
    } else {
        to.methods.clone()
    };
    let mut paths: Vec<String> = Vec::new();
    for pattern in &to.paths {
        match pattern {
            PathPattern::Exact(p) => paths.push(p.to_string()),
            PathPattern::Prefix(p) => {
                paths.push(p.to_string());
                paths.push(format!("{p}x"));
            }
        }
    }
    for g in &to.grpc {
        paths.push(format!(
            "/{}/{}",
            g.service,
            g.method.as_deref().unwrap_or("x")
        ));
    }
    if paths.is_empty() {
        paths.push("/".to_owned());
    }
    for method in &methods {
        for path in &paths {
            // A gRPC call is a POST; any request may also be plain HTTP.
            let grpc = (*method == Method::POST)
                .then(|| GrpcPath::parse(path))
                .flatten();
            for grpc in [grpc, None] {
                for port in &ports {
                    let request = AuthzRequest {
                        peer: None,
                        method,
                        path,
                        grpc,
                        port: *port,
                        route: None,
                        principal: None,
                    };
                    if to.matches(&request) {
                        return None;
                    }
                }
            }
        }
    }
    Some(
        if !to.grpc.is_empty() && !to.methods.is_empty() && !to.methods.contains(&Method::POST) {
            "it names gRPC methods, which are called with POST, and its methods have no POST"
                .to_owned()
        } else if !to.grpc.is_empty() && !to.paths.is_empty() {
            "none of its paths is the path of one of its gRPC methods".to_owned()
        } else {
            "its conditions exclude each other".to_owned()
        },
    )
}
