//! The config in force: one immutable, versioned [`State`] in a `watch` channel that every
//! Watch stream reads its projection from.

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_core::config::ValidConfig;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

/// The config at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// 1 for the first config, then one more for every accepted change.
    pub version: u64,
    /// The validated services.
    pub config: ValidConfig,
    /// The trust domain's roots, sent to every subscriber (several while roots rotate).
    pub trust_bundle: Arc<Vec<CertificateDer<'static>>>,
    /// The JWK Set last fetched from each `jwksUri` of the config (see the `jwks` module); a URI
    /// never fetched successfully is absent.
    pub jwks: Arc<Jwks>,
}

/// JWK Set documents by the URI they were fetched from.
pub type Jwks = BTreeMap<String, Arc<str>>;

/// Owns the sending side of the state channel. While it lives, Watch streams keep streaming;
/// when it is dropped they end.
#[derive(Debug)]
pub(crate) struct StateStore {
    tx: watch::Sender<Arc<State>>,
}

// === impl StateStore ===

impl StateStore {
    /// A store at version 1 holding `config` and the roots in `trust_bundle`.
    pub(crate) fn new(config: ValidConfig, trust_bundle: Vec<CertificateDer<'static>>) -> Self {
        let (tx, _) = watch::channel(Arc::new(State {
            version: 1,
            config,
            trust_bundle: Arc::new(trust_bundle),
            jwks: Arc::default(),
        }));
        Self { tx }
    }

    /// A receiver that sees the current state and every later one.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.tx.subscribe()
    }

    /// The state in force.
    pub(crate) fn current(&self) -> Arc<State> {
        self.tx.borrow().clone()
    }

    /// Publishes `config` as the next version, unless it equals the config in force (an edit
    /// of comments or of tokens only). Returns the new version when one was published.
    pub(crate) fn publish(&self, config: ValidConfig) -> Option<u64> {
        let mut published = None;
        self.tx.send_if_modified(|current| {
            if current.config == config {
                return false;
            }
            let version = current.version + 1;
            *current = Arc::new(State {
                version,
                config,
                trust_bundle: current.trust_bundle.clone(),
                jwks: current.jwks.clone(),
            });
            published = Some(version);
            true
        });
        published
    }

    /// Publishes a new set of roots as the next version, unless it equals the set in force.
    pub(crate) fn publish_trust_bundle(
        &self,
        trust_bundle: Vec<CertificateDer<'static>>,
    ) -> Option<u64> {
        let mut published = None;
        self.tx.send_if_modified(|current| {
            if *current.trust_bundle == trust_bundle {
                return false;
            }
            let version = current.version + 1;
            *current = Arc::new(State {
                version,
                config: current.config.clone(),
                trust_bundle: Arc::new(trust_bundle),
                jwks: current.jwks.clone(),
            });
            published = Some(version);
            true
        });
        published
    }

    /// Publishes the JWK Sets last fetched as the next version, unless they equal those in
    /// force: subscribers whose issuers' keys changed are sent them.
    pub(crate) fn publish_jwks(&self, jwks: Jwks) -> Option<u64> {
        let mut published = None;
        self.tx.send_if_modified(|current| {
            if *current.jwks == jwks {
                return false;
            }
            let version = current.version + 1;
            *current = Arc::new(State {
                version,
                config: current.config.clone(),
                trust_bundle: current.trust_bundle.clone(),
                jwks: Arc::new(jwks),
            });
            published = Some(version);
            true
        });
        published
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::testing::trust_domain as td;

    use super::*;

    fn config(port: u16) -> ValidConfig {
        let td = td();
        let yaml = format!(
            "services:\n  - name: greeter\n    endpoints:\n      - address: 127.0.0.1:{port}\n        \
             identity: spiffe://mesh.local/ns/default/sa/greeter\n"
        );
        crate::source::file::parse(&yaml, &td).expect("valid").mesh
    }

    #[test]
    fn versions_start_at_one_and_grow_only_on_change() {
        let store = StateStore::new(config(1), Vec::new());
        let mut rx = store.subscribe();
        assert_eq!(store.current().version, 1);
        assert_eq!(store.publish(config(1)), None);
        assert!(!rx.has_changed().expect("open"));
        assert_eq!(store.publish(config(2)), Some(2));
        assert!(rx.has_changed().expect("open"));
        assert_eq!(rx.borrow_and_update().version, 2);
        assert_eq!(store.publish(config(1)), Some(3));
        assert_eq!(store.current().version, 3);
    }
}
