//! Lints that need the running mesh: gRPC routes and policies that name a gRPC service the
//! destination's servers do not serve. Meshed tonic servers tell the control service the
//! services they serve (`Mesh::serves_grpc`, `mesh_tonic`'s `serving`); `meshctl check
//! --admin` reads them from every replica's `/subscribers`.
//!
//! Only services are checked, not methods: a server reports the services it registered, and
//! a generated server answers UNIMPLEMENTED for a method it lacks, which routing cannot tell
//! in advance. A destination none of whose servers has reported anything (not running, or
//! not meshed with tonic) is not judged.

use std::collections::{BTreeMap, BTreeSet};

use mesh_core::config::MethodMatchSpec;

use crate::ctl::finding::Finding;
use crate::file::ControlFile;

/// The gRPC services each service's running servers report, by `name.namespace`.
pub type Served = BTreeMap<String, BTreeSet<String>>;

/// Every lint of this module, in document order.
pub(super) fn lint(file: &ControlFile, served: &Served, out: &mut Vec<Finding>) {
    for (i, service) in file.services.iter().enumerate() {
        for (j, route) in service.routes.iter().enumerate() {
            let namespace = route.namespace.as_deref().unwrap_or(&service.namespace);
            for (k, rule) in route.rules.iter().enumerate() {
                // Where the rule's calls go: its backends, else the service itself.
                let targets: Vec<String> = if rule.backend_refs.is_empty() {
                    vec![format!("{}.{}", service.name, service.namespace)]
                } else {
                    rule.backend_refs
                        .iter()
                        .filter(|b| b.weight != Some(0))
                        .map(|b| {
                            let ns = b.namespace.as_deref().unwrap_or(namespace);
                            format!("{}.{ns}", b.name)
                        })
                        .collect()
                };
                for (m, matched) in rule.matches.iter().enumerate() {
                    let Some(MethodMatchSpec::Grpc(grpc)) = &matched.method else {
                        continue;
                    };
                    let exact = grpc.kind.as_deref().is_none_or(|k| k == "Exact");
                    let Some(name) = grpc.service.as_deref().filter(|_| exact) else {
                        continue;
                    };
                    let path =
                        format!("services[{i}].routes[{j}].rules[{k}].matches[{m}].method.service");
                    for target in &targets {
                        missing(&path, name, target, served, out);
                    }
                }
            }
        }
    }
    for (p, policy) in file.policies.iter().enumerate() {
        let namespace = policy.target.namespace.as_deref().unwrap_or("default");
        let target = format!("{}.{namespace}", policy.target.service);
        for (r, rule) in policy.rules.iter().enumerate() {
            let Some(to) = &rule.to else { continue };
            for (g, grpc) in to.grpc.iter().enumerate() {
                let path = format!("policies[{p}].rules[{r}].to.grpc[{g}].service");
                missing(&path, &grpc.service, &target, served, out);
            }
        }
    }
}

/// Warns when `target`'s servers reported their services and `name` is not one of them.
fn missing(path: &str, name: &str, target: &str, served: &Served, out: &mut Vec<Finding>) {
    let Some(services) = served.get(target).filter(|s| !s.is_empty()) else {
        return;
    };
    if !services.contains(name) {
        let list: Vec<&str> = services.iter().map(String::as_str).collect();
        out.push(Finding::warning(
            path,
            format!(
                "gRPC service {name} is not served by {target}: its running servers serve {}",
                list.join(", ")
            ),
        ));
    }
}
