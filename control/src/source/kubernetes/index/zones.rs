//! Instance zones kept as EndpointSlices and Pods change, so that a replicas change gives
//! the zones that moved without reading every slice and pod. A node's zone is the one its
//! endpoints carry (the last one in slice order, then endpoint order, as a whole build reads
//! them); a pod's zone is its node's.

use std::collections::{BTreeMap, BTreeSet};

use mesh_core::config::{MAX_ZONE_BYTES, ZoneChange};

use super::{ClusterIndex, ObjectKey, PodSummary, SliceSummary, SpecCache};

/// Nodes' zones and the pods on each node, with what moved since the last build.
#[derive(Debug, Default)]
pub(super) struct ZoneIndex {
    /// For each node, the zone each slice gives it.
    nodes: BTreeMap<String, BTreeMap<ObjectKey, String>>,
    /// The pods on each node.
    pods_on: BTreeMap<String, BTreeSet<ObjectKey>>,
    /// Pods that came, went or changed node since the last build.
    pods: BTreeSet<ObjectKey>,
    /// Nodes whose zone changed since the last build.
    moved: BTreeSet<String>,
}

/// The zone `slice` gives each node: its last endpoint on the node that names a zone.
fn slice_nodes(slice: &SliceSummary) -> BTreeMap<String, String> {
    let mut nodes = BTreeMap::new();
    for endpoint in &slice.endpoints {
        if let (Some(node), false) = (&endpoint.node, endpoint.zone.is_empty()) {
            nodes.insert(node.clone(), endpoint.zone.clone());
        }
    }
    nodes
}

/// Before the slice `key` becomes `summary` (`None`: deleted): moves its nodes' zones.
pub(super) fn touch_slice(
    index: &mut ClusterIndex,
    key: &ObjectKey,
    summary: Option<&SliceSummary>,
) {
    let old = index
        .slices
        .items
        .get(key)
        .map(slice_nodes)
        .unwrap_or_default();
    let new = summary.map(slice_nodes).unwrap_or_default();
    if old == new {
        return;
    }
    let zones = &mut index.cache().zones;
    for node in old.keys().chain(new.keys()) {
        let before = zones.zone_of_node(node).map(str::to_owned);
        let slices = zones.nodes.entry(node.clone()).or_default();
        match new.get(node) {
            Some(zone) => {
                slices.insert(key.clone(), zone.clone());
            }
            None => {
                slices.remove(key);
            }
        }
        if slices.is_empty() {
            zones.nodes.remove(node);
        }
        if zones.zone_of_node(node) != before.as_deref() {
            zones.moved.insert(node.clone());
        }
    }
}

/// Before the pod `key` becomes `summary` (`None`: deleted): moves it between nodes.
pub(super) fn touch_pod(index: &mut ClusterIndex, key: &ObjectKey, summary: Option<&PodSummary>) {
    let old = index.pods.items.get(key).map(|pod| pod.node.clone());
    let new = summary.map(|pod| pod.node.clone());
    if old == new {
        return;
    }
    let zones = &mut index.cache().zones;
    if let Some(Some(node)) = &old
        && let Some(pods) = zones.pods_on.get_mut(node)
    {
        pods.remove(key);
        if pods.is_empty() {
            zones.pods_on.remove(node);
        }
    }
    if let Some(Some(node)) = new {
        zones.pods_on.entry(node).or_default().insert(key.clone());
    }
    zones.pods.insert(key.clone());
}

/// Rebuilds `cache.zones` from every slice and pod (at a whole build).
pub(super) fn rebuild(index: &ClusterIndex, cache: &mut SpecCache) {
    let mut zones = ZoneIndex::default();
    for (key, slice) in &index.slices.items {
        for (node, zone) in slice_nodes(slice) {
            zones
                .nodes
                .entry(node)
                .or_default()
                .insert(key.clone(), zone);
        }
    }
    for (key, pod) in &index.pods.items {
        if let Some(node) = &pod.node {
            zones
                .pods_on
                .entry(node.clone())
                .or_default()
                .insert(key.clone());
        }
    }
    cache.zones = zones;
}

// === impl ZoneIndex ===

impl ZoneIndex {
    /// The zone of `node`, when its endpoints name one.
    fn zone_of_node(&self, node: &str) -> Option<&str> {
        let (_, zone) = self.nodes.get(node)?.last_key_value()?;
        Some(zone)
    }

    /// The zone of every pod that came, went or changed node, and of every pod on a node
    /// whose zone changed, since the last build (as `index` has them now).
    pub(super) fn changes(&mut self, index: &ClusterIndex) -> Vec<ZoneChange> {
        let mut pods = std::mem::take(&mut self.pods);
        for node in std::mem::take(&mut self.moved) {
            if let Some(on) = self.pods_on.get(&node) {
                pods.extend(on.iter().cloned());
            }
        }
        pods.into_iter()
            .map(|key| {
                let zone = index
                    .pods
                    .items
                    .get(&key)
                    .and_then(|pod| pod.node.as_deref())
                    .and_then(|node| self.zone_of_node(node))
                    .filter(|zone| zone.len() <= MAX_ZONE_BYTES)
                    .map(str::to_owned);
                ZoneChange {
                    namespace: key.namespace,
                    instance: key.name,
                    zone,
                }
            })
            .collect()
    }
}
