//! Inbound policy over Watch, over real TLS: a subscriber that names its own service gets that
//! service's authorization policy, and policy edits in the control file reach it (bad ones
//! do not).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use mesh_control::{ConfigSource, ControlOptions, ParseError, RunningControl};
use mesh_core::authz::{AuthzRequest, DefaultPolicy, InboundPolicy, MtlsMode, Verdict};
use mesh_core::proto::{self, WatchRequest, watch_request};
use mesh_core::route::RequestSummary;
use mesh_core::snapshot::Snapshot;
use support::*;
// tonic's re-export: the same `http` crate mesh-core uses, without another dependency here.
use tonic::codegen::http::{self, HeaderMap, HeaderValue, Method, Uri};

/// Long enough for the file poller to notice and settle an edit (200 ms polls, applied once
/// two reads agree), with room for a loaded machine.
const QUIET: Duration = Duration::from_millis(1200);

/// A control file where `greeter` takes gRPC calls to `helloworld.Greeter` from the namespace
/// `allowed`, with `default` as its default policy; `extra` is appended to `policies`.
///
/// The identity `default/greeter` also serves `other` and `new` (with no settings of its
/// own), so that one subscriber may name each as its own: only a service's replicas may.
fn policy_yaml(allowed: &str, default: &str, extra: &str) -> String {
    format!(
        "\
defaultPolicy: all-authenticated
services:
  - name: greeter
    namespace: default
    mtls: permissive
    defaultPolicy: {default}
    exemptPaths: [/grpc.health.v1.Health/Check]
    endpoints:
      - address: 127.0.0.1:5000
        identity: spiffe://mesh.local/ns/default/sa/greeter
  - name: other
    namespace: default
    endpoints:
      - address: 127.0.0.1:9999
        identity: spiffe://mesh.local/ns/default/sa/other
      - address: 127.0.0.1:9998
        identity: spiffe://mesh.local/ns/default/sa/greeter
  - name: new
    namespace: default
    endpoints:
      - address: 127.0.0.1:9996
        identity: spiffe://mesh.local/ns/default/sa/greeter
bootstrapTokens:
  - token: greeter-token-0123456789
    namespace: default
    serviceAccount: greeter
  - token: client-token-0123456789
    namespace: default
    serviceAccount: client
policies:
  - name: callers
    target: {{service: greeter}}
    action: ALLOW
    rules:
      - from: {{namespaces: [{allowed}]}}
        to: {{grpc: [{{service: helloworld.Greeter}}]}}
{extra}"
    )
}

/// A policy for `other`, which a `greeter` subscriber must not hear about.
// Not a `\`-continued string: that would strip the indentation YAML needs.
const OTHER_POLICY: &str = concat!(
    "  - name: others\n",
    "    target: {service: other}\n",
    "    action: DENY\n",
    "    rules: [{from: {unauthenticated: true}}]\n",
);

fn subscribe_as(node: &str, own_service: Option<&str>, destinations: &[&str]) -> WatchRequest {
    WatchRequest {
        kind: Some(watch_request::Kind::Subscribe(proto::Subscribe {
            node: node.to_owned(),
            own_service: own_service.map(|name| service_ref("default", name)),
            destinations: destinations
                .iter()
                .map(|name| service_ref("default", name))
                .collect(),
            grpc_services: Vec::new(),
            // A client that predates increments: full snapshots only.
            incremental: false,
        })),
    }
}

fn model(wire: proto::Snapshot) -> Snapshot {
    Snapshot::try_from(wire).expect("the client's own validation accepts the snapshot")
}

/// The verdict for a gRPC call to `helloworld.Greeter/SayHello` from `namespace/caller`.
fn greet_from(inbound: &InboundPolicy, namespace: &str) -> Verdict {
    let method = Method::POST;
    let uri = Uri::from_static("/helloworld.Greeter/SayHello");
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let summary = RequestSummary::new(&method, &uri, &headers);
    let peer = spiffe_id(namespace, "caller");
    inbound
        .evaluate(&AuthzRequest::new(&summary, Some(&peer)))
        .verdict
}

async fn start_file(path: &Path) -> RunningControl {
    let options = ControlOptions::new(trust_domain(), ConfigSource::File(path.to_owned()));
    mesh_control::start(options).await.expect("control starts")
}

#[tokio::test]
async fn subscriber_gets_the_inbound_policy_of_its_own_service() {
    let control = start_inline(&policy_yaml("shop", "deny", OTHER_POLICY)).await;
    let cert = obtain_cert(&control, "greeter-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;

    let mut watch = open_watch(
        &mut client,
        subscribe_as("pod-a", Some("greeter"), &["other"]),
    )
    .await
    .expect("watch opens");
    let snapshot = model(watch.next().await);
    assert_eq!(snapshot.version, 1);
    let inbound = snapshot
        .inbound
        .expect("own service named: inbound policy sent");
    assert_eq!(inbound.service.to_string(), "greeter.default");
    assert_eq!(inbound.mtls, MtlsMode::Permissive);
    assert_eq!(inbound.default_policy, DefaultPolicy::Deny);
    assert_eq!(inbound.exempt_paths.len(), 1);
    let names: Vec<&str> = inbound.policies.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["callers"], "only the policies that target greeter");
    assert_eq!(greet_from(&inbound, "shop"), Verdict::Allow);
    assert_eq!(greet_from(&inbound, "web"), Verdict::Deny);

    // A subscriber that serves nothing gets no inbound policy.
    let mut client_only = open_watch(&mut client, subscribe_as("pod-b", None, &["greeter"]))
        .await
        .expect("watch opens");
    assert_eq!(model(client_only.next().await).inbound, None);

    // A service with no settings of its own gets strict mTLS and the mesh-wide default.
    let mut unlisted = open_watch(&mut client, subscribe_as("pod-c", Some("new"), &[]))
        .await
        .expect("watch opens");
    let inbound = model(unlisted.next().await)
        .inbound
        .expect("inbound policy");
    assert_eq!(
        (inbound.mtls, inbound.default_policy, inbound.policies.len()),
        (MtlsMode::Strict, DefaultPolicy::AllAuthenticated, 0)
    );

    // Re-subscribing as another service switches the inbound policy at once.
    watch
        .send(subscribe_as("pod-a", Some("other"), &["other"]))
        .await;
    let switched = model(watch.next().await);
    assert_eq!(switched.version, 1);
    let inbound = switched.inbound.expect("inbound policy");
    assert_eq!(inbound.service.to_string(), "other.default");
    assert_eq!(inbound.default_policy, DefaultPolicy::AllAuthenticated);
    let names: Vec<&str> = inbound.policies.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["others"]);
    control.shutdown().await;
}

#[tokio::test]
async fn policy_edits_reach_the_service_and_bad_edits_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.yaml");
    std::fs::write(&path, policy_yaml("shop", "deny", "")).expect("write");
    let control = start_file(&path).await;
    let cert = obtain_cert(&control, "greeter-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;

    let mut server = open_watch(&mut client, subscribe_as("greeter-0", Some("greeter"), &[]))
        .await
        .expect("opens");
    let mut bystander = open_watch(&mut client, subscribe_as("web-0", None, &["greeter"]))
        .await
        .expect("opens");
    let first = model(server.next().await);
    assert_eq!(first.version, 1);
    assert_eq!(
        greet_from(first.inbound.as_ref().expect("inbound"), "web"),
        Verdict::Deny
    );
    bystander.next().await;
    server.send(ack(1, "")).await;

    // Allowing another namespace is a new version, pushed to the service quickly; a subscriber
    // that only calls greeter sees no change in its projection and hears nothing.
    let started = tokio::time::Instant::now();
    std::fs::write(&path, policy_yaml("web", "deny", "")).expect("write");
    let second = model(server.next().await);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(second.version, 2);
    let inbound = second.inbound.expect("inbound");
    assert_eq!(greet_from(&inbound, "web"), Verdict::Allow);
    assert_eq!(greet_from(&inbound, "shop"), Verdict::Deny);
    bystander.expect_nothing(Duration::from_millis(300)).await;
    server.send(ack(2, "")).await;
    assert_eventually(WAIT, "ACK of version 2", || {
        control
            .subscribers()
            .iter()
            .any(|s| s.node == "greeter-0" && s.last_acked_version == Some(2))
    })
    .await;

    // A policy for another service: a new version, nothing for greeter.
    std::fs::write(&path, policy_yaml("web", "deny", OTHER_POLICY)).expect("write");
    assert_eventually(WAIT, "version 3", || control.config_version() == 3).await;
    server.expect_nothing(Duration::from_millis(300)).await;

    // A bad policy edit is refused with every field path, and the last good config serves on.
    let bad = policy_yaml("Web", "deny", OTHER_POLICY)
        .replace("action: ALLOW", "action: PERMIT")
        .replace("{service: other}", "{service: othr}");
    let errors = match mesh_control::file::parse(&bad, &trust_domain()) {
        Err(ParseError::Invalid(errors)) => errors
            .errors()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        other => panic!("expected validation errors, got {other:?}"),
    };
    assert_eq!(
        errors,
        [
            r#"policies[0].action: unknown action "PERMIT": expected ALLOW or DENY"#,
            r#"policies[0].rules[0].from.namespaces[0]: invalid namespace "Web": only lowercase letters, digits and '-' are allowed"#,
            r#"policies[1].target.service: unknown service "othr.default""#,
        ]
    );
    std::fs::write(&path, &bad).expect("write");
    server.expect_nothing(QUIET).await;
    assert_eq!(control.config_version(), 3);

    // Fixed: switching greeter to the audit default arrives as the next version.
    std::fs::write(&path, policy_yaml("web", "audit", OTHER_POLICY)).expect("write");
    let fourth = model(server.next().await);
    assert_eq!(fourth.version, 4);
    let inbound = fourth.inbound.expect("inbound");
    assert_eq!(inbound.default_policy, DefaultPolicy::Audit);
    // An ALLOW policy targets the call, so the default does not apply: still denied.
    assert_eq!(greet_from(&inbound, "shop"), Verdict::Deny);
    control.shutdown().await;
}

#[tokio::test]
async fn naming_another_services_name_as_ones_own_is_refused() {
    let control = start_inline(&policy_yaml("shop", "deny", OTHER_POLICY)).await;
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let client_id = "spiffe://mesh.local/ns/default/sa/client";

    // `default/client` serves neither greeter nor a service the config lacks: refused with
    // PERMISSION_DENIED naming the service and the identity, and never listed as serving it.
    for (own, service) in [
        ("greeter", "greeter.default"),
        ("unlisted", "unlisted.default"),
    ] {
        let status = watch_error(&mut client, subscribe_as("pod-x", Some(own), &["other"])).await;
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(service) && status.message().contains(client_id),
            "{}",
            status.message()
        );
    }
    assert!(control.subscribers().is_empty());

    // As a client only it is served, and a later `subscribe` that claims greeter ends it.
    let mut watch = open_watch(&mut client, subscribe_as("pod-x", None, &["greeter"]))
        .await
        .expect("watch opens");
    assert_eq!(model(watch.next().await).inbound, None);
    watch
        .send(subscribe_as("pod-x", Some("greeter"), &["greeter"]))
        .await;
    let status = watch.end_status().await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // greeter's own replica gets greeter's policy.
    let cert = obtain_cert(&control, "greeter-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe_as("greeter-0", Some("greeter"), &[]))
        .await
        .expect("watch opens");
    let inbound = model(watch.next().await).inbound.expect("inbound policy");
    assert_eq!(inbound.service.to_string(), "greeter.default");
    assert_eventually(WAIT, "listed as serving greeter", || {
        control.subscribers().iter().any(|s| {
            s.node == "greeter-0"
                && s.own_service.as_ref().map(ToString::to_string).as_deref()
                    == Some("greeter.default")
        })
    })
    .await;
    control.shutdown().await;
}
