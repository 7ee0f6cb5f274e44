//! This replica's own subscribers, as rows of JSON: what its admin page lists and what it
//! answers its peers' `ReplicaSubscribers`.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use mesh_core::SpiffeId;
use mesh_core::proto::ReplicaSubscribersResponse;
use tokio::sync::watch;

use crate::ca::rotation::RotationStatus;
use crate::state::State;
use crate::watch::registry::{Registry, SubscriberStatus};

/// This replica: its name, its process's instance id, and what it serves.
#[derive(Debug)]
pub(crate) struct LocalReplica {
    /// The name rows are marked with.
    pub(crate) name: String,
    /// A random id of this process, so that it recognises itself among its peers.
    pub(crate) instance: String,
    /// The control service's own SPIFFE ID: the only caller answered.
    pub(crate) identity: SpiffeId,
    pub(crate) registry: Arc<Registry>,
    pub(crate) state: watch::Receiver<Arc<State>>,
    /// The root rotation, when the CA rotates its own root.
    pub(crate) rotation: Option<Arc<RotationStatus>>,
}

// === impl LocalReplica ===

impl LocalReplica {
    /// A replica called `name` with a fresh instance id.
    pub(crate) fn new(
        name: String,
        identity: SpiffeId,
        registry: Arc<Registry>,
        state: watch::Receiver<Arc<State>>,
        rotation: Option<Arc<RotationStatus>>,
    ) -> Self {
        Self {
            name,
            instance: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            identity,
            registry,
            state,
            rotation,
        }
    }

    /// The config version this replica serves.
    pub(crate) fn config_version(&self) -> u64 {
        self.state.borrow().version
    }

    /// Every subscriber of this replica, as `/subscribers` lists them.
    pub(crate) fn rows(&self) -> Vec<serde_json::Value> {
        let overlap = self
            .rotation
            .as_ref()
            .and_then(|r| r.view().overlap_version);
        self.registry
            .list()
            .into_iter()
            .map(|s| row(s, &self.name, overlap))
            .collect()
    }

    /// The answer to a peer's `ReplicaSubscribers`.
    pub(crate) fn answer(&self) -> ReplicaSubscribersResponse {
        ReplicaSubscribersResponse {
            replica: self.name.clone(),
            instance: self.instance.clone(),
            config_version: self.config_version(),
            subscribers_json: serde_json::Value::Array(self.rows()).to_string(),
        }
    }
}

/// One subscriber as `/subscribers` shows it, marked with the replica serving it; with
/// `bundleAcked` while a root rotation waits for ACKs of version `overlap`.
fn row(s: SubscriberStatus, replica: &str, overlap: Option<u64>) -> serde_json::Value {
    serde_json::json!({
        "replica": replica,
        "id": s.id,
        "node": s.node,
        "remoteAddr": s.remote_addr.to_string(),
        "identity": s.identity.as_str(),
        "ownService": s.own_service.map(|n| n.to_string()),
        "destinations": s.destinations.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "connectedAtUnix": s.connected_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "lastSentVersion": s.last_sent_version,
        "lastAckedVersion": s.last_acked_version,
        "lastNack": s.last_nack.map(|nack| serde_json::json!({
            "version": nack.version,
            "error": nack.error,
            "details": nack.details.iter().map(|d| serde_json::json!({
                "field": d.field,
                "message": d.message,
                "code": d.code,
            })).collect::<Vec<_>>(),
        })),
        "stale": s.last_acked_version != Some(s.last_sent_version),
        "grpcServices": s.grpc_services,
        "incremental": s.incremental,
        "fullSnapshotsSent": s.full_snapshots_sent,
        "incrementsSent": s.increments_sent,
        "resyncs": s.resyncs,
        "certificateExpiresAtUnix": s.certificate_expires.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
        "certificateIssuerKeyId": s.certificate_issuer,
        "bundleAcked": overlap.map(|v| s.last_acked_version >= Some(v)),
    })
}
