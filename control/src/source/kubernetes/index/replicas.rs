//! The path of a change to replicas only (EndpointSlices, Pods): the specs of the Services
//! it touched are rebuilt and the last config is updated for them with
//! [`ValidConfig::with_replicas`](mesh_core::config::ValidConfig::with_replicas), so one
//! event costs in proportion to its Services and their namespaces, not the cluster. The
//! result equals a whole build's; anything else (a Service, a route, a policy, a relist)
//! takes the whole build.

use mesh_core::config::{ReplicasError, ServiceSpec};
use mesh_core::snapshot::ServiceName;

use super::{BuildError, Built, ClusterIndex, ObjectKey, SpecCache};

// === impl ClusterIndex ===

impl ClusterIndex {
    /// The last config updated for the Services whose replicas changed since, and for the
    /// instance zones that moved; `None` when the change needs a whole build (no config
    /// built yet, a Service came or went, more than replicas changed).
    pub(super) fn update_replicas(
        &self,
        cache: &mut SpecCache,
    ) -> Option<Result<Built, BuildError>> {
        let dirty: Vec<ObjectKey> = std::mem::take(&mut cache.dirty).into_iter().collect();
        for key in &dirty {
            self.refresh_spec(cache, key.clone());
        }
        let zones = cache.zones.changes(self);
        let last = cache.last.as_ref()?;
        let mut changed: Vec<ServiceSpec> = Vec::with_capacity(dirty.len());
        for key in &dirty {
            let name = ServiceName {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            };
            match (last.config.service_spec(&name), cache.specs.get(key)) {
                // A slice or pod of a Service the cluster does not have.
                (None, None) => {}
                // The routes attached to it are the last build's: only replicas changed.
                (Some(written), Some((own, _))) => changed.push(ServiceSpec {
                    routes: written.routes.clone(),
                    ..own.clone()
                }),
                _ => return None,
            }
        }
        let count = changed.len() as u64;
        let config = match last
            .config
            .with_replicas(changed, zones, &self.trust_domain)
        {
            Ok(config) => config,
            Err(ReplicasError::NotReplicasOnly(_)) => return None,
            Err(ReplicasError::Invalid(errors)) => {
                // The next build starts over whole, as it would have without the last one.
                cache.last = None;
                return Some(Err(BuildError(errors)));
            }
        };
        cache.revalidated += count;
        // In Service order, then the rest, as a whole build lists them.
        let refused: Vec<String> = cache
            .refusing
            .iter()
            .filter_map(|key| cache.specs.get(key))
            .flat_map(|(_, refused)| refused)
            .chain(&last.refused)
            .cloned()
            .collect();
        let routes = last.routes.clone();
        if let Some(last) = cache.last.as_mut() {
            last.config = config.clone();
        }
        Some(Ok(Built {
            config,
            refused,
            routes,
        }))
    }
}
