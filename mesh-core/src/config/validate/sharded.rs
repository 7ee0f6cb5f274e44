//! A map kept per namespace, each namespace's entries behind an `Arc`: a copy of the whole
//! shares every namespace, and a change copies only the namespace it is in. What lets a
//! config change in one service cost in proportion to its namespace, not the cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Entries by namespace, then by key (in `K`'s order within a namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sharded<K, V> {
    /// Equality compares the `Arc`s by pointer first (for `Eq` contents), so two configs
    /// that share most namespaces compare in time proportional to the ones they do not.
    shards: BTreeMap<String, Arc<BTreeMap<K, V>>>,
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Self {
            shards: BTreeMap::new(),
        }
    }
}

// === impl Sharded ===

impl<K: Ord + Clone, V: Clone> Sharded<K, V> {
    /// The entry `key` of `namespace`.
    pub(crate) fn get<Q>(&self, namespace: &str, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.shards.get(namespace)?.get(key)
    }

    /// Sets `key` of `namespace` to `value`, copying that namespace's entries if another
    /// map shares them.
    pub(crate) fn insert(&mut self, namespace: &str, key: K, value: V) {
        let shard = match self.shards.get_mut(namespace) {
            Some(shard) => shard,
            None => self.shards.entry(namespace.to_owned()).or_default(),
        };
        Arc::make_mut(shard).insert(key, value);
    }

    /// Removes `key` of `namespace` (and the namespace once it is empty).
    pub(crate) fn remove(&mut self, namespace: &str, key: &K) {
        let Some(shard) = self.shards.get_mut(namespace) else {
            return;
        };
        if !shard.contains_key(key) {
            return;
        }
        let shard = Arc::make_mut(shard);
        shard.remove(key);
        if shard.is_empty() {
            self.shards.remove(namespace);
        }
    }

    /// Every entry, by namespace then key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &K, &V)> {
        self.shards.iter().flat_map(|(namespace, shard)| {
            shard.iter().map(move |(k, v)| (namespace.as_str(), k, v))
        })
    }

    /// The namespaces that hold entries, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.shards.keys().map(String::as_str)
    }

    /// How many namespaces hold entries.
    #[cfg(test)]
    pub(crate) fn namespaces(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_copies_only_its_namespace_and_equality_follows_content() {
        let mut a: Sharded<String, u32> = Sharded::default();
        a.insert("ns-1", "x".into(), 1);
        a.insert("ns-2", "y".into(), 2);
        let mut b = a.clone();
        b.insert("ns-2", "y".into(), 3);
        assert!(Arc::ptr_eq(&a.shards["ns-1"], &b.shards["ns-1"]));
        assert!(!Arc::ptr_eq(&a.shards["ns-2"], &b.shards["ns-2"]));
        assert_ne!(a, b);
        b.insert("ns-2", "y".into(), 2);
        assert_eq!(a, b, "same content, different copies");
        b.remove("ns-2", &"y".to_owned());
        assert_eq!(b.namespaces(), 1);
        assert_eq!(b.get("ns-2", "y"), None);
        let all: Vec<(&str, &String, &u32)> = a.iter().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].0, "ns-1");
    }
}
