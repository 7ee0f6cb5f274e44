//! Route status: `Accepted` and `ResolvedRefs` for each Service parent of each GAMMA route,
//! under the mesh's controller name ([`CONTROLLER_NAME`]) with the route's
//! `observedGeneration`.
//!
//! Status is shared: a Gateway controller may report on the same route for its Gateway
//! parents. So each write is a read-modify-write: read the route's status, replace only the
//! entries whose `controllerName` is ours, keep the rest as they are, and write back with the
//! resourceVersion read (a JSON merge patch replaces the whole `parents` list, and the
//! resourceVersion makes the API server refuse it with 409 if anyone wrote in between; the
//! next pass reads again). Only the replica holding the [`LeaderLease`] writes.

use std::collections::BTreeMap;
use std::fmt::Debug;

use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::CONTROLLER_NAME;
use super::index::{ObjectKey, ParentStatus, RouteStatus};
use super::lease::{LeaderLease, RENEW_EVERY};
use super::route::{Refusal, RouteKind};

/// The `status.parents` entries the mesh wants for `route`, given the entries there now
/// (`existing`, for each condition's `lastTransitionTime`), at time `now` (RFC 3339).
pub(crate) fn our_parents(route: &RouteStatus, existing: &[Value], now: &str) -> Vec<Value> {
    route
        .parents
        .iter()
        .map(|parent| {
            let parent_ref = parent_ref_value(parent, &route.route.namespace);
            let previous = existing.iter().find(|entry| {
                entry["controllerName"] == CONTROLLER_NAME && entry["parentRef"] == parent_ref
            });
            let condition = |kind: &str, result: &Result<(), Refusal>, ok_reason: &str| {
                let (status, reason, message) = match result {
                    Ok(()) => ("True", ok_reason, String::new()),
                    Err(refusal) => ("False", refusal.reason, refusal.message.clone()),
                };
                // The transition time moves only when the status flips.
                let since = previous
                    .and_then(|p| p["conditions"].as_array())
                    .and_then(|conditions| {
                        conditions
                            .iter()
                            .find(|c| c["type"] == kind && c["status"] == status)
                    })
                    .and_then(|c| c["lastTransitionTime"].as_str())
                    .unwrap_or(now);
                json!({
                    "type": kind,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "observedGeneration": route.generation.unwrap_or(0),
                    "lastTransitionTime": since,
                })
            };
            json!({
                "parentRef": parent_ref,
                "controllerName": CONTROLLER_NAME,
                "conditions": [
                    condition("Accepted", &parent.accepted, "Accepted"),
                    condition("ResolvedRefs", &parent.resolved_refs, "ResolvedRefs"),
                ],
            })
        })
        .collect()
}

/// The parentRef as status repeats it, with the namespace filled in.
fn parent_ref_value(parent: &ParentStatus, route_namespace: &str) -> Value {
    let mut parent_ref = parent.parent.clone();
    parent_ref
        .namespace
        .get_or_insert_with(|| route_namespace.to_owned());
    serde_json::to_value(parent_ref).unwrap_or(Value::Null)
}

/// `existing` with every entry of ours replaced by `ours`; other controllers' entries stay,
/// in their order, first.
pub(crate) fn merge(existing: &[Value], ours: Vec<Value>) -> Vec<Value> {
    existing
        .iter()
        .filter(|entry| entry["controllerName"] != CONTROLLER_NAME)
        .cloned()
        .chain(ours)
        .collect()
}

/// Writes route status while this replica holds the Lease: on every change of `routes` and
/// on taking the Lease, and again after a failed write.
pub(crate) fn spawn_writer(
    client: Client,
    lease: LeaderLease,
    mut routes: watch::Receiver<Vec<RouteStatus>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut leader = false;
        let mut dirty = true;
        // Routes written last time, so a route that stops naming a Service loses our entries.
        let mut written: BTreeMap<(RouteKind, ObjectKey), ()> = BTreeMap::new();
        let mut tick = tokio::time::interval(RENEW_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = routes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    dirty = true;
                }
            }
            let now_leader = match lease.try_acquire().await {
                Ok(held) => held,
                Err(error) => {
                    tracing::warn!(%error, "kubernetes: cannot renew the status lease");
                    false
                }
            };
            if now_leader != leader {
                tracing::info!(leader = now_leader, "kubernetes: route status writer");
                leader = now_leader;
                dirty = true;
            }
            if !leader || !dirty {
                continue;
            }
            let desired = routes.borrow_and_update().clone();
            let mut failed = false;
            let mut now_written = BTreeMap::new();
            for route in &desired {
                now_written.insert((route.kind, route.route.clone()), ());
                failed |= !write(&client, route).await;
            }
            for (kind, key) in written.keys() {
                if !now_written.contains_key(&(*kind, key.clone())) {
                    let detached = RouteStatus {
                        kind: *kind,
                        route: key.clone(),
                        generation: None,
                        parents: Vec::new(),
                    };
                    failed |= !write(&client, &detached).await;
                }
            }
            written = now_written;
            dirty = failed;
        }
    })
}

/// Writes one route's status; returns whether it is as wanted now.
async fn write(client: &Client, route: &RouteStatus) -> bool {
    let result = match route.kind {
        RouteKind::Http => write_kind::<HttpRoute>(client, route).await,
        RouteKind::Grpc => write_kind::<GrpcRoute>(client, route).await,
    };
    match result {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(route = %route.route, %error, "kubernetes: route status not written; will retry");
            false
        }
    }
}

async fn write_kind<K>(client: &Client, route: &RouteStatus) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &route.route.namespace);
    let current = match api.get_status(&route.route.name).await {
        Ok(current) => current,
        // Deleted since: nothing to report on.
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    };
    let resource_version = current.meta().resource_version.clone();
    let value = serde_json::to_value(&current).unwrap_or(Value::Null);
    let existing = value["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let now = Timestamp::now().to_string();
    let parents = merge(&existing, our_parents(route, &existing, &now));
    if parents == existing {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"resourceVersion": resource_version},
        "status": {"parents": parents},
    });
    api.patch_status(
        &route.route.name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::info!(route = %route.route, "kubernetes: route status written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kubernetes::route::ParentRef;

    fn route(accepted: Result<(), Refusal>) -> RouteStatus {
        RouteStatus {
            kind: RouteKind::Http,
            route: ObjectKey {
                namespace: "default".into(),
                name: "canary".into(),
            },
            generation: Some(4),
            parents: vec![ParentStatus {
                parent: ParentRef {
                    group: Some(String::new()),
                    kind: Some("Service".into()),
                    name: "greeter".into(),
                    ..ParentRef::default()
                },
                accepted,
                resolved_refs: Err(Refusal::new(
                    "BackendNotFound",
                    "backend Service default/x not found",
                )),
            }],
        }
    }

    fn gateway_entry() -> Value {
        json!({
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
            "controllerName": "example.com/gateway",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                            "message": "", "observedGeneration": 4,
                            "lastTransitionTime": "2024-01-01T00:00:00Z"}]
        })
    }

    #[test]
    fn conditions_carry_reasons_and_the_observed_generation() {
        let ours = our_parents(&route(Ok(())), &[], "2025-01-01T00:00:00Z");
        assert_eq!(ours.len(), 1);
        let entry = &ours[0];
        assert_eq!(entry["controllerName"], CONTROLLER_NAME);
        assert_eq!(entry["parentRef"]["namespace"], "default");
        assert_eq!(entry["parentRef"]["kind"], "Service");
        let conditions = entry["conditions"].as_array().expect("conditions");
        assert_eq!(conditions[0]["type"], "Accepted");
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[0]["observedGeneration"], 4);
        assert_eq!(conditions[1]["type"], "ResolvedRefs");
        assert_eq!(conditions[1]["status"], "False");
        assert_eq!(conditions[1]["reason"], "BackendNotFound");
    }

    #[test]
    fn other_controllers_entries_stay_and_ours_are_replaced() {
        let first = our_parents(&route(Ok(())), &[], "2025-01-01T00:00:00Z");
        let existing = merge(&[gateway_entry()], first);
        assert_eq!(existing.len(), 2);
        let refused = route(Err(Refusal::new("NoMatchingParent", "port 81")));
        let merged = merge(
            &existing,
            our_parents(&refused, &existing, "2025-02-02T00:00:00Z"),
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0], gateway_entry());
        assert_eq!(merged[1]["conditions"][0]["status"], "False");
        // Accepted flipped: new transition time. ResolvedRefs did not: the old one stays.
        assert_eq!(
            merged[1]["conditions"][0]["lastTransitionTime"],
            "2025-02-02T00:00:00Z"
        );
        assert_eq!(
            merged[1]["conditions"][1]["lastTransitionTime"],
            "2025-01-01T00:00:00Z"
        );
        // Detached: only the other controller's entry is left.
        assert_eq!(merge(&merged, Vec::new()), [gateway_entry()]);
    }

    #[test]
    fn an_unchanged_status_is_not_rewritten() {
        let existing = merge(&[gateway_entry()], our_parents(&route(Ok(())), &[], "t0"));
        let again = merge(&existing, our_parents(&route(Ok(())), &existing, "t1"));
        assert_eq!(again, existing);
    }
}
