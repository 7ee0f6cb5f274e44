//! Changing the replicas of a few services of a valid config without validating the rest:
//! what one discovery event (an EndpointSlice, a Pod) changes, at a cost that follows the
//! services changed and their namespaces, not the whole config.
//!
//! The result is the config [`MeshConfig::validate`] would give for the written config with
//! those changes, and it fails exactly when that would: replicas are checked as `validate`
//! checks them (with the same field paths), and the sizes of the changed services'
//! destinations and of every destination whose routes send to them are measured again.
//! Everything else (routes, policies, other services) is unchanged, so it is still valid.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{
    FieldError, ServiceName, ServiceSpec, TrustDomain, ValidConfig, ValidService, ValidationErrors,
    endpoints, identities, instance_zone, ports, service_sizes,
};

/// A change of one workload instance's zone (an entry of `instanceZones`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneChange {
    /// The instance's namespace.
    pub namespace: String,
    /// The instance (a pod's name in Kubernetes).
    pub instance: String,
    /// Its zone; `None` removes the entry.
    pub zone: Option<String>,
}

/// Why [`ValidConfig::with_replicas`] gave no config.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplicasError {
    /// The service is not in the config, or more than its replicas changed: validate the
    /// whole config instead.
    #[error("service {0}: more than its replicas changed, or the config does not have it")]
    NotReplicasOnly(ServiceName),
    /// The config with these changes is invalid (the errors `validate` would give for it).
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

// === impl ValidConfig ===

impl ValidConfig {
    /// This config with the replicas of some services replaced and some instance zones
    /// changed. Each of `services` is a service of the config written as before except for
    /// its endpoints (on each port) and `identities`; one that is unchanged costs nothing.
    ///
    /// Costs in proportion to the services changed, the services whose routes send to them
    /// and the namespaces they are in; the rest is shared with `self`.
    pub fn with_replicas(
        &self,
        services: Vec<ServiceSpec>,
        zones: Vec<ZoneChange>,
        trust_domain: &TrustDomain,
    ) -> Result<ValidConfig, ReplicasError> {
        let mut next = self.clone();
        let mut errors: Vec<FieldError> = Vec::new();
        let mut changed = Vec::new();
        for spec in services {
            let name = ServiceName {
                namespace: spec.namespace.clone(),
                name: spec.name.clone(),
            };
            let (Some((position, written)), Some(old)) = (
                self.written.get(&name.namespace, &name),
                self.services.get(&name.namespace, &name),
            ) else {
                return Err(ReplicasError::NotReplicasOnly(name));
            };
            if **written == spec {
                continue;
            }
            if !same_but_replicas(written, &spec) {
                return Err(ReplicasError::NotReplicasOnly(name));
            }
            let path = format!("services[{position}]");
            let endpoints = endpoints(
                &format!("{path}.endpoints"),
                &spec.endpoints,
                trust_domain,
                &mut errors,
            );
            let (_, ports) = ports(&path, &spec, trust_domain, &mut errors);
            let identities = identities(&path, &spec, trust_domain, &mut errors);
            // Field by field: cloning the old service whole would copy its old replicas.
            let valid = ValidService {
                port: old.port,
                endpoints,
                ports,
                routes: old.routes.clone(),
                mtls: old.mtls,
                default_policy: old.default_policy,
                exempt_paths: old.exempt_paths.clone(),
                policies: old.policies.clone(),
                rate_limits: old.rate_limits.clone(),
                identities,
                jwt_rules: old.jwt_rules.clone(),
            };
            next.services
                .insert(&name.namespace, name.clone(), Arc::new(valid));
            next.written
                .insert(&name.namespace, name.clone(), (*position, Arc::new(spec)));
            changed.push(name);
        }
        for change in zones {
            match change.zone {
                Some(zone) => {
                    instance_zone(
                        &format!("{}/{}", change.namespace, change.instance),
                        &zone,
                        &mut errors,
                    );
                    next.zones.insert(&change.namespace, change.instance, zone);
                }
                None => next.zones.remove(&change.namespace, &change.instance),
            }
        }
        // Sizes are measured on what clients would be sent, so only once all else is valid;
        // a service's replicas are in its own destinations and in those that send to it.
        if errors.is_empty() {
            // In document order, as `validate` reports them.
            let mut measured: BTreeSet<(usize, &ServiceName)> = BTreeSet::new();
            for name in &changed {
                let senders = next.referrers.get(name).into_iter().flatten();
                for service in std::iter::once(name).chain(senders) {
                    if let Some((position, _)) = next.written.get(&service.namespace, service) {
                        measured.insert((*position, service));
                    }
                }
            }
            for (position, service) in measured {
                service_sizes(
                    &format!("services[{position}]"),
                    service,
                    &next,
                    &mut errors,
                );
            }
        }
        Ok(ValidationErrors::check(errors, next)?)
    }
}

/// Whether `a` and `b` differ at most in their replicas: endpoints (on each port) and
/// identities. Spelled field by field so that a new field has to be placed here.
fn same_but_replicas(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    let ServiceSpec {
        name,
        namespace,
        port,
        endpoints: _,
        ports,
        routes,
        mtls,
        default_policy,
        exempt_paths,
        identities: _,
    } = a;
    *name == b.name
        && *namespace == b.namespace
        && *port == b.port
        && ports.len() == b.ports.len()
        && ports.iter().zip(&b.ports).all(|(x, y)| x.port == y.port)
        && *routes == b.routes
        && *mtls == b.mtls
        && *default_policy == b.default_policy
        && *exempt_paths == b.exempt_paths
}

/// For tests: the written config of `config` with `services` replaced and `zones` applied,
/// to validate whole and compare.
#[cfg(test)]
pub(crate) fn written_with(
    config: &ValidConfig,
    services: &[ServiceSpec],
    zones: &[ZoneChange],
) -> super::MeshConfig {
    let mut spec = config.spec();
    for service in services {
        if let Some(slot) = spec
            .services
            .iter_mut()
            .find(|s| s.name == service.name && s.namespace == service.namespace)
        {
            *slot = service.clone();
        }
    }
    for change in zones {
        let key = format!("{}/{}", change.namespace, change.instance);
        match &change.zone {
            Some(zone) => spec.instance_zones.insert(key, zone.clone()),
            None => spec.instance_zones.remove(&key),
        };
    }
    spec
}

#[cfg(test)]
mod tests;
