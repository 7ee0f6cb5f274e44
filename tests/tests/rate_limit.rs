//! Local rate limiting end to end: limits from the control file, enforced by the meshed
//! server on calls from meshed clients over mTLS; refusals in the form the mesh's client reads
//! (RESOURCE_EXHAUSTED with `grpc-retry-pushback-ms`, 429 with `Retry-After`); per-identity
//! limits and overrides counted per caller; a limit on one route; updates that keep the
//! limits' state; refusals counted by caller on `/metrics`.
//!
//! Limits are 1 call per second with a small burst, and every assertion counts outcomes: a
//! caller is admitted at least its burst, and at most its burst plus one call per second the
//! calls took (so a slow machine changes no verdict).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use axum::body::Body;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::telemetry::{admin_get, parse, sum};
use mesh_tests::web::{WebMode, get};
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tonic::MeshTonicExt;
use mesh_tower::Mesh;

/// The calls of one caller: how many were admitted, and every refusal's status.
struct Outcomes {
    admitted: usize,
    refused: Vec<tonic::Status>,
    /// Whole seconds the calls took, rounded up: the most a 1/s limit refilled meanwhile.
    seconds: usize,
}

/// `calls` greetings from `mesh`, one after another.
async fn greet(mesh: &Mesh, calls: usize) -> Outcomes {
    let mut client = GreeterClient::new(mesh.channel("greeter.default").await.unwrap());
    let started = Instant::now();
    let mut outcomes = Outcomes {
        admitted: 0,
        refused: Vec::new(),
        seconds: 0,
    };
    for _ in 0..calls {
        match client.say_hello(HelloRequest { name: "ann".into() }).await {
            Ok(_) => outcomes.admitted += 1,
            Err(status) => outcomes.refused.push(status),
        }
    }
    outcomes.seconds = started.elapsed().as_secs() as usize + 1;
    outcomes
}

/// Asserts that a caller with a 1/s limit and `burst` was admitted within its limit, and that
/// every refusal is the rate limiter's.
fn assert_within(outcomes: &Outcomes, burst: usize, policy: &str) {
    assert!(
        outcomes.admitted >= burst && outcomes.admitted <= burst + outcomes.seconds,
        "admitted {} with a burst of {burst} in {} s",
        outcomes.admitted,
        outcomes.seconds
    );
    for status in &outcomes.refused {
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains(policy),
            "the refusal names the policy: {status:?}"
        );
        let pushback: u64 = status
            .metadata()
            .get(mesh_tower::server::RETRY_PUSHBACK_HEADER)
            .expect("a pushback")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=1000).contains(&pushback), "{pushback}");
    }
}

#[tokio::test]
async fn a_total_limit_refuses_the_calls_over_it_with_resource_exhausted() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .top_level(
            r#"
            rateLimits:
              - name: greeter-total
                target: {service: greeter}
                total: {requestsPerSecond: 1, burst: 5}
            "#,
        )
        .account("greeter")
        .account("client")
        .account("other");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness.greeter(l, "g1", "greeter").await.unwrap();
    let (client, other) = (
        harness.mesh("client").await.unwrap(),
        harness.mesh("other").await.unwrap(),
    );

    let first = greet(&client, 20).await;
    assert_within(&first, 5, "greeter-total");
    // The total is shared: another caller right after finds it spent.
    let second = greet(&other, 5).await;
    assert!(
        second.admitted <= first.seconds + second.seconds,
        "{}",
        second.admitted
    );
    assert_within(
        &Outcomes {
            admitted: first.admitted + second.admitted,
            refused: second.refused,
            seconds: first.seconds + second.seconds,
        },
        5,
        "greeter-total",
    );
    assert_eq!(
        replica.greeter.served() as usize,
        first.admitted + second.admitted,
        "refused calls never reach the handler"
    );
}

#[tokio::test]
async fn each_identity_has_its_own_limit_and_an_override_its_own_and_refusals_are_counted() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .top_level(
            r#"
            rateLimits:
              - name: per-caller
                target: {service: greeter}
                identity: {requestsPerSecond: 1, burst: 3}
                overrides:
                  - requestsPerSecond: 1
                    burst: 8
                    clients: {serviceAccounts: [default/vip]}
            "#,
        )
        .account("greeter")
        .account("client")
        .account("vip");
    // The control service's admin port installs the process's metrics recorder first.
    let harness = Harness::start_with(&config, |o| {
        o.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap();
    let admin = harness.control.as_ref().unwrap().admin_addr().unwrap();
    let replica = harness.greeter(l, "g1", "greeter").await.unwrap();
    let (client, vip) = (
        harness.mesh("client").await.unwrap(),
        harness.mesh("vip").await.unwrap(),
    );

    let (client_calls, vip_calls) = tokio::join!(greet(&client, 15), greet(&vip, 20));
    println!(
        "client: {} admitted, {} refused; vip: {} admitted, {} refused",
        client_calls.admitted,
        client_calls.refused.len(),
        vip_calls.admitted,
        vip_calls.refused.len()
    );
    assert_within(&client_calls, 3, "per-caller");
    assert_within(&vip_calls, 8, "per-caller");
    assert_eq!(
        replica.greeter.served() as usize,
        client_calls.admitted + vip_calls.admitted
    );

    // Every refusal is counted, by caller and by limit.
    let (status, text) = admin_get(admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let samples = parse(&text);
    let limited = |caller: &str, limit: &str| {
        let identity = spiffe(caller);
        sum(
            &samples,
            "mesh_server_rate_limited_total",
            &[
                ("mesh_service", "greeter.default"),
                ("mesh_policy", "per-caller"),
                ("mesh_limit", limit),
                ("mesh_peer_identity", identity.as_str()),
            ],
        ) as usize
    };
    assert_eq!(limited("client", "identity"), client_calls.refused.len());
    assert_eq!(limited("vip", "override"), vip_calls.refused.len());
    assert_eq!(limited("vip", "identity"), 0);
}

#[tokio::test]
async fn an_http_caller_over_the_limit_gets_429_with_retry_after() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .top_level(
            r#"
            rateLimits:
              - name: web-total
                target: {service: web}
                total: {requestsPerSecond: 1, burst: 2}
            "#,
        )
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let web = harness
        .web(l, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let mesh = harness.mesh("client").await.unwrap();
    let client = mesh.client::<Body>("web").await.unwrap();

    let started = Instant::now();
    let mut admitted = 0;
    let mut refused = Vec::new();
    for i in 0..10 {
        let reply = get(&client, &format!("/call/{i}")).await;
        match reply.status {
            http::StatusCode::OK => admitted += 1,
            _ => refused.push(reply),
        }
    }
    // A plain HTTP/1.1 caller (hand-written, over mTLS with the same identity) reads the
    // same answer off the wire.
    let mut plain_refused = 0;
    for i in 0..3 {
        let head = plain_get(&mesh, web.addr, &format!("/plain/{i}")).await;
        if head.starts_with("HTTP/1.1 200") {
            admitted += 1;
        } else {
            assert!(head.starts_with("HTTP/1.1 429"), "{head}");
            assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
            assert!(head.contains("web-total"), "{head}");
            plain_refused += 1;
        }
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert!((2..=2 + seconds).contains(&admitted), "{admitted}");
    assert_eq!(web.log.count(), admitted);
    assert!(!refused.is_empty());
    assert!(plain_refused > 0);
    for reply in &refused {
        assert_eq!(reply.status, http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.headers[http::header::RETRY_AFTER], "1");
        assert!(
            reply.mesh_error().unwrap().contains("web-total"),
            "{:?}",
            reply.mesh_error()
        );
        assert!(reply.backend().is_none(), "the mesh answered, not the app");
    }
}

/// `GET path` as a plain HTTP/1.1 client writes it, over mTLS as `mesh`'s identity; the
/// response head as received.
async fn plain_get(mesh: &Mesh, addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut tls = (*mesh_tower::tls::client_config(
        mesh.identity().trust(),
        mesh_core::SpiffeId::parse(&spiffe("web")).unwrap(),
        Some(mesh.identity()),
    ))
    .clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut io = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(
            rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        )
        .await
        .unwrap();
    io.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    io.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned()
        + "\r\n"
}

#[tokio::test]
async fn a_limit_on_one_route_applies_to_that_route_only() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .routes(
            "web",
            r#"
            - name: api
              rules:
                - matches: [{path: {type: PathPrefix, value: /api}}]
                  backendRefs: [{name: web}]
            - name: everything
              rules:
                - backendRefs: [{name: web}]
            "#,
        )
        .top_level(
            r#"
            rateLimits:
              - name: api-limit
                target: {service: web, route: api}
                total: {requestsPerSecond: 1, burst: 2}
            "#,
        )
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let web = harness
        .web(l, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let mesh = harness.mesh("client").await.unwrap();
    let client = mesh.client::<Body>("web").await.unwrap();

    let started = Instant::now();
    let mut api_ok = 0;
    let mut other_ok = 0;
    for i in 0..8 {
        if get(&client, &format!("/api/{i}")).await.status == http::StatusCode::OK {
            api_ok += 1;
        }
        if get(&client, &format!("/orders/{i}")).await.status == http::StatusCode::OK {
            other_ok += 1;
        }
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert!((2..=2 + seconds).contains(&api_ok), "{api_ok}");
    assert_eq!(other_ok, 8, "the other route is not limited");
    assert_eq!(web.log.count(), api_ok + other_ok);
}

#[tokio::test]
async fn a_config_update_keeps_serving_and_keeps_the_limits_state_unless_they_change() {
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let limits = |burst: u32| {
        format!(
            r#"
            rateLimits:
              - name: greeter-total
                target: {{service: greeter}}
                total: {{requestsPerSecond: 1, burst: {burst}}}
            "#
        )
    };
    let config = |burst: u32, extra: bool| {
        let mut config = Config::new()
            .service("greeter", &[(addr, "greeter")])
            .top_level(&limits(burst))
            .account("greeter")
            .account("client");
        if extra {
            // Changes the service's inbound policy, not its rate limits.
            config = config.service_keys("greeter", "exemptPaths: [/healthz]");
        }
        config
    };
    let harness = Harness::start(&config(5, false)).await.unwrap();
    let settings = harness.settings("greeter", Some("greeter"));
    let server_mesh = Mesh::start(settings).await.unwrap();
    let greeter = examples::GreeterReplica::new("g1", server_mesh.identity().id().to_string());
    let _task = mesh_tests::serve_greeter(server_mesh.clone(), l, greeter.clone()).unwrap();
    let client = harness.mesh("client").await.unwrap();

    let started = Instant::now();
    let spent = greet(&client, 10).await;
    assert_within(&spent, 5, "greeter-total");

    // An update that leaves the limit alone: the server takes it, keeps serving, and its
    // limit is as spent as before (a new snapshot refills nobody).
    harness
        .reconfigure(&server_mesh, &config(5, true))
        .await
        .unwrap();
    let after_update = greet(&client, 10).await;
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert!(
        spent.admitted + after_update.admitted <= 5 + seconds,
        "{} + {} admitted in {seconds} s across an update that did not change the limit",
        spent.admitted,
        after_update.admitted
    );

    // A changed limit starts afresh with its own burst.
    harness
        .reconfigure(&server_mesh, &config(8, true))
        .await
        .unwrap();
    let changed = greet(&client, 12).await;
    assert_within(&changed, 8, "greeter-total");
    assert_eq!(
        greeter.served() as usize,
        spent.admitted + after_update.admitted + changed.admitted
    );
}
