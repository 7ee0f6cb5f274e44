//! Who is subscribed, to what, and at which version: what an operator reads to find stale
//! subscribers.
//!
//! The map is locked only when a subscriber comes or goes (or when it is listed); each entry has
//! its own lock, which only its Watch stream and listings take, so ACKs from thousands of
//! subscribers never contend on one lock. What changes with every version (the versions sent
//! and acknowledged, the messages counted by kind) is kept in atomics beside the entry
//! ([`Versions`]): an ACK is two atomic stores, no lock at all, and a listing reads them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use mesh_core::SpiffeId;
use mesh_core::snapshot::{DestinationKey, ServiceName};

use super::propagation::Propagation;

/// One Watch subscriber as the control service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberStatus {
    /// Unique for the life of the process.
    pub id: u64,
    /// The instance name it gave (a pod or host name).
    pub node: String,
    /// Where it connected from.
    pub remote_addr: SocketAddr,
    /// The SPIFFE ID of its client certificate.
    pub identity: SpiffeId,
    /// The service it serves, if it named one.
    pub own_service: Option<ServiceName>,
    /// The destinations it watches, in the order it asked (duplicates removed).
    pub destinations: Vec<DestinationKey>,
    /// When it subscribed.
    pub connected_at: SystemTime,
    /// The version of the last snapshot sent to it (0 before the first).
    pub last_sent_version: u64,
    /// The last version it accepted, if any.
    pub last_acked_version: Option<u64>,
    /// The last version it rejected, with its reason.
    pub last_nack: Option<Nack>,
    /// When the certificate it connected with expires.
    pub certificate_expires: Option<SystemTime>,
    /// The key identifier (hex) of the CA that signed the certificate it connected with: the
    /// root, for the control service's own CA (see a root rotation on `/subscribers`).
    pub certificate_issuer: Option<String>,
    /// The gRPC services it says it serves (`package.Service`), for operators' checks.
    pub grpc_services: Vec<String>,
    /// Whether it takes increments (it said so when it subscribed).
    pub incremental: bool,
    /// Full snapshots sent to it.
    pub full_snapshots_sent: u64,
    /// Increments sent to it.
    pub increments_sent: u64,
    /// Full snapshots it asked for because it could not apply an increment (a gap).
    pub resyncs: u64,
}

/// A snapshot version a subscriber refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The version refused.
    pub version: u64,
    /// The whole reason, as the subscriber wrote it (at most 1 KiB kept).
    pub error: String,
    /// The reason by field, when the subscriber gave it (at most [`MAX_NACK_DETAILS`] kept).
    pub details: Vec<NackDetail>,
}

/// The most [`NackDetail`]s kept of one NACK: enough to see what is wrong, bounded whatever a
/// subscriber sends.
pub const MAX_NACK_DETAILS: usize = 32;

/// One field of a refused snapshot, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackDetail {
    /// The field's path in the snapshot (`destinations[0].routes[1].rules[0].filters[0]`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
    /// The kind of problem (`invalid_field`, `trust_bundle`; see `mesh_core::proto`).
    pub code: String,
}

/// Every live subscriber.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
    /// How long config versions take to reach their subscribers.
    pub(crate) propagation: Propagation,
}

/// One subscriber's entry: what changes now and then under a lock, what changes with every
/// version in atomics.
type Entry = (Arc<Mutex<SubscriberStatus>>, Arc<Versions>);

/// The per-version record of one subscriber, written by its stream without a lock.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    sent: AtomicU64,
    /// The highest version acknowledged, plus one (0: none yet).
    acked: AtomicU64,
    full: AtomicU64,
    increments: AtomicU64,
    resyncs: AtomicU64,
}

/// A subscriber's entry; dropping it removes the entry.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    id: u64,
    entry: Arc<Mutex<SubscriberStatus>>,
    versions: Arc<Versions>,
}

// === impl Registry ===

impl Registry {
    /// Adds `status` under a fresh id (its `id` field is overwritten).
    pub(crate) fn register(self: &Arc<Self>, mut status: SubscriberStatus) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        status.id = id;
        let versions = Arc::new(Versions::default());
        versions
            .sent
            .store(status.last_sent_version, Ordering::Relaxed);
        let entry = Arc::new(Mutex::new(status));
        lock(&self.entries).insert(id, (entry.clone(), versions.clone()));
        Registration {
            registry: self.clone(),
            id,
            entry,
            versions,
        }
    }

    /// Every subscriber, by id.
    pub(crate) fn list(&self) -> Vec<SubscriberStatus> {
        // Clone the handles first so the map lock is not held while entries are read.
        let entries: Vec<_> = lock(&self.entries).values().cloned().collect();
        let mut list: Vec<_> = entries
            .iter()
            .map(|(entry, versions)| {
                let mut status = lock(entry).clone();
                versions.fill(&mut status);
                status
            })
            .collect();
        list.sort_by_key(|s| s.id);
        list
    }
}

// === impl Registration ===

impl Registration {
    /// The subscriber's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Changes the subscriber's entry.
    pub(crate) fn update(&self, f: impl FnOnce(&mut SubscriberStatus)) {
        f(&mut lock(&self.entry));
    }

    /// Records `version` as sent, as an increment or a full snapshot.
    pub(crate) fn sent(&self, version: u64, increment: bool) {
        let v = &self.versions;
        v.sent.store(version, Ordering::Relaxed);
        let kind = if increment { &v.increments } else { &v.full };
        kind.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an ACK of `version`; returns whether it is newer than any acknowledged before.
    pub(crate) fn acked(&self, version: u64) -> bool {
        self.versions
            .acked
            .fetch_max(version + 1, Ordering::Relaxed)
            < version + 1
    }

    /// The last version sent and the last acknowledged.
    pub(crate) fn versions(&self) -> (u64, Option<u64>) {
        let v = &self.versions;
        let acked = v.acked.load(Ordering::Relaxed);
        (v.sent.load(Ordering::Relaxed), acked.checked_sub(1))
    }

    /// Records a resync the subscriber asked for.
    pub(crate) fn resynced(&self) {
        self.versions.resyncs.fetch_add(1, Ordering::Relaxed);
    }
}

// === impl Versions ===

impl Versions {
    /// Copies the record into `status`.
    fn fill(&self, status: &mut SubscriberStatus) {
        status.last_sent_version = self.sent.load(Ordering::Relaxed);
        status.last_acked_version = self.acked.load(Ordering::Relaxed).checked_sub(1);
        status.full_snapshots_sent = self.full.load(Ordering::Relaxed);
        status.increments_sent = self.increments.load(Ordering::Relaxed);
        status.resyncs = self.resyncs.load(Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry.entries).remove(&self.id);
    }
}

/// Locks `mutex`; a panic while it was held left plain data behind, still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use mesh_core::testing::trust_domain as td;

    use super::*;

    fn status(node: &str) -> SubscriberStatus {
        let td = td();
        SubscriberStatus {
            id: 0,
            node: node.to_owned(),
            remote_addr: "127.0.0.1:1".parse().expect("valid"),
            identity: SpiffeId::from_service_account(&td, "default", "a").expect("valid"),
            own_service: None,
            destinations: vec![],
            connected_at: SystemTime::now(),
            last_sent_version: 0,
            last_acked_version: None,
            last_nack: None,
            certificate_expires: None,
            certificate_issuer: None,
            grpc_services: Vec::new(),
            incremental: false,
            full_snapshots_sent: 0,
            increments_sent: 0,
            resyncs: 0,
        }
    }

    #[test]
    fn entries_live_as_long_as_their_registration() {
        let registry = Arc::new(Registry::default());
        let a = registry.register(status("a"));
        let b = registry.register(status("b"));
        assert_ne!(a.id(), b.id());
        assert!(b.acked(3));
        assert!(!b.acked(2), "an older ACK changes nothing");
        b.sent(4, true);
        let list = registry.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].node, "a");
        assert_eq!(list[1].last_acked_version, Some(3));
        assert_eq!((list[1].last_sent_version, list[1].increments_sent), (4, 1));
        assert_eq!(list[0].last_acked_version, None);
        drop(a);
        let list = registry.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].node, "b");
    }
}
