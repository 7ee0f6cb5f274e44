//! Two control replicas, each in a process of its own, with the same config file and the same
//! CA: workloads spread over both, either replica's `/subscribers` (and `meshctl status`)
//! lists every workload with the replica serving it, and when one replica is killed
//! (SIGKILL, as a crash) under load, no call fails, its subscribers move to the survivor, and
//! the survivor's view still lists every workload while naming the dead peer. Also: a
//! subscriber that moves to a replica numbering its versions differently gets a correct full
//! snapshot there, and a peer that cannot be asked (down, or not the control service) is
//! named in the view, never dropped silently.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_core::snapshot::ServiceName;
use mesh_tests::faults::Load;
use mesh_tests::greeter::{GreeterMode, TestGreeter};
use mesh_tests::{Config, Harness, eventually, listener, serve_greeter, token_for};
use mesh_tonic::MeshTonicExt;
use mesh_tower::{Mesh, MeshSettings, TokenSource};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// How long anything the test waits for may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

/// A control replica in a child process; killed (SIGKILL) when dropped.
struct ReplicaProcess {
    child: Child,
}

impl ReplicaProcess {
    /// Starts replica `name` on `shared`'s control file and CA, its gRPC and admin ports at
    /// `grpc` and `admin`, and `peers`; returns once its `/readyz` answers 200.
    async fn start(
        shared: &Shared,
        name: &str,
        grpc: SocketAddr,
        admin: SocketAddr,
        peers: &[SocketAddr],
    ) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_control-replica"))
            .arg(shared.config())
            .arg(shared.ca())
            .arg(grpc.to_string())
            .arg(admin.to_string())
            .arg(shared.bundle(name))
            .args(peers.iter().map(ToString::to_string))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut replica = Self { child };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = replica.child.try_wait().unwrap() {
                panic!("the replica on {grpc} exited: {status}");
            }
            if get(admin, "/readyz").await.is_ok() {
                return replica;
            }
            assert!(
                Instant::now() < deadline,
                "the replica on {grpc} is not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it as a crash would: SIGKILL, the kernel closes its sockets.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (bound, then released for the replica to take).
async fn free_addr() -> SocketAddr {
    listener().await.unwrap().local_addr().unwrap()
}

/// `N` free ports on 127.0.0.1 (see [`free_addr`]).
async fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let mut addrs = [SocketAddr::from(([127, 0, 0, 1], 0)); N];
    for addr in &mut addrs {
        *addr = free_addr().await;
    }
    addrs
}

/// The body of `GET path` on an admin port, an error unless 200.
async fn get(admin: SocketAddr, path: &str) -> anyhow::Result<String> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(admin).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8(answer)?)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange).await??;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP answer"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}: {body}");
    Ok(body.to_owned())
}

/// The `/subscribers` view of the replica at `admin`.
async fn view(admin: SocketAddr) -> Value {
    serde_json::from_str(&get(admin, "/subscribers").await.unwrap()).unwrap()
}

/// `(replica, node)` of every row of a view.
fn rows(view: &Value) -> BTreeSet<(String, String)> {
    view["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["replica"].as_str().unwrap().to_owned(),
                row["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every node of a view.
fn nodes(view: &Value) -> BTreeSet<String> {
    rows(view).into_iter().map(|(_, node)| node).collect()
}

/// Settings of a workload running as `account` on node `node`, given both replicas.
fn settings(
    controls: &[SocketAddr],
    anchors: &Path,
    account: &str,
    node: &str,
    service: Option<&str>,
) -> MeshSettings {
    let mut settings = MeshSettings::new(
        controls[0].to_string(),
        mesh_core::testing::trust_domain(),
        anchors,
        TokenSource::Inline(token_for(account)),
    )
    .with_node(node);
    settings.control_addrs = controls.iter().map(ToString::to_string).collect();
    settings.service_account = account.to_owned();
    settings.startup_timeout = Duration::from_secs(15);
    settings.ready_timeout = Duration::from_secs(5);
    if let Some(service) = service {
        settings = settings.with_service(ServiceName {
            namespace: "default".into(),
            name: service.into(),
        });
    }
    settings
}

/// The greeter's two servers, `g1` (node `greeter-1`) and `g2` (`greeter-2`), on `listeners`.
async fn two_greeters(
    listeners: [tokio::net::TcpListener; 2],
    controls: &[SocketAddr],
    anchors: &Path,
) -> [JoinHandle<()>; 2] {
    let [l1, l2] = listeners;
    let g1 = settings(controls, anchors, "greeter", "greeter-1", Some("greeter"));
    let g2 = settings(controls, anchors, "greeter", "greeter-2", Some("greeter"));
    [greeter(l1, "g1", g1).await, greeter(l2, "g2", g2).await]
}

/// A greeter served on `listener` by a mesh started from `settings`.
async fn greeter(
    listener: tokio::net::TcpListener,
    name: &str,
    settings: MeshSettings,
) -> JoinHandle<()> {
    let mesh = Mesh::start(settings).await.unwrap();
    // Its answers start with its name: the load reports which server answered.
    serve_greeter(mesh, listener, TestGreeter::new(name, GreeterMode::Normal)).unwrap()
}

/// Waits until `check` holds of the view of the replica at `admin`; the last view.
async fn view_until(admin: SocketAddr, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let view = view(admin).await;
        if check(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "{what}: {view:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The files two replicas share: the control file and the CA directory.
struct Shared {
    dir: tempfile::TempDir,
}

impl Shared {
    fn new(config: &Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ca")).unwrap();
        let shared = Self { dir };
        shared.write(config);
        shared
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("mesh.yaml")
    }
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca")
    }
    fn bundle(&self, replica: &str) -> PathBuf {
        self.dir.path().join(format!("bundle-{replica}.pem"))
    }
    /// Replaces the control file atomically.
    fn write(&self, config: &Config) {
        let tmp = self.dir.path().join("mesh.yaml.tmp");
        std::fs::write(&tmp, config.render()).unwrap();
        std::fs::rename(&tmp, self.config()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_fails_no_call_and_the_view_stays_complete() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let config = Config::new()
        .service("greeter", &[(a1, "greeter"), (a2, "greeter")])
        .account("greeter")
        .account("client");
    let shared = Shared::new(&config);
    let [grpc_a, admin_a, grpc_b, admin_b] = free_addrs().await;
    // The first creates the dev CA; the second, started once it is ready, loads it.
    let mut replica_a = ReplicaProcess::start(&shared, "a", grpc_a, admin_a, &[grpc_b]).await;
    let replica_b = ReplicaProcess::start(&shared, "b", grpc_b, admin_b, &[grpc_a]).await;
    assert_eq!(
        std::fs::read(shared.bundle("a")).unwrap(),
        std::fs::read(shared.bundle("b")).unwrap(),
        "both replicas issue from the same root"
    );
    let anchors = shared.bundle("a");
    let controls = [grpc_a, grpc_b];

    // Two servers and three clients, each a workload of its own.
    let _greeters = two_greeters([l1, l2], &controls, &anchors).await;
    let mut clients = Vec::new();
    for node in ["client-1", "client-2", "client-3"] {
        clients.push(
            Mesh::start(settings(&controls, &anchors, "client", node, None))
                .await
                .unwrap(),
        );
    }
    let all: BTreeSet<String> = ["greeter-1", "greeter-2", "client-1", "client-2", "client-3"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut loads = Vec::new();
    for client in &clients {
        let channel = client.channel("greeter.default").await.unwrap();
        loads.push(Load::start(&channel, 2, Duration::from_millis(2)));
    }

    // Before the kill: either replica's view lists every workload, with the replica serving
    // it, and says it is complete.
    let (name_a, name_b) = (grpc_a.to_string(), grpc_b.to_string());
    for admin in [admin_a, admin_b] {
        let view = view_until(admin, "every workload in the view", |v| {
            nodes(v) == all && v["complete"] == true
        })
        .await;
        assert_eq!(view["unreachable"], serde_json::json!([]));
        for (replica, node) in rows(&view) {
            assert!(
                replica == name_a || replica == name_b,
                "{node} on {replica}"
            );
        }
        assert_eq!(rows(&view).len(), all.len(), "each workload once: {view:#}");
    }
    let asked = Instant::now();
    let before = view(admin_a).await;
    println!(
        "the merged view with one live peer took {:?}",
        asked.elapsed()
    );
    let on_a: BTreeSet<String> = rows(&before)
        .into_iter()
        .filter(|(replica, _)| *replica == name_a)
        .map(|(_, node)| node)
        .collect();
    println!("before the kill, (replica, node): {:?}", rows(&before));
    // Spread: neither replica has them all.
    assert!(
        !on_a.is_empty() && on_a.len() < all.len(),
        "not spread: {before:#}"
    );
    // What `meshctl status` reads agrees, from either replica alone.
    let status = tokio::task::spawn_blocking(move || {
        mesh_control::ctl::status::status(&[admin_b.to_string()]).unwrap()
    })
    .await
    .unwrap();
    assert!(status.unreachable.is_empty(), "{:?}", status.unreachable);
    assert_eq!(status.subscribers.len(), all.len());
    assert_eq!(status.replicas.len(), 2);
    for load in &loads {
        assert!(load.wait_for_calls(50, WAIT).await, "traffic flows");
    }

    // Kill A under load.
    let killed = Instant::now();
    replica_a.kill();
    let after = view_until(admin_b, "A's subscribers moved to B", |v| {
        rows(v).into_iter().filter(|(r, _)| *r == name_b).count() == all.len()
    })
    .await;
    let moved_in = killed.elapsed();
    println!(
        "{} subscribers moved from the killed replica to the survivor in {moved_in:?}",
        on_a.len()
    );
    let asked = Instant::now();
    let _ = view(admin_b).await;
    println!(
        "the merged view with one dead peer took {:?}",
        asked.elapsed()
    );
    // The survivor's view lists every workload, says it is incomplete, and names the peer.
    assert_eq!(nodes(&after), all);
    assert_eq!(after["complete"], false);
    let unreachable = after["unreachable"].as_array().unwrap();
    assert_eq!(unreachable.len(), 1, "{after:#}");
    assert_eq!(unreachable[0]["peer"], name_a.as_str());
    assert!(
        unreachable[0]["error"].as_str().unwrap().contains(&name_a),
        "the error names the peer: {after:#}"
    );
    for client in &clients {
        assert!(
            eventually(WAIT, || client.control_status().connected).await,
            "every client is on the survivor"
        );
    }
    for load in &loads {
        assert!(
            load.wait_for_calls(50, WAIT).await,
            "traffic flows after the kill"
        );
    }
    for load in loads {
        let report = load.stop().await.unwrap();
        println!("{report}");
        assert_eq!(report.failed, 0, "{report}");
    }
    drop(replica_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_moving_to_a_replica_with_other_versions_gets_a_correct_snapshot() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let base = Config::new().account("greeter").account("client");
    let shared = Shared::new(&base.clone().service("greeter", &[(a1, "greeter")]));
    let [grpc_a, admin_a, grpc_b, admin_b] = free_addrs().await;
    let mut replica_a = ReplicaProcess::start(&shared, "a", grpc_a, admin_a, &[grpc_b]).await;
    // A moves on to version 2 (greeter on g2 only) before B starts: B serves the same config
    // as its version 1.
    shared.write(&base.clone().service("greeter", &[(a2, "greeter")]));
    view_until(admin_a, "A at version 2", |v| v["configVersion"] == 2).await;
    let anchors = shared.bundle("a");
    let controls = [grpc_a, grpc_b];
    let _greeters = two_greeters([l1, l2], &controls, &anchors).await;
    // B is not up yet: the client is on A whatever its hash picks.
    let client = Mesh::start(settings(&controls, &anchors, "client", "client-1", None))
        .await
        .unwrap();
    let channel = client.channel("greeter.default").await.unwrap();
    let mut greeter_client = GreeterClient::new(channel);
    assert!(eventually(WAIT, || client.control_status().version == 2).await);
    let _replica_b = ReplicaProcess::start(&shared, "b", grpc_b, admin_b, &[grpc_a]).await;
    assert_eq!(view(admin_b).await["configVersion"], 1);

    replica_a.kill();
    // On B, at B's version 1: a full snapshot of the same config, applied though its number
    // is lower than the one the client held.
    assert!(
        eventually(WAIT, || {
            let status = client.control_status();
            status.connected && status.version == 1
        })
        .await,
        "the client moved to B: {:?}",
        client.control_status()
    );
    let endpoints = mesh_tests::faults::endpoints_in_snapshot(&client, "greeter");
    assert_eq!(endpoints, vec![a2]);
    let reply = greeter_client
        .say_hello(HelloRequest {
            name: "after-move".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mesh_tests::greeter::replica_of(&reply.message), "g2");

    // B's next version (both endpoints) reaches it, as an increment over what B sent.
    shared.write(&base.service("greeter", &[(a1, "greeter"), (a2, "greeter")]));
    assert!(
        eventually(WAIT, || client.control_status().version == 2
            && mesh_tests::faults::endpoints_in_snapshot(&client, "greeter")
                .len()
                == 2)
        .await,
        "B's version 2 arrived: {:?}",
        client.control_status()
    );
    let subscriber = view(admin_b).await["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["node"] == "client-1")
        .cloned()
        .unwrap();
    assert_eq!(subscriber["lastAckedVersion"], 2, "{subscriber:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_be_asked_is_named_in_the_view() {
    // One peer is down (nothing listens), the other is a control service of another CA: its
    // certificate does not verify, so nothing is read from it.
    let down = free_addr().await;
    let stranger = Harness::start(&Config::new()).await.unwrap();
    let stranger_addr = stranger.control_addr();
    let harness = Harness::start_with(
        &Config::new().service("greeter", &[]).account("client"),
        |o| {
            o.admin_listen = Some("127.0.0.1:0".parse().unwrap());
            o.peers = vec![down.to_string(), stranger_addr.to_string()];
            o.peer_limits.timeout = Duration::from_secs(5);
        },
    )
    .await
    .unwrap();
    let control = harness.control.as_ref().unwrap();
    let admin = control.admin_addr().unwrap();
    let _client = harness.mesh("client").await.unwrap();

    let view = view_until(admin, "the client in the view", |v| !rows(v).is_empty()).await;
    assert_eq!(
        rows(&view),
        BTreeSet::from([(control.replica_name().to_owned(), "client-test".to_owned())])
    );
    assert_eq!(view["complete"], false);
    let unreachable = view["unreachable"].as_array().unwrap();
    let peers: BTreeSet<&str> = unreachable
        .iter()
        .map(|u| u["peer"].as_str().unwrap())
        .collect();
    assert_eq!(
        peers,
        BTreeSet::from([
            down.to_string().as_str(),
            stranger_addr.to_string().as_str()
        ])
    );
    for peer in unreachable {
        let error = peer["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!(
                "peer {}: connect:",
                peer["peer"].as_str().unwrap()
            )),
            "{error}"
        );
    }
    // `?local` lists this replica's own without asking.
    let local: Value =
        serde_json::from_str(&get(admin, "/subscribers?local").await.unwrap()).unwrap();
    assert_eq!(local["complete"], true);
    assert_eq!(rows(&local), rows(&view));
    // meshctl status reports the missing peers too.
    let status = tokio::task::spawn_blocking(move || {
        mesh_control::ctl::status::status(&[admin.to_string()]).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.unreachable.len(), 2, "{:?}", status.unreachable);
    assert_eq!(status.subscribers.len(), 1);
}
