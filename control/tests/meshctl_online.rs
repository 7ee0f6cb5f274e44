//! `meshctl status` and `meshctl certs`, the binary, against control services running in this
//! process over real sockets: two replicas, a subscriber on each (one NACKs a version with
//! the fields it refused), the trust bundle from the admin port, and the chain the control
//! service's own mTLS port presents.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use mesh_control::{ConfigSource, ControlOptions, RunningControl};
use mesh_core::proto::{self, watch_request};
use serde_json::Value;
use support::*;

/// A control replica with an admin port.
async fn replica() -> RunningControl {
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(5000)));
    options.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    mesh_control::start(options).await.expect("control starts")
}

/// Runs meshctl with `args`; its exit status and standard output.
async fn meshctl(args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(&args)
            .env_remove("MESH_CONTROL_ADMIN")
            .env_remove("MESH_TRUST_DOMAIN")
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.is_empty() || output.status.code() != Some(0),
            "{stderr}"
        );
        (
            output.status.code().unwrap(),
            String::from_utf8(output.stdout).unwrap() + &stderr,
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_replicas_subscribers_and_a_nack_by_field() {
    let (a, b) = (replica().await, replica().await);
    // One subscriber on each replica; the one on `b` refuses version 1, by field.
    let mut watches = Vec::new();
    for (control, node) in [(&a, "pod-a"), (&b, "pod-b")] {
        let cert = obtain_cert(control, "client-token-0123456789").await;
        let mut client = connect(control, Some(&cert)).await;
        let mut watch = open_watch(&mut client, subscribe(node, &["greeter"]))
            .await
            .unwrap();
        let snapshot = watch.next().await;
        let mut answer = ack(snapshot.version, "");
        if node == "pod-b"
            && let Some(watch_request::Kind::Ack(ack)) = &mut answer.kind
        {
            ack.error = "destinations[0].endpoints[0].address: not an address".to_owned();
            ack.details = vec![proto::NackDetail::new(
                "destinations[0].endpoints[0].address",
                "not an address",
                proto::NACK_INVALID_FIELD,
            )];
        }
        watch.send(answer).await;
        watches.push((client, watch));
    }
    let recorded = |control: &RunningControl| {
        let s = control.subscribers();
        s.len() == 1 && (s[0].last_acked_version.is_some() || s[0].last_nack.is_some())
    };
    assert_eventually(WAIT, "both answers recorded", || {
        recorded(&a) && recorded(&b)
    })
    .await;

    let admins = format!("{},{}", a.admin_addr().unwrap(), b.admin_addr().unwrap());
    let (code, text) = meshctl(vec!["status".into(), "--admin".into(), admins.clone()]).await;
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    let line = |node: &str| {
        text.lines()
            .find(|l| l.contains(node))
            .unwrap_or_else(|| panic!("no {node} in {text}"))
            .to_owned()
    };
    // Each row names the replica serving it, as the replica names itself.
    assert!(line("pod-a").starts_with(a.replica_name()), "{text}");
    assert!(line("pod-a").contains("SYNCED"), "{text}");
    assert!(line("pod-b").starts_with(b.replica_name()), "{text}");
    assert!(line("pod-b").contains("NACKED"), "{text}");
    assert!(
        text.contains(
            "NACK of version 1: destinations[0].endpoints[0].address: not an address (invalid_field)"
        ),
        "{text}"
    );
    // The certificate's time left: issued now for a day.
    assert!(line("pod-a").trim_end().ends_with("23h59m"), "{text}");

    let (code, json) = meshctl(vec![
        "status".into(),
        "--admin".into(),
        admins,
        "-o".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["replicas"].as_array().unwrap().len(), 2);
    let b_row = json["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["node"] == "pod-b")
        .unwrap();
    assert_eq!(
        b_row["lastNack"]["details"][0]["field"],
        "destinations[0].endpoints[0].address"
    );

    // A replica that does not answer is named, and the exit status says so.
    let (code, text) = meshctl(vec![
        "status".into(),
        "--admin".into(),
        format!("{},127.0.0.1:1", a.admin_addr().unwrap()),
    ])
    .await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("unreachable: 127.0.0.1:1"), "{text}");
    drop(watches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_shows_the_roots_and_the_chain_a_server_presents() {
    let control = replica().await;
    let admin = control.admin_addr().unwrap().to_string();
    let (code, text) = meshctl(vec!["certs".into(), "--admin".into(), admin.clone()]).await;
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with(&format!("trust bundle (control {admin}):")),
        "{text}"
    );
    assert!(text.contains("(CA)"), "{text}");

    // The control service's own gRPC port presents an SVID of the bundle.
    let (code, text) = meshctl(vec![
        "certs".into(),
        "--admin".into(),
        admin,
        "--workload".into(),
        control.addr().to_string(),
    ])
    .await;
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("verified: spiffe://mesh.local/ns/mesh-system/sa/mesh-control"),
        "{text}"
    );

    // Against another bundle, the same chain does not verify: exit 1, with the reason.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.pem");
    std::fs::write(
        &other,
        mesh_core::testing::TestCa::new("mesh.local")
            .bundle()
            .to_pem(),
    )
    .unwrap();
    let (code, text) = meshctl(vec![
        "certs".into(),
        "--trust-bundle".into(),
        other.display().to_string(),
        "--workload".into(),
        control.addr().to_string(),
    ])
    .await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("NOT verified"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_grpc_services_the_running_servers_do_not_serve() {
    let control = replica().await;
    // A replica of `client.default` that serves helloworld.Greeter, as a meshed tonic server
    // tells the control service.
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut first = subscribe("pod-g", &["greeter"]);
    if let Some(watch_request::Kind::Subscribe(s)) = &mut first.kind {
        s.grpc_services = vec!["helloworld.Greeter".to_owned()];
    }
    let mut watch = open_watch(&mut client, first).await.unwrap();
    watch.next().await;
    assert_eventually(WAIT, "the services are recorded", || {
        control
            .subscribers()
            .first()
            .is_some_and(|s| s.grpc_services == ["helloworld.Greeter"])
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(
        &file,
        r#"
services:
  - name: client
    endpoints: [{address: "127.0.0.1:9997", identity: "spiffe://mesh.local/ns/default/sa/client"}]
    routes:
      - name: by-method
        kind: grpc
        rules:
          - matches: [{method: {service: helloworld.Greeter, method: SayHello}}]
            backendRefs: [{name: client}]
          - matches: [{method: {service: helloworld.Nope}}]
            backendRefs: [{name: client}]
policies:
  - name: greeters
    target: {service: client}
    action: ALLOW
    rules:
      - from: {serviceAccounts: [default/greeter]}
        to: {grpc: [{service: helloworld.Greeter}, {service: helloworld.Other}]}
"#,
    )
    .unwrap();
    let admin = control.admin_addr().unwrap().to_string();
    let config = file.display().to_string();
    // Offline: nothing to say about services.
    let (code, text) = meshctl(vec!["check".into(), "--config".into(), config.clone()]).await;
    assert_eq!(code, 0, "{text}");
    // Against the running mesh: the two services no replica serves, by field path.
    let (code, text) = meshctl(vec![
        "check".into(),
        "--config".into(),
        config,
        "--admin".into(),
        admin,
    ])
    .await;
    println!("{text}");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "warning: services[0].routes[0].rules[1].matches[0].method.service: gRPC service helloworld.Nope is not served by client.default: its running servers serve helloworld.Greeter"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "warning: policies[0].rules[0].to.grpc[1].service: gRPC service helloworld.Other"
        ),
        "{text}"
    );
    assert_eq!(text.matches("warning:").count(), 2, "{text}");
    drop(watch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_merges_the_edges_of_every_replica() {
    let (a, b) = (replica().await, replica().await);
    // A workload of `client.default` on each replica, reporting calls to greeter: 300 (3
    // failed) through `a`, 100 (7 failed) through `b`.
    let mut watches = Vec::new();
    for (control, calls, failures, bucket) in [(&a, 300u64, 3u64, 4usize), (&b, 100, 7, 6)] {
        let cert = obtain_cert(control, "client-token-0123456789").await;
        let mut client = connect(control, Some(&cert)).await;
        let mut watch = open_watch(&mut client, subscribe("pod", &["greeter"]))
            .await
            .unwrap();
        let snapshot = watch.next().await;
        watch.send(ack(snapshot.version, "")).await;
        let mut latency_buckets = vec![0; 24];
        latency_buckets[bucket] = calls;
        watch
            .send(proto::WatchRequest {
                kind: Some(watch_request::Kind::EdgeReport(proto::EdgeReport {
                    edges: vec![proto::EdgeStats {
                        destination: Some(service_ref("default", "greeter")),
                        calls,
                        failures,
                        latency_buckets,
                    }],
                })),
            })
            .await;
        watches.push((client, watch));
    }
    let admins = format!("{},{}", a.admin_addr().unwrap(), b.admin_addr().unwrap());
    let mut json = Value::Null;
    for _ in 0..50 {
        let (code, text) = meshctl(vec![
            "top".into(),
            "--admin".into(),
            admins.clone(),
            "-o".into(),
            "json".into(),
        ])
        .await;
        assert_eq!(code, 0, "{text}");
        json = serde_json::from_str(&text).unwrap();
        if json["edges"][0]["calls"] == 400 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let edge = &json["edges"][0];
    assert_eq!(edge["from"], "client.default", "{json}");
    assert_eq!(edge["to"], "greeter.default", "{json}");
    assert_eq!(edge["calls"], 400, "{json}");
    assert_eq!(edge["failures"], 10, "{json}");
    assert!((edge["successRate"].as_f64().unwrap() - 0.975).abs() < 1e-9);
    // Bucket 6 (3.2 to 6.4 ms) on `b` is the slower tail: the merged p99 is from it.
    let p99 = edge["p99Ms"].as_f64().unwrap();
    assert!((3.2..=6.4).contains(&p99), "{json}");

    let (code, text) = meshctl(vec!["top".into(), "--admin".into(), admins]).await;
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("client.default") && l.contains("97.5%")),
        "{text}"
    );
    drop(watches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lints_the_config_a_control_service_has_in_force() {
    // What a source (a file here; Kubernetes objects alike) gave the control service: valid,
    // with a rule that can never apply.
    let yaml = format!(
        "{}\n",
        config_yaml(5000).replace(
            "  - name: client\n    namespace: default\n",
            "  - name: client\n    namespace: default\n    routes:\n      - name: site\n        rules:\n          - backendRefs: [{name: client}]\n          - backendRefs: [{name: greeter}]\n",
        )
    );
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(yaml));
    options.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let control = mesh_control::start(options).await.expect("control starts");
    let admin = control.admin_addr().unwrap().to_string();
    let (code, text) = meshctl(vec!["check".into(), "--admin".into(), admin.clone()]).await;
    println!("{text}");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("warning: services[2].routes[0].rules[1]: shadowed"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "control {admin} /config: 0 error(s), 1 warning(s)"
        )),
        "{text}"
    );
}
