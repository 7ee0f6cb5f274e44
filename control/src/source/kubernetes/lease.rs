//! One writer among replicas: a `coordination.k8s.io/v1` Lease in the control service's
//! namespace. Only route status needs it; every replica serves config.
//!
//! The holder renews every [`RENEW_EVERY`]; another replica takes over once a renewal is
//! [`LEASE_DURATION`] old. Every write carries the Lease's resourceVersion, so two replicas
//! racing for an expired Lease cannot both win: the API server refuses the second with 409.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

/// The Lease's name.
pub(crate) const LEASE_NAME: &str = "mesh-control-status";
/// How long a renewal holds the Lease.
pub(crate) const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews (and others check).
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(5);

/// This replica's claim on the Lease.
#[derive(Clone)]
pub(crate) struct LeaderLease {
    api: Api<Lease>,
    holder: String,
}

// === impl LeaderLease ===

impl LeaderLease {
    /// A claim by `holder` (the pod's name) on the Lease in `namespace`.
    pub(crate) fn new(client: Client, namespace: &str, holder: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            holder,
        }
    }

    /// Takes or renews the Lease; returns whether this replica holds it now.
    pub(crate) async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.holder.as_str());
        if !ours && !expired(&spec, now) {
            return Ok(false);
        }
        let acquired = if ours {
            spec.acquire_time.map_or(now, |t| t.0)
        } else {
            now
        };
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let lease = Lease {
            // Keeps metadata.resourceVersion: the replace is refused if someone wrote since.
            metadata: current.metadata,
            spec: Some(self.spec(acquired, now, transitions)),
        };
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            // At most a few seconds: the cast cannot truncate.
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

/// Whether the holder's last renewal has run out (a Lease without one is free).
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = &spec.renew_time else {
        return true;
    };
    let duration = spec
        .lease_duration_seconds
        .map_or(LEASE_DURATION.as_secs() as i64, i64::from);
    now.as_second() > renewed.0.as_second().saturating_add(duration)
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let now = Timestamp::now().as_second();
        LeaseSpec {
            holder_identity: Some("other".into()),
            renew_time: Some(MicroTime(
                Timestamp::from_second(now - renewed_secs_ago).expect("valid"),
            )),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_expires_after_its_duration() {
        let now = Timestamp::now();
        assert!(!expired(&spec(5, 15), now));
        assert!(expired(&spec(20, 15), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
