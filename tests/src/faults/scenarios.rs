//! The fault scenarios, parameterized by how long they run: the CI tests in
//! `tests/tests/faults_*.rs` run them briefly, the soak test (`tests/tests/soak.rs`) for long.
//! Each returns what it counted; the tests judge it.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_tonic::MeshChannel;
use mesh_tower::MeshClient;

use super::{Load, LoadReport, ServedGreeter, wait_for_endpoints};
use crate::{Config, Harness, eventually, listener};

/// Callers of every scenario's load.
pub const CALLERS: usize = 8;
/// Pause between one caller's calls: a steady load that leaves the 2-core machine some room.
pub const PAUSE: Duration = Duration::from_millis(1);
/// How long a drained replica's calls in flight may take to finish.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long to wait for a config change to reach the client.
const PROPAGATION: Duration = Duration::from_secs(5);

/// The `greeter` service on `addrs`, with a gRPC route that retries UNAVAILABLE when `retry`.
pub fn greeters(addrs: &[SocketAddr], retry: bool) -> Config {
    let endpoints: Vec<(SocketAddr, &str)> = addrs.iter().map(|a| (*a, "greeter")).collect();
    let config = Config::new()
        .service("greeter", &endpoints)
        .account("greeter")
        .account("client");
    if retry {
        config.routes(
            "greeter",
            r#"
            - name: retrying
              kind: grpc
              rules:
                - backendRefs: [{name: greeter}]
                  retry: {statuses: [UNAVAILABLE], attempts: 2}
            "#,
        )
    } else {
        config
    }
}

/// A client of `greeter`: the mesh client (to see what it has applied) and a channel on it.
pub async fn greeter_client(
    mesh: &mesh_tower::Mesh,
) -> anyhow::Result<(MeshClient<tonic::body::Body>, MeshChannel)> {
    let client = mesh.client::<tonic::body::Body>("greeter").await?;
    let channel = MeshChannel::new(client.clone());
    Ok((client, channel))
}

/// What [`kill_one_of_three`] counted.
#[derive(Debug)]
pub struct KillReport {
    /// The load over the whole run.
    pub load: LoadReport,
    /// Calls the killed replica received after it was killed (must be 0).
    pub killed_after: u32,
    /// Calls the two survivors received after the kill.
    pub survivors_after: u32,
}

/// Three replicas of `greeter` (route retrying UNAVAILABLE twice) under steady load; once all
/// three have served, one is killed abruptly (its task aborted, connections dropped without
/// GOAWAY) while the config still lists it; the load runs on for `after`.
pub async fn kill_one_of_three(after: Duration) -> anyhow::Result<KillReport> {
    let listeners = [listener().await?, listener().await?, listener().await?];
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    let harness = Harness::start(&greeters(&addrs, true)).await?;
    let mut replicas = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let name = format!("k{}", i + 1);
        replicas.push(
            harness
                .served_greeter(l, &name, "greeter", "greeter", GRACE)
                .await?,
        );
    }
    let client_mesh = harness.mesh("client").await?;
    let (_client, channel) = greeter_client(&client_mesh).await?;
    let load = Load::start(&channel, CALLERS, PAUSE);

    // Until every replica has served: the victim has calls in flight when it dies.
    let all_served = eventually(Duration::from_secs(10), || {
        replicas.iter().all(|r| r.greeter.received() > 20)
    })
    .await;
    anyhow::ensure!(all_served, "not every replica served before the kill");
    let Some(victim) = replicas.pop() else {
        anyhow::bail!("no replica to kill");
    };
    let victim_greeter = victim.greeter.clone();
    let survivors_before: u32 = replicas.iter().map(|r| r.greeter.received()).sum();
    victim.kill();
    // The abort takes effect at the task's next poll: give it that, then count.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let victim_at_kill = victim_greeter.received();

    tokio::time::sleep(after).await;
    let load = load.stop().await?;
    let survivors_after =
        replicas.iter().map(|r| r.greeter.received()).sum::<u32>() - survivors_before;
    Ok(KillReport {
        load,
        killed_after: victim_greeter.received() - victim_at_kill,
        survivors_after,
    })
}

/// What [`rolling_restart`] counted.
#[derive(Debug)]
pub struct RollingReport {
    /// The load over the whole run.
    pub load: LoadReport,
    /// The replicas started by the restart, in order.
    pub new_replicas: Vec<String>,
}

/// Three replicas of `greeter` under steady load, replaced one at a time, `rounds` times over.
///
/// With `discovery_first`, each step is the realistic order: the replica is removed from the
/// config and the client has applied that, then it drains (GOAWAY, calls in flight finish),
/// then its replacement starts on a new port and joins the config. Without, the replica drains
/// while the config still lists it, and only then is it swapped for its replacement.
///
/// With `retry`, the route retries UNAVAILABLE. Either way, a call the client sent just as the
/// GOAWAY arrived (refused by the server's final GOAWAY, so never processed) is sent again
/// elsewhere by the client itself, retry policy or not.
pub async fn rolling_restart(
    rounds: usize,
    discovery_first: bool,
    retry: bool,
) -> anyhow::Result<RollingReport> {
    let listeners = [listener().await?, listener().await?, listener().await?];
    let mut addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    let harness = Harness::start(&greeters(&addrs, retry)).await?;
    let mut replicas: Vec<ServedGreeter> = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let name = format!("a{}", i + 1);
        replicas.push(
            harness
                .served_greeter(l, &name, "greeter", "greeter", GRACE)
                .await?,
        );
    }
    let client_mesh = harness.mesh("client").await?;
    let (client, channel) = greeter_client(&client_mesh).await?;
    let load = Load::start(&channel, CALLERS, PAUSE);
    anyhow::ensure!(
        load.wait_for_calls(200, Duration::from_secs(10)).await,
        "no traffic before the restart"
    );

    let mut new_replicas = Vec::new();
    for round in 0..rounds {
        for slot in 0..replicas.len() {
            let old_addr = addrs[slot];
            if discovery_first {
                let remaining: Vec<SocketAddr> =
                    addrs.iter().copied().filter(|a| *a != old_addr).collect();
                harness.write_config(&greeters(&remaining, retry))?;
                anyhow::ensure!(
                    wait_for_endpoints(&client_mesh, "greeter", &remaining, PROPAGATION).await,
                    "the client never received the config without {old_addr}"
                );
                anyhow::ensure!(
                    eventually(PROPAGATION, || client.endpoint_count() == remaining.len()).await,
                    "the client never applied the config without {old_addr}"
                );
            }
            // Drain the old replica: stop and wait, as a pod's termination would.
            let l = listener().await?;
            let new_addr = l.local_addr()?;
            let name = format!("r{round}-{slot}");
            let fresh = harness
                .served_greeter(l, &name, "greeter", "greeter", GRACE)
                .await?;
            let old = std::mem::replace(&mut replicas[slot], fresh);
            old.drain().await?;

            addrs[slot] = new_addr;
            harness.write_config(&greeters(&addrs, retry))?;
            anyhow::ensure!(
                wait_for_endpoints(&client_mesh, "greeter", &addrs, PROPAGATION).await,
                "the client never received the config with {new_addr}"
            );
            let joined = &replicas[slot].greeter;
            anyhow::ensure!(
                eventually(PROPAGATION, || joined.received() > 0).await,
                "the new replica {name} never took a call"
            );
            new_replicas.push(name);
        }
    }
    anyhow::ensure!(
        load.wait_for_calls(200, Duration::from_secs(10)).await,
        "no traffic after the restart"
    );
    Ok(RollingReport {
        load: load.stop().await?,
        new_replicas,
    })
}

/// What [`weight_churn`] counted.
#[derive(Debug)]
pub struct ChurnReport {
    /// The load during the churn.
    pub load: LoadReport,
    /// Config versions the client received during the churn.
    pub versions_applied: u64,
    /// Calls made after the churn, with the final 80/20 weights in force.
    pub final_calls: usize,
    /// Of those, the calls `greeter-v2` (weight 20) answered.
    pub final_v2: usize,
    /// Of those, the calls that failed.
    pub final_failed: usize,
}

/// The `greeter` route splitting between `greeter-v1` and `greeter-v2` by `v1`/`v2`.
pub fn split(a1: SocketAddr, a2: SocketAddr, v1: u32, v2: u32) -> Config {
    Config::new()
        .service("greeter", &[])
        .routes(
            "greeter",
            &format!(
                r#"
                - name: canary
                  kind: grpc
                  rules:
                    - backendRefs:
                        - {{name: greeter-v1, weight: {v1}}}
                        - {{name: greeter-v2, weight: {v2}}}
                "#
            ),
        )
        .service("greeter-v1", &[(a1, "greeter")])
        .service("greeter-v2", &[(a2, "greeter")])
        .account("greeter")
        .account("client")
}

/// Two versions of `greeter` under steady load while the route's weights change every
/// `every` for `churn` (random weights, each version sometimes at 0); then the weights are set
/// to 80/20 and `final_calls` calls measure the split.
///
/// The control service reads its file every 20 ms here (`--poll-interval`; an edit applies
/// once two reads agree), so a change written every 100 ms reaches the client before the next
/// one: each change is written on its own schedule, never waiting for the last to land.
pub async fn weight_churn(
    churn: Duration,
    every: Duration,
    final_calls: usize,
) -> anyhow::Result<ChurnReport> {
    use examples::hello::HelloRequest;
    use examples::hello::greeter_client::GreeterClient;

    use crate::greeter::{GreeterMode, replica_of};

    let (l1, l2) = (listener().await?, listener().await?);
    let (a1, a2) = (l1.local_addr()?, l2.local_addr()?);
    let harness = Harness::start_with(&split(a1, a2, 50, 50), |options| {
        options.file_poll_interval = Duration::from_millis(20);
    })
    .await?;
    let mode = GreeterMode::Normal;
    let v1 = harness.test_greeter(l1, "v1", "greeter", "greeter-v1", mode);
    let v2 = harness.test_greeter(l2, "v2", "greeter", "greeter-v2", mode);
    let (_v1, _v2) = tokio::try_join!(v1, v2)?;
    let client_mesh = harness.mesh("client").await?;
    let (_client, channel) = greeter_client(&client_mesh).await?;
    let load = Load::start(&channel, CALLERS, PAUSE);

    let start_version = client_mesh.control_status().version;
    let until = tokio::time::Instant::now() + churn;
    while tokio::time::Instant::now() < until {
        let next = tokio::time::Instant::now() + every;
        // Never both 0: a rule whose backends all weigh 0 answers every call with an error
        // by design, which is not what this test counts. Never the final 80/20 either: the
        // final config must differ from the last one written to be a new version.
        let w1 = loop {
            let w = fastrand::u32(0..=100);
            if w != 80 {
                break w;
            }
        };
        let w2 = if w1 == 0 {
            fastrand::u32(1..=100)
        } else {
            100 - w1
        };
        harness.write_config(&split(a1, a2, w1, w2))?;
        tokio::time::sleep_until(next).await;
    }
    let versions_applied = client_mesh.control_status().version - start_version;

    // The final weights; then the load stops and a measured run checks the split.
    harness
        .reconfigure(&client_mesh, &split(a1, a2, 80, 20))
        .await?;
    // The client applies the snapshot right after the mesh receives it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let load = load.stop().await?;
    let client = GreeterClient::new(channel);
    let replies = crate::concurrently(final_calls, CALLERS, move |i| {
        let mut client = client.clone();
        async move {
            let request = HelloRequest {
                name: format!("final:{i}"),
            };
            client
                .say_hello(request)
                .await
                .ok()
                .map(|reply| replica_of(&reply.into_inner().message).to_owned())
        }
    })
    .await;
    Ok(ChurnReport {
        load,
        versions_applied,
        final_calls,
        final_v2: replies.iter().flatten().filter(|r| *r == "v2").count(),
        final_failed: replies.iter().filter(|r| r.is_none()).count(),
    })
}

/// What [`rotation_under_load`] counted.
#[derive(Debug)]
pub struct RotationReport {
    /// The load over the whole run.
    pub load: LoadReport,
    /// Distinct certificates the client held over the run.
    pub client_certificates: usize,
    /// Calls the replica received (each over mTLS with the client's certificate of the time).
    pub served: u32,
}

/// A greeter and a client whose certificates last `lifetime` (so both renew every ~70 % of
/// it), under steady load for `traffic`.
pub async fn rotation_under_load(
    lifetime: Duration,
    traffic: Duration,
) -> anyhow::Result<RotationReport> {
    use std::collections::HashSet;

    use crate::greeter::GreeterMode;

    let l = listener().await?;
    let config = greeters(&[l.local_addr()?], false);
    let harness = Harness::start_with(&config, |options| options.cert_lifetime = lifetime).await?;
    let replica = harness
        .test_greeter(l, "g1", "greeter", "greeter", GreeterMode::Normal)
        .await?;
    let client_mesh = harness.mesh("client").await?;
    let (_client, channel) = greeter_client(&client_mesh).await?;
    let load = Load::start(&channel, CALLERS, PAUSE);
    let mut certificates = HashSet::new();
    let until = tokio::time::Instant::now() + traffic;
    while tokio::time::Instant::now() < until {
        if let Some(leaf) = client_mesh.identity().svid().certified.cert.first() {
            certificates.insert(leaf.clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(RotationReport {
        load: load.stop().await?,
        client_certificates: certificates.len(),
        served: replica.greeter.received(),
    })
}
