//! Projections shared between Watch subscribers: the snapshot a subscription gets at one
//! version is computed, converted to its wire form and passed through the wire transform once,
//! however many subscribers hold the same subscription.
//!
//! What determines a projection is its [`ProjectionKey`]: the destinations asked for, the
//! subscriber's namespace (consumer routes depend on it) and its own service (the inbound
//! policy). Thousands of subscribers of one destination share one key, so a config change costs
//! one projection and one conversion, and each subscriber only clones the wire message.
//!
//! A key's content ([`Projected`]) is carried over from one version to the next as the same
//! `Arc` when it did not change, so a subscriber tells "unchanged" from "changed" by comparing
//! pointers and keeps no copy of what it was sent.
//!
//! A key none of whose services changed (each is the same copy in the new config as in the
//! one it was last projected from, see [`mesh_core::config::ValidConfig::same_service`]), with
//! the same roots and JWK Sets, keeps its content without projecting or comparing it again:
//! a change to one service costs the keys that name it, not every key.
//!
//! Increments are shared the same way: when a key's content changes, the increment from the
//! content it replaced is computed once ([`mesh_core::delta::diff`] of the two wire messages)
//! and every subscriber that was sent the replaced content gets it; a subscriber that skipped
//! versions (it was slow, or lost a message) gets one from what it holds, computed once per
//! distinct base and kept with the projection ([`MAX_BASES`] of them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;

use mesh_core::authz::InboundPolicy;
use mesh_core::snapshot::{Destination, DestinationKey, ServiceName, Snapshot};
use mesh_core::{delta, proto};
use rustls_pki_types::CertificateDer;

use super::encoded::{self, Encoded, WatchMessage};
use super::skew::WireTransform;
use crate::state::State;

/// What a subscriber's projection depends on besides the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProjectionKey {
    /// The destinations asked for, in order, without duplicates.
    pub(crate) destinations: Vec<DestinationKey>,
    /// The namespace of the subscriber's verified identity: it sees that namespace's consumer
    /// routes.
    pub(crate) consumer: Option<String>,
    /// The service the subscriber serves, whose inbound policy it gets.
    pub(crate) own_service: Option<ServiceName>,
    /// The subscriber's zone as the config knows it (empty: unknown). Subscribers of one
    /// zone share a projection.
    pub(crate) zone: String,
}

/// What a subscriber is sent, bar the version number.
#[derive(Debug)]
pub(crate) struct Projected {
    destinations: Vec<Destination>,
    inbound: Option<InboundPolicy>,
    /// Compared by pointer: a new set of roots is a new `Arc`.
    trust_bundle: Arc<Vec<CertificateDer<'static>>>,
    zone: String,
}

/// One key's projection at one version.
#[derive(Debug)]
pub(crate) struct Projection {
    /// The state's version.
    pub(crate) version: u64,
    /// What it holds; the same `Arc` as at the previous version when nothing changed.
    pub(crate) content: Arc<Projected>,
    /// The content this one replaced and differs from, so a subscriber that was sent it knows
    /// without comparing that it must be sent this one.
    replaced: Option<Arc<Projected>>,
    /// The message as it goes on the wire (wire transform applied).
    pub(crate) wire: proto::Snapshot,
    /// Its encoding, made when a subscriber is first sent the full snapshot and shared by all
    /// that are (most subscribers are sent increments after their first).
    encoded: OnceLock<Bytes>,
    /// Increments to this projection, by the content they start from; `None` where the change
    /// cannot be said as an increment. The first, from `replaced`, is made with the projection.
    increments: Mutex<Vec<Increment>>,
    /// The state it was projected from: the next version's projection reuses the content when
    /// none of the key's services changed since.
    state: Arc<State>,
}

/// An increment, encoded (`None`: the change is no increment), and the content it starts
/// from.
type Increment = (Arc<Projected>, Option<Arc<Encoded>>);

/// The most bases a projection keeps increments from: subscribers that skipped versions hold
/// one of a few older contents; one further behind gets its increment made afresh.
const MAX_BASES: usize = 4;

/// The latest projection of every live key.
#[derive(Debug)]
pub(crate) struct ProjectionCache {
    /// Applied to every wire message (the identity but in version-skew tests).
    transform: WireTransform,
    /// How often subscribers are asked to report their calls (`edge_report_interval_ms`).
    report_interval_ms: u32,
    /// The version the cache was last swept at, and each key's latest projection. A key whose
    /// only holder is this map belongs to no subscriber any more and is dropped at the next
    /// version.
    inner: Mutex<(u64, Entries)>,
    /// How many times a key's content was projected from the config (tests count them).
    #[cfg(test)]
    projected: std::sync::atomic::AtomicU64,
}

/// Each key's latest projection.
type Entries = HashMap<Arc<ProjectionKey>, Arc<Projection>>;

// === impl Projected ===

impl Projected {
    fn of(state: &State, key: &ProjectionKey) -> Self {
        let consumer = key.consumer.as_deref();
        Self {
            destinations: key
                .destinations
                .iter()
                .map(|d| state.config.destination_for(d, consumer))
                .collect(),
            inbound: key.own_service.as_ref().map(|own| {
                let mut inbound = state.config.inbound(own);
                crate::jwks::fill(&mut inbound, &state.jwks);
                inbound
            }),
            trust_bundle: state.trust_bundle.clone(),
            zone: key.zone.clone(),
        }
    }

    fn same_content(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.trust_bundle, &other.trust_bundle)
            && self.inbound == other.inbound
            && self.zone == other.zone
            && self.destinations == other.destinations
    }
}

// === impl Projection ===

impl Projection {
    /// Whether a subscriber that was last sent `last` must be sent this projection: its content
    /// differs from `last` (or nothing was sent yet).
    pub(crate) fn changed_since(&self, last: Option<&Arc<Projected>>) -> bool {
        let Some(last) = last else {
            return true;
        };
        if Arc::ptr_eq(last, &self.content) {
            return false;
        }
        if self.replaced.as_ref().is_some_and(|r| Arc::ptr_eq(r, last)) {
            return true;
        }
        // Sent from an older version or another key (a new `subscribe`): compare.
        !last.same_content(&self.content)
    }

    /// Whether projecting `key` on `state` would give this projection's content: the roots,
    /// the JWK Sets and every service the key names are the same copies as in the state this
    /// was projected from.
    fn unchanged_in(&self, state: &State, key: &ProjectionKey) -> bool {
        let (old, new) = (&self.state, state);
        Arc::ptr_eq(&old.trust_bundle, &new.trust_bundle)
            && Arc::ptr_eq(&old.jwks, &new.jwks)
            && key
                .destinations
                .iter()
                .map(|d| &d.service)
                .chain(&key.own_service)
                .all(|service| new.config.same_service(&old.config, service))
    }

    /// The full snapshot as one subscriber's stream item.
    pub(crate) fn full_message(&self) -> WatchMessage {
        WatchMessage::full(
            self.encoded
                .get_or_init(|| encoded::encode(&self.wire))
                .clone(),
        )
    }

    /// The increment from `last` (the projection a subscriber was last sent) to this one, with
    /// `base_version` still to be set to the version the subscriber holds; `None` when the
    /// change is no increment (see [`mesh_core::delta::diff`]). Made and encoded once per
    /// distinct base.
    pub(crate) fn increment_from(&self, last: &Projection) -> Option<Arc<Encoded>> {
        {
            let increments = lock(&self.increments);
            if let Some((_, increment)) = increments
                .iter()
                .find(|(base, _)| Arc::ptr_eq(base, &last.content))
            {
                return increment.clone();
            }
        }
        let increment = delta::diff(&last.wire, &self.wire).map(|i| Arc::new(Encoded::new(i)));
        let mut increments = lock(&self.increments);
        if increments.len() < MAX_BASES {
            increments.push((last.content.clone(), increment.clone()));
        }
        increment
    }
}

// === impl ProjectionCache ===

impl ProjectionCache {
    /// An empty cache whose wire messages go through `transform`.
    pub(crate) fn new(transform: WireTransform) -> Self {
        Self {
            transform,
            report_interval_ms: 0,
            inner: Mutex::default(),
            #[cfg(test)]
            projected: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The cache, its wire messages asking subscribers to report their calls every
    /// `interval_ms` (0: never).
    pub(crate) fn with_report_interval(mut self, interval_ms: u32) -> Self {
        self.report_interval_ms = interval_ms;
        self
    }

    /// The hooks every message goes through (the identity but in tests).
    pub(crate) fn transform(&self) -> &WireTransform {
        &self.transform
    }

    /// Forgets `key`'s projection unless a stream still holds the key that it is stored under.
    /// A stream calls this with its key when it ends or changes its subscription, so what it
    /// named is not kept until the next version (which may never come).
    pub(crate) fn release(&self, key: Arc<ProjectionKey>) {
        let mut inner = lock(&self.inner);
        let entries = &mut inner.1;
        let Some((stored, _)) = entries.get_key_value(&*key) else {
            return;
        };
        // The map's own reference, and the caller's when it is the same `Arc`.
        let ours = 1 + usize::from(Arc::ptr_eq(stored, &key));
        if Arc::strong_count(stored) <= ours {
            entries.remove(&*key);
        }
    }

    /// How many keys have a projection stored (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).1.len()
    }

    /// The projection of `key` on `state`, computed once per key and version.
    pub(crate) fn project(&self, state: &Arc<State>, key: &Arc<ProjectionKey>) -> Arc<Projection> {
        let previous = {
            let mut inner = lock(&self.inner);
            let (swept, entries) = &mut *inner;
            if state.version > *swept {
                *swept = state.version;
                // Keys no subscriber holds any more.
                entries.retain(|key, _| Arc::strong_count(key) > 1);
            }
            match entries.get(&**key) {
                Some(p) if p.version == state.version => return p.clone(),
                // A task still on an older state than the cache (it raced a publish): serve it
                // without touching the cache; it is woken again for the newer one.
                Some(p) if p.version > state.version => None,
                Some(p) => Some(Some(p.clone())),
                None => Some(None),
            }
        };
        let cached = previous.is_some();
        let previous = previous.flatten();
        let projection = match &previous {
            Some(old) if !self.transform.rewrites() && old.unchanged_in(state, key) => {
                Arc::new(Projection {
                    version: state.version,
                    content: old.content.clone(),
                    replaced: None,
                    wire: proto::Snapshot {
                        version: state.version,
                        ..old.wire.clone()
                    },
                    encoded: OnceLock::new(),
                    increments: Mutex::default(),
                    state: state.clone(),
                })
            }
            _ => self.project_afresh(state, key, previous),
        };
        if !cached {
            return projection;
        }
        let mut inner = lock(&self.inner);
        let entry = inner
            .1
            .entry(key.clone())
            .or_insert_with(|| projection.clone());
        if entry.version < state.version {
            *entry = projection;
        }
        // Another task may have stored this version first: everyone uses the stored one, so
        // that its content `Arc` is the one carried on.
        entry.clone()
    }

    /// How many times a key's content was projected from the config so far.
    #[cfg(test)]
    pub(crate) fn projected(&self) -> u64 {
        self.projected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The projection of `key` on `state` computed from the config, carrying `previous`'s
    /// content over when it is the same.
    fn project_afresh(
        &self,
        state: &Arc<State>,
        key: &ProjectionKey,
        previous: Option<Arc<Projection>>,
    ) -> Arc<Projection> {
        #[cfg(test)]
        self.projected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Computed outside the lock: a large subscription must not hold up the others.
        let fresh = Projected::of(state, key);
        let (content, replaced) = match &previous {
            Some(old) if old.content.same_content(&fresh) => (old.content.clone(), None),
            old => (Arc::new(fresh), old.clone()),
        };
        let snapshot = Snapshot {
            version: state.version,
            destinations: content.destinations.clone(),
            inbound: content.inbound.clone(),
            trust_bundle: content.trust_bundle.to_vec(),
            zone: content.zone.clone(),
        };
        // Before the transform, which may play a control service that asks for no reports.
        let wire = self.transform.apply(proto::Snapshot {
            edge_report_interval_ms: self.report_interval_ms,
            ..proto::Snapshot::from(&snapshot)
        });
        // The increment from the content replaced, made here once rather than by the first
        // subscriber to ask (outside the cache's lock, like the projection).
        let increments = match &replaced {
            Some(old) if self.transform.increments() => {
                let increment = delta::diff(&old.wire, &wire).map(|i| Arc::new(Encoded::new(i)));
                vec![(old.content.clone(), increment)]
            }
            _ => Vec::new(),
        };
        Arc::new(Projection {
            version: state.version,
            content,
            replaced: replaced.map(|old| old.content.clone()),
            wire,
            encoded: OnceLock::new(),
            increments: Mutex::new(increments),
            state: state.clone(),
        })
    }
}

/// Locks `mutex`; a panic while it was held left a map of immutable values, still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use mesh_core::config::MeshConfig;
    use mesh_core::testing::trust_domain as td;

    use super::*;

    fn state(version: u64, yaml: &str, roots: &Arc<Vec<CertificateDer<'static>>>) -> Arc<State> {
        let config: MeshConfig = serde_yaml::from_str(yaml).expect("valid YAML");
        Arc::new(State {
            version,
            config: config.validate(&td()).expect("valid config"),
            trust_bundle: roots.clone(),
            jwks: Arc::default(),
        })
    }

    fn services(greeter: &str, other: &str) -> String {
        format!(
            "services:
  - name: greeter
    endpoints: [{{address: \"{greeter}\", identity: spiffe://mesh.local/ns/default/sa/greeter}}]
  - name: other
    endpoints: [{{address: \"{other}\", identity: spiffe://mesh.local/ns/default/sa/other}}]
"
        )
    }

    fn key(destination: &str) -> Arc<ProjectionKey> {
        Arc::new(ProjectionKey {
            destinations: vec![destination.parse().expect("valid")],
            consumer: Some("default".to_owned()),
            own_service: None,
            zone: String::new(),
        })
    }

    #[test]
    fn one_projection_per_key_and_version_shared_by_every_holder() {
        let (cache, roots) = (
            ProjectionCache::new(WireTransform::default()),
            Arc::default(),
        );
        let v1 = state(1, &services("10.0.0.1:80", "10.0.0.2:80"), &roots);
        let (a, b) = (key("greeter.default"), key("greeter.default"));
        let first = cache.project(&v1, &a);
        let second = cache.project(&v1, &b);
        assert!(
            Arc::ptr_eq(&first, &second),
            "equal keys share the projection"
        );
        assert_eq!(first.wire.version, 1);
        assert!(first.changed_since(None), "a new subscriber is sent it");
        assert!(!first.changed_since(Some(&first.content)));
    }

    #[test]
    fn unchanged_content_is_carried_over_and_a_change_is_detected() {
        let (cache, roots) = (
            ProjectionCache::new(WireTransform::default()),
            Arc::default(),
        );
        let greeter = key("greeter.default");
        let v1 = cache.project(
            &state(1, &services("10.0.0.1:80", "10.0.0.2:80"), &roots),
            &greeter,
        );
        // `other` changes: greeter's subscribers are not sent anything.
        let v2 = cache.project(
            &state(2, &services("10.0.0.1:80", "10.0.0.9:80"), &roots),
            &greeter,
        );
        assert_eq!(v2.version, 2);
        assert!(
            Arc::ptr_eq(&v1.content, &v2.content),
            "the same content Arc"
        );
        assert!(!v2.changed_since(Some(&v1.content)));
        // greeter changes: its subscribers, last sent v1's content, are sent v3.
        let v3 = cache.project(
            &state(3, &services("10.0.0.5:80", "10.0.0.9:80"), &roots),
            &greeter,
        );
        assert!(v3.changed_since(Some(&v1.content)));
        assert_eq!(v3.wire.destinations[0].endpoints[0].address, "10.0.0.5:80");
        // The increment from v1 is made once and shared; it carries greeter's new endpoint.
        let increment = v3.increment_from(&v1).expect("an increment");
        assert!(Arc::ptr_eq(
            &increment,
            &v3.increment_from(&v1).expect("an increment")
        ));
        let shared = increment.for_subscriber(0).decode();
        assert_eq!(shared.version, 3);
        assert!(shared.destinations.is_empty());
        let mut held = v1.wire.clone();
        held.version = 2; // what a subscriber sent v2 holds: v1's content at version 2
        // As the subscriber decodes it: the shared bytes with its own base version.
        let stamped = increment.for_subscriber(2).decode();
        assert_eq!(stamped.base_version, 2);
        mesh_core::delta::apply(&mut held, stamped).expect("applies");
        assert_eq!(v3.full_message().decode(), v3.wire);
        assert_eq!(held, v3.wire);
        // New roots change every projection.
        let new_roots = Arc::new(Vec::new());
        let v4 = cache.project(
            &state(4, &services("10.0.0.5:80", "10.0.0.9:80"), &new_roots),
            &greeter,
        );
        assert!(v4.changed_since(Some(&v3.content)));
    }

    #[test]
    fn keys_no_subscriber_holds_are_dropped_at_the_next_version() {
        let (cache, roots) = (
            ProjectionCache::new(WireTransform::default()),
            Arc::default(),
        );
        let yaml = services("10.0.0.1:80", "10.0.0.2:80");
        let gone = key("other.default");
        cache.project(&state(1, &yaml, &roots), &gone);
        drop(gone);
        let kept = key("greeter.default");
        cache.project(&state(2, &yaml, &roots), &kept);
        let entries = &lock(&cache.inner).1;
        assert_eq!(entries.len(), 1);
        assert!(entries.contains_key(&*kept));
    }

    #[test]
    fn released_keys_are_dropped_at_once_unless_still_held() {
        let (cache, roots) = (
            ProjectionCache::new(WireTransform::default()),
            Arc::default(),
        );
        let v1 = state(1, &services("10.0.0.1:80", "10.0.0.2:80"), &roots);
        let (a, b) = (key("nowhere.default"), key("nowhere.default"));
        cache.project(&v1, &a);
        cache.project(&v1, &b);
        // `a` is the stored key; `b`, an equal one, is still held.
        cache.release(b);
        assert_eq!(cache.len(), 1, "`a` still holds it");
        cache.release(a);
        assert_eq!(cache.len(), 0, "nobody holds it");
        let c = key("greeter.default");
        cache.project(&v1, &c);
        let held = c.clone();
        cache.release(c);
        assert_eq!(cache.len(), 1, "another holder of the same Arc");
        cache.release(held);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_change_to_one_service_projects_only_the_keys_that_name_it() {
        let (cache, roots) = (
            ProjectionCache::new(WireTransform::default()),
            Arc::default(),
        );
        let v1 = state(1, &services("10.0.0.1:80", "10.0.0.2:80"), &roots);
        let (greeter, other) = (key("greeter.default"), key("other.default"));
        let (g1, o1) = (cache.project(&v1, &greeter), cache.project(&v1, &other));
        assert_eq!(cache.projected(), 2);
        // greeter's replicas change, as a discovery event changes them.
        let name: ServiceName = "greeter.default".parse().expect("valid");
        let mut spec = v1
            .config
            .service_spec(&name)
            .expect("in the config")
            .clone();
        spec.endpoints[0].address = "10.0.0.9:80".to_owned();
        let v2 = Arc::new(State {
            version: 2,
            config: v1
                .config
                .with_replicas(vec![spec], Vec::new(), &td())
                .expect("valid"),
            ..State::clone(&v1)
        });
        let (g2, o2) = (cache.project(&v2, &greeter), cache.project(&v2, &other));
        assert_eq!(
            cache.projected(),
            3,
            "only greeter's key is projected again"
        );
        assert!(g2.changed_since(Some(&g1.content)));
        assert!(
            !o2.changed_since(Some(&o1.content)),
            "other's content is carried over"
        );
        assert!(Arc::ptr_eq(&o1.content, &o2.content));
        assert_eq!(o2.wire.version, 2);
        assert_eq!(
            proto::Snapshot {
                version: 1,
                ..o2.wire.clone()
            },
            o1.wire,
            "the same message but for its version"
        );
        // A whole new config (a file edit): every key is projected again, and compared.
        let v3 = state(3, &services("10.0.0.9:80", "10.0.0.2:80"), &roots);
        let o3 = cache.project(&v3, &other);
        assert_eq!(cache.projected(), 4);
        assert!(
            Arc::ptr_eq(&o1.content, &o3.content),
            "unchanged content, compared"
        );
    }
}
