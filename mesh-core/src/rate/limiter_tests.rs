//! Table-driven tests of [`InboundLimiter`] and the bounded caller table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::callers::{CallerLimit, Callers};
use super::*;
use crate::spiffe::SpiffeId;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://mesh.local/ns/default/sa/{sa}")).unwrap()
}

fn limit(requests_per_second: u32, burst: u32) -> RateLimit {
    RateLimit {
        requests_per_second,
        burst,
    }
}

fn policy(name: &str) -> RateLimitPolicy {
    RateLimitPolicy {
        name: Arc::from(name),
        route: None,
        total: None,
        identity: None,
        overrides: Vec::new(),
    }
}

/// One step: milliseconds since the start, caller, route, and `Ok` or the policy and kind
/// that refuse.
type Step<'a> = (
    u64,
    Option<&'a str>,
    Option<&'a str>,
    Result<(), (&'a str, LimitKind)>,
);

/// Runs `steps` (milliseconds since the start, caller, route, expected outcome: `Ok` or
/// the policy and kind that refuse) against a limiter of `policies`.
fn run(policies: &[RateLimitPolicy], steps: &[Step<'_>]) {
    let start = Instant::now();
    let limiter = InboundLimiter::update(None, policies, start).unwrap();
    for (i, &(at, caller, route, expected)) in steps.iter().enumerate() {
        let caller = caller.map(id);
        let got = limiter
            .check(route, caller.as_ref(), start + Duration::from_millis(at))
            .map_err(|l| (l.policy.to_string(), l.kind));
        let expected = expected.map_err(|(p, k)| (p.to_owned(), k));
        assert_eq!(got, expected, "step {i} at {at} ms");
    }
}

const TOTAL: LimitKind = LimitKind::Total;
const IDENTITY: LimitKind = LimitKind::Identity;
const OVERRIDE: LimitKind = LimitKind::Override;

#[test]
fn a_total_limit_is_shared_by_every_caller() {
    let p = RateLimitPolicy {
        total: Some(limit(10, 2)),
        ..policy("p")
    };
    run(
        &[p],
        &[
            (0, Some("a"), None, Ok(())),
            (0, Some("b"), None, Ok(())),
            (0, None, None, Err(("p", TOTAL))),
            (100, Some("b"), None, Ok(())),
            (100, Some("a"), None, Err(("p", TOTAL))),
        ],
    );
}

#[test]
fn each_identity_has_its_own_limit_and_unauthenticated_callers_share_one() {
    let p = RateLimitPolicy {
        identity: Some(limit(10, 1)),
        ..policy("p")
    };
    run(
        &[p],
        &[
            (0, Some("a"), None, Ok(())),
            (0, Some("a"), None, Err(("p", IDENTITY))),
            (0, Some("b"), None, Ok(())),
            (0, None, None, Ok(())),
            (0, None, None, Err(("p", IDENTITY))),
            (100, Some("a"), None, Ok(())),
        ],
    );
}

#[test]
fn an_override_replaces_the_identity_limit_and_is_shared_by_the_callers_it_names() {
    let p = RateLimitPolicy {
        identity: Some(limit(10, 1)),
        overrides: vec![RateLimitOverride {
            limit: limit(10, 3),
            clients: vec![
                ClientMatch::Identity(id("vip")),
                ClientMatch::ServiceAccount {
                    namespace: "default".to_owned(),
                    name: "vip2".to_owned(),
                },
            ],
        }],
        ..policy("p")
    };
    run(
        &[p],
        &[
            (0, Some("vip"), None, Ok(())),
            (0, Some("vip"), None, Ok(())),
            (0, Some("vip2"), None, Ok(())),
            (0, Some("vip2"), None, Err(("p", OVERRIDE))),
            (0, Some("other"), None, Ok(())),
            (0, Some("other"), None, Err(("p", IDENTITY))),
        ],
    );
}

#[test]
fn a_caller_over_its_own_limit_spends_nothing_of_the_total() {
    let p = RateLimitPolicy {
        total: Some(limit(10, 2)),
        identity: Some(limit(10, 1)),
        ..policy("p")
    };
    run(
        &[p],
        &[
            (0, Some("noisy"), None, Ok(())),
            (0, Some("noisy"), None, Err(("p", IDENTITY))),
            (0, Some("noisy"), None, Err(("p", IDENTITY))),
            // The total had 2: one is left for somebody else.
            (0, Some("calm"), None, Ok(())),
            // The total refuses, and gives "third" its own call back...
            (0, Some("third"), None, Err(("p", TOTAL))),
            // ...so it is admitted as soon as the total has room (100 ms), not at 200 ms.
            (100, Some("third"), None, Ok(())),
        ],
    );
}

#[test]
fn a_route_policy_applies_to_its_route_only_and_after_the_service_wide_ones() {
    let service = RateLimitPolicy {
        total: Some(limit(10, 3)),
        ..policy("service")
    };
    let api = RateLimitPolicy {
        route: Some(Arc::from("api")),
        total: Some(limit(10, 1)),
        ..policy("api")
    };
    run(
        &[service, api],
        &[
            (0, Some("a"), Some("api"), Ok(())),
            (0, Some("a"), Some("api"), Err(("api", TOTAL))),
            (0, Some("a"), Some("web"), Ok(())),
            (0, Some("a"), None, Err(("service", TOTAL))),
        ],
    );
}

#[test]
fn an_update_that_leaves_a_policy_unchanged_keeps_its_state() {
    let start = Instant::now();
    let kept = RateLimitPolicy {
        total: Some(limit(1, 1)),
        ..policy("kept")
    };
    let changed = RateLimitPolicy {
        route: Some(Arc::from("api")),
        total: Some(limit(1, 1)),
        ..policy("changed")
    };
    let limiter = InboundLimiter::update(None, &[kept.clone(), changed.clone()], start).unwrap();
    assert!(limiter.needs_route());
    limiter.check(Some("api"), None, start).unwrap();
    assert!(limiter.check(None, None, start).is_err());

    // The same policies: the same limiter.
    let same =
        InboundLimiter::update(Some(&limiter), &[kept.clone(), changed.clone()], start).unwrap();
    assert!(Arc::ptr_eq(&same, &limiter));

    // One policy changed: the other keeps its (empty) bucket, the changed one starts full.
    let changed = RateLimitPolicy {
        total: Some(limit(2, 1)),
        ..changed
    };
    let updated = InboundLimiter::update(Some(&limiter), &[changed, kept], start).unwrap();
    let refused = updated.check(Some("api"), None, start).unwrap_err();
    assert_eq!(&*refused.policy, "kept");
    assert_eq!(refused.retry_after, Duration::from_secs(1));

    // No policy left: no limiter.
    assert!(InboundLimiter::update(Some(&updated), &[], start).is_none());
}

#[test]
fn a_refusal_says_how_long_to_wait_at_least_a_millisecond() {
    let start = Instant::now();
    let p = RateLimitPolicy {
        total: Some(limit(4, 1)),
        ..policy("p")
    };
    let limiter = InboundLimiter::update(None, &[p], start).unwrap();
    limiter.check(None, None, start).unwrap();
    let refused = limiter
        .check(None, None, start + Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_millis(150));
    assert_eq!(
        refused.to_string(),
        "rate limited by policy \"p\" (total limit 4/s (burst 1))"
    );
    let refused = limiter
        .check(None, None, start + Duration::from_nanos(249_999_999))
        .unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_millis(1));
}

#[test]
fn the_caller_table_is_bounded_and_forgets_callers_at_rest_first() {
    let limit = Gcra::per_second(1, 1);
    let callers = Callers::new(3);
    let admit = |name: &str, now: u64| callers.admit(Some(&id(name)), Some(&limit), now, |_| None);
    let second = 1_000_000_000;
    assert_eq!(admit("a", 0), CallerLimit::Own(Ok(())));
    assert_eq!(admit("b", second / 2), CallerLimit::Own(Ok(())));
    assert_eq!(admit("c", second / 2), CallerLimit::Own(Ok(())));
    assert_eq!(callers.len(), 3);
    // At 1 s "a" is at rest: it is the one forgotten, and "b" still remembers its call.
    assert_eq!(admit("d", second), CallerLimit::Own(Ok(())));
    assert_eq!(callers.len(), 3);
    assert_eq!(admit("b", second), CallerLimit::Own(Err(second / 2)));
    // Nobody at rest: the caller closest to rest goes ("b", "c" and "d" are all busy; "b"
    // and "c" are equally close, one of them goes).
    assert_eq!(admit("e", second), CallerLimit::Own(Ok(())));
    assert_eq!(callers.len(), 3);
    assert_eq!(admit("d", second), CallerLimit::Own(Err(second)));
    assert_eq!(admit("e", second), CallerLimit::Own(Err(second)));
}

#[test]
fn an_override_is_looked_up_once_per_caller() {
    let callers = Callers::new(10);
    let mut lookups = 0;
    for _ in 0..3 {
        let got = callers.admit(Some(&id("vip")), None, 0, |_| {
            lookups += 1;
            Some(0)
        });
        assert_eq!(got, CallerLimit::Override(0));
    }
    assert_eq!(lookups, 1);
}
