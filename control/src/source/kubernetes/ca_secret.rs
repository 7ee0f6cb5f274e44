//! The CA's rotation state in a Secret, `mesh-control-ca` (key `state.json`) in the control
//! service's namespace, so that every replica and every restart issues from the same roots.
//!
//! Reads return the bytes with the Secret's `resourceVersion`; writes carry the version read,
//! so of two replicas that take the same rotation step at once one write fails with a conflict
//! and that replica adopts what the other wrote. RBAC: `get`, `create` and `update` on this
//! one Secret (`control/deploy/rbac.yaml`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};

/// The Secret's name.
pub(crate) const SECRET: &str = "mesh-control-ca";
/// The key of the state in it.
pub(crate) const KEY: &str = "state.json";

/// The Secret in one namespace.
#[derive(Clone)]
pub(crate) struct CaSecret {
    api: Api<Secret>,
}

/// What a write found.
#[derive(Debug)]
pub(crate) enum Written {
    /// The state is stored; the Secret's new version.
    Stored(String),
    /// Another writer got there first: what the Secret holds now, and its version.
    Conflict(Option<(Vec<u8>, String)>),
}

// === impl CaSecret ===

impl CaSecret {
    /// The Secret in `namespace`.
    pub(crate) fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }

    /// The state stored, with the Secret's version; `None` when there is no Secret (or no
    /// state in it).
    pub(crate) async fn read(&self) -> Result<Option<(Vec<u8>, String)>, kube::Error> {
        let Some(secret) = self.api.get_opt(SECRET).await? else {
            return Ok(None);
        };
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        Ok(secret
            .data
            .and_then(|mut data| data.remove(KEY))
            .map(|bytes| (bytes.0, version)))
    }

    /// Stores `state`: creates the Secret when `version` is `None`, else replaces the version
    /// read.
    pub(crate) async fn write(
        &self,
        state: &[u8],
        version: Option<&str>,
    ) -> Result<Written, kube::Error> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET.to_owned()),
                resource_version: version.map(str::to_owned),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "mesh-control".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                KEY.to_owned(),
                ByteString(state.to_vec()),
            )])),
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        };
        let result = match version {
            None => self.api.create(&PostParams::default(), &secret).await,
            Some(_) => {
                self.api
                    .replace(SECRET, &PostParams::default(), &secret)
                    .await
            }
        };
        match result {
            Ok(stored) => Ok(Written::Stored(
                stored.metadata.resource_version.unwrap_or_default(),
            )),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Written::Conflict(self.read().await?))
            }
            Err(error) => Err(error),
        }
    }
}
