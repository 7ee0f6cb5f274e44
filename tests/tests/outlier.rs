//! Failure accrual end to end: of three endpoints, the one that fails every call is ejected
//! after a few failures (no retries configured), and calls succeed again while it is out; an
//! endpoint that fails every other call is ejected by the success-rate average, down to the
//! ejection floor.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::greeter::GreeterMode;
use mesh_tests::web::{WebMode, get};
use mesh_tests::{Config, Harness, concurrently, listener};
use mesh_tonic::MeshTonicExt;

/// Consecutive failures that eject an endpoint (the mesh's default).
const EJECT_AFTER: usize = 5;
/// Calls made while the bad endpoint is out.
const CALLS: usize = 300;

/// The share of successes in `outcomes`, in percent.
fn success_percent(outcomes: &[bool]) -> f64 {
    outcomes.iter().filter(|ok| **ok).count() as f64 * 100.0 / outcomes.len() as f64
}

#[tokio::test]
async fn an_always_failing_http_endpoint_is_ejected() {
    let (l1, l2, l3) = (
        listener().await.unwrap(),
        listener().await.unwrap(),
        listener().await.unwrap(),
    );
    let addrs = [&l1, &l2, &l3].map(|l| (l.local_addr().unwrap(), "web"));
    let config = Config::new()
        .service("web", &addrs)
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let bad = WebMode::Fail(http::StatusCode::SERVICE_UNAVAILABLE);
    let w1 = harness.web(l1, "w1", "web", "web", WebMode::Normal);
    let w2 = harness.web(l2, "w2", "web", "web", WebMode::Normal);
    let w3 = harness.web(l3, "bad", "web", "web", bad);
    let (_w1, _w2, w3) = tokio::try_join!(w1, w2, w3).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh.client::<Body>("web").await.unwrap();

    // Until the bad endpoint has failed often enough to be ejected: it answers fast, so P2C
    // over latency sends it plenty of calls.
    let mut warm_up = 0;
    // Bounded by time, not by a number of calls: on a busy machine the bad endpoint's
    // connection may come up only after many calls have gone to the others.
    let warm_up_until = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while w3.log.count() < EJECT_AFTER && tokio::time::Instant::now() < warm_up_until {
        get(&client, "/warm-up").await;
        warm_up += 1;
    }
    assert_eq!(w3.log.count(), EJECT_AFTER, "after {warm_up} calls");

    let outcomes = concurrently(CALLS, 8, move |i| {
        let client = client.clone();
        async move {
            get(&client, &format!("/after/{i}"))
                .await
                .status
                .is_success()
        }
    })
    .await;
    let rate = success_percent(&outcomes);
    assert!(
        rate >= 99.0,
        "success rate {rate}% while the bad endpoint is out"
    );
    assert_eq!(
        w3.log.count(),
        EJECT_AFTER,
        "the ejected endpoint got calls"
    );
}

#[tokio::test]
async fn an_always_unavailable_grpc_endpoint_is_ejected() {
    let (l1, l2, l3) = (
        listener().await.unwrap(),
        listener().await.unwrap(),
        listener().await.unwrap(),
    );
    let addrs = [&l1, &l2, &l3].map(|l| (l.local_addr().unwrap(), "greeter"));
    let config = Config::new()
        .service("greeter", &addrs)
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let normal = GreeterMode::Normal;
    let g1 = harness.test_greeter(l1, "g1", "greeter", "greeter", normal);
    let g2 = harness.test_greeter(l2, "g2", "greeter", "greeter", normal);
    let g3 = harness.test_greeter(l3, "bad", "greeter", "greeter", GreeterMode::FailAll);
    let (_g1, _g2, g3) = tokio::try_join!(g1, g2, g3).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());

    let mut warm_up = 0;
    // Bounded by time, not by a number of calls: on a busy machine the bad endpoint's
    // connection may come up only after many calls have gone to the others.
    let warm_up_until = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut probe = client.clone();
    while (g3.greeter.received() as usize) < EJECT_AFTER
        && tokio::time::Instant::now() < warm_up_until
    {
        let _ = probe
            .say_hello(HelloRequest {
                name: "warm-up".into(),
            })
            .await;
        warm_up += 1;
    }
    assert_eq!(
        g3.greeter.received() as usize,
        EJECT_AFTER,
        "after {warm_up} calls"
    );

    let outcomes = concurrently(CALLS, 8, move |i| {
        let mut client = client.clone();
        async move {
            client
                .say_hello(HelloRequest {
                    name: format!("after-{i}"),
                })
                .await
                .is_ok()
        }
    })
    .await;
    let rate = success_percent(&outcomes);
    assert!(
        rate >= 99.0,
        "success rate {rate}% while the bad endpoint is out"
    );
    assert_eq!(g3.greeter.received() as usize, EJECT_AFTER);
}

/// Two of four web endpoints fail every other call (never twice in a row, so the
/// consecutive-failures rule never fires) under a success-rate rule of 80 % over 20 answers;
/// returns how many of the next calls each flaky endpoint received, and how many calls failed.
async fn flaky_pair_under_success_rate(
    max_ejection_percent: u32,
    min_ready: u32,
) -> (usize, usize, usize) {
    let listeners = [
        listener().await.unwrap(),
        listener().await.unwrap(),
        listener().await.unwrap(),
        listener().await.unwrap(),
    ];
    let addrs: Vec<_> = listeners
        .iter()
        .map(|l| (l.local_addr().unwrap(), "web"))
        .collect();
    let config = Config::new()
        .service("web", &addrs)
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let flaky = WebMode::FailOneIn(2, http::StatusCode::SERVICE_UNAVAILABLE);
    let [l1, l2, l3, l4] = listeners;
    let (_w1, _w2, f1, f2) = tokio::try_join!(
        harness.web(l1, "w1", "web", "web", WebMode::Normal),
        harness.web(l2, "w2", "web", "web", WebMode::Normal),
        harness.web(l3, "f1", "web", "web", flaky),
        harness.web(l4, "f2", "web", "web", flaky),
    )
    .unwrap();
    let mut settings = harness.settings("client", None);
    settings.outlier.success_rate = Some(mesh_core::outlier::SuccessRateConfig {
        min_requests: 20,
        threshold_percent: 80,
    });
    settings.outlier.max_ejection_percent = max_ejection_percent;
    settings.outlier.min_ready = min_ready;
    let client_mesh = mesh_tower::Mesh::start(settings).await.unwrap();
    let client = client_mesh.client::<Body>("web").await.unwrap();

    // Until each flaky endpoint has answered enough calls to be judged (the one the floor
    // keeps in service goes on answering; an ejected one stops at about 20).
    let warm_up_until = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while (f1.log.count() < 20 || f2.log.count() < 20)
        && tokio::time::Instant::now() < warm_up_until
    {
        get(&client, "/warm-up").await;
    }
    let before = (f1.log.count(), f2.log.count());
    assert!(before.0 >= 20 && before.1 >= 20, "{before:?}");
    let outcomes = concurrently(CALLS, 8, move |i| {
        let client = client.clone();
        async move {
            get(&client, &format!("/after/{i}"))
                .await
                .status
                .is_success()
        }
    })
    .await;
    let failed = outcomes.iter().filter(|ok| !**ok).count();
    (f1.log.count() - before.0, f2.log.count() - before.1, failed)
}

#[tokio::test]
async fn a_low_success_rate_ejects_down_to_the_floor() {
    // Half of four may be ejected: both flaky endpoints go, and every later call succeeds.
    let (f1, f2, failed) = flaky_pair_under_success_rate(50, 1).await;
    assert_eq!((f1, f2, failed), (0, 0, 0));

    // Any share may be ejected but three must stay in service: one flaky endpoint is ejected,
    // the other keeps answering (and failing half its calls).
    let (f1, f2, failed) = flaky_pair_under_success_rate(100, 3).await;
    assert!(
        (f1 == 0) != (f2 == 0),
        "exactly one flaky endpoint ejected: {f1} and {f2} calls"
    );
    assert!(failed > 0, "the one kept in service fails some calls");
}
