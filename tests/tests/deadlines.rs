//! Deadlines across hops: a handler's calls inherit the deadline of the request it serves.
//! A calls B with a 300 ms deadline; B's handler calls C without setting any; C (a plain HTTP
//! server that records what arrives) sees B's call carry `grpc-timeout` of at most the time A
//! had left. With `NoInheritedDeadline` on B's call, C sees none.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::Greeter;
use examples::hello::{HelloReply, HelloRequest};
use mesh_tests::web::WebMode;
use mesh_tests::{Config, Harness, listener, serve_greeter};
use mesh_tonic::{MeshChannel, MeshTonicExt};
use mesh_tower::NoInheritedDeadline;
use tonic::{Request, Response, Status};

/// B: calls C for each request it serves, inheriting or not as the request's name says.
struct Relay {
    to_c: MeshChannel,
}

#[tonic::async_trait]
impl Greeter for Relay {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let mut call = Request::new(HelloRequest { name: "c".into() });
        if request.get_ref().name == "own" {
            call.extensions_mut().insert(NoInheritedDeadline);
        }
        // C is not a gRPC server: the call fails, which is beside the point.
        let _ = GreeterClient::new(self.to_c.clone()).say_hello(call).await;
        Ok(Response::new(HelloReply {
            message: "relayed".into(),
        }))
    }
}

#[tokio::test]
async fn a_handlers_calls_inherit_the_deadline_of_the_request_it_serves() {
    let (lb, lc) = (listener().await.unwrap(), listener().await.unwrap());
    let config = Config::new()
        .service("b", &[(lb.local_addr().unwrap(), "b")])
        .service("c", &[(lc.local_addr().unwrap(), "c")])
        .account("a")
        .account("b")
        .account("c");
    let harness = Harness::start(&config).await.unwrap();
    let c = harness
        .web(lc, "c", "c", "c", WebMode::Normal)
        .await
        .unwrap();
    let b_mesh = mesh_tower::Mesh::start(harness.settings("b", Some("b")))
        .await
        .unwrap();
    let to_c = b_mesh.channel("c").await.unwrap();
    let _b = serve_greeter(b_mesh, lb, Relay { to_c }).unwrap();
    let a = harness.mesh("a").await.unwrap();
    let mut to_b = GreeterClient::new(a.channel("b").await.unwrap());

    for name in ["inherit", "own"] {
        let mut request = Request::new(HelloRequest { name: name.into() });
        request.set_timeout(Duration::from_millis(300));
        to_b.say_hello(request).await.unwrap();
    }
    let timeouts: Vec<Option<String>> = c
        .log
        .entries()
        .iter()
        .map(|seen| {
            seen.headers
                .get("grpc-timeout")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(timeouts.len(), 2, "{timeouts:?}");
    // B's call inherited what A had left: whole milliseconds, at most 300.
    let inherited = timeouts[0]
        .as_deref()
        .expect("the first call carried a deadline");
    let millis: u64 = inherited.strip_suffix('m').unwrap().parse().unwrap();
    assert!((1..=300).contains(&millis), "{inherited}");
    // The opted-out call carried none.
    assert_eq!(timeouts[1], None, "{timeouts:?}");
}
