//! Increments of the Watch protocol: what changed between two full wire snapshots
//! ([`diff`]), and a full snapshot brought forward by an increment ([`apply`]).
//!
//! Both work on the wire form ([`crate::proto`]): the control service diffs the wire messages
//! it already made for its subscribers, and a client applies an increment to the wire snapshot
//! it last received, then validates the result with [`crate::convert`] exactly as it would a
//! full snapshot, so an increment can never smuggle in what a full snapshot could not.
//!
//! Endpoints (keyed by address) and backends (keyed by service and port) travel as ordered-set
//! changes: the keys removed, and the entries added or changed with their position in the new
//! set. [`diff`] checks that the entries it leaves alone keep their relative order; when they
//! do not (or keys repeat) it sends the whole new set after a `clear`, so that
//! `apply(a, diff(a, b)) == b` always holds, order included. Routes and the inbound policy are
//! few and replaced whole when they change. A change of the destination list (a new
//! `subscribe`), of the zone to unknown, or of the inbound policy to none is not an increment:
//! [`diff`] returns `None` and the control service sends a full snapshot.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use crate::proto;

/// Why an increment could not be applied; the client asks for a full snapshot (a resync).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The increment is over a version the client does not hold (a message was lost).
    #[error("increment {version} is over version {base}, but version {have} is held (a gap)")]
    Gap {
        /// The increment's version.
        version: u64,
        /// The version it changes.
        base: u64,
        /// The version the client holds (0: none).
        have: u64,
    },
    /// The increment names a destination the snapshot does not hold.
    #[error("changes[{index}].service: {service} is not a destination of the snapshot")]
    UnknownDestination {
        /// The entry's position in `changes`.
        index: usize,
        /// The destination, `name.namespace:port`.
        service: String,
    },
    /// An entry's position is past the end of the set it is inserted into.
    #[error("{field}: index {index} is past the end of the set ({len} entries)")]
    Index {
        /// The field's path (`changes[0].endpoints.upserted[2].index`).
        field: String,
        /// The position given.
        index: u32,
        /// The set's length at that point.
        len: usize,
    },
    /// A part that must be given is missing.
    #[error("{0}: missing")]
    Missing(String),
}

/// Whether `snapshot` is an increment rather than a full snapshot.
pub fn is_increment(snapshot: &proto::Snapshot) -> bool {
    snapshot.base_version != 0
}

/// The increment that turns full snapshot `from` into full snapshot `to`, with
/// `base_version` set to `from.version`; `None` when the change cannot be said as one (see the
/// module docs).
pub fn diff(from: &proto::Snapshot, to: &proto::Snapshot) -> Option<proto::Snapshot> {
    if from.destinations.len() != to.destinations.len()
        || from
            .destinations
            .iter()
            .zip(&to.destinations)
            .any(|(a, b)| a.service != b.service)
    {
        return None;
    }
    let zone = if from.zone == to.zone {
        String::new()
    } else if to.zone.is_empty() {
        return None;
    } else {
        to.zone.clone()
    };
    let trust_bundle_der = if from.trust_bundle_der == to.trust_bundle_der {
        Vec::new()
    } else if to.trust_bundle_der.is_empty() {
        return None;
    } else {
        to.trust_bundle_der.clone()
    };
    let inbound = match (&from.inbound, &to.inbound) {
        (_, None) if from.inbound.is_some() => return None,
        (a, Some(b)) if a.as_ref() != Some(b) => Some(b.clone()),
        _ => None,
    };
    let changes = from
        .destinations
        .iter()
        .zip(&to.destinations)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| destination_change(a, b))
        .collect();
    Some(proto::Snapshot {
        version: to.version,
        destinations: Vec::new(),
        inbound,
        trust_bundle_der,
        edge_report_interval_ms: to.edge_report_interval_ms,
        zone,
        base_version: from.version,
        changes,
    })
}

/// Brings full snapshot `state` forward by `increment`; on error `state` may be partly
/// changed and must be replaced by a full snapshot.
pub fn apply(state: &mut proto::Snapshot, increment: proto::Snapshot) -> Result<(), DeltaError> {
    if increment.base_version != state.version || state.version == 0 {
        return Err(DeltaError::Gap {
            version: increment.version,
            base: increment.base_version,
            have: state.version,
        });
    }
    for (index, change) in increment.changes.into_iter().enumerate() {
        let service = change
            .service
            .as_ref()
            .ok_or_else(|| DeltaError::Missing(format!("changes[{index}].service")))?;
        let destination = state
            .destinations
            .iter_mut()
            .find(|d| d.service.as_ref() == Some(service))
            .ok_or_else(|| DeltaError::UnknownDestination {
                index,
                service: service_key(service),
            })?;
        destination.found = change.found;
        if let Some(endpoints) = change.endpoints {
            apply_endpoints(
                &mut destination.endpoints,
                endpoints,
                &format!("changes[{index}].endpoints"),
            )?;
        }
        if let Some(routes) = change.routes {
            destination.routes = routes.routes;
        }
        if let Some(backends) = change.backends {
            apply_backends(
                &mut destination.backends,
                backends,
                &format!("changes[{index}].backends"),
            )?;
        }
    }
    if let Some(inbound) = increment.inbound {
        state.inbound = Some(inbound);
    }
    if !increment.trust_bundle_der.is_empty() {
        state.trust_bundle_der = increment.trust_bundle_der;
    }
    if !increment.zone.is_empty() {
        state.zone = increment.zone;
    }
    state.edge_report_interval_ms = increment.edge_report_interval_ms;
    state.version = increment.version;
    Ok(())
}

fn destination_change(
    from: &proto::Destination,
    to: &proto::Destination,
) -> proto::DestinationChange {
    proto::DestinationChange {
        service: to.service.clone(),
        found: to.found,
        endpoints: endpoint_changes(&from.endpoints, &to.endpoints),
        routes: (from.routes != to.routes).then(|| proto::RouteList {
            routes: to.routes.clone(),
        }),
        backends: backend_changes(&from.backends, &to.backends),
    }
}

/// `name.namespace:port`, for errors.
fn service_key(service: &proto::ServiceRef) -> String {
    format!("{}.{}:{}", service.name, service.namespace, service.port)
}

/// A backend's key: its service and port (a backend without a service has the empty key, which
/// the client refuses when it validates).
type BackendKey<'a> = (&'a str, &'a str, u32);

fn ref_key(service: Option<&proto::ServiceRef>) -> BackendKey<'_> {
    service.map_or(("", "", 0), |s| (&s.namespace, &s.name, s.port))
}

fn backend_key(backend: &proto::Backend) -> BackendKey<'_> {
    ref_key(backend.service.as_ref())
}

fn endpoint_key(endpoint: &proto::Endpoint) -> &str {
    &endpoint.address
}

/// The changes that turn `from` into `to`; `None` when they are equal.
fn endpoint_changes(
    from: &[proto::Endpoint],
    to: &[proto::Endpoint],
) -> Option<proto::EndpointChanges> {
    let plan = Plan::of(from, to, endpoint_key)?;
    Some(proto::EndpointChanges {
        removed: plan.removed.into_iter().map(str::to_owned).collect(),
        upserted: plan
            .upserted
            .into_iter()
            .map(|(index, _)| proto::IndexedEndpoint {
                index: index as u32,
                endpoint: Some(to[index].clone()),
            })
            .collect(),
        clear: plan.clear,
    })
}

/// The changes that turn `from` into `to`; `None` when they are equal.
fn backend_changes(
    from: &[proto::Backend],
    to: &[proto::Backend],
) -> Option<proto::BackendChanges> {
    let plan = Plan::of(from, to, backend_key)?;
    Some(proto::BackendChanges {
        removed: plan
            .removed
            .into_iter()
            .map(|(namespace, name, port)| proto::ServiceRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                port,
            })
            .collect(),
        upserted: plan
            .upserted
            .into_iter()
            .map(|(index, old)| {
                let new = &to[index];
                let old_endpoints = old.map_or(&[][..], |old| &old.endpoints[..]);
                proto::BackendChange {
                    index: index as u32,
                    service: new.service.clone(),
                    found: new.found,
                    endpoints: endpoint_changes(old_endpoints, &new.endpoints),
                }
            })
            .collect(),
        clear: plan.clear,
    })
}

/// How one ordered, keyed set becomes another.
struct Plan<'a, K, T> {
    clear: bool,
    removed: Vec<K>,
    /// Positions in the new set of the entries added or changed, with the entry they replace.
    upserted: Vec<(usize, Option<&'a T>)>,
}

impl<'a, K: Eq + Hash + Copy, T: PartialEq> Plan<'a, K, T> {
    fn of(from: &'a [T], to: &'a [T], key: impl Fn(&'a T) -> K) -> Option<Self> {
        if from == to {
            return None;
        }
        let old: HashMap<K, &T> = from.iter().map(|t| (key(t), t)).collect();
        let new: HashMap<K, &T> = to.iter().map(|t| (key(t), t)).collect();
        let everything = || Self {
            clear: true,
            removed: Vec::new(),
            upserted: (0..to.len()).map(|i| (i, None)).collect(),
        };
        if old.len() != from.len() || new.len() != to.len() {
            // Keys repeat: positions by key would be ambiguous.
            return Some(everything());
        }
        let removed: Vec<K> = from
            .iter()
            .map(&key)
            .filter(|k| !new.contains_key(k))
            .collect();
        let mut upserted = Vec::new();
        let mut kept_in_new_order = Vec::new();
        for (i, t) in to.iter().enumerate() {
            match old.get(&key(t)) {
                Some(o) if *o == t => kept_in_new_order.push(key(t)),
                o => upserted.push((i, o.copied())),
            }
        }
        // The entries left alone must keep their relative order, or insertion by position
        // would not rebuild `to`.
        let kept_in_old_order = from
            .iter()
            .filter(|t| new.get(&key(t)).is_some_and(|n| n == t))
            .map(&key);
        let in_order = kept_in_old_order.eq(kept_in_new_order.iter().copied());
        // A `clear` sends every entry of `to` once: no more than listing the changes would.
        if !in_order || upserted.len() + removed.len() > to.len() {
            return Some(everything());
        }
        Some(Self {
            clear: false,
            removed,
            upserted,
        })
    }
}

fn apply_endpoints(
    endpoints: &mut Vec<proto::Endpoint>,
    changes: proto::EndpointChanges,
    field: &str,
) -> Result<(), DeltaError> {
    let removed: HashSet<&str> = changes.removed.iter().map(String::as_str).collect();
    let mut upserted = Vec::with_capacity(changes.upserted.len());
    for (i, entry) in changes.upserted.into_iter().enumerate() {
        let endpoint = entry
            .endpoint
            .ok_or_else(|| DeltaError::Missing(format!("{field}.upserted[{i}].endpoint")))?;
        upserted.push((i, entry.index, endpoint));
    }
    let replaced: HashSet<String> = upserted.iter().map(|(_, _, e)| e.address.clone()).collect();
    if changes.clear {
        endpoints.clear();
    } else {
        endpoints.retain(|e| {
            !removed.contains(e.address.as_str()) && !replaced.contains(e.address.as_str())
        });
    }
    insert_at(endpoints, upserted, &format!("{field}.upserted"))
}

fn apply_backends(
    backends: &mut Vec<proto::Backend>,
    changes: proto::BackendChanges,
    field: &str,
) -> Result<(), DeltaError> {
    let owned = |k: BackendKey<'_>| (k.0.to_owned(), k.1.to_owned(), k.2);
    let mut old: HashMap<(String, String, u32), proto::Backend> = HashMap::new();
    if changes.clear {
        backends.clear();
    } else {
        let removed: HashSet<BackendKey<'_>> =
            changes.removed.iter().map(|s| ref_key(Some(s))).collect();
        let replaced: HashSet<BackendKey<'_>> = changes
            .upserted
            .iter()
            .map(|b| ref_key(b.service.as_ref()))
            .collect();
        for backend in std::mem::take(backends) {
            let key = backend_key(&backend);
            if removed.contains(&key) {
                continue;
            }
            if replaced.contains(&key) {
                old.insert(owned(key), backend);
            } else {
                backends.push(backend);
            }
        }
    }
    let mut upserted = Vec::with_capacity(changes.upserted.len());
    for (i, change) in changes.upserted.into_iter().enumerate() {
        let service = change
            .service
            .ok_or_else(|| DeltaError::Missing(format!("{field}.upserted[{i}].service")))?;
        let mut endpoints = old
            .remove(&owned(ref_key(Some(&service))))
            .map(|b| b.endpoints)
            .unwrap_or_default();
        if let Some(changes) = change.endpoints {
            apply_endpoints(
                &mut endpoints,
                changes,
                &format!("{field}.upserted[{i}].endpoints"),
            )?;
        }
        upserted.push((
            i,
            change.index,
            proto::Backend {
                service: Some(service),
                endpoints,
                found: change.found,
            },
        ));
    }
    insert_at(backends, upserted, &format!("{field}.upserted"))
}

/// Inserts each entry at its position, in ascending order of position.
fn insert_at<T>(
    set: &mut Vec<T>,
    mut entries: Vec<(usize, u32, T)>,
    field: &str,
) -> Result<(), DeltaError> {
    entries.sort_by_key(|(_, index, _)| *index);
    for (i, index, entry) in entries {
        let at = index as usize;
        if at > set.len() {
            return Err(DeltaError::Index {
                field: format!("{field}[{i}].index"),
                index,
                len: set.len(),
            });
        }
        set.insert(at, entry);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
