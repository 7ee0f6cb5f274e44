//! Discovery end to end: replicas added to and removed from the control service's config file
//! are picked up without a restart, calls spread over every replica, and calls keep working
//! when the control service goes away.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::{Config, Harness, eventually, listener};
use mesh_tonic::{MeshChannel, MeshTonicExt};

/// Makes `n` calls, 16 in flight at a time (as a busy caller would: P2C over peak-EWMA sends
/// a sequential caller to the fastest replica, and spreads load as calls queue up), and counts
/// the replies by replica name.
async fn spread(client: &GreeterClient<MeshChannel>, n: usize) -> BTreeMap<String, usize> {
    const IN_FLIGHT: usize = 16;
    let mut tasks = Vec::new();
    for t in 0..IN_FLIGHT {
        let mut client = client.clone();
        let calls = n / IN_FLIGHT + usize::from(t < n % IN_FLIGHT);
        tasks.push(tokio::spawn(async move {
            let mut replicas = Vec::new();
            for i in 0..calls {
                let message = client
                    .say_hello(HelloRequest {
                        name: format!("t{t}c{i}"),
                    })
                    .await
                    .unwrap_or_else(|s| panic!("call {i} of task {t} failed: {s:?}"))
                    .into_inner()
                    .message;
                let replica = message
                    .split(" from ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .unwrap()
                    .to_owned();
                replicas.push(replica);
            }
            replicas
        }));
    }
    let mut counts = BTreeMap::new();
    for task in tasks {
        for replica in task.await.unwrap() {
            *counts.entry(replica).or_default() += 1;
        }
    }
    counts
}

#[tokio::test]
async fn replicas_added_and_removed_in_the_config_file_take_effect_without_a_restart() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let base = Config::new().account("greeter").account("client");
    let harness = Harness::start(&base.clone().service("greeter", &[(a1, "greeter")]))
        .await
        .unwrap();
    let _r1 = harness.greeter(l1, "g1", "greeter").await.unwrap();
    let _r2 = harness.greeter(l2, "g2", "greeter").await.unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());

    let counts = spread(&client, 40).await;
    assert_eq!(counts.get("g1"), Some(&40), "{counts:?}");

    // Add the second replica: both serve.
    let version = harness.config_version();
    harness
        .write_config(
            &base
                .clone()
                .service("greeter", &[(a1, "greeter"), (a2, "greeter")]),
        )
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || client_mesh
            .control_status()
            .version
            > version)
        .await
    );
    let counts = spread(&client, 200).await;
    assert_eq!(counts.values().sum::<usize>(), 200);
    assert_eq!(
        counts.len(),
        2,
        "calls should spread over both replicas: {counts:?}"
    );

    // Remove the first: only the second serves.
    let version = client_mesh.control_status().version;
    harness
        .write_config(&base.clone().service("greeter", &[(a2, "greeter")]))
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || client_mesh
            .control_status()
            .version
            > version)
        .await
    );
    // Let the balancer take the removal in (it is applied on the next call).
    let _ = spread(&client, 5).await;
    let counts = spread(&client, 40).await;
    assert_eq!(counts.get("g2"), Some(&40), "{counts:?}");
}

#[tokio::test]
async fn calls_keep_succeeding_after_the_control_service_stops() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let config = Config::new()
        .service(
            "greeter",
            &[
                (l1.local_addr().unwrap(), "greeter"),
                (l2.local_addr().unwrap(), "greeter"),
            ],
        )
        .account("greeter")
        .account("client");
    let mut harness = Harness::start(&config).await.unwrap();
    let _r1 = harness.greeter(l1, "g1", "greeter").await.unwrap();
    let _r2 = harness.greeter(l2, "g2", "greeter").await.unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());
    spread(&client, 20).await;

    harness.stop_control().await;
    assert!(
        eventually(Duration::from_secs(5), || !client_mesh
            .control_status()
            .connected)
        .await
    );

    // Every call still succeeds, on both replicas, from the last good snapshot.
    let counts = spread(&client, 200).await;
    assert_eq!(counts.values().sum::<usize>(), 200);
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(client_mesh.control_status().version > 0);
}
