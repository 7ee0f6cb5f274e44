//! Services in other languages, end to end: stock grpcio (Python) clients and servers meshed by
//! their gRPC library's own xDS support, configured by the control service's xDS server from
//! the same config as the Rust meshes, with certificates from `meshctl certify`.
//!
//! Skipped when no Python with grpcio is found, unless `MESH_REQUIRE_TOOLS=1` (CI).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::certify::CertFiles;
use mesh_tests::python::{self, ScriptOutput};
use mesh_tests::{Config, Harness, eventually, listener, spiffe};
use mesh_tonic::MeshTonicExt;
use serde_json::Value;
use tempfile::TempDir;

/// Runs `meshctl certify` once for `account` (serving `service`, if any), with the xDS
/// bootstrap naming the control service as `localhost`, a name its certificate carries.
async fn certify(harness: &Harness, account: &str, service: Option<&str>) -> (TempDir, CertFiles) {
    let dir = tempfile::tempdir().unwrap();
    let port = harness.control.as_ref().unwrap().addr().port();
    let xds_server = format!("localhost:{port}");
    let node = format!("{account}-py");
    let mut extra = vec!["--xds-server", &xds_server, "--node-id", &node];
    if let Some(service) = service {
        extra.extend(["--service", service]);
    }
    let files = harness
        .certify_files(account, dir.path(), &extra)
        .await
        .unwrap_or_else(|e| panic!("certify {account}: {e}"));
    (dir, files)
}

/// The grpcio environment of `workload`: its bootstrap file (and gRPC's logs on failure).
fn grpc_env(workload: &CertFiles) -> Vec<(&'static str, String)> {
    vec![
        (
            "GRPC_XDS_BOOTSTRAP",
            workload.bootstrap.display().to_string(),
        ),
        ("GRPC_VERBOSITY", "error".to_owned()),
    ]
}

/// Runs the xDS client script as `workload` and parses what it printed.
async fn xds_client(
    python: &Path,
    workload: &CertFiles,
    target: &str,
    calls: usize,
    headers: &[&str],
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    xds_client_with(python, workload, target, calls, headers, 30).await
}

/// [`xds_client`], the first call waiting at most `first_timeout_s` for the resources.
async fn xds_client_with(
    python: &Path,
    workload: &CertFiles,
    target: &str,
    calls: usize,
    headers: &[&str],
    first_timeout_s: u32,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let ca = workload.ca.display().to_string();
    let calls = calls.to_string();
    let first_timeout = first_timeout_s.to_string();
    let mut args = vec![
        "--target",
        target,
        "--ca",
        &ca,
        "--calls",
        &calls,
        "--first-timeout",
        &first_timeout,
    ];
    for header in headers {
        args.extend(["--header", header]);
    }
    let env = grpc_env(workload);
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ScriptOutput {
        success,
        stdout,
        stderr,
    } = python::run(
        python,
        "xds_client.py",
        &args,
        &envs,
        Duration::from_secs(120),
    )
    .await;
    assert!(success, "xds_client.py failed:\n{stderr}");
    let parsed: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("xds_client.py printed no JSON ({e}):\n{stdout}\n{stderr}"));
    let counts = |key: &str| -> BTreeMap<String, u64> {
        parsed[key]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect()
    };
    (counts("replies"), counts("failures"))
}

/// The replica in a greeter reply (`Hello, py! from v1 (...) to ...`).
fn replica(message: &str) -> &str {
    message
        .split(" from ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_grpcio_xds_client_is_routed_split_and_authorized_like_a_meshed_one() {
    let Some(python) = python::grpcio_python() else {
        return;
    };
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let config = Config::new()
        .service("greeter", &[])
        .routes(
            "greeter",
            r#"
            - name: canary
              kind: grpc
              rules:
                - matches: [{headers: [{name: x-version, value: v2}]}]
                  backendRefs: [{name: greeter-v2}]
                - backendRefs:
                    - {name: greeter-v1, weight: 70}
                    - {name: greeter-v2, weight: 30}
            "#,
        )
        .service("greeter-v1", &[(l1.local_addr().unwrap(), "greeter")])
        .service("greeter-v2", &[(l2.local_addr().unwrap(), "greeter")])
        .top_level(
            r#"
            policies:
              - name: no-denied-v1
                target: {service: greeter-v1}
                action: DENY
                rules:
                  - from: {serviceAccounts: [default/py-denied]}
              - name: no-denied-v2
                target: {service: greeter-v2}
                action: DENY
                rules:
                  - from: {serviceAccounts: [default/py-denied]}
            "#,
        )
        .account("greeter")
        .account("py-client")
        .account("py-denied");
    let harness = Harness::start(&config).await.unwrap();
    let settings = |service| harness.settings("greeter", Some(service));
    let _v1 = harness
        .greeter_with_settings(l1, "v1", settings("greeter-v1"))
        .await
        .unwrap();
    let _v2 = harness
        .greeter_with_settings(l2, "v2", settings("greeter-v2"))
        .await
        .unwrap();
    let (_dir, client) = certify(&harness, "py-client", None).await;

    // 1,000 calls over mTLS: the Rust servers see the Python workload's SPIFFE ID, and the
    // 70/30 split holds (30 % of 1,000 has a standard deviation of 1.45 points; ±5 is > 3σ).
    const CALLS: u64 = 1000;
    let (replies, failures) =
        xds_client(&python, &client, "xds:///greeter.default", 1000, &[]).await;
    assert!(failures.is_empty(), "{failures:?}");
    let caller = spiffe("py-client");
    let mut by_replica = BTreeMap::<&str, u64>::new();
    for (message, count) in &replies {
        assert!(message.ends_with(&format!("to {caller}")), "{message}");
        *by_replica.entry(replica(message)).or_default() += count;
    }
    let v2 = by_replica.get("v2").copied().unwrap_or(0);
    assert_eq!(by_replica.values().sum::<u64>(), CALLS);
    let share = v2 as f64 * 100.0 / CALLS as f64;
    assert!(
        (25.0..=35.0).contains(&share),
        "v2 got {share:.1} %: {by_replica:?}"
    );

    // A header match outranks the split.
    let (replies, failures) = xds_client(
        &python,
        &client,
        "xds:///greeter.default",
        40,
        &["x-version=v2"],
    )
    .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(replies.keys().all(|m| replica(m) == "v2"), "{replies:?}");
    assert_eq!(replies.values().sum::<u64>(), 40);

    // An identity the policies deny is refused by the Rust servers, whatever the route.
    let (_denied_dir, denied) = certify(&harness, "py-denied", None).await;
    let (replies, failures) = xds_client(&python, &denied, "xds:///greeter.default", 10, &[]).await;
    assert!(replies.is_empty(), "{replies:?}");
    assert_eq!(failures.values().sum::<u64>(), 10, "{failures:?}");
    assert!(
        failures.keys().all(|f| f.starts_with("PERMISSION_DENIED")),
        "{failures:?}"
    );

    // The control service lists the Python clients as subscribers, by their node ids.
    let subscribers = harness.control.as_ref().unwrap().subscribers();
    assert!(
        subscribers.iter().all(|s| s.last_nack.is_none()),
        "{subscribers:?}"
    );
}

#[tokio::test]
async fn a_grpcio_xds_server_enforces_the_mesh_policy_on_meshed_rust_callers() {
    let Some(python) = python::grpcio_python() else {
        return;
    };
    // A port for the Python server (it binds it itself).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = Config::new()
        .service("py-greeter", &[(address, "py-server")])
        .service_keys("py-greeter", "defaultPolicy: deny")
        .top_level(
            r#"
            policies:
              - name: client-may-greet
                target: {service: py-greeter}
                action: ALLOW
                rules:
                  - from: {serviceAccounts: [default/client]}
                    to: {grpc: [{service: helloworld.Greeter}]}
            "#,
        )
        .account("py-server")
        .account("client")
        .account("stranger");
    let harness = Harness::start(&config).await.unwrap();
    let (_dir, server) = certify(&harness, "py-server", Some("py-greeter.default")).await;
    let cert_dir = server.dir.display().to_string();
    let port_arg = port.to_string();
    let env = grpc_env(&server);
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _child = python::spawn(
        &python,
        "xds_server.py",
        &["--port", &port_arg, "--cert-dir", &cert_dir],
        &envs,
    );

    // The meshed Rust client reaches it over mTLS once the server has its listener; the
    // Python server saw the Rust client's verified identity.
    let client_mesh = harness.mesh("client").await.unwrap();
    let mut client = GreeterClient::new(client_mesh.channel("py-greeter.default").await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reply = loop {
        match client
            .say_hello(HelloRequest {
                name: "rust".into(),
            })
            .await
        {
            Ok(reply) => break reply.into_inner().message,
            Err(status) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(?status, "the Python xDS server is not serving yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("the Python xDS server never answered: {status:?}"),
        }
    };
    assert_eq!(
        reply,
        format!("Hello, rust! from py-server to {}", spiffe("client"))
    );
    for _ in 0..5 {
        client
            .say_hello(HelloRequest {
                name: "rust".into(),
            })
            .await
            .unwrap();
    }

    // A caller the policy does not allow is refused by the Python server's RBAC filter.
    let stranger = harness.mesh("stranger").await.unwrap();
    let mut refused = GreeterClient::new(stranger.channel("py-greeter.default").await.unwrap());
    let status = refused
        .say_hello(HelloRequest {
            name: "stranger".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn a_resource_a_grpc_client_rejects_is_recorded_with_its_node_and_error() {
    let Some(python) = python::grpcio_python() else {
        return;
    };
    let l1 = listener().await.unwrap();
    // `(?x)` (free-spacing) is valid in the mesh's regex dialect and not in RE2, which gRPC
    // libraries use: the route configuration is refused by the client.
    let config = Config::new()
        .service("greeter", &[(l1.local_addr().unwrap(), "greeter")])
        .routes(
            "greeter",
            r#"
            - name: spaced
              kind: grpc
              rules:
                - matches: [{headers: [{name: x-version, type: RegularExpression, value: "(?x) v 2"}]}]
                  backendRefs: [{name: greeter}]
            "#,
        )
        .account("greeter")
        .account("py-nack");
    let harness = Harness::start(&config).await.unwrap();
    let _greeter = harness.greeter(l1, "g1", "greeter").await.unwrap();
    let (_dir, workload) = certify(&harness, "py-nack", None).await;
    // The client waits for a usable route while the test looks at the control service.
    let ca = workload.ca.display().to_string();
    let env = grpc_env(&workload);
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _client = python::spawn(
        &python,
        "xds_client.py",
        &[
            "--target",
            "xds:///greeter.default",
            "--ca",
            &ca,
            "--first-timeout",
            "60",
        ],
        &envs,
    );
    let control = harness.control.as_ref().unwrap();
    let nacked = || {
        control
            .subscribers()
            .into_iter()
            .find(|s| s.node == "py-nack-py" && s.last_nack.is_some())
    };
    assert!(
        eventually(Duration::from_secs(30), || nacked().is_some()).await,
        "no NACK recorded: {:?}",
        control.subscribers()
    );
    let nacked = nacked().unwrap();
    let nack = nacked.last_nack.unwrap();
    assert_eq!(nacked.identity.as_str(), spiffe("py-nack"));
    assert_eq!(nack.version, control.config_version());
    assert!(nack.error.contains("route|greeter.default"), "{nack:?}");
    assert_eq!(nack.details[0].field, "RouteConfiguration");
    assert_eq!(nack.details[0].code, "xds_nack");
}
