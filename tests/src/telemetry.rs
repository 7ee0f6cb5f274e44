//! Helpers for telemetry tests: fetching an admin endpoint and reading Prometheus text.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on an admin port (HTTP/1.0, so the server closes when done): status and body.
pub async fn admin_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nhost: admin\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let raw = String::from_utf8(raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no header end in {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// One sample of Prometheus text: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with `_count`, `_bucket`, ... as rendered).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parses Prometheus text (label values without commas or escaped quotes, as the mesh's are).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The samples named `name` whose labels include every pair of `labels`.
pub fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The sum of the samples [`find`] returns (0 when none).
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels).iter().map(|s| s.value).sum()
}

/// Two meshed services for the trace tests, running: `front` (axum, whose `GET /hello` calls
/// `greeter` through the mesh from inside its handler) and `greeter` (tonic), with a client
/// mesh of account `client` that has called `front` once (the call is asserted to succeed).
pub struct TwoHops {
    /// The control service and its config.
    pub harness: crate::Harness,
    /// The calling mesh.
    pub client: mesh_tower::Mesh,
    _greeter: crate::Replica,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for TwoHops {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// Starts [`TwoHops`] and makes the one call through both.
pub async fn two_hops() -> TwoHops {
    use examples::hello::HelloRequest;
    use examples::hello::greeter_client::GreeterClient;
    use mesh_tonic::{MeshChannel, MeshTonicExt};

    async fn front(
        axum::extract::State(greeter): axum::extract::State<GreeterClient<MeshChannel>>,
    ) -> String {
        let mut greeter = greeter.clone();
        match greeter.say_hello(HelloRequest { name: "ann".into() }).await {
            Ok(reply) => reply.into_inner().message,
            Err(status) => format!("error: {status}"),
        }
    }

    let front_listener = crate::listener().await.expect("listener");
    let greeter_listener = crate::listener().await.expect("listener");
    let config = crate::Config::new()
        .service(
            "front",
            &[(front_listener.local_addr().expect("addr"), "front")],
        )
        .service(
            "greeter",
            &[(greeter_listener.local_addr().expect("addr"), "greeter")],
        )
        .account("front")
        .account("greeter")
        .account("client");
    let harness = crate::Harness::start(&config).await.expect("harness");
    let greeter = harness
        .greeter(greeter_listener, "g1", "greeter")
        .await
        .expect("greeter");
    let front_mesh = mesh_tower::Mesh::start(harness.settings("front", Some("front")))
        .await
        .expect("front's mesh");
    let channel = front_mesh.channel("greeter").await.expect("channel");
    let router = axum::Router::new()
        .route("/hello", axum::routing::get(front))
        .with_state(GreeterClient::new(channel));
    let serving = tokio::spawn({
        let front_mesh = front_mesh.clone();
        async move { front_mesh.serve(front_listener, router).await }
    });
    let client = harness.mesh("client").await.expect("client's mesh");
    let http = client
        .client::<axum::body::Body>("front")
        .await
        .expect("client");
    let reply = crate::web::get(&http, "/hello").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    TwoHops {
        harness,
        client,
        _greeter: greeter,
        serving,
    }
}
