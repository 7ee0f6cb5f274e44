//! Timeouts end to end: a route's request timeout answers DEADLINE_EXCEEDED / 504 in about
//! the configured time, a per-try timeout moves a call to a fast endpoint, and a caller's own
//! deadline is honoured and passed on to the backend reduced.
//!
//! Time bounds are generous on the late side (a slow machine must not fail them) and exact
//! on the early side (a timeout never fires before its time).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use axum::body::Body;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::greeter::{GreeterMode, replica_of};
use mesh_tests::web::{WebMode, get};
use mesh_tests::{Config, Harness, listener};
use mesh_tonic::MeshTonicExt;

/// Slack allowed past a timeout before the test calls it late.
const SLACK: Duration = Duration::from_secs(2);

fn assert_within(elapsed: Duration, limit: Duration) {
    assert!(
        elapsed >= limit && elapsed <= limit + SLACK,
        "took {elapsed:?} for a {limit:?} timeout"
    );
}

#[tokio::test]
async fn a_route_request_timeout_gives_deadline_exceeded_and_504() {
    let (lg, lw) = (listener().await.unwrap(), listener().await.unwrap());
    let config = Config::new()
        .service("greeter", &[(lg.local_addr().unwrap(), "greeter")])
        .routes(
            "greeter",
            r#"
            - name: bounded
              kind: grpc
              rules: [{backendRefs: [{name: greeter}], timeouts: {request: 300ms}}]
            "#,
        )
        .service("web", &[(lw.local_addr().unwrap(), "web")])
        .routes(
            "web",
            "- {name: bounded, rules: [{backendRefs: [{name: web}], timeouts: {request: 300ms}}]}",
        )
        .account("greeter")
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let greeter = harness.test_greeter(lg, "g1", "greeter", "greeter", GreeterMode::Normal);
    let web = harness.web(lw, "w1", "web", "web", WebMode::Normal);
    let (_greeter, _web) = tokio::try_join!(greeter, web).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let limit = Duration::from_millis(300);

    let mut grpc = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());
    // Within the timeout: answered.
    let reply = grpc
        .say_hello(HelloRequest {
            name: "slow-10".into(),
        })
        .await
        .unwrap();
    assert_eq!(replica_of(reply.get_ref().message.as_str()), "g1");
    let started = Instant::now();
    let status = grpc
        .say_hello(HelloRequest {
            name: "slow-5000".into(),
        })
        .await
        .unwrap_err();
    assert_within(started.elapsed(), limit);
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("greeter.default"), "{status:?}");

    let http = client_mesh.client::<Body>("web").await.unwrap();
    assert_eq!(get(&http, "/sleep/10").await.status, http::StatusCode::OK);
    let started = Instant::now();
    let reply = get(&http, "/sleep/5000").await;
    assert_within(started.elapsed(), limit);
    assert_eq!(reply.status, http::StatusCode::GATEWAY_TIMEOUT, "{reply:?}");
    assert!(reply.mesh_error().unwrap().contains("web.default"));
}

#[tokio::test]
async fn a_per_try_timeout_moves_the_call_to_a_fast_endpoint() {
    let (slow, fast) = (listener().await.unwrap(), listener().await.unwrap());
    let config = Config::new()
        .service(
            "web",
            &[
                (slow.local_addr().unwrap(), "web"),
                (fast.local_addr().unwrap(), "web"),
            ],
        )
        .routes(
            "web",
            r#"
            - name: hedged
              rules:
                - backendRefs: [{name: web}]
                  timeouts: {request: 5s, backendRequest: 200ms}
                  retry: {codes: [503], attempts: 2}
            "#,
        )
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let slow = harness.web(
        slow,
        "slow",
        "web",
        "web",
        WebMode::Delay(Duration::from_secs(3)),
    );
    let fast = harness.web(fast, "fast", "web", "web", WebMode::Normal);
    let (slow, fast) = tokio::try_join!(slow, fast).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh.client::<Body>("web").await.unwrap();

    // P2C tries an endpoint without history before long (its estimate is optimistic), so
    // within a few calls one try goes to the slow replica; every call still succeeds, on the
    // fast one, well before the slow one would have answered.
    let mut calls = 0;
    while slow.log.count() == 0 && calls < 20 {
        let started = Instant::now();
        let reply = get(&client, &format!("/call/{calls}")).await;
        assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
        assert_eq!(reply.backend(), Some("fast"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        calls += 1;
    }
    assert!(
        slow.log.count() > 0,
        "no try went to the slow replica in {calls} calls"
    );
    let timed_out = slow.log.entries()[0].path.clone();
    assert_eq!(
        fast.log.count_path(&timed_out),
        1,
        "the try that timed out on the slow replica was not retried on the fast one"
    );
}

#[tokio::test]
async fn a_callers_deadline_is_passed_on_reduced_and_honoured_without_a_route_timeout() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let _replica = harness
        .test_greeter(l, "g1", "greeter", "greeter", GreeterMode::Normal)
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let mut client = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());

    let caller_deadline = Duration::from_millis(800);
    let mut request = tonic::Request::new(HelloRequest {
        name: "deadline".into(),
    });
    request.set_timeout(caller_deadline);
    let message = client
        .say_hello(request)
        .await
        .unwrap()
        .into_inner()
        .message;
    let received = message.split(' ').nth(1).unwrap();
    let passed_on = parse_grpc_timeout(received)
        .unwrap_or_else(|| panic!("the backend got no valid grpc-timeout: {message}"));
    assert!(
        passed_on > Duration::ZERO && passed_on < caller_deadline,
        "the backend got grpc-timeout {received} for a caller's {caller_deadline:?}"
    );

    // Without a deadline, none is invented.
    let message = client
        .say_hello(HelloRequest {
            name: "deadline".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .message;
    assert_eq!(message, "g1 none");

    // The deadline is honoured: no route timeout, a backend that takes 5 s.
    let limit = Duration::from_millis(300);
    let mut request = tonic::Request::new(HelloRequest {
        name: "slow-5000".into(),
    });
    request.set_timeout(limit);
    let started = Instant::now();
    let status = client.say_hello(request).await.unwrap_err();
    assert_within(started.elapsed(), limit);
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
}

/// A `grpc-timeout` value (`<digits><unit>`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A try that outlives its per-try timeout is a failure of its endpoint: enough of them in a
/// row eject the endpoint (as failed responses do), and the retry of a timed-out try goes to
/// another endpoint. Before, timeouts counted for nothing and a retry could go back to the
/// endpoint that had just timed out.
#[tokio::test]
async fn per_try_timeouts_count_toward_ejection_and_retries_avoid_the_endpoint() {
    let (slow, fast) = (listener().await.unwrap(), listener().await.unwrap());
    let slow_addr = slow.local_addr().unwrap();
    let config = Config::new()
        .service(
            "web",
            &[(slow_addr, "web"), (fast.local_addr().unwrap(), "web")],
        )
        .routes(
            "web",
            r#"
            - name: bounded
              rules:
                - backendRefs: [{name: web}]
                  timeouts: {request: 5s, backendRequest: 100ms}
                  retry: {codes: [503], attempts: 1}
            "#,
        )
        // P2C divides an endpoint's latency estimate by its weight: at 1,000 the slow replica
        // still looks the cheaper one after each timeout, so tries keep going to it, as they
        // would to a replica that is slow only now and then.
        .weight(slow_addr, 1000)
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let slow = harness.web(
        slow,
        "slow",
        "web",
        "web",
        WebMode::Delay(Duration::from_secs(3)),
    );
    let fast = harness.web(fast, "fast", "web", "web", WebMode::Normal);
    let (slow, _fast) = tokio::try_join!(slow, fast).unwrap();
    let client_mesh = mesh_tower::Mesh::start(
        harness
            .settings("client", None)
            .with_admin_addr("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap();
    let client = client_mesh.client::<Body>("web").await.unwrap();

    // Calls one at a time until five tries timed out on the slow replica: with one retry
    // each, every call succeeds only if no retry goes back to the slow one.
    let mut calls = 0;
    while slow.log.count() < 5 && calls < 100 {
        let reply = get(&client, &format!("/call/{calls}")).await;
        assert_eq!(
            reply.status,
            http::StatusCode::OK,
            "call {calls}: {reply:?}"
        );
        assert_eq!(reply.backend(), Some("fast"));
        calls += 1;
    }
    assert_eq!(slow.log.count(), 5, "five tries timed out in {calls} calls");

    // Five in a row: the slow replica is ejected.
    let admin = client_mesh.admin_addr().unwrap();
    let (status, endpoints) = mesh_tests::telemetry::admin_get(admin, "/debug/endpoints")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let endpoints: serde_json::Value = serde_json::from_str(&endpoints).unwrap();
    let slow_state = endpoints["backends"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["endpoints"].as_array().unwrap())
        .find(|e| e["address"] == slow_addr.to_string())
        .unwrap_or_else(|| panic!("no slow endpoint in {endpoints}"))["state"]
        .clone();
    assert_eq!(slow_state, "ejected", "{endpoints}");
    // And takes no more tries while ejected.
    for i in 0..20 {
        let reply = get(&client, &format!("/after/{i}")).await;
        assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
    }
    assert_eq!(slow.log.count(), 5);
}

/// `timeouts.request` bounds the whole call: a response body still streaming when it passes is
/// cut (Gateway API's request timeout is the time to the end of the response), and the caller
/// reads the timeout from the body. Before, the timeout stopped at the response headers and a
/// 1 s stream outlived a 300 ms timeout.
#[tokio::test]
async fn the_request_timeout_bounds_a_streamed_response_body() {
    use http_body_util::BodyExt as _;
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .routes(
            "web",
            r#"
            - name: bounded
              rules:
                - backendRefs: [{name: web}]
                  timeouts: {request: 300ms}
            "#,
        )
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let _web = harness
        .web(l, "w", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh.client::<Body>("web").await.unwrap();

    // Ten chunks 100 ms apart: headers at once, the body would take a second.
    let request = http::Request::get("http://web/drip/10/100")
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(client.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let mut body = response.into_body();
    let mut chunks = 0;
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) if frame.is_data() => chunks += 1,
            Some(Ok(_)) => {}
            Some(Err(error)) => break error,
            None => panic!("the whole body arrived ({chunks} chunks): the timeout did not cut it"),
        }
    };
    assert!(chunks < 10, "{chunks} chunks");
    assert!(
        matches!(error, mesh_tower::ResponseBodyError::Timeout(_))
            && error.to_string().contains("300ms"),
        "{error}"
    );

    // A body that ends in time is untouched.
    let request = http::Request::get("http://web/drip/2/10")
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(client, request).await.unwrap();
    let whole = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&whole[..], b"chunk\nchunk\n");
}

/// A call's expired deadline always ends in DEADLINE_EXCEEDED, whether the caller set it or
/// the route's `request` timeout did. The mesh passes the deadline on, so the server's timer
/// and the mesh's fire together; tonic's server answers its own with CANCELLED, and callers
/// used to get one or the other at random.
#[tokio::test]
async fn an_expired_deadline_is_always_deadline_exceeded() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .routes(
            "greeter",
            r#"
            - name: bounded
              kind: grpc
              rules: [{backendRefs: [{name: greeter}], timeouts: {request: 100ms}}]
            "#,
        )
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let _greeter = harness
        .test_greeter(l, "g1", "greeter", "greeter", GreeterMode::Normal)
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let grpc = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..40 {
        let mut request = tonic::Request::new(HelloRequest {
            name: format!("slow-5000:{i}"),
        });
        // Half with a deadline of the caller's own (the sooner of the two applies).
        if i % 2 == 0 {
            request.set_timeout(Duration::from_millis(80));
        }
        let status = grpc.clone().say_hello(request).await.unwrap_err();
        *codes.entry(format!("{:?}", status.code())).or_insert(0) += 1;
    }
    assert_eq!(
        codes,
        [("DeadlineExceeded".to_owned(), 40)].into_iter().collect(),
        "{codes:?}"
    );
}
