//! `meshctl status`: every Watch subscriber of every control replica, with the version it was
//! sent and acknowledged, its last NACK by field, whether it is stale, and when its
//! certificate expires (as `istioctl proxy-status` shows proxies).
//!
//! A replica told its peers lists theirs too, each row marked with the replica serving it,
//! and names the peers it could not ask: one `--admin` address is then enough. When several
//! are given, a subscriber listed by more than one (the same replica and id) is shown once,
//! and a peer one replica could not reach is unreachable only if no other replica's answer
//! came from it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::admin_client;
use super::error::CtlError;

/// The replicas asked and what each said.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Every subscriber, replica by replica.
    pub subscribers: Vec<SubscriberRow>,
    /// Replicas that could not be read, with why.
    pub unreachable: Vec<Unreachable>,
    /// The config version each replica serves.
    pub replicas: Vec<ReplicaVersion>,
}

/// A replica's config version.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaVersion {
    /// The replica's admin address.
    pub replica: String,
    /// Its config version.
    pub config_version: u64,
}

/// A replica that did not answer.
#[derive(Debug, Clone, Serialize)]
pub struct Unreachable {
    /// Its admin address.
    pub replica: String,
    /// What went wrong.
    pub error: String,
}

/// One subscriber, as one replica sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberRow {
    /// The replica it is connected to (as the replica names itself; the admin address asked
    /// when an older replica does not say).
    #[serde(default)]
    pub replica: String,
    /// Its id on that replica.
    #[serde(default)]
    pub id: u64,
    /// The instance name it gave.
    pub node: String,
    /// Its verified SPIFFE ID.
    pub identity: String,
    /// Where it connected from.
    pub remote_addr: String,
    /// The service it serves, if any.
    pub own_service: Option<String>,
    /// The last version sent to it.
    pub last_sent_version: u64,
    /// The last version it accepted.
    pub last_acked_version: Option<u64>,
    /// Its last refusal.
    pub last_nack: Option<NackRow>,
    /// Whether it has not accepted the last version sent.
    pub stale: bool,
    /// When its certificate expires (seconds since 1970).
    pub certificate_expires_at_unix: Option<u64>,
    /// The gRPC services it says it serves.
    #[serde(default)]
    pub grpc_services: Vec<String>,
}

/// A refused version, by field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NackRow {
    /// The version refused.
    pub version: u64,
    /// The whole reason.
    pub error: String,
    /// The reason by field (absent from older control services).
    #[serde(default)]
    pub details: Vec<NackField>,
}

/// One refused field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NackField {
    /// The field's path in the snapshot.
    pub field: String,
    /// What was wrong.
    pub message: String,
    /// The kind of problem.
    pub code: String,
}

/// What `/subscribers` answers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribersPage {
    config_version: u64,
    /// The replica's own name (absent from replicas that predate peers).
    #[serde(default)]
    replica: Option<String>,
    subscribers: Vec<SubscriberRow>,
    /// Every replica that answered, itself included.
    #[serde(default)]
    replicas: Vec<PageReplica>,
    /// Peers it could not ask.
    #[serde(default)]
    unreachable: Vec<PagePeer>,
}

/// A replica in a `/subscribers` page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageReplica {
    replica: String,
    config_version: u64,
}

/// A peer a replica could not ask.
#[derive(Debug, Deserialize)]
struct PagePeer {
    peer: String,
    error: String,
}

/// Asks every replica behind each of `targets` (`host:port` of admin ports; a name that
/// resolves to several addresses is every one of them).
pub fn status(targets: &[String]) -> Result<Status, CtlError> {
    let mut status = Status {
        subscribers: Vec::new(),
        unreachable: Vec::new(),
        replicas: Vec::new(),
    };
    let mut peers_down = Vec::new();
    for target in targets {
        for addr in admin_client::replicas(target)? {
            let replica = addr.to_string();
            let page = admin_client::get(addr, "/subscribers").and_then(|body| {
                serde_json::from_str::<SubscribersPage>(&body).map_err(|e| CtlError::Admin {
                    target: replica.clone(),
                    message: format!("/subscribers: {e}"),
                })
            });
            match page {
                Ok(page) => status.add(page, &replica, &mut peers_down),
                Err(error) => status.unreachable.push(Unreachable {
                    replica,
                    error: error.to_string(),
                }),
            }
        }
    }
    // A peer another replica could not reach may have answered meshctl itself, or another
    // replica: then it is not missing.
    for down in peers_down {
        let answered = status.replicas.iter().any(|r| r.replica == down.replica);
        let listed = status.unreachable.iter().any(|u| u.replica == down.replica);
        if !answered && !listed {
            status.unreachable.push(down);
        }
    }
    Ok(status)
}

impl Status {
    /// Adds one replica's page, read from admin address `asked`, skipping what another page
    /// already gave; the peers it could not ask go to `peers_down`.
    fn add(&mut self, page: SubscribersPage, asked: &str, peers_down: &mut Vec<Unreachable>) {
        let own = page.replica.unwrap_or_else(|| asked.to_owned());
        let mut versions = page.replicas;
        if versions.is_empty() {
            versions.push(PageReplica {
                replica: own.clone(),
                config_version: page.config_version,
            });
        }
        for replica in versions {
            if !self.replicas.iter().any(|r| r.replica == replica.replica) {
                self.replicas.push(ReplicaVersion {
                    replica: replica.replica,
                    config_version: replica.config_version,
                });
            }
        }
        for mut row in page.subscribers {
            if row.replica.is_empty() {
                row.replica = own.clone();
            }
            let seen = self
                .subscribers
                .iter()
                .any(|r| r.replica == row.replica && r.id == row.id && r.node == row.node);
            if !seen {
                self.subscribers.push(row);
            }
        }
        peers_down.extend(page.unreachable.into_iter().map(|peer| Unreachable {
            error: format!("(from {own}) {}", peer.error),
            replica: peer.peer,
        }));
    }

    /// The gRPC services each service's subscribers report serving, by `name.namespace`.
    pub fn served(&self) -> super::check::served::Served {
        let mut served = super::check::served::Served::new();
        for row in &self.subscribers {
            if let Some(service) = &row.own_service {
                served
                    .entry(service.clone())
                    .or_default()
                    .extend(row.grpc_services.iter().cloned());
            }
        }
        served
    }
}

/// How long until `unix` (seconds since 1970), from `now`; negative when past.
pub fn until(unix: u64, now: SystemTime) -> i64 {
    let at = UNIX_EPOCH + Duration::from_secs(unix);
    match at.duration_since(now) {
        Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(json: serde_json::Value) -> SubscribersPage {
        serde_json::from_value(json).expect("a page")
    }

    fn row(replica: &str, id: u64, node: &str) -> serde_json::Value {
        serde_json::json!({
            "replica": replica, "id": id, "node": node, "identity": "spiffe://mesh.local/ns/default/sa/a",
            "remoteAddr": "127.0.0.1:1", "ownService": null, "lastSentVersion": 1,
            "lastAckedVersion": 1, "lastNack": null, "stale": false,
            "certificateExpiresAtUnix": null,
        })
    }

    #[test]
    fn replicas_that_list_each_other_show_each_subscriber_once() {
        let mut status = Status {
            subscribers: Vec::new(),
            unreachable: Vec::new(),
            replicas: Vec::new(),
        };
        let mut down = Vec::new();
        let both = serde_json::json!([
            {"replica": "a", "configVersion": 3}, {"replica": "b", "configVersion": 1},
        ]);
        status.add(
            page(serde_json::json!({
                "configVersion": 3, "replica": "a", "replicas": both,
                "subscribers": [row("a", 1, "pod-1"), row("b", 1, "pod-2")],
            })),
            "10.0.0.1:7401",
            &mut down,
        );
        // `b` lists the same two, and could not reach `c`; an older replica lists its own only.
        status.add(
            page(serde_json::json!({
                "configVersion": 1, "replica": "b", "replicas": both,
                "subscribers": [row("b", 1, "pod-2"), row("a", 1, "pod-1")],
                "unreachable": [{"peer": "c", "error": "peer c: connect: refused"}],
            })),
            "10.0.0.2:7401",
            &mut down,
        );
        status.add(
            page(serde_json::json!({"configVersion": 7, "subscribers": [row("", 4, "pod-3")]})),
            "10.0.0.3:7401",
            &mut down,
        );
        let rows: Vec<_> = status
            .subscribers
            .iter()
            .map(|r| (r.replica.as_str(), r.node.as_str()))
            .collect();
        assert_eq!(
            rows,
            [("a", "pod-1"), ("b", "pod-2"), ("10.0.0.3:7401", "pod-3")]
        );
        let versions: Vec<_> = status
            .replicas
            .iter()
            .map(|r| (r.replica.as_str(), r.config_version))
            .collect();
        assert_eq!(versions, [("a", 3), ("b", 1), ("10.0.0.3:7401", 7)]);
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].replica, "c");
        assert_eq!(down[0].error, "(from b) peer c: connect: refused");
    }
}
