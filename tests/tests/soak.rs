//! The long versions of the fault tests, `#[ignore]`d so CI does not run them: 30 s of route
//! weight churn, 30 s of certificate rotation, a replica killed with 20 s of load after it,
//! and three rolling restarts in a row (with and without the discovery step). Each counts its
//! calls as the short versions in `faults_*.rs` do.
//!
//! Run them (about 2 minutes on 2 cores, one at a time to keep them apart):
//!
//! ```text
//! cargo test -p mesh-tests --test soak -- --ignored --nocapture --test-threads 1
//! ```

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mesh_tests::faults::scenarios;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 30 s; run with --ignored"]
async fn soak_route_weights_churning_for_30_s() {
    let report = scenarios::weight_churn(Duration::from_secs(30), Duration::from_millis(100), 2000)
        .await
        .unwrap();
    println!(
        "{}; {} versions applied",
        report.load, report.versions_applied
    );
    assert_eq!(report.load.failed, 0, "{}", report.load);
    assert!(
        report.versions_applied >= 240,
        "{}",
        report.versions_applied
    );
    assert_eq!(report.final_failed, 0);
    let share = report.final_v2 as f64 * 100.0 / report.final_calls as f64;
    assert!((15.0..=25.0).contains(&share), "v2 got {share} %");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 30 s; run with --ignored"]
async fn soak_certificate_rotation_for_30_s() {
    let report = scenarios::rotation_under_load(Duration::from_secs(3), Duration::from_secs(30))
        .await
        .unwrap();
    println!(
        "{}; {} client certificates",
        report.load, report.client_certificates
    );
    assert_eq!(report.load.failed, 0, "{}", report.load);
    assert!(
        report.client_certificates >= 10,
        "{}",
        report.client_certificates
    );
    assert_eq!(u64::from(report.served), report.load.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 20 s; run with --ignored"]
async fn soak_replica_killed_then_20_s_of_load() {
    let report = scenarios::kill_one_of_three(Duration::from_secs(20))
        .await
        .unwrap();
    println!("{}", report.load);
    assert!(report.load.success_percent() >= 99.9, "{}", report.load);
    assert_eq!(report.killed_after, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: three rolling restarts; run with --ignored"]
async fn soak_three_rolling_restarts_with_discovery_and_drain() {
    let report = scenarios::rolling_restart(3, true, false).await.unwrap();
    println!("{}", report.load);
    assert_eq!(report.load.failed, 0, "{}", report.load);
    assert_eq!(report.new_replicas.len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: three rolling restarts; run with --ignored"]
async fn soak_three_rolling_restarts_drain_only_with_retries() {
    let report = scenarios::rolling_restart(3, false, true).await.unwrap();
    println!("{}", report.load);
    assert_eq!(report.load.failed, 0, "{}", report.load);
    assert_eq!(report.new_replicas.len(), 9);
}
