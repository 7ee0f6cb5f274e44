//! The Kubernetes source end to end: kube's real client against a fake API server on
//! 127.0.0.1, inside the real control service, with a real TLS client watching; and the
//! TokenReview authenticator's requests and decisions.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "kubernetes")]

mod k8s_support;
mod support;

use std::time::Duration;

use k8s_support::*;
use mesh_control::k8s::{KubernetesSource, TokenReviewAuthenticator};
use mesh_control::{Authenticator, AuthnError, ConfigSource, ControlOptions, RunningControl};
use mesh_core::proto;
use mesh_core::snapshot::{ServiceName, Snapshot};
use serde_json::json;
use support::*;
use tonic::Code;

/// Long enough for a watcher to back off and relist after an error.
const RELIST_WAIT: Duration = Duration::from_secs(20);

const CLIENT_TOKEN: &str = "projected-token-of-client";

fn client_review() -> Review {
    Review {
        authenticated: true,
        username: "system:serviceaccount:default:client".to_owned(),
        audiences: None,
    }
}

/// A cluster with `greeter` (one ready pod on port 5001), `client` (one pod running as
/// `default/client`, which is what lets a subscriber with that identity name `client` as its
/// own service) and a token for `default/client`.
async fn cluster() -> FakeApi {
    let api = FakeApi::start().await;
    api.apply(SERVICES, service("default", "greeter"));
    api.apply(PODS, pod("default", "greeter-1", "greeter"));
    api.apply(
        SLICES,
        slice(
            "default",
            "greeter-abc",
            "greeter",
            5001,
            &[("10.0.0.1", "greeter-1")],
        ),
    );
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
    api.review(CLIENT_TOKEN, client_review());
    api
}

async fn start(api: &FakeApi) -> RunningControl {
    let mut source = KubernetesSource::new(api.client());
    source.sync_timeout = Duration::from_secs(10);
    let options = ControlOptions::new(trust_domain(), ConfigSource::Kubernetes(source));
    mesh_control::start(options).await.expect("control starts")
}

fn model(wire: proto::Snapshot) -> Snapshot {
    Snapshot::try_from(wire).expect("the client's own validation accepts the snapshot")
}

fn endpoints(snapshot: &Snapshot, service: &str) -> Vec<String> {
    let name: ServiceName = service.parse().unwrap();
    snapshot
        .destination(&name.into())
        .expect("destination present")
        .endpoints
        .iter()
        .map(|e| format!("{} {}", e.address, e.identity))
        .collect()
}

/// Reads snapshots until one satisfies `done`, for up to `wait`.
async fn until(
    watch: &mut WatchStream,
    wait: Duration,
    done: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, watch.rx.message()).await {
            Ok(Ok(Some(wire))) => {
                let snapshot = model(wire);
                if done(&snapshot) {
                    return snapshot;
                }
            }
            other => panic!("no matching snapshot within {wait:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn listed_objects_and_then_watch_events_reach_a_subscriber() {
    let api = cluster().await;
    let control = start(&api).await;
    let cert = obtain_cert(&control, CLIENT_TOKEN).await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("pod-a", &["greeter"]))
        .await
        .expect("watch opens");

    // The first version already holds what was listed: start-up waited for the sync.
    let first = model(watch.next().await);
    assert_eq!(first.version, 1);
    assert_eq!(
        endpoints(&first, "greeter.default"),
        ["10.0.0.1:5001 spiffe://mesh.local/ns/default/sa/greeter"]
    );

    // A pod comes up and the EndpointSlice controller adds it.
    api.apply(PODS, pod("default", "greeter-2", "greeter"));
    api.apply(
        SLICES,
        slice(
            "default",
            "greeter-abc",
            "greeter",
            5001,
            &[("10.0.0.1", "greeter-1"), ("10.0.0.2", "greeter-2")],
        ),
    );
    let second = until(&mut watch, WAIT, |s| {
        endpoints(s, "greeter.default").len() == 2
    })
    .await;
    assert!(second.version > first.version);
    assert_eq!(
        endpoints(&second, "greeter.default")[1],
        "10.0.0.2:5001 spiffe://mesh.local/ns/default/sa/greeter"
    );

    // A canary HTTPRoute attaches to the Service.
    api.apply(SERVICES, service("default", "greeter-v2"));
    api.apply(
        HTTP_ROUTES,
        http_route(
            "default",
            "canary",
            "greeter",
            &[("greeter", 90), ("greeter-v2", 10)],
        ),
    );
    let routed = until(&mut watch, WAIT, |s| {
        s.destination(&"greeter.default".parse().unwrap())
            .is_some_and(|d| !d.routes.is_empty())
    })
    .await;
    let dest = routed
        .destination(&"greeter.default".parse().unwrap())
        .unwrap();
    let weights: Vec<u32> = dest.routes[0].rules[0]
        .backend_refs
        .iter()
        .map(|b| b.weight)
        .collect();
    assert_eq!(weights, [90, 10]);

    // The watches resumed from the lists' resource versions.
    let requests = api.requests();
    let watches: Vec<_> = requests
        .iter()
        .filter(|r| r.path == SLICES && r.query.contains("watch=true"))
        .collect();
    assert!(!watches.is_empty());
    assert!(
        watches[0].query.contains("resourceVersion="),
        "{}",
        watches[0].query
    );
    control.shutdown().await;
}

#[tokio::test]
async fn a_410_gone_forces_a_relist_that_sees_missed_deletions() {
    let api = cluster().await;
    let control = start(&api).await;
    let cert = obtain_cert(&control, CLIENT_TOKEN).await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("pod-a", &["greeter"]))
        .await
        .expect("watch opens");
    assert_eq!(
        endpoints(&model(watch.next().await), "greeter.default").len(),
        1
    );

    let lists_before = api
        .requests()
        .iter()
        .filter(|r| r.path == SLICES && !r.query.contains("watch=true"))
        .count();
    // The slice is deleted while no watch hears of it; the watch is then expired.
    api.delete_unseen_then_expire(SLICES, "default", "greeter-abc");
    let after = until(&mut watch, RELIST_WAIT, |s| {
        endpoints(s, "greeter.default").is_empty()
    })
    .await;
    assert!(after.version > 1);
    let lists_after = api
        .requests()
        .iter()
        .filter(|r| r.path == SLICES && !r.query.contains("watch=true"))
        .count();
    assert!(lists_after > lists_before, "a relist happened");
    control.shutdown().await;
}

#[tokio::test]
async fn certify_authenticates_pods_by_token_review() {
    let api = cluster().await;
    let control = start(&api).await;

    // Accepted: the certificate names the reviewed service account.
    let mut client = connect(&control, None).await;
    let (_key, csr) = key_and_csr();
    let response = certify(&mut client, CLIENT_TOKEN, csr)
        .await
        .expect("certified");
    assert_eq!(
        response.spiffe_id,
        "spiffe://mesh.local/ns/default/sa/client"
    );

    // Refused: a token the API server does not authenticate.
    let (_key, csr) = key_and_csr();
    let status = certify(&mut client, "forged", csr)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains("forged"));
    control.shutdown().await;
}

#[tokio::test]
async fn token_review_requests_carry_the_audience_and_our_credentials() {
    let api = FakeApi::start().await;
    api.review(CLIENT_TOKEN, client_review());
    let authn = TokenReviewAuthenticator::new(api.client(), "mesh-control", trust_domain());
    let id = authn.authenticate(CLIENT_TOKEN).await.expect("accepted");
    assert_eq!(id.as_str(), "spiffe://mesh.local/ns/default/sa/client");

    let requests = api.requests();
    let review = requests
        .iter()
        .find(|r| r.path == TOKEN_REVIEWS)
        .expect("a review was posted");
    assert_eq!(review.method, "POST");
    assert_eq!(review.body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(review.body["kind"], "TokenReview");
    assert_eq!(review.body["spec"]["token"], CLIENT_TOKEN);
    assert_eq!(review.body["spec"]["audiences"], json!(["mesh-control"]));
    assert_eq!(
        review.authorization.as_deref(),
        Some("Bearer control-plane-token")
    );
}

#[tokio::test]
async fn token_review_refusals() {
    let api = FakeApi::start().await;
    api.review(
        "other-audience",
        Review {
            audiences: Some(vec!["https://kubernetes.default.svc".to_owned()]),
            ..client_review()
        },
    );
    api.review(
        "a-user",
        Review {
            username: "alice@example.com".to_owned(),
            ..client_review()
        },
    );
    api.review(
        "not-authenticated",
        Review {
            authenticated: false,
            ..client_review()
        },
    );
    let authn = TokenReviewAuthenticator::new(api.client(), "mesh-control", trust_domain());
    for token in ["other-audience", "a-user", "not-authenticated", "unknown"] {
        assert_eq!(
            authn.authenticate(token).await,
            Err(AuthnError::Refused),
            "{token}"
        );
    }
    assert_eq!(authn.authenticate("").await, Err(AuthnError::Missing));
    assert!(
        !api.requests().iter().any(|r| r.body["spec"]["token"] == ""),
        "empty tokens are not sent"
    );

    // The API server refusing the control service itself is not the caller's fault.
    api.fail_reviews(403);
    assert!(matches!(
        authn.authenticate(CLIENT_TOKEN).await,
        Err(AuthnError::Unavailable(_))
    ));
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/leases";

#[tokio::test]
async fn the_lease_holder_writes_route_status_and_leaves_other_controllers_alone() {
    let api = cluster().await;
    api.apply(SERVICES, service("default", "greeter-v2"));
    let mut route = http_route(
        "default",
        "canary",
        "greeter",
        &[("greeter", 90), ("greeter-v2", 10)],
    );
    let gateway = json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "controllerName": "example.com/gateway",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "observedGeneration": 1, "lastTransitionTime": "2024-01-01T00:00:00Z"}]
    });
    route["status"] = json!({"parents": [gateway.clone()]});
    api.apply(HTTP_ROUTES, route);

    let mut source = KubernetesSource::new(api.client());
    source.holder = "replica-a".to_owned();
    let options = ControlOptions::new(trust_domain(), ConfigSource::Kubernetes(source));
    let control = mesh_control::start(options).await.expect("control starts");

    let parents = |api: &FakeApi| {
        api.object(HTTP_ROUTES, "default", "canary")
            .and_then(|r| r["status"]["parents"].as_array().cloned())
            .unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while parents(&api).len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "status not written: {:?}",
            parents(&api)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parents = parents(&api);
    assert_eq!(
        parents[0], gateway,
        "the other controller's entry is untouched"
    );
    let ours = &parents[1];
    assert_eq!(ours["controllerName"], "mesh.dev/mesh-control");
    assert_eq!(ours["parentRef"]["name"], "greeter");
    assert_eq!(ours["conditions"][0]["type"], "Accepted");
    assert_eq!(ours["conditions"][0]["status"], "True");
    assert_eq!(ours["conditions"][0]["observedGeneration"], 1);
    assert_eq!(ours["conditions"][1]["type"], "ResolvedRefs");
    assert_eq!(ours["conditions"][1]["status"], "True");

    let lease = api
        .object(LEASES, "mesh-system", "mesh-control-status")
        .expect("lease created");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    // The status was written by read-modify-write with the resourceVersion read.
    let patch = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a status patch");
    assert!(
        patch
            .path
            .ends_with("/namespaces/default/httproutes/canary/status"),
        "{}",
        patch.path
    );
    assert!(patch.body["metadata"]["resourceVersion"].is_string());

    // A second replica does not take a held lease.
    let mut source = KubernetesSource::new(api.client());
    source.holder = "replica-b".to_owned();
    let other = mesh_control::start(ControlOptions::new(
        trust_domain(),
        ConfigSource::Kubernetes(source),
    ))
    .await
    .expect("second replica starts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lease = api
        .object(LEASES, "mesh-system", "mesh-control-status")
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    other.shutdown().await;
    control.shutdown().await;
}

#[tokio::test]
async fn the_trust_bundle_is_published_in_a_config_map_where_pods_can_mount_it() {
    let api = cluster().await;
    api.apply(SERVICES, service("shop", "cart"));
    let control = start(&api).await;
    let pem = control.trust_bundle_pem();
    let published = |namespace: &str| {
        api.object("/api/v1/configmaps", namespace, "mesh-trust-anchors")
            .and_then(|cm| cm["data"]["ca.pem"].as_str().map(str::to_owned))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline
        && ["default", "shop", "mesh-system"]
            .iter()
            .any(|ns| published(ns).as_deref() != Some(pem.as_str()))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for namespace in ["default", "shop", "mesh-system"] {
        assert_eq!(
            published(namespace).as_deref(),
            Some(pem.as_str()),
            "the roots in {namespace}"
        );
    }
    control.shutdown().await;
}

#[tokio::test]
async fn only_a_pod_of_a_service_may_name_it_as_its_own() {
    let api = cluster().await;
    let control = start(&api).await;
    let cert = obtain_cert(&control, CLIENT_TOKEN).await;
    let mut client = connect(&control, Some(&cert)).await;

    // `default/client` runs no pod of greeter: refused, naming both.
    let mut as_greeter = subscribe("pod-a", &["greeter"]);
    if let Some(proto::watch_request::Kind::Subscribe(s)) = &mut as_greeter.kind {
        s.own_service = Some(service_ref("default", "greeter"));
    }
    let status = watch_error(&mut client, as_greeter).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("greeter.default")
            && status
                .message()
                .contains("spiffe://mesh.local/ns/default/sa/client"),
        "{}",
        status.message()
    );

    // It runs the pod behind `client`: served.
    let mut watch = open_watch(&mut client, subscribe("pod-a", &["greeter"]))
        .await
        .expect("watch opens");
    let snapshot = model(watch.next().await);
    assert_eq!(
        snapshot.inbound.map(|i| i.service.to_string()).as_deref(),
        Some("client.default")
    );
    control.shutdown().await;
}

/// `meshctl check --kubernetes` against this cluster: what the control service would build
/// from it, linted, and the objects it would leave out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshctl_checks_what_the_control_service_would_build_from_the_cluster() {
    let api = cluster().await;
    // A route whose only backend has weight 0: valid, but every request it matches fails.
    api.apply(
        HTTP_ROUTES,
        http_route("default", "drained", "greeter", &[("greeter", 0)]),
    );
    // A route with a filter the mesh does not implement: left out of the config.
    let mut rewrite = http_route("default", "rewrite", "client", &[("client", 1)]);
    rewrite["spec"]["rules"][0]["filters"] = json!([{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/"}}}]);
    api.apply(HTTP_ROUTES, rewrite);

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: \"http://{}\"}}}}]
users: [{{name: fake, user: {{token: control-plane-token}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]
current-context: fake
",
            api.addr
        ),
    )
    .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(["check", "--kubernetes"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("MESH_TRUST_DOMAIN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    println!("{text}");
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("rules[0]") && text.contains("weight"),
        "the zero-weight rule: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("error: ") && l.contains("rewrite") && l.contains("URLRewrite")),
        "the route left out: {text}"
    );
    assert!(text.contains("kubernetes: 1 error(s)"), "{text}");
}

/// A `RequestAuthentication` in the cluster: the control service reads the issuer's JWK Set
/// from its `file://` URI and sends the keys in the inbound policy of the Service's own
/// subscribers; a new set in the file reaches them after a refresh.
#[tokio::test]
async fn a_request_authentication_sends_the_issuers_keys_to_the_service() {
    use mesh_core::testing::jwt::{TestKey, jwks};

    let dir = tempfile::tempdir().unwrap();
    let keys_path = dir.path().join("jwks.json");
    let (first, second) = (TestKey::es256("one"), TestKey::ed25519("two"));
    std::fs::write(&keys_path, jwks(&[&first])).unwrap();
    let api = cluster().await;
    api.apply(
        AUTHNS,
        json!({
            "apiVersion": "policy.mesh.dev/v1alpha1", "kind": "RequestAuthentication",
            "metadata": {"name": "users", "namespace": "default"},
            "spec": {"target": {"service": "client"},
                     "jwtRules": [{"issuer": "https://issuer.test",
                                   "jwksUri": format!("file://{}", keys_path.display())}]}
        }),
    );
    let mut source = KubernetesSource::new(api.client());
    source.sync_timeout = Duration::from_secs(10);
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Kubernetes(source));
    options.jwks.refresh = Duration::from_secs(1);
    let control = mesh_control::start(options).await.expect("control starts");
    let cert = obtain_cert(&control, CLIENT_TOKEN).await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("pod-a", &["greeter"]))
        .await
        .expect("watch opens");
    let keys = |s: &Snapshot| -> Option<String> {
        s.inbound
            .as_ref()?
            .jwt_rules
            .first()?
            .jwks
            .as_deref()
            .map(str::to_owned)
    };
    let with_keys = until(&mut watch, WAIT, |s| keys(s).is_some()).await;
    assert!(keys(&with_keys).unwrap().contains("\"kid\":\"one\""));

    std::fs::write(&keys_path, jwks(&[&second])).unwrap();
    let rotated = until(&mut watch, RELIST_WAIT, |s| {
        keys(s).is_some_and(|k| k.contains("\"kid\":\"two\""))
    })
    .await;
    assert!(rotated.version > with_keys.version);
    control.shutdown().await;
}

/// A control service whose in-memory CA rotates its own root on `schedule` (state in the
/// `mesh-control-ca` Secret), with certificates of `cert_lifetime`.
async fn start_rotating(
    api: &FakeApi,
    schedule: mesh_core::anchor_rotation::RotationSchedule,
    cert_lifetime: Duration,
) -> RunningControl {
    let mut source = KubernetesSource::new(api.client());
    source.sync_timeout = Duration::from_secs(10);
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Kubernetes(source));
    options.root_rotation = Some(schedule);
    options.cert_lifetime = cert_lifetime;
    mesh_control::start(options).await.expect("control starts")
}

fn ca_secret(api: &FakeApi) -> Option<serde_json::Value> {
    api.object("/api/v1/secrets", "mesh-system", "mesh-control-ca")
}

#[tokio::test]
async fn replicas_and_restarts_share_the_rotating_root_through_a_secret() {
    let api = cluster().await;
    let schedule = mesh_core::anchor_rotation::RotationSchedule::default();
    let first = start_rotating(&api, schedule, Duration::from_secs(3600)).await;
    let secret = ca_secret(&api).expect("the CA Secret was created");
    assert!(secret["data"]["state.json"].is_string(), "{secret}");
    assert_eq!(secret["type"], "Opaque");

    // A second replica, and a restart, read the Secret: same roots, no second create.
    let second = start_rotating(&api, schedule, Duration::from_secs(3600)).await;
    assert_eq!(second.trust_bundle_pem(), first.trust_bundle_pem());
    let pem = first.trust_bundle_pem();
    first.shutdown().await;
    let restarted = start_rotating(&api, schedule, Duration::from_secs(3600)).await;
    assert_eq!(restarted.trust_bundle_pem(), pem);
    let creates = api
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/secrets"))
        .count();
    assert_eq!(creates, 1, "only the first replica creates the Secret");
    second.shutdown().await;
    restarted.shutdown().await;
}

#[tokio::test]
async fn two_replicas_rotate_together_one_step_each_stored_once() {
    let api = cluster().await;
    let schedule = mesh_core::anchor_rotation::RotationSchedule {
        root_lifetime: Duration::from_secs(12),
        rotate_at_percent: 50,
        ack_timeout: Duration::from_secs(1),
    };
    let a = start_rotating(&api, schedule, Duration::from_secs(2)).await;
    let b = start_rotating(&api, schedule, Duration::from_secs(2)).await;
    let first = a.trust_bundle_pem();
    assert_eq!(b.trust_bundle_pem(), first);
    let roots = |c: &RunningControl| c.trust_bundle().roots().to_vec();

    // Both pass through A + B to B alone, and agree on B.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut saw_two_a, mut saw_two_b) = (false, false);
    while tokio::time::Instant::now() < deadline {
        saw_two_a |= roots(&a).len() == 2;
        saw_two_b |= roots(&b).len() == 2;
        if saw_two_a
            && saw_two_b
            && roots(&a).len() == 1
            && a.trust_bundle_pem() != first
            && b.trust_bundle_pem() == a.trust_bundle_pem()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_two_a && saw_two_b, "both replicas published A + B");
    assert_ne!(a.trust_bundle_pem(), first, "the rotation finished");
    assert_eq!(roots(&a).len(), 1);
    assert_eq!(
        b.trust_bundle_pem(),
        a.trust_bundle_pem(),
        "the replicas agree on B"
    );
    let stored = ca_secret(&api).expect("the Secret");
    assert!(stored["data"]["state.json"].is_string());
    a.shutdown().await;
    b.shutdown().await;
}
