//! The `LocalRateLimitPolicy` custom resource end to end: kube's real client against a fake
//! API server on 127.0.0.1, inside the real control service, with a real TLS client watching
//! as the workload of the service the policy targets.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "kubernetes")]

mod k8s_support;
mod support;

use std::time::Duration;

use k8s_support::*;
use mesh_control::k8s::KubernetesSource;
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::rate::{ClientMatch, RateLimit};
use mesh_core::snapshot::Snapshot;
use serde_json::{Value, json};
use support::*;

const CLIENT_TOKEN: &str = "projected-token-of-client";
const WAIT: Duration = Duration::from_secs(10);

fn rate_limit(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "policy.mesh.dev/v1alpha1", "kind": "LocalRateLimitPolicy",
           "metadata": {"name": name, "namespace": "default"},
           "spec": spec})
}

#[tokio::test]
async fn a_rate_limit_policy_reaches_the_snapshot_of_the_service_it_targets() {
    let api = FakeApi::start().await;
    api.apply(SERVICES, service("default", "client"));
    api.apply(PODS, pod("default", "client-1", "client"));
    api.apply(
        SLICES,
        slice(
            "default",
            "client-abc",
            "client",
            8080,
            &[("10.0.0.9", "client-1")],
        ),
    );
    api.review(
        CLIENT_TOKEN,
        Review {
            authenticated: true,
            username: "system:serviceaccount:default:client".to_owned(),
            audiences: None,
        },
    );
    api.apply(
        RATE_LIMITS,
        rate_limit(
            "client-limits",
            json!({"target": {"service": "client"},
                   "total": {"requestsPerSecond": 100},
                   "identity": {"requestsPerSecond": 10, "burst": 20},
                   "overrides": [{"requestsPerSecond": 50,
                                  "clients": {"serviceAccounts": ["shop/checkout"]}}]}),
        ),
    );
    // Aimed at a Service that does not exist: left out, the others unaffected.
    api.apply(
        RATE_LIMITS,
        rate_limit(
            "stray",
            json!({"target": {"service": "nope"}, "total": {"requestsPerSecond": 1}}),
        ),
    );

    let mut source = KubernetesSource::new(api.client());
    source.sync_timeout = Duration::from_secs(10);
    let options = ControlOptions::new(trust_domain(), ConfigSource::Kubernetes(source));
    let control = mesh_control::start(options).await.unwrap();
    let cert = obtain_cert(&control, CLIENT_TOKEN).await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("pod-a", &[]))
        .await
        .unwrap();

    let first = Snapshot::try_from(watch.next().await).unwrap();
    let limits = first.inbound.unwrap().rate_limits;
    assert_eq!(limits.len(), 1, "{limits:?}");
    assert_eq!(&*limits[0].name, "client-limits");
    assert_eq!(
        limits[0].total,
        Some(RateLimit {
            requests_per_second: 100,
            burst: 100
        })
    );
    assert_eq!(
        limits[0].identity,
        Some(RateLimit {
            requests_per_second: 10,
            burst: 20
        })
    );
    assert_eq!(
        limits[0].overrides[0].clients,
        [ClientMatch::ServiceAccount {
            namespace: "shop".to_owned(),
            name: "checkout".to_owned()
        }]
    );

    // A change to the object reaches the subscriber; a deletion takes the limit away.
    api.apply(
        RATE_LIMITS,
        rate_limit(
            "client-limits",
            json!({"target": {"service": "client"}, "total": {"requestsPerSecond": 7}}),
        ),
    );
    let changed = next_where(&mut watch, |s| {
        s.inbound.as_ref().is_some_and(|i| {
            i.rate_limits
                .first()
                .and_then(|l| l.total)
                .map(|t| t.requests_per_second)
                == Some(7)
        })
    })
    .await;
    assert!(changed.inbound.unwrap().rate_limits[0].identity.is_none());
    api.delete(RATE_LIMITS, "default", "client-limits");
    next_where(&mut watch, |s| {
        s.inbound.as_ref().is_some_and(|i| i.rate_limits.is_empty())
    })
    .await;

    // The watch on the new kind resumed from its list's resource version.
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path == RATE_LIMITS && r.query.contains("watch=true"))
    );
    control.shutdown().await;
}

/// The next snapshot that satisfies `done`, within [`WAIT`].
async fn next_where(watch: &mut WatchStream, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, watch.rx.message()).await {
            Ok(Ok(Some(wire))) => {
                let snapshot = Snapshot::try_from(wire).unwrap();
                if done(&snapshot) {
                    return snapshot;
                }
            }
            other => panic!("no matching snapshot within {WAIT:?}: {other:?}"),
        }
    }
}
