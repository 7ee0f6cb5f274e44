//! The merged view `/subscribers` serves: this replica's subscribers and every peer's, each row
//! marked with the replica serving it, and every peer that could not be asked named.

use super::local::LocalReplica;
use super::peers::{PeerOutcome, Peers};

/// Every subscriber this replica and its peers serve, as the JSON document of
/// `/subscribers` without its replica-specific keys (`configVersion`, `rootRotation`), which
/// the admin page adds:
///
/// - `replica`: this replica's name;
/// - `subscribers`: the rows, this replica's first, each with its `replica`;
/// - `replicas`: each replica that answered, with its `configVersion` and how many
///   `subscribers` it serves (`address` for peers);
/// - `unreachable`: each peer that could not be asked (`peer`: its address or name,
///   `target`: the configured `host:port` it came from, `error`);
/// - `complete`: whether every peer answered.
pub(crate) async fn merged(local: &LocalReplica, peers: Option<&Peers>) -> serde_json::Value {
    let mut rows = local.rows();
    let mut replicas = vec![serde_json::json!({
        "replica": local.name,
        "self": true,
        "configVersion": local.config_version(),
        "subscribers": rows.len(),
    })];
    let outcomes = match peers {
        Some(peers) if !peers.is_empty() => peers.ask_all().await,
        _ => Vec::new(),
    };
    let mut unreachable = Vec::new();
    for PeerOutcome { target, result } in outcomes {
        match result {
            Ok(answer) => {
                replicas.push(serde_json::json!({
                    "replica": answer.replica,
                    "address": answer.addr.to_string(),
                    "configVersion": answer.config_version,
                    "subscribers": answer.rows.len(),
                }));
                rows.extend(answer.rows.into_iter().map(|mut row| {
                    // Marked by the peer itself; an older peer's rows get its name here.
                    if let Some(object) = row.as_object_mut() {
                        object
                            .entry("replica")
                            .or_insert_with(|| answer.replica.clone().into());
                    }
                    row
                }));
            }
            Err(error) => unreachable.push(serde_json::json!({
                "peer": error.peer(),
                "target": target,
                "error": error.to_string(),
            })),
        }
    }
    serde_json::json!({
        "replica": local.name,
        "complete": unreachable.is_empty(),
        "replicas": replicas,
        "unreachable": unreachable,
        "subscribers": rows,
    })
}
