//! The all-in-one demo: a control service, two greeter replicas, an axum service and a client,
//! all meshed, in one process on 127.0.0.1. Makes a few hundred calls and prints who served
//! them and which identities each side verified.
//!
//! With `--ui` (or `--ui=ADDR`; default 127.0.0.1:7401) the control service also serves its
//! admin port there, and the demo keeps calling until Ctrl-C so that the live view of the mesh
//! (`http://ADDR/ui`) has something to show: the client calls greeter (one call in
//! twenty-five to a method greeter does not have, which fails) and web, and the web service
//! calls greeter.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use examples::hello::{HelloReply, HelloRequest};
use examples::{GreeterReplica, WebReply, init_logging, web_router};
use http_body_util::BodyExt;
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::TrustDomain;
use mesh_core::snapshot::ServiceName;
use mesh_tonic::{MeshLayer, MeshTonicExt};
use mesh_tower::{Mesh, MeshSettings, TokenSource};
use tokio::net::TcpListener;
use tower::ServiceExt;

const CALLS: usize = 300;

/// Where the control service's admin port (and its live view) listens with a bare `--ui`.
const DEFAULT_UI: &str = "127.0.0.1:7401";

/// `--ui` or `--ui=ADDR`: where to serve the live view, if anywhere.
fn ui_addr() -> anyhow::Result<Option<SocketAddr>> {
    let mut args = std::env::args().skip(1);
    let Some(arg) = args.next() else {
        return Ok(None);
    };
    let addr = match (arg.as_str(), args.next()) {
        ("--ui", None) => DEFAULT_UI,
        (other, None) => match other.strip_prefix("--ui=") {
            Some(addr) => addr,
            None => bail!("unknown argument {other:?} (the demo takes only --ui[=ADDR])"),
        },
        (_, Some(extra)) => {
            bail!("unexpected argument {extra:?} (the demo takes only --ui[=ADDR])")
        }
    };
    Ok(Some(addr.parse().with_context(|| format!("--ui={addr}"))?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging("warn");
    let ui = ui_addr()?;
    let started = Instant::now();
    let trust_domain = TrustDomain::new("mesh.local")?;

    // Bind first, so the config can name the real ports.
    let greeter_listeners = [
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    ];
    let web_listener = TcpListener::bind("127.0.0.1:0").await?;
    let config = demo_config(
        &trust_domain,
        greeter_listeners[0].local_addr()?.to_string(),
        greeter_listeners[1].local_addr()?.to_string(),
        web_listener.local_addr()?.to_string(),
    );

    // 1. The control service, in process: CA, config, Watch and Certify over TLS.
    let mut options = ControlOptions::new(trust_domain.clone(), ConfigSource::Inline(config));
    options.admin_listen = ui;
    let control = mesh_control::start(options)
        .await
        .context("starting the control service")?;
    let state = tempfile::tempdir()?;
    let anchors = state.path().join("trust-bundle.pem");
    std::fs::write(&anchors, control.trust_bundle_pem())?;
    println!(
        "control service  {}  ({})",
        control.addr(),
        control.identity()
    );

    let settings = |service: Option<ServiceName>, account: &str, token: &str, node: &str| {
        let mut s = MeshSettings::new(
            control.addr().to_string(),
            trust_domain.clone(),
            &anchors,
            TokenSource::Inline(token.to_owned()),
        )
        .with_node(node);
        s.service_account = account.to_owned();
        s.service = service;
        s
    };
    let greeter = Some(ServiceName::new("default", "greeter")?);
    let web = Some(ServiceName::new("default", "web")?);

    // 2. Two greeter replicas, each with its own mesh identity (same service account).
    let mut replicas = Vec::new();
    let mut servers = Vec::new();
    for (i, listener) in greeter_listeners.into_iter().enumerate() {
        let node = format!("greeter-{}", i + 1);
        let mesh = Mesh::start(settings(
            greeter.clone(),
            "greeter",
            "greeter-demo-token",
            &node,
        ))
        .await?;
        let replica = GreeterReplica::new(&node, mesh.identity().id().to_string());
        println!(
            "{node:<16} {}  ({})",
            listener.local_addr()?,
            mesh.identity().id()
        );
        let incoming = mesh.tonic_incoming(listener)?;
        let service = mesh.serving(GreeterServer::new(replica.clone()));
        servers.push(tokio::spawn(async move {
            let server = mesh.tonic_server();
            let _mesh = mesh;
            server
                .layer(MeshLayer::new())
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
        }));
        replicas.push(replica);
    }

    // 3. An axum service, meshed the same way.
    let web_mesh = Mesh::start(settings(web, "web", "web-demo-token", "web-1")).await?;
    println!(
        "web (axum)       {}  ({})",
        web_listener.local_addr()?,
        web_mesh.identity().id()
    );
    let router = web_router(web_mesh.identity().id().to_string());
    // In the live view, the web service calls greeter too.
    let web_as_caller = web_mesh.clone();
    let web_server = tokio::spawn(async move { web_mesh.serve(web_listener, router).await });

    // 4. A client with its own identity, and an admin port serving its metrics.
    let client_mesh = Mesh::start(
        settings(None, "demo-client", "client-demo-token", "demo-client")
            .with_admin_addr(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .await?;
    println!("client           ({})\n", client_mesh.identity().id());

    let greeter_channel = client_mesh.channel("greeter.default").await?;
    let mut greeter = GreeterClient::new(greeter_channel.clone());
    let mut by_replica: BTreeMap<String, usize> = BTreeMap::new();
    let mut example = String::new();
    for i in 0..CALLS {
        let reply = greeter
            .say_hello(HelloRequest {
                name: format!("caller-{i}"),
            })
            .await
            .context("SayHello through the mesh")?
            .into_inner();
        let replica = reply
            .message
            .split(" from ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or("?")
            .to_owned();
        *by_replica.entry(replica).or_default() += 1;
        example = reply.message;
    }
    println!("{CALLS} gRPC calls to greeter.default over mTLS:");
    for (replica, count) in &by_replica {
        println!("  {replica:<12} served {count}");
    }
    println!("  last reply: {example}");

    let web = client_mesh
        .client::<axum::body::Body>("web.default")
        .await?;
    let response = web
        .clone()
        .oneshot(http::Request::get("/hello").body(axum::body::Body::empty())?)
        .await
        .map_err(|e| anyhow::anyhow!("GET /hello through the mesh: {e}"))?;
    let body = response.into_body().collect().await?.to_bytes();
    let reply: WebReply = serde_json::from_slice(&body)?;
    println!("\nHTTP GET web.default/hello over mTLS:");
    println!("  server verified caller  {}", reply.caller);
    println!("  client verified server  {}", reply.server);

    // 5. What Prometheus would scrape from the client's MESH_ADMIN_ADDR.
    if let Some(admin) = client_mesh.admin_addr() {
        let text = scrape(admin).await?;
        println!("\nmetrics from http://{admin}/metrics (counts and gauges):");
        let shown = [
            "rpc_client_call_duration_seconds_count",
            "http_client_request_duration_seconds_count",
            "mesh_client_endpoints",
            "mesh_certificate_expiry_seconds",
            "mesh_control_connected",
        ];
        for line in text
            .lines()
            .filter(|l| shown.iter().any(|name| l.starts_with(name)))
        {
            println!("  {line}");
        }
    }

    let served: Vec<u64> = replicas.iter().map(GreeterReplica::served).collect();
    if served.contains(&0) {
        bail!("a replica served no calls: {served:?}");
    }
    println!("\ndone in {:.1?}", started.elapsed());

    if let Some(admin) = control.admin_addr().filter(|_| ui.is_some()) {
        println!("\nlive view of the mesh: http://{admin}/ui (data: /ui/graph.json); Ctrl-C stops");
        let from_web = GreeterClient::new(web_as_caller.channel("greeter.default").await?);
        tokio::select! {
            result = keep_calling(greeter_channel, web.clone(), from_web) => result?,
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    drop(web_as_caller);

    // Stop the meshed workloads before the control service they are subscribed to.
    drop(client_mesh);
    web_server.abort();
    for server in servers {
        server.abort();
    }
    control.shutdown().await;
    Ok(())
}

/// Calls until cancelled, for the live view: the client calls greeter every 50 ms (one call in
/// twenty-five to a method greeter does not have: UNIMPLEMENTED, which the view counts as a
/// failure) and web every 200 ms; the web service calls greeter every 100 ms.
async fn keep_calling(
    channel: mesh_tonic::MeshChannel,
    web: mesh_tower::MeshClient<axum::body::Body>,
    mut from_web: GreeterClient<mesh_tonic::MeshChannel>,
) -> anyhow::Result<()> {
    let mut greeter = GreeterClient::new(channel.clone());
    let mut outdated = tonic::client::Grpc::new(channel);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for i in 0u64.. {
        tick.tick().await;
        let request = HelloRequest {
            name: format!("viewer-{i}"),
        };
        // The answers do not matter here (some are meant to fail): the view counts them.
        if i % 25 == 0 {
            outdated
                .ready()
                .await
                .map_err(|e| anyhow::anyhow!("greeter channel: {e}"))?;
            let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
            let path = http::uri::PathAndQuery::from_static("/helloworld.Greeter/SayGoodbye");
            let _ = outdated
                .unary(tonic::Request::new(request), path, codec)
                .await;
        } else {
            let _ = greeter.say_hello(request).await;
        }
        if i % 2 == 0 {
            let _ = from_web
                .say_hello(HelloRequest {
                    name: "web".to_owned(),
                })
                .await;
        }
        if i % 4 == 0 {
            let request = http::Request::get("/hello").body(axum::body::Body::empty())?;
            let _ = web.clone().oneshot(request).await;
        }
    }
    Ok(())
}

fn demo_config(td: &TrustDomain, greeter_1: String, greeter_2: String, web: String) -> String {
    format!(
        r#"
services:
  - name: greeter
    namespace: default
    endpoints:
      - address: "{greeter_1}"
        labels: {{ version: v1 }}
        identity: spiffe://{td}/ns/default/sa/greeter
      - address: "{greeter_2}"
        labels: {{ version: v1 }}
        identity: spiffe://{td}/ns/default/sa/greeter
  - name: web
    namespace: default
    endpoints:
      - address: "{web}"
        identity: spiffe://{td}/ns/default/sa/web
bootstrapTokens:
  - token: greeter-demo-token
    namespace: default
    serviceAccount: greeter
  - token: web-demo-token
    namespace: default
    serviceAccount: web
  - token: client-demo-token
    namespace: default
    serviceAccount: demo-client
"#
    )
}

/// `GET /metrics` on an admin port (HTTP/1.0: the server closes when done).
async fn scrape(admin: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(admin).await?;
    tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await?;
    Ok(raw
        .split_once("\r\n\r\n")
        .map_or(raw.clone(), |(_, body)| body.to_owned()))
}
