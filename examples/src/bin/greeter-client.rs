//! A meshed `helloworld.Greeter` client, configured by `MESH_*` environment variables.
//!
//! Usage: `greeter-client [CALLS]` (default 10). `GREETER_DEST` names the destination
//! (default `greeter.default`). Prints each reply and how many calls each replica served.

use std::collections::BTreeMap;

use anyhow::Context;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::init_logging;
use mesh_tonic::MeshTonicExt;
use mesh_tower::Mesh;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging("warn");
    let calls: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("CALLS must be a number")?,
        None => 10,
    };
    let destination =
        std::env::var("GREETER_DEST").unwrap_or_else(|_| "greeter.default".to_owned());
    let mesh = Mesh::from_env().await.context("starting the mesh")?;
    println!("calling {destination} as {}", mesh.identity().id());
    let mut client = GreeterClient::new(mesh.channel(&destination).await?);
    let mut by_replica: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..calls {
        match client
            .say_hello(HelloRequest {
                name: format!("call-{i}"),
            })
            .await
        {
            Ok(reply) => {
                let message = reply.into_inner().message;
                let replica = message
                    .split(" from ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .unwrap_or("?")
                    .to_owned();
                *by_replica.entry(replica).or_default() += 1;
                println!("{message}");
            }
            Err(status) => println!("call {i} failed: {:?}: {}", status.code(), status.message()),
        }
    }
    for (replica, count) in by_replica {
        println!("{replica}: {count}");
    }
    Ok(())
}
