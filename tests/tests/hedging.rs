//! Hedging end to end, over real mTLS: of three greeter endpoints one answers every fourth of
//! its calls slowly; with hedging every slow try loses to a hedge on another endpoint and is
//! cancelled (its stream reset, its connection kept), without it every slow try reaches its
//! caller. Each hedge takes a token from the retry budget, so an always-slow backend is hedged
//! only as far as the budget goes; a body too large to replay is never hedged; the route's
//! request timeout still bounds the whole call.
//!
//! Everything is counted (answers that say they were slow, tries the mesh reports sending,
//! slow answers the servers saw cancelled); times are only generous bounds.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_core::testing::eventually;
use mesh_tests::greeter::{GreeterMode, TestGreeterReplica};
use mesh_tests::{Config, Harness, concurrently, listener};
use mesh_tonic::{MeshChannel, MeshTonicExt};
use mesh_tower::Mesh;

/// The slow endpoint answers one call in this many slowly.
const SLOW_EVERY: u32 = 4;
/// How slowly: far beyond the hedging delay, so that a hedge always wins.
const SLOW_MS: u64 = 2_000;
/// The route's request timeout on the hedged rule.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// A greeter service of three replicas, the third (when `slow_replica`) answering every
/// [`SLOW_EVERY`]th call slowly, and weighted so that P2C keeps sending it calls after a slow
/// one (as a replica whose slowness is occasional, not persistent, would get them). Calls
/// with `x-hedge: on` are hedged after 50 ms, with `x-hedge: bounded` likewise within a
/// request timeout of [`REQUEST_TIMEOUT`], the others not.
struct Setup {
    _harness: Harness,
    replicas: Vec<TestGreeterReplica>,
    _client: Mesh,
    channel: MeshChannel,
}

async fn setup(slow_replica: bool) -> Setup {
    let listeners = [
        listener().await.unwrap(),
        listener().await.unwrap(),
        listener().await.unwrap(),
    ];
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let config = Config::new()
        .service(
            "greeter",
            &addrs.iter().map(|a| (*a, "greeter")).collect::<Vec<_>>(),
        )
        .weight(addrs[2], 1_000)
        .routes(
            "greeter",
            &format!(
                r#"
                - name: hedged
                  kind: grpc
                  rules:
                    - matches: [{{headers: [{{name: x-hedge, value: "on"}}]}}]
                      backendRefs: [{{name: greeter}}]
                      hedging: {{maxAttempts: 2, delay: 50ms}}
                    - matches: [{{headers: [{{name: x-hedge, value: bounded}}]}}]
                      backendRefs: [{{name: greeter}}]
                      timeouts: {{request: {}ms}}
                      hedging: {{maxAttempts: 2, delay: 50ms}}
                    - backendRefs: [{{name: greeter}}]
                "#,
                REQUEST_TIMEOUT.as_millis()
            ),
        )
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let mut replicas = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let mode = if slow_replica && i == 2 {
            GreeterMode::SlowEvery {
                every: SLOW_EVERY,
                ms: SLOW_MS,
            }
        } else {
            GreeterMode::Normal
        };
        let name = format!("g{}", i + 1);
        let replica = harness
            .test_greeter(l, &name, "greeter", "greeter", mode)
            .await
            .unwrap();
        replicas.push(replica);
    }
    // One connection per endpoint: a cancelled try must not cost it.
    let mut settings = harness.settings("client", None);
    settings.connections_per_endpoint = 1;
    let client = Mesh::start(settings).await.unwrap();
    let channel = client.channel("greeter").await.unwrap();
    // Every endpoint connected before anything is counted (calls are awaited, not dropped,
    // so that no warm-up call is cancelled while a test counts).
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while !replicas.iter().all(|r| r.greeter.received() > 0) {
        assert!(
            tokio::time::Instant::now() < until,
            "an endpoint never took a call"
        );
        call(&channel, &format!("warm-up:{i}"), Hedge::Off)
            .await
            .unwrap();
        i += 1;
    }
    Setup {
        _harness: harness,
        replicas,
        _client: client,
        channel,
    }
}

/// What one call came to: the reply's message and the tries the mesh says it sent.
#[derive(Debug)]
struct Answer {
    message: String,
    tries: u32,
}

impl Answer {
    fn slow(&self) -> bool {
        self.message.contains(" slept ")
    }
}

/// Which rule a call takes.
#[derive(Debug, Clone, Copy)]
enum Hedge {
    /// Not hedged.
    Off,
    /// Hedged.
    On,
    /// Hedged, within the request timeout.
    Bounded,
}

/// SayHello with `name` under `hedge`'s rule, asking the mesh to explain.
async fn call(channel: &MeshChannel, name: &str, hedge: Hedge) -> Result<Answer, tonic::Status> {
    let mut request = tonic::Request::new(HelloRequest { name: name.into() });
    request
        .metadata_mut()
        .insert("x-mesh-explain", "1".parse().unwrap());
    let rule = match hedge {
        Hedge::Off => None,
        Hedge::On => Some("on"),
        Hedge::Bounded => Some("bounded"),
    };
    if let Some(rule) = rule {
        request
            .metadata_mut()
            .insert("x-hedge", rule.parse().unwrap());
    }
    let response = GreeterClient::new(channel.clone())
        .say_hello(request)
        .await?;
    let tries = response
        .metadata()
        .get("x-mesh-tries")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    Ok(Answer {
        message: response.into_inner().message,
        tries,
    })
}

/// Calls in batches of 24 (8 in flight) until the slow replica has begun at least `slow`
/// more slow answers (or 40 s passed); every answer.
async fn calls_until_slow(setup: &Setup, phase: &str, hedge: Hedge, slow: u32) -> Vec<Answer> {
    let slow_replica = &setup.replicas[2].greeter;
    let target = slow_replica.slow_started() + slow;
    let until = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut answers = Vec::new();
    let mut batch = 0;
    while slow_replica.slow_started() < target && tokio::time::Instant::now() < until {
        let channel = setup.channel.clone();
        let phase = phase.to_owned();
        let results = concurrently(24, 8, move |i| {
            let (channel, name) = (channel.clone(), format!("{phase}:{batch}:{i}"));
            async move { call(&channel, &name, hedge).await }
        })
        .await;
        answers.extend(results.into_iter().map(Result::unwrap));
        batch += 1;
    }
    answers
}

#[tokio::test]
async fn hedges_win_over_a_slow_endpoint_and_its_tries_are_cancelled() {
    let setup = setup(true).await;
    let slow = &setup.replicas[2].greeter;

    // Hedged: every slow try on g3 loses to a hedge on g1 or g2 (at 50 ms, against 2 s).
    let (started, cancelled) = (slow.slow_started(), slow.slow_cancelled());
    let hedged = calls_until_slow(&setup, "hedged", Hedge::On, 3).await;
    let slow_tries = slow.slow_started() - started;
    assert!(slow_tries >= 3, "{slow_tries} slow tries");
    let slow_answers = hedged.iter().filter(|a| a.slow()).count();
    assert_eq!(slow_answers, 0, "a slow try reached its caller");
    let hedged_calls = hedged.iter().filter(|a| a.tries == 2).count();
    assert!(
        hedged_calls >= slow_tries as usize,
        "{hedged_calls} calls hedged for {slow_tries} slow tries"
    );
    assert!(hedged.iter().all(|a| (1..=2).contains(&a.tries)));
    // Each losing slow try was cancelled at the server (its stream reset: no deadline was
    // passed on that the server could have reached).
    let all_cancelled = eventually(Duration::from_secs(10), || {
        slow.slow_cancelled() - cancelled == slow.slow_started() - started
    })
    .await;
    assert!(
        all_cancelled,
        "{} of {} slow tries cancelled",
        slow.slow_cancelled() - cancelled,
        slow.slow_started() - started
    );

    // Not hedged: every slow try is a slow answer, none is cancelled.
    let (started, cancelled) = (slow.slow_started(), slow.slow_cancelled());
    let plain = calls_until_slow(&setup, "plain", Hedge::Off, 3).await;
    let slow_tries = slow.slow_started() - started;
    let slow_answers = plain.iter().filter(|a| a.slow()).count();
    assert!(slow_tries >= 3, "{slow_tries} slow tries");
    assert_eq!(slow_answers, slow_tries as usize);
    assert_eq!(slow.slow_cancelled(), cancelled);
    assert!(plain.iter().all(|a| a.tries == 1));

    // Calls that finished fast: all of them with hedging, not without.
    let fast = |answers: &[Answer]| answers.iter().filter(|a| !a.slow()).count();
    println!(
        "fast answers: hedged {} of {}, plain {} of {}",
        fast(&hedged),
        hedged.len(),
        fast(&plain),
        plain.len()
    );
    assert_eq!(fast(&hedged), hedged.len());
    assert!(fast(&plain) < plain.len());

    // The cancelled tries cost the slow endpoint's connection nothing: every call it got,
    // before and after the cancellations, came on the one connection of the client's pool.
    assert_eq!(slow.connections(), 1);
}

#[tokio::test]
async fn hedges_stop_when_the_retry_budget_is_spent() {
    let setup = setup(false).await;
    let received =
        |setup: &Setup| -> u32 { setup.replicas.iter().map(|r| r.greeter.received()).sum() };
    let before = received(&setup);

    // Every try is slow (the name asks every replica for 300 ms), so every call wants a
    // hedge at 50 ms. The default budget (as Finagle and Linkerd): 20 % of the calls of the
    // last 10 s plus a reserve of 10 per second over those 10 s; this runs well within 10 s,
    // so of 200 calls at most 200 × 20 % + 100 = 140 are hedged, and at least the reserve.
    const CALLS: usize = 200;
    let started = std::time::Instant::now();
    let channel = setup.channel.clone();
    let answers = concurrently(CALLS, 20, move |i| {
        let channel = channel.clone();
        async move { call(&channel, &format!("slow-300:budget-{i}"), Hedge::On).await }
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the test ran too long for the bound"
    );
    let answers: Vec<Answer> = answers.into_iter().map(Result::unwrap).collect();
    let hedged = answers.iter().filter(|a| a.tries == 2).count();
    println!("{hedged} of {CALLS} calls hedged");
    assert!((100..=140).contains(&hedged), "{hedged} calls hedged");
    // What the replicas received is exactly the tries the mesh reported.
    let sent: u32 = answers.iter().map(|a| a.tries).sum();
    let arrived = eventually(Duration::from_secs(5), || received(&setup) - before == sent).await;
    assert!(
        arrived,
        "{} tries arrived, {sent} sent",
        received(&setup) - before
    );
    // Once the budget is spent, a hedge only for each token the calls earn (one per five):
    // 10 for the last 50 calls, plus what the 20 calls in flight before them earned.
    let late_hedges = answers[CALLS - 50..]
        .iter()
        .filter(|a| a.tries == 2)
        .count();
    assert!(
        late_hedges <= 15,
        "{late_hedges} of the last 50 calls hedged"
    );
}

#[tokio::test]
async fn a_body_too_large_to_replay_is_not_hedged_and_the_request_timeout_bounds_the_call() {
    let setup = setup(false).await;
    let received =
        |setup: &Setup| -> u32 { setup.replicas.iter().map(|r| r.greeter.received()).sum() };

    // Over the 64 KiB replay limit: sent once, however slow.
    let name = format!("slow-300:{}", "x".repeat(70 * 1024));
    let before = received(&setup);
    let answer = call(&setup.channel, &name, Hedge::On).await.unwrap();
    assert_eq!(answer.tries, 1);
    assert_eq!(received(&setup) - before, 1);

    // Every try slower than the request timeout: the hedge goes (2 tries), the call ends at
    // the route's timeout with DEADLINE_EXCEEDED, and both tries are cancelled.
    let cancelled = |setup: &Setup| -> u32 {
        setup
            .replicas
            .iter()
            .map(|r| r.greeter.slow_cancelled())
            .sum()
    };
    let (before, cancelled_before) = (received(&setup), cancelled(&setup));
    let status = call(&setup.channel, "slow-5000:timeout", Hedge::Bounded)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_eq!(received(&setup) - before, 2);
    let both = eventually(Duration::from_secs(10), || {
        cancelled(&setup) - cancelled_before == 2
    })
    .await;
    assert!(
        both,
        "{} tries cancelled",
        cancelled(&setup) - cancelled_before
    );
}
