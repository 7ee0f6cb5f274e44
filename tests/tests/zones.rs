//! Zone-aware balancing end to end, three zones of two greeter replicas each: a client in
//! zone a keeps its calls in zone a; with one of a's two replicas gone it sends zone a the
//! overprovisioned share (1.4 × 1/2 = 70 %) and spills the rest; with both gone every call
//! goes to zones b and c, none failing; when a's replicas come back its calls come back. A
//! client that sets no zone is told its zone by the control service (`instanceZones`), and
//! endpoints with topology hints are chosen by their hints.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::faults::ServedGreeter;
use mesh_tests::telemetry::admin_get;
use mesh_tests::{Config, Harness, concurrently, listener};
use mesh_tonic::{MeshChannel, MeshTonicExt};
use mesh_tower::Mesh;
use tokio::net::TcpListener;

const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// Calls per phase.
const CALLS: usize = 300;
const GRACE: Duration = Duration::from_secs(1);

/// Six replicas, two per zone, in zone order.
struct Fleet {
    harness: Harness,
    addrs: Vec<SocketAddr>,
    replicas: Vec<Option<ServedGreeter>>,
}

impl Fleet {
    /// Starts the control service and the replicas; `adjust` edits the config first.
    async fn start(adjust: impl FnOnce(Config, &[SocketAddr]) -> Config) -> Self {
        let mut listeners = Vec::new();
        for _ in 0..6 {
            listeners.push(listener().await.unwrap());
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let endpoints: Vec<(SocketAddr, &str)> = addrs.iter().map(|a| (*a, "greeter")).collect();
        let mut config = Config::new()
            .service("greeter", &endpoints)
            .account("greeter")
            .account("client");
        for (i, addr) in addrs.iter().enumerate() {
            config = config.zone(*addr, ZONES[i / 2]);
        }
        let config = adjust(config, &addrs);
        let harness = Harness::start(&config).await.unwrap();
        let mut replicas = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            replicas.push(Some(start_replica(&harness, listener, i).await));
        }
        Self {
            harness,
            addrs,
            replicas,
        }
    }

    /// Calls received so far by each zone's replicas (a killed replica's count is kept).
    fn by_zone(&self, kept: &[u32; 6]) -> [u32; 3] {
        let mut zones = [0; 3];
        for (i, replica) in self.replicas.iter().enumerate() {
            zones[i / 2] += kept[i] + replica.as_ref().map_or(0, |r| r.greeter.received());
        }
        zones
    }
}

async fn start_replica(harness: &Harness, listener: TcpListener, i: usize) -> ServedGreeter {
    let name = format!("{}-{}", ZONES[i / 2], i % 2);
    harness
        .served_greeter(listener, &name, "greeter", "greeter", GRACE)
        .await
        .unwrap()
}

/// Makes `CALLS` calls (8 in flight); returns how many failed.
async fn call(channel: &MeshChannel) -> usize {
    let channel = channel.clone();
    let outcomes = concurrently(CALLS, 8, move |i| {
        let mut client = GreeterClient::new(channel.clone());
        async move {
            client
                .say_hello(HelloRequest {
                    name: format!("call-{i}"),
                })
                .await
                .is_ok()
        }
    })
    .await;
    outcomes.iter().filter(|ok| !**ok).count()
}

fn delta(after: [u32; 3], before: [u32; 3]) -> [u32; 3] {
    [0, 1, 2].map(|z| after[z] - before[z])
}

/// The client's endpoints of `greeter` that are available, as `/debug/endpoints` shows them.
async fn available(mesh: &Mesh) -> usize {
    let admin = mesh.admin_addr().expect("admin port");
    let (_, body) = admin_get(admin, "/debug/endpoints").await.unwrap();
    body.matches("\"available\"").count()
}

/// Waits up to `timeout` until `n` of the client's endpoints are available.
async fn wait_available(mesh: &Mesh, n: usize, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while available(mesh).await != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} endpoints available, not {n}",
            available(mesh).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client mesh running as `client` (zone `zone` when given), with its admin port open.
async fn client(harness: &Harness, zone: Option<&str>) -> Mesh {
    let mut settings = harness.settings("client", None);
    settings.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    if let Some(zone) = zone {
        settings = settings.with_zone(zone);
    }
    Mesh::start(settings).await.unwrap()
}

/// Makes one call, then waits until every replica has a connection from the client: P2C
/// chooses among connected endpoints only.
async fn warm_up(mesh: &Mesh, channel: &MeshChannel) {
    let mut client = GreeterClient::new(channel.clone());
    client
        .say_hello(HelloRequest {
            name: "warm-up".into(),
        })
        .await
        .unwrap();
    // The endpoints of every zone connect in the background; give them a moment.
    wait_available(mesh, 6, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stay_in_the_zone_spill_over_in_proportion_and_come_back() {
    let mut fleet = Fleet::start(|config, _| config).await;
    let mesh = client(&fleet.harness, Some("zone-a")).await;
    let channel = mesh.channel("greeter").await.unwrap();
    warm_up(&mesh, &channel).await;
    let mut kept = [0u32; 6];

    // All healthy: every call stays in zone a.
    let before = fleet.by_zone(&kept);
    assert_eq!(call(&channel).await, 0);
    let all_local = delta(fleet.by_zone(&kept), before);
    assert_eq!(all_local, [CALLS as u32, 0, 0], "all healthy");

    // One of zone a's two replicas gone: zone a gets 70 % of calls, the rest spill over.
    let gone = fleet.replicas[0].take().unwrap();
    kept[0] = gone.greeter.received();
    gone.kill();
    wait_available(&mesh, 5, Duration::from_secs(10)).await;
    let before = fleet.by_zone(&kept);
    assert_eq!(call(&channel).await, 0);
    let half = delta(fleet.by_zone(&kept), before);
    // 70 % of 300 is 210; four standard deviations (4 × 7.9) either side.
    assert!((178..=242).contains(&half[0]), "half of zone a: {half:?}");
    assert!(half[1] > 0 && half[2] > 0, "both other zones: {half:?}");

    // Both gone: every call goes to zones b and c, none fails.
    let gone = fleet.replicas[1].take().unwrap();
    kept[1] = gone.greeter.received();
    gone.kill();
    wait_available(&mesh, 4, Duration::from_secs(10)).await;
    let before = fleet.by_zone(&kept);
    assert_eq!(call(&channel).await, 0);
    let spilled = delta(fleet.by_zone(&kept), before);
    assert_eq!(spilled[0], 0, "zone a is down: {spilled:?}");
    assert!(spilled[1] > 50 && spilled[2] > 50, "{spilled:?}");

    // Zone a's replicas come back on their addresses: calls come back to zone a.
    for i in 0..2 {
        let listener = TcpListener::bind(fleet.addrs[i]).await.unwrap();
        fleet.replicas[i] = Some(start_replica(&fleet.harness, listener, i).await);
    }
    wait_available(&mesh, 6, Duration::from_secs(20)).await;
    let before = fleet.by_zone(&kept);
    assert_eq!(call(&channel).await, 0);
    let returned = delta(fleet.by_zone(&kept), before);
    assert_eq!(returned, [CALLS as u32, 0, 0], "zone a is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_service_tells_a_client_its_zone_and_hints_win_over_zones() {
    // The client sets no zone; the control file says its instance runs in zone b.
    let fleet = Fleet::start(|config, _| {
        config.top_level("instanceZones: {\"default/client-test\": zone-b}")
    })
    .await;
    let mesh = client(&fleet.harness, None).await;
    let channel = mesh.channel("greeter").await.unwrap();
    warm_up(&mesh, &channel).await;
    let before = fleet.by_zone(&[0; 6]);
    assert_eq!(call(&channel).await, 0);
    assert_eq!(
        delta(fleet.by_zone(&[0; 6]), before),
        [0, CALLS as u32, 0],
        "told zone b"
    );
    drop(mesh);

    // Topology hints: the zone-c replicas are hinted for zone b's clients, the others for
    // zone a's; a zone-b client follows the hints, not the zones.
    let fleet = Fleet::start(|mut config, addrs| {
        for (i, addr) in addrs.iter().enumerate() {
            let hint = if i >= 4 { "zone-b" } else { "zone-a" };
            config = config.endpoint_keys(*addr, &format!("forZones: [{hint}]"));
        }
        config
    })
    .await;
    let mesh = client(&fleet.harness, Some("zone-b")).await;
    let channel = mesh.channel("greeter").await.unwrap();
    warm_up(&mesh, &channel).await;
    let before = fleet.by_zone(&[0; 6]);
    assert_eq!(call(&channel).await, 0);
    assert_eq!(
        delta(fleet.by_zone(&[0; 6]), before),
        [0, 0, CALLS as u32],
        "hinted for zone b"
    );
}
