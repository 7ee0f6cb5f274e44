//! A client's pool of connections per endpoint (`MESH_CONNECTIONS_PER_ENDPOINT`): calls to one
//! replica from many tasks are spread over that many HTTP/2 connections (counted on the server
//! by the caller's socket address), and a pool of one keeps the old behaviour.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::Greeter;
use examples::hello::{HelloReply, HelloRequest};
use mesh_tests::{Config, Harness, concurrently, listener, serve_greeter};
use mesh_tonic::{MeshConnectInfo, MeshTonicExt};
use mesh_tower::Mesh;
use tonic::{Request, Response, Status};

/// A greeter that counts the calls it gets on each client connection.
#[derive(Clone, Default)]
struct ByConnection {
    calls: Arc<Mutex<HashMap<SocketAddr, u32>>>,
}

impl ByConnection {
    /// The calls counted since the last take, by client connection.
    fn take(&self) -> HashMap<SocketAddr, u32> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[tonic::async_trait]
impl Greeter for ByConnection {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let Some(info) = request.extensions().get::<MeshConnectInfo>() else {
            return Err(Status::internal("no connection info"));
        };
        *self
            .calls
            .lock()
            .unwrap()
            .entry(info.remote_addr())
            .or_default() += 1;
        Ok(Response::new(HelloReply {
            message: "hello".into(),
        }))
    }
}

/// Serves the counting greeter and makes rounds of `calls` calls from 16 tasks, from a client
/// whose pool holds `pool` connections, until a round uses `pool` connections (the pool's
/// connections come up independently, not all before the first call) or 5 s have passed;
/// gives the calls per client connection of one more round.
async fn calls_per_connection(pool: usize, calls: usize) -> HashMap<SocketAddr, u32> {
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(addr, "greeter")])
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let server = Mesh::start(harness.settings("greeter", Some("greeter")))
        .await
        .unwrap();
    let greeter = ByConnection::default();
    let _serving = serve_greeter(server, l, greeter.clone()).unwrap();

    let client_mesh = Mesh::start(
        harness
            .settings("client", None)
            .with_connections_per_endpoint(pool),
    )
    .await
    .unwrap();
    let channel = client_mesh.channel("greeter.default").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = round(&channel, calls, &greeter).await;
        if counts.len() >= pool || Instant::now() > deadline {
            // Measure a round that starts with the whole pool up.
            return round(&channel, calls, &greeter).await;
        }
    }
}

/// One round of `calls` calls from 16 tasks; the calls counted per client connection.
async fn round(
    channel: &mesh_tonic::MeshChannel,
    calls: usize,
    greeter: &ByConnection,
) -> HashMap<SocketAddr, u32> {
    let channel = channel.clone();
    let results = concurrently(calls, 16, move |i| {
        let mut client = GreeterClient::new(channel.clone());
        async move {
            client
                .say_hello(HelloRequest {
                    name: format!("call-{i}"),
                })
                .await
                .map(|_| ())
        }
    })
    .await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "calls failed: {failed:?}");
    greeter.take()
}

#[tokio::test]
async fn calls_spread_over_every_connection_of_the_pool() {
    let calls = 200;
    let counts = calls_per_connection(4, calls).await;
    // Each of the 16 tasks has its connection: 4 tasks, about 50 calls, on each.
    assert_eq!(
        counts.len(),
        4,
        "four client connections served calls: {counts:?}"
    );
    assert_eq!(counts.values().sum::<u32>(), calls as u32);
    for (peer, n) in &counts {
        assert!(
            *n >= 20,
            "connection {peer} served {n} of {calls} calls: {counts:?}"
        );
    }
}

#[tokio::test]
async fn a_pool_of_one_uses_a_single_connection() {
    let counts = calls_per_connection(1, 50).await;
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts.values().sum::<u32>(), 50);
}
