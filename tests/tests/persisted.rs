//! Static stability across restarts: a service restarted while the control service is down
//! starts from the snapshot and identity it persisted in `MESH_STATE_DIR`, says it did, and
//! serves; without usable state it fails and names what is missing.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::{Config, Harness, eventually, listener, spiffe};
use mesh_tonic::{MeshChannel, MeshTonicExt};
use mesh_tower::persist::{IDENTITY_FILE, SNAPSHOT_FILE};
use mesh_tower::{Mesh, MeshSettings, StartError};

/// Makes `n` calls one after the other and counts the failures.
async fn failed_calls(client: &mut GreeterClient<MeshChannel>, n: usize) -> usize {
    let mut failed = 0;
    for i in 0..n {
        let reply = client
            .say_hello(HelloRequest {
                name: format!("c{i}"),
            })
            .await;
        if let Err(status) = reply {
            eprintln!("call {i} failed: {status:?}");
            failed += 1;
        }
    }
    failed
}

/// The client's settings: state in `dir`, identity persisted, a short start-up timeout.
fn client_settings(harness: &Harness, dir: &Path, persist_identity: bool) -> MeshSettings {
    let mut settings = harness
        .settings("client", None)
        .with_state_dir(dir, persist_identity);
    settings.startup_timeout = Duration::from_secs(1);
    settings
}

#[tokio::test]
async fn a_client_restarted_while_the_control_service_is_down_serves_from_persisted_state() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .account("greeter")
        .account("client");
    let mut harness = Harness::start(&config).await.unwrap();
    let server_state = tempfile::tempdir().unwrap();
    let client_state = tempfile::tempdir().unwrap();
    let server_settings = harness
        .settings("greeter", Some("greeter"))
        .with_state_dir(server_state.path(), true);
    let _greeter = harness
        .greeter_with_settings(l, "g1", server_settings)
        .await
        .unwrap();

    // Normal operation: the control service is up, the state is written as it goes.
    let mesh = Mesh::start(client_settings(&harness, client_state.path(), true))
        .await
        .unwrap();
    let mut client = GreeterClient::new(mesh.channel("greeter").await.unwrap());
    assert_eq!(failed_calls(&mut client, 10).await, 0);
    assert!(!mesh.control_status().restored_from_disk);
    let version = mesh.control_status().version;
    assert!(version > 0);
    // The snapshot naming the greeter is saved right after it is put in force.
    let snapshot_file = client_state.path().join(SNAPSHOT_FILE);
    let identity_file = client_state.path().join(IDENTITY_FILE);
    assert!(eventually(Duration::from_secs(5), || snapshot_file.exists()).await);
    assert!(identity_file.exists());
    assert!(server_state.path().join(SNAPSHOT_FILE).exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&identity_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key file must be private");
    }

    // The control service goes away; the client restarts meanwhile.
    harness.stop_control().await;
    drop(client);
    drop(mesh);
    let restart = Instant::now();
    let mesh = Mesh::start(client_settings(&harness, client_state.path(), true))
        .await
        .unwrap();
    let took = restart.elapsed();
    assert!(took < Duration::from_secs(5), "the restart took {took:?}");
    let status = mesh.control_status();
    assert!(status.restored_from_disk, "{status:?}");
    assert!(!status.connected, "{status:?}");
    assert_eq!(status.version, version, "{status:?}");
    let staleness = status.staleness().unwrap();
    assert!(
        staleness >= took,
        "staleness {staleness:?} counts from the save"
    );
    assert_eq!(mesh.identity().id().as_str(), spiffe("client"));

    // It serves: calls to the still-running greeter succeed on the restored state.
    let mut client = GreeterClient::new(mesh.channel("greeter").await.unwrap());
    assert_eq!(failed_calls(&mut client, 20).await, 0);
    assert!(mesh.control_status().restored_from_disk);

    // Without usable state, a start while the control service is down fails and says why.
    let empty = tempfile::tempdir().unwrap();
    let error = Mesh::start(client_settings(&harness, empty.path(), true))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StartError::NoUsableState { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("snapshot.pb is missing"), "{message}");
    assert!(message.contains("MESH_STATE_DIR"), "{message}");

    // A snapshot alone is not enough when the identity was not persisted.
    let snapshot_only = tempfile::tempdir().unwrap();
    std::fs::copy(&snapshot_file, snapshot_only.path().join(SNAPSHOT_FILE)).unwrap();
    let error = Mesh::start(client_settings(&harness, snapshot_only.path(), false))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("MESH_PERSIST_IDENTITY"), "{message}");
}
