//! Publishes the trust bundle for pods: a ConfigMap `mesh-trust-anchors` (key `ca.pem`) in the
//! control service's namespace and in every namespace with a Service, written again whenever
//! the roots change (a rotation) or a namespace gains its first Service. Pods mount it as their
//! `MESH_TRUST_ANCHORS_FILE`, the roots they trust the control service with at start-up; after
//! that, roots reach them over `Watch`.
//!
//! Every replica writes the same content, so no Lease is needed: a write that finds the
//! ConfigMap already as wanted does nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use mesh_core::TrustDomain;
use mesh_core::tls::TrustBundle;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::State;

/// The ConfigMap's name.
pub const CONFIG_MAP: &str = "mesh-trust-anchors";
/// The key of the PEM roots in it.
pub const KEY: &str = "ca.pem";
/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Keeps the ConfigMaps current until aborted.
pub(crate) fn spawn_publisher(
    client: Client,
    trust_domain: TrustDomain,
    control_namespace: String,
    mut state: watch::Receiver<Arc<State>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // What each namespace's ConfigMap is known to hold.
        let mut written: BTreeMap<String, String> = BTreeMap::new();
        // The roots last encoded, and their PEM: most versions change services, not roots.
        let mut encoded: Option<(Arc<Vec<CertificateDer<'static>>>, String)> = None;
        loop {
            let (namespaces, pem) = {
                let current = state.borrow_and_update();
                // By namespace, not by service: a version costs the namespaces, not the cluster.
                let mut namespaces: BTreeSet<String> =
                    current.config.namespaces().map(str::to_owned).collect();
                namespaces.insert(control_namespace.clone());
                let pem = match &encoded {
                    Some((roots, pem)) if Arc::ptr_eq(roots, &current.trust_bundle) => {
                        Ok(pem.clone())
                    }
                    _ => TrustBundle::from_der(
                        trust_domain.clone(),
                        current.trust_bundle.as_ref().clone(),
                    )
                    .map(|b| b.to_pem())
                    .inspect(|pem| encoded = Some((current.trust_bundle.clone(), pem.clone()))),
                };
                (namespaces, pem)
            };
            let mut failed = false;
            match pem {
                Ok(pem) => {
                    for namespace in namespaces {
                        if written.get(&namespace) == Some(&pem) {
                            continue;
                        }
                        match write(&client, &namespace, &pem).await {
                            Ok(()) => {
                                written.insert(namespace, pem.clone());
                            }
                            Err(error) => {
                                tracing::warn!(%namespace, %error, "kubernetes: trust bundle ConfigMap not written; will retry");
                                failed = true;
                            }
                        }
                    }
                }
                Err(error) => tracing::error!(%error, "the trust bundle does not parse"),
            }
            if failed {
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    changed = state.changed() => if changed.is_err() { return },
                }
            } else if state.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Creates or updates the ConfigMap in `namespace` to hold `pem`.
async fn write(client: &Client, namespace: &str, pem: &str) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let data = BTreeMap::from([(KEY.to_owned(), pem.to_owned())]);
    match api.get_opt(CONFIG_MAP).await? {
        Some(current) if current.data.as_ref() == Some(&data) => Ok(()),
        Some(mut current) => {
            // The resourceVersion read travels with the update: a concurrent writer's change
            // makes this one fail with 409 and be tried again from a fresh read.
            current.data = Some(data);
            api.replace(CONFIG_MAP, &PostParams::default(), &current)
                .await
                .map(drop)
        }
        None => {
            let config_map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIG_MAP.to_owned()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "mesh-control".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &config_map).await {
                Ok(_) => Ok(()),
                // Another replica created it first: the next pass reads and compares it.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                Err(error) => Err(error),
            }
        }
    }
}
