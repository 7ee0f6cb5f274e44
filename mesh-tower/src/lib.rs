//! The mesh runtime inside a service: identity, the control client, mTLS, and the client and
//! server stacks.
//!
//! # Getting started
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // MESH_CONTROL_ADDR, MESH_TRUST_ANCHORS_FILE, MESH_TOKEN(_FILE), MESH_SERVICE, ...
//! let mesh = mesh_tower::Mesh::from_env().await?;
//!
//! // Serve any tower HTTP service (an axum `Router`, say) over mTLS.
//! let hello = tower::service_fn(|_request: http::Request<mesh_tower::LimitedBody>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("hi"))))
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! tokio::spawn({
//!     let mesh = mesh.clone();
//!     async move { mesh.serve(listener, hello).await }
//! });
//!
//! // Call another service through the mesh.
//! let catalog = mesh.client::<Full<Bytes>>("catalog.shop").await?;
//! # Ok(()) }
//! ```
//!
//! How it works: [`Mesh::start`] makes a P-256 key in process, asks the control service for a
//! certificate with the workload's token (`Certify`), and opens a `Watch` stream for the
//! destinations its clients need. Each [`MeshClient`] balances over its destination's endpoints
//! with power-of-two-choices over peak-EWMA latency, connecting to each over mTLS and accepting
//! only the SPIFFE identity discovery says the endpoint has. Servers require a client
//! certificate and hand the caller's verified identity to handlers as [`PeerIdentity`]; for a
//! service that accepts end-user JWTs, the verified token's claims as [`RequestPrincipal`].
//!
//! When the control service goes away the mesh keeps serving with the last good snapshot and
//! its still-valid certificate, and reconnects with jittered backoff.
//!
//! Every call is measured and traced on both sides ([`telemetry`]): OpenTelemetry-named metrics
//! through the `metrics` facade, served as Prometheus text with `/live`, `/ready` and
//! `/debug/config` on `MESH_ADMIN_ADDR`, and a span per request that carries W3C trace context
//! between meshed services.
//!
//! # What lives where
//!
//! ```text
//! mesh.rs        Mesh: the handle; starts the workers, hands out clients and servers
//! settings.rs    MESH_* variables and their defaults
//! control.rs     the control client: Watch (snapshots, ACK/NACK), Certify and renewal
//! discovery.rs   the snapshot in force and the destinations wanted
//! edges.rs       calls, failures and latency per destination, reported on the Watch stream
//! persist.rs     last-known-good state in MESH_STATE_DIR
//! identity.rs    the workload's key, certificate and trust; identity/peer.rs: PeerIdentity
//! tls.rs         rustls configs for both sides; connect.rs: dialing HTTP/2 over mTLS
//! client/        one destination: route -> retry -> P2C balancer -> endpoint pool
//! server/        accept -> connect info -> limits -> MeshLayer (identity, telemetry,
//!                authorization) -> the application, for tonic and axum alike
//! telemetry/     metrics names and handles, spans and W3C propagation, the admin endpoint
//! refusal.rs     the mesh's own error responses, written the same by client and server
//! error.rs       the errors of calls, connections and start-up
//! ```
//!
//! Server code never imports from `client/`, and telemetry never imports the server: what
//! both sides need (refusals, `mesh_core::backoff`) lives outside both.

mod activity;
mod client;
mod connect;
mod control;
mod discovery;
mod edges;
pub mod error;
pub mod explain;
mod identity;
mod inbound_deadline;
mod mesh;
pub mod persist;
mod refusal;
pub mod server;
pub mod settings;
pub mod telemetry;
pub mod tls;

pub use client::{
    Cut, MeshBody, MeshClient, Replay, ResponseBody, ResponseBodyError, ResponseFuture,
};
pub use discovery::ControlStatus;
pub use error::{BoxError, CallError, ConnectError};
pub use identity::{Identity, IdentityError, PeerIdentity, PersistedIdentityError, Svid};
pub use inbound_deadline::NoInheritedDeadline;
pub use mesh::{Mesh, Readiness, StartError};
pub use refusal::MESH_ERROR_HEADER;
pub use server::{
    Authorizer, BodyTooLarge, LimitedBody, MeshConnectInfo, MeshIncoming, MeshLayer, MeshService,
    MeshTlsStream, RequestPrincipal, ServerLimits, authz, limits,
};
pub use settings::{MeshSettings, SettingsError, TokenSource};
