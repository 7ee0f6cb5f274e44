//! Metrics end to end: after a known sequence of calls (successes, a retried call, a timeout, a
//! denied call, a gRPC call), `/metrics` on the mesh's admin port has exactly the expected
//! counts and labels, the control service's `/metrics` counts its certificates and
//! subscribers, and `/debug/config` shows the snapshot in use.
//!
//! Alone in its file on purpose: the `metrics` recorder is process-global, and a test binary
//! is one process, so no other test may emit into these counters.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::telemetry::{admin_get, find, parse, sum};
use mesh_tests::web::{WebMode, get};
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tonic::MeshTonicExt;
use mesh_tower::Mesh;

const ROUTES: &str = r#"
- name: api
  rules:
    - matches: [{path: {type: PathPrefix, value: /sleep}}]
      backendRefs: [{name: web}]
      timeouts: {request: 100ms}
    - backendRefs: [{name: web}]
      retry: {codes: [503], attempts: 1}
"#;

const POLICIES: &str = r#"
policies:
  - name: no-intruder
    target: {service: web}
    action: DENY
    rules:
      - from: {serviceAccounts: [default/intruder]}
"#;

#[tokio::test]
async fn metrics_count_exactly_what_happened() {
    let web_listener = listener().await.unwrap();
    let greeter_listener = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(web_listener.local_addr().unwrap(), "web")])
        .routes("web", ROUTES)
        .service(
            "greeter",
            &[(greeter_listener.local_addr().unwrap(), "greeter")],
        )
        .top_level(POLICIES)
        .account("web")
        .account("greeter")
        .account("client")
        .account("intruder");
    // The control service starts first with an admin port: it installs the process's
    // recorder before any mesh makes its metric handles.
    let harness = Harness::start_with(&config, |o| {
        o.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap();
    let control_admin = harness.control.as_ref().unwrap().admin_addr().unwrap();
    let _web = harness
        .web(web_listener, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let _greeter = harness
        .greeter(greeter_listener, "g1", "greeter")
        .await
        .unwrap();

    let settings = harness
        .settings("client", None)
        .with_admin_addr("127.0.0.1:0".parse().unwrap());
    let client_mesh = Mesh::start(settings).await.unwrap();
    let admin = client_mesh.admin_addr().unwrap();
    let client = client_mesh.client::<Body>("web").await.unwrap();

    // Two successes, one 503 retried into a success, one timeout.
    assert_eq!(get(&client, "/a").await.status, 200);
    assert_eq!(get(&client, "/b").await.status, 200);
    assert_eq!(get(&client, "/fail/503/1?id=r").await.status, 200);
    assert_eq!(get(&client, "/sleep/2000").await.status, 504);
    // A denied call, from another workload.
    let intruder_mesh = harness.mesh("intruder").await.unwrap();
    let intruder = intruder_mesh.client::<Body>("web").await.unwrap();
    assert_eq!(get(&intruder, "/a").await.status, 403);
    // One gRPC call: its status is in the trailers.
    let mut greeter = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());
    greeter
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .unwrap();

    // Server-side records land when the response body has been sent: give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, text) = admin_get(admin, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{text}");
    let m = parse(&text);
    let count = |name: &str, labels: &[(&str, &str)]| sum(&m, name, labels);

    // Client side, by route and backend and status class.
    let out = [
        ("server_address", "web.default"),
        ("mesh_destination", "web.default"),
        ("mesh_route", "api"),
        ("mesh_backend", "web.default"),
    ];
    let class = |c: &'static str| {
        let mut l = out.to_vec();
        l.push(("http_request_method", "GET"));
        l.push(("http_response_status_code", c));
        l
    };
    const HTTP_CLIENT: &str = "http_client_request_duration_seconds_count";
    assert_eq!(count(HTTP_CLIENT, &class("200")), 3.0, "{text}");
    assert_eq!(
        count(HTTP_CLIENT, &class("504")),
        1.0,
        "the timeout: {text}"
    );
    assert_eq!(
        count(HTTP_CLIENT, &class("403")),
        1.0,
        "the denied call: {text}"
    );
    assert_eq!(count(HTTP_CLIENT, &out), 5.0, "{text}");
    // Failed calls, and only they, carry `error_type`: 4xx and 5xx on a client.
    let failed = |code| {
        let mut l = out.to_vec();
        l.push(("error_type", code));
        count(HTTP_CLIENT, &l)
    };
    assert_eq!(failed("504") + failed("403"), 2.0, "{text}");
    assert!(
        !text.lines().any(
            |l| l.starts_with("http_client_request_duration_seconds_count")
                && l.contains("http_response_status_code=\"200\"")
                && l.contains("error_type")
        ),
        "{text}"
    );
    assert_eq!(count("mesh_client_retries_total", &out[1..]), 1.0);
    assert_eq!(
        count("mesh_client_retry_budget_exhausted_total", &out[1..]),
        0.0
    );
    let timeouts = |kind| {
        let mut l = out[1..].to_vec();
        l.push(("mesh_kind", kind));
        count("mesh_client_timeouts_total", &l)
    };
    assert_eq!(timeouts("request"), 1.0);
    assert_eq!(timeouts("try"), 0.0);
    // The raw path never becomes a label.
    assert!(!text.contains("/fail/503"), "{text}");

    // Server side, by caller identity: the retried call arrived twice, once failing; the
    // timed-out one never got a response, so it is not counted; the intruder's was refused.
    let client_id = spiffe("client");
    let intruder_id = spiffe("intruder");
    let inbound = |peer: &str, code: &str| {
        count(
            "http_server_request_duration_seconds_count",
            &[
                ("mesh_service", "web.default"),
                ("mesh_peer_identity", peer),
                ("http_request_method", "GET"),
                ("http_response_status_code", code),
            ],
        )
    };
    assert_eq!(inbound(&client_id, "200"), 3.0, "{text}");
    assert_eq!(inbound(&client_id, "503"), 1.0, "{text}");
    assert_eq!(inbound(&intruder_id, "403"), 1.0, "{text}");
    // A server's 4xx is the caller's doing: no `error_type` on it; its 5xx has one.
    let server_errors = |code| {
        count(
            "http_server_request_duration_seconds_count",
            &[("mesh_service", "web.default"), ("error_type", code)],
        )
    };
    assert_eq!(server_errors("503"), 1.0, "{text}");
    assert_eq!(server_errors("403"), 0.0, "{text}");

    // Authorization decisions by policy and verdict.
    let decisions = |policy, verdict| {
        count(
            "mesh_server_authz_decisions_total",
            &[
                ("mesh_service", "web.default"),
                ("mesh_policy", policy),
                ("mesh_verdict", verdict),
            ],
        )
    };
    assert_eq!(decisions("no-intruder", "deny"), 1.0, "{text}");
    assert_eq!(
        decisions("default:all-unauthenticated", "allow"),
        5.0,
        "a, b, the failed try and its retry, the sleep: {text}"
    );

    // gRPC, both sides, status from the trailers.
    assert_eq!(
        count(
            "rpc_client_call_duration_seconds_count",
            &[
                ("rpc_system_name", "grpc"),
                ("rpc_method", "helloworld.Greeter/SayHello"),
                ("rpc_status_code", "OK"),
                ("server_address", "greeter.default"),
                ("mesh_destination", "greeter.default"),
                ("mesh_backend", "greeter.default"),
                ("mesh_route", ""),
            ],
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        count(
            "rpc_server_call_duration_seconds_count",
            &[
                ("rpc_system_name", "grpc"),
                ("rpc_method", "helloworld.Greeter/SayHello"),
                ("rpc_status_code", "OK"),
                ("mesh_service", "greeter.default"),
                ("mesh_peer_identity", &client_id),
            ],
        ),
        1.0,
        "{text}"
    );
    // Durations are real histograms with buckets.
    assert!(
        !find(
            &m,
            "rpc_server_call_duration_seconds_bucket",
            &[("le", "0.005")]
        )
        .is_empty()
    );

    // The mesh's own state.
    let own = [("mesh_service", "")];
    assert_eq!(count("mesh_control_connected", &own), 1.0, "{text}");
    assert!(count("mesh_config_version", &own) >= 1.0, "{text}");
    let expiry = count("mesh_certificate_expiry_seconds", &own);
    assert!(expiry > 3600.0 && expiry <= 86_400.0, "{expiry}");
    assert!(
        !find(&m, "mesh_config_age_seconds", &own).is_empty(),
        "{text}"
    );
    assert_eq!(
        count(
            "mesh_client_endpoints",
            &[("mesh_backend", "web.default"), ("mesh_state", "available")]
        ),
        1.0,
        "{text}"
    );

    // The workload's counters exist before their first event, at 0.
    for (name, labels) in [
        (
            "mesh_client_outlier_ejections_total",
            &[("mesh_backend", "web.default")][..],
        ),
        ("mesh_config_rejected_total", &own[..]),
        (
            "mesh_client_retries_total",
            &[("mesh_destination", "greeter.default"), ("mesh_route", "")][..],
        ),
        (
            "mesh_client_timeouts_total",
            &[
                ("mesh_destination", "greeter.default"),
                ("mesh_kind", "try"),
            ][..],
        ),
    ] {
        assert!(!find(&m, name, labels).is_empty(), "no {name}: {text}");
        assert_eq!(count(name, labels), 0.0, "{name}: {text}");
    }

    // The control service's metrics, on its own admin port (same process, same recorder).
    let (status, control_text) = admin_get(control_admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let c = parse(&control_text);
    assert_eq!(
        sum(&c, "mesh_control_certificates_issued_total", &[]),
        4.0,
        "web, greeter, client, intruder: {control_text}"
    );
    // The client, the intruder, and web itself: a server follows its own service's routes.
    assert_eq!(
        sum(
            &c,
            "mesh_control_subscribers",
            &[("destination", "web.default")]
        ),
        3.0,
        "{control_text}"
    );
    assert!(sum(&c, "mesh_control_acks_total", &[]) >= 4.0);
    assert_eq!(sum(&c, "mesh_control_nacks_total", &[]), 0.0);
    // Counters exist before their first event, at 0 with each label.
    for series in [
        "mesh_control_nacks_total 0",
        "mesh_control_config_reload_errors_total{reason=\"invalid\"} 0",
        "mesh_control_certificates_refused_total{reason=\"rate_limited\"} 0",
    ] {
        assert!(
            control_text.lines().any(|line| line == series),
            "no `{series}` in {control_text}"
        );
    }

    // The snapshot in use, as JSON.
    let (status, config) = admin_get(admin, "/debug/config").await.unwrap();
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert!(config["version"].as_u64().unwrap() >= 1);
    let destinations = config["destinations"].as_array().unwrap();
    let web = destinations
        .iter()
        .find(|d| d["service"] == "web.default")
        .unwrap();
    assert_eq!(web["routes"][0]["name"], "api");
    assert_eq!(web["endpoints"].as_array().unwrap().len(), 1);

    // The compiled route table the client checks for web, in precedence order.
    let (status, routes) = admin_get(admin, "/debug/routes").await.unwrap();
    assert_eq!(status, 200);
    let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
    let web = routes["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["service"] == "web.default")
        .unwrap_or_else(|| panic!("no web.default in {routes}"));
    let first = &web["http"][0];
    assert_eq!(first["route"], "api", "{web}");
    assert_eq!(first["backends"][0]["service"], "web.default", "{web}");
    assert!(
        first["conditions"].as_str().unwrap().contains("path"),
        "{web}"
    );

    // The clients' live endpoints: web's one replica, connected, with a latency estimate from
    // the calls above and none in flight now.
    let (status, endpoints) = admin_get(admin, "/debug/endpoints").await.unwrap();
    assert_eq!(status, 200);
    let endpoints: serde_json::Value = serde_json::from_str(&endpoints).unwrap();
    let web = endpoints["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend"] == "web.default")
        .unwrap_or_else(|| panic!("no web.default backend in {endpoints}"));
    let replica = &web["endpoints"][0];
    assert_eq!(replica["state"], "available", "{replica}");
    assert_eq!(replica["inFlight"], 0, "{replica}");
    assert_eq!(replica["weight"], 1, "{replica}");
    assert!(replica["identity"].as_str().unwrap().ends_with("/sa/web"));
    assert!(replica["peakEwmaMs"].as_f64().unwrap() > 0.0, "{replica}");
    assert!(replica["ejectedForSeconds"].is_null(), "{replica}");
}
