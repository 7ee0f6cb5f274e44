//! The DNS names a workload certificate carries beside its SPIFFE ID, so that a plain TLS
//! client (a gRPC client in any language, with the trust bundle and a target name override)
//! can verify a meshed server by name.
//!
//! An identity is entitled to `<service>.<namespace>.<suffix>` for every service it serves
//! (an endpoint of the service, on any port, runs as it, or the service lists it in
//! `identities`: the same rule as a Watch subscriber's own service) and every suffix of
//! [`DnsSanSuffixes`]. The default suffixes are `svc` and `svc.cluster.local`, the names
//! Kubernetes gives a Service (`greeter.default.svc`, `greeter.default.svc.cluster.local`);
//! a cluster with another domain sets its own (`--dns-san-suffixes svc,svc.example.internal`),
//! and an empty list gives certificates no DNS names at all. The bare `greeter.default` is
//! not a default: it is a relative name that resolves differently from one namespace to the
//! next, and a name in a certificate should mean one thing.
//!
//! The names come from config only, never from the CSR (see `issuer` for what happens to names
//! a CSR asks for). At most [`MAX_DNS_SANS`] names go into one certificate: an identity that
//! serves more services gets the names of the first ones in service order, and a warning says
//! which identity was cut short.
//!
//! `Certify` is a hot path (a fleet restarting): the table of names per identity is built
//! once per config version, on the first request that needs it, and every request after that
//! is an atomic load, a version comparison and a hash lookup.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_core::SpiffeId;
use mesh_core::dns::check_dns_subdomain;
use mesh_core::snapshot::ServiceName;
use tokio::sync::watch;

use crate::state::State;

/// The most DNS names one certificate carries.
pub const MAX_DNS_SANS: usize = 32;

/// The suffixes workload DNS names are made with unless told otherwise.
pub const DEFAULT_DNS_SAN_SUFFIXES: &[&str] = &["svc", "svc.cluster.local"];

/// The suffixes of workload DNS names (`<service>.<namespace>.<suffix>`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSanSuffixes(Vec<String>);

/// A suffix that cannot end a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS SAN suffix {suffix:?}: {reason}")]
pub struct InvalidDnsSuffix {
    /// The suffix given.
    pub suffix: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

// === impl DnsSanSuffixes ===

impl DnsSanSuffixes {
    /// Suffixes from a list: each a DNS name of lowercase labels (`svc.cluster.local`), without
    /// a leading or trailing dot; repeats are dropped. An empty list means no DNS names.
    pub fn new<S: AsRef<str>>(
        suffixes: impl IntoIterator<Item = S>,
    ) -> Result<Self, InvalidDnsSuffix> {
        let mut kept: Vec<String> = Vec::new();
        for suffix in suffixes {
            let suffix = suffix.as_ref();
            // Room for the shortest service and namespace (`a.b.`) within 253 characters.
            if suffix.len() > 249 {
                return Err(InvalidDnsSuffix {
                    suffix: suffix.to_owned(),
                    reason: "longer than 249 characters",
                });
            }
            check_dns_subdomain(suffix).map_err(|reason| InvalidDnsSuffix {
                suffix: suffix.to_owned(),
                reason,
            })?;
            if !kept.iter().any(|k| k == suffix) {
                kept.push(suffix.to_owned());
            }
        }
        Ok(Self(kept))
    }

    /// No DNS names.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// The suffixes, in order.
    pub fn suffixes(&self) -> &[String] {
        &self.0
    }

    /// The names of `service`: one per suffix, those longer than a DNS name may be left out.
    pub fn names_of(&self, service: &ServiceName) -> impl Iterator<Item = String> + '_ {
        let prefix = format!("{}.{}", service.name, service.namespace);
        self.0
            .iter()
            .map(move |suffix| format!("{prefix}.{suffix}"))
            .filter(|name| name.len() <= 253)
    }
}

impl Default for DnsSanSuffixes {
    fn default() -> Self {
        Self(
            DEFAULT_DNS_SAN_SUFFIXES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        )
    }
}

/// The names of every identity at one config version.
#[derive(Debug, Default)]
struct NameTable {
    version: u64,
    by_identity: HashMap<SpiffeId, Arc<[String]>>,
}

/// The DNS names each identity is entitled to, following the config in force.
#[derive(Debug)]
pub(crate) struct DnsNames {
    suffixes: DnsSanSuffixes,
    state: watch::Receiver<Arc<State>>,
    /// Built for `table.version`; version 0 is never a config's, so the first request builds.
    table: ArcSwap<NameTable>,
}

impl DnsNames {
    pub(crate) fn new(suffixes: DnsSanSuffixes, state: watch::Receiver<Arc<State>>) -> Self {
        Self {
            suffixes,
            state,
            table: ArcSwap::default(),
        }
    }

    /// The names `identity` is entitled to now (empty when it serves nothing).
    pub(crate) fn of(&self, identity: &SpiffeId) -> Arc<[String]> {
        if self.suffixes.0.is_empty() {
            return Arc::from([]);
        }
        let mut table = self.table.load_full();
        let version = self.state.borrow().version;
        if table.version != version {
            let state = self.state.borrow().clone();
            let built = Arc::new(build(&self.suffixes, &state));
            // Two requests may both build one version: the same table, stored twice.
            self.table.store(built.clone());
            table = built;
        }
        table
            .by_identity
            .get(identity)
            .cloned()
            .unwrap_or_else(|| Arc::from([]))
    }
}

/// The table for `state`.
fn build(suffixes: &DnsSanSuffixes, state: &State) -> NameTable {
    let mut services: HashMap<&SpiffeId, BTreeSet<&ServiceName>> = HashMap::new();
    for (service, identity) in state.config.serving_identities() {
        services.entry(identity).or_default().insert(service);
    }
    let by_identity = services
        .into_iter()
        .map(|(identity, services)| {
            let all: Vec<String> = services
                .iter()
                .flat_map(|service| suffixes.names_of(service))
                .collect();
            if all.len() > MAX_DNS_SANS {
                tracing::warn!(
                    %identity,
                    names = all.len(),
                    max = MAX_DNS_SANS,
                    "this identity serves more services than one certificate names; its \
                     certificates carry the first names in service order"
                );
            }
            let names: Arc<[String]> = all.into_iter().take(MAX_DNS_SANS).collect();
            (identity.clone(), names)
        })
        .collect();
    NameTable {
        version: state.version,
        by_identity,
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::testing::trust_domain;

    use super::*;

    fn state(yaml: &str, version: u64) -> State {
        State {
            version,
            config: crate::source::file::parse(yaml, &trust_domain())
                .expect("valid")
                .mesh,
            trust_bundle: Arc::default(),
            jwks: Arc::default(),
        }
    }

    fn id(namespace: &str, account: &str) -> SpiffeId {
        SpiffeId::from_service_account(&trust_domain(), namespace, account).expect("valid")
    }

    const YAML: &str = "
services:
  - name: greeter
    namespace: default
    endpoints:
      - address: 127.0.0.1:5000
        identity: spiffe://mesh.local/ns/default/sa/greeter
  - name: multi
    namespace: shop
    port: 80
    endpoints:
      - address: 127.0.0.1:6000
        identity: spiffe://mesh.local/ns/shop/sa/front
    ports:
      - port: 9090
        endpoints:
          - address: 127.0.0.1:6001
            identity: spiffe://mesh.local/ns/default/sa/greeter
";

    #[test]
    fn an_identity_gets_the_names_of_every_service_it_serves() {
        let (tx, rx) = watch::channel(Arc::new(state(YAML, 1)));
        let names = DnsNames::new(DnsSanSuffixes::default(), rx);
        assert_eq!(
            &*names.of(&id("default", "greeter")),
            [
                "greeter.default.svc",
                "greeter.default.svc.cluster.local",
                "multi.shop.svc",
                "multi.shop.svc.cluster.local",
            ]
        );
        assert_eq!(
            &*names.of(&id("shop", "front")),
            ["multi.shop.svc", "multi.shop.svc.cluster.local"]
        );
        assert!(names.of(&id("default", "stranger")).is_empty());
        // A new version is followed.
        let yaml = YAML.replace("sa/front", "sa/back");
        tx.send(Arc::new(state(&yaml, 2))).unwrap();
        assert!(names.of(&id("shop", "front")).is_empty());
        assert_eq!(names.of(&id("shop", "back")).len(), 2);
    }

    #[test]
    fn suffixes_are_configurable_and_checked() {
        let (_tx, rx) = watch::channel(Arc::new(state(YAML, 1)));
        let suffixes =
            DnsSanSuffixes::new(["svc.example.internal", "svc.example.internal"]).expect("valid");
        let names = DnsNames::new(suffixes, rx.clone());
        assert_eq!(
            &*names.of(&id("shop", "front")),
            ["multi.shop.svc.example.internal"]
        );
        let none = DnsNames::new(DnsSanSuffixes::none(), rx);
        assert!(none.of(&id("shop", "front")).is_empty());
        for bad in ["", ".svc", "svc.", "Svc", "s_c", "a..b"] {
            let error = DnsSanSuffixes::new([bad]).expect_err(bad);
            assert_eq!(error.suffix, bad);
        }
    }

    #[test]
    fn one_certificate_names_at_most_max_dns_sans() {
        let mut yaml = String::from("services:\n");
        for i in 0..40 {
            yaml += &format!(
                "  - name: s{i:02}\n    namespace: default\n    endpoints:\n      - address: \
                 127.0.0.1:{}\n        identity: spiffe://mesh.local/ns/default/sa/many\n",
                5000 + i
            );
        }
        let (_tx, rx) = watch::channel(Arc::new(state(&yaml, 1)));
        let names = DnsNames::new(DnsSanSuffixes::default(), rx).of(&id("default", "many"));
        assert_eq!(names.len(), MAX_DNS_SANS);
        assert_eq!(names[0], "s00.default.svc");
    }
}
