//! Config and certificate churn under load, counting every call: route weights rewritten over
//! and over for ~8 s (0 failed, and the final 80/20 split holds), and certificates that last
//! 3 s renewing on both sides for ~8 s (0 failed).
//!
//! The 30 s versions run in the soak test (`tests/tests/soak.rs`, `#[ignore]`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mesh_tests::faults::scenarios;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_weights_churning_under_load_fail_no_call_and_the_final_split_holds() {
    let report = scenarios::weight_churn(Duration::from_secs(8), Duration::from_millis(100), 2000)
        .await
        .unwrap();
    println!(
        "{}; {} versions applied",
        report.load, report.versions_applied
    );
    assert_eq!(report.load.failed, 0, "{}", report.load);
    assert!(report.load.ok > 300, "too little traffic: {}", report.load);
    // 80 changes written, one every 100 ms: nearly all must reach the client on their own
    // (the last good one of two written within one poll may be skipped).
    assert!(
        report.versions_applied >= 60,
        "only {} of 80 config versions reached the client",
        report.versions_applied
    );
    assert_eq!(report.final_failed, 0);
    // 20 % of 2,000 calls has a standard deviation of about 0.9 points: ±5 points is > 5 sigma.
    let share = report.final_v2 as f64 * 100.0 / report.final_calls as f64;
    assert!(
        (15.0..=25.0).contains(&share),
        "v2 got {share} % of the calls after the churn, 20 % expected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renewing_every_two_seconds_under_load_fail_no_call() {
    let report = scenarios::rotation_under_load(Duration::from_secs(3), Duration::from_secs(8))
        .await
        .unwrap();
    println!(
        "{}; {} client certificates",
        report.load, report.client_certificates
    );
    assert_eq!(report.load.failed, 0, "{}", report.load);
    assert!(report.load.ok > 300, "too little traffic: {}", report.load);
    // 8 s of 3 s certificates renewed at ~70 %: three or four renewals.
    assert!(
        report.client_certificates >= 3,
        "the client's certificate changed only {} times",
        report.client_certificates - 1
    );
    assert_eq!(u64::from(report.served), report.load.ok);
}
