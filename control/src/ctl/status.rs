//! `meshctl status`: every Watch subscriber of every control replica, with the version it was
//! sent and acknowledged, its last NACK by field, whether it is stale, and when its
//! certificate expires (as `istioctl proxy-status` shows proxies).

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
    /// The replica it is connected to (filled in by `meshctl`).
    #[serde(default)]
    pub replica: String,
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
    subscribers: Vec<SubscriberRow>,
}

/// Asks every replica behind each of `targets` (`host:port` of admin ports; a name that
/// resolves to several addresses is every one of them).
pub fn status(targets: &[String]) -> Result<Status, CtlError> {
    let mut status = Status {
        subscribers: Vec::new(),
        unreachable: Vec::new(),
        replicas: Vec::new(),
    };
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
                Ok(page) => {
                    status.replicas.push(ReplicaVersion {
                        replica: replica.clone(),
                        config_version: page.config_version,
                    });
                    status
                        .subscribers
                        .extend(page.subscribers.into_iter().map(|mut row| {
                            row.replica = replica.clone();
                            row
                        }));
                }
                Err(error) => status.unreachable.push(Unreachable {
                    replica,
                    error: error.to_string(),
                }),
            }
        }
    }
    Ok(status)
}

impl Status {
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
