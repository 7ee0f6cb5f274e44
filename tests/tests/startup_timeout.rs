//! A workload with no saved state keeps trying the control service for the whole
//! `MESH_STARTUP_TIMEOUT`: it gives up at the timeout, not a backoff step before it, and a
//! control service that comes up late in the timeout is still reached.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mesh_control::{CaSource, ConfigSource, ControlOptions};
use mesh_tests::{Config, Harness, listener};
use mesh_tower::{Mesh, StartError};

const TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_start_with_the_control_service_down_gives_up_at_the_timeout_not_before() {
    let harness = Harness::start(&Config::new().account("client"))
        .await
        .unwrap();
    // An address nobody listens on: bound, then dropped, so connections are refused at once.
    let refused = listener().await.unwrap().local_addr().unwrap();
    let mut settings = harness.settings("client", None);
    settings.control_addrs = vec![refused.to_string()];
    settings.startup_timeout = TIMEOUT;

    let started = Instant::now();
    let error = Mesh::start(settings).await.unwrap_err();
    let took = started.elapsed();
    // Lower bounds only: the start must not give up early; how late is the machine's business.
    assert!(
        took >= Duration::from_millis(2900),
        "gave up after {took:?}"
    );
    match error {
        StartError::Certificate { waited, .. } => {
            assert!(waited >= Duration::from_millis(2900), "waited {waited:?}");
        }
        other => panic!("expected StartError::Certificate, got {other:?}"),
    }
}

#[tokio::test]
async fn a_control_service_that_comes_up_late_in_the_timeout_is_reached() {
    let config = Config::new().account("client");
    let ca_dir = tempfile::tempdir().unwrap();
    // A fixed address and a CA kept on disk, so the control service started later is the one
    // whose anchors the workload has.
    let control_addr = listener().await.unwrap().local_addr().unwrap();
    let ca = CaSource::Dev {
        state_dir: ca_dir.path().to_owned(),
    };
    let mut harness = Harness::start_with(&config, |o| {
        o.listen = control_addr;
        o.ca = ca.clone();
    })
    .await
    .unwrap();
    let mut settings = harness.settings("client", None);
    settings.startup_timeout = TIMEOUT;
    harness.stop_control().await;

    let started = Instant::now();
    let start = tokio::spawn(Mesh::start(settings));
    // Up about 2 s into the 3 s timeout: after the backoff's step that the old schedule would
    // have given up at (1.5 s of waits, then a 1.6 s step past the deadline).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut options = ControlOptions::new(
        harness.trust_domain.clone(),
        ConfigSource::File(harness.config_path.clone()),
    );
    options.listen = control_addr;
    options.ca = ca;
    harness.control = Some(mesh_control::start(options).await.unwrap());

    let mesh = start.await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(mesh.identity().id().as_str(), mesh_tests::spiffe("client"));
}
