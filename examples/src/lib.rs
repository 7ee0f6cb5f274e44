//! Shared pieces of the example programs: the `helloworld` protocol, a greeter that says which
//! replica answered and who called, a small axum service, and what the benchmarks (the `bench`
//! package) serve: a greeter that answers the same bytes whoever calls, and the everything-on
//! greeter's config.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::Extension;
use mesh_tower::PeerIdentity;
use serde::Serialize;
use tonic::{Request, Response, Status};

/// The standard `helloworld.Greeter` protocol.
pub mod hello {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("helloworld");
}

use hello::greeter_server::Greeter;
use hello::{HelloReply, HelloRequest};

/// A greeter replica. Its reply names the replica, the server's own identity and the caller's
/// verified identity: `Hello, Ann! from greeter-1 (spiffe://..../sa/greeter) to spiffe://...`.
#[derive(Debug, Clone)]
pub struct GreeterReplica {
    replica: String,
    own_identity: String,
    served: Arc<AtomicU64>,
}

impl GreeterReplica {
    /// A replica called `replica`, running as `own_identity`.
    pub fn new(replica: impl Into<String>, own_identity: impl Into<String>) -> Self {
        Self {
            replica: replica.into(),
            own_identity: own_identity.into(),
            served: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many calls this replica has answered.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

#[tonic::async_trait]
impl Greeter for GreeterReplica {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        // The mesh put the caller's verified SPIFFE ID here (a meshed server never lets a call
        // without one reach the handler); the same greeter also serves the benchmark's plain
        // tonic baselines, where there is none.
        let caller = request
            .extensions()
            .get::<PeerIdentity>()
            .map_or_else(|| "an unmeshed caller".to_owned(), |p| p.to_string());
        self.served.fetch_add(1, Ordering::Relaxed);
        let message = format!(
            "Hello, {}! from {} ({}) to {}",
            request.get_ref().name,
            self.replica,
            self.own_identity,
            caller
        );
        Ok(Response::new(HelloReply { message }))
    }
}

/// A greeter that answers every call with `Hello, NAME!`, whoever calls: what the request-path
/// benchmarks serve behind every target, so that the handler does the same work and sends the
/// same bytes through the mesh as through plain tonic ([`GreeterReplica`] names the caller's
/// identity, which only a meshed server has).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainGreeter;

#[tonic::async_trait]
impl Greeter for PlainGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        Ok(Response::new(HelloReply {
            message: format!("Hello, {}!", request.get_ref().name),
        }))
    }
}

/// What the example axum service answers on `GET /hello`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct WebReply {
    /// The server's own identity.
    pub server: String,
    /// The caller's verified identity.
    pub caller: String,
}

/// The example axum service: `GET /hello` answers with both identities as JSON.
pub fn web_router(own_identity: String) -> axum::Router {
    axum::Router::new().route(
        "/hello",
        axum::routing::get(move |Extension(peer): Extension<PeerIdentity>| {
            let server = own_identity.clone();
            async move {
                Json(WebReply {
                    server,
                    caller: peer.to_string(),
                })
            }
        }),
    )
}

/// Installs a log subscriber for the example programs (`RUST_LOG`, default `warn`), with
/// colours only on a terminal (and not with `NO_COLOR` set): a log file or a collector gets
/// plain text.
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .try_init();
}

/// The benchmarks' `greeter` with everything on, as a control-file `services:` entry and a
/// `policies:` list: a gRPC route matching `helloworld.Greeter/SayHello` with a retry policy
/// (each call deposits in the retry budget and keeps its request for a retry), and a server
/// that denies by default and allows `caller_account` by identity and method. No timeout: a
/// deadline is a feature plain tonic has too (and passing it on makes tonic's server arm a
/// timer per call), so the baselines would have to set one as well.
pub fn everything_on_greeter(addr: std::net::SocketAddr, caller_account: &str) -> (String, String) {
    let service = format!(
        r#"  - name: greeter
    defaultPolicy: deny
    endpoints:
      - address: "{addr}"
        identity: spiffe://mesh.local/ns/default/sa/greeter
    routes:
      - name: say-hello
        kind: grpc
        rules:
          - matches: [{{method: {{service: helloworld.Greeter, method: SayHello}}}}]
            backendRefs: [{{name: greeter}}]
            retry: {{statuses: [UNAVAILABLE], attempts: 2}}
"#
    );
    let policies = format!(
        r#"policies:
  - name: {caller_account}-may-greet
    target: {{service: greeter}}
    action: ALLOW
    rules:
      - from: {{identities: ["spiffe://mesh.local/ns/default/sa/{caller_account}"]}}
        to: {{grpc: [{{service: helloworld.Greeter, method: SayHello}}]}}
"#
    );
    (service, policies)
}
