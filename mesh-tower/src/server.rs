//! The server side: one stack for every server the mesh runs, tonic and axum alike.
//!
//! ```text
//! accept        mTLS handshake (plaintext detection on a permissive server), handshake
//!               budget (total and per source IP), handshake time, connection slots,
//!               TLS alerts for refused handshakes                         [accept.rs]
//!               time to the first request                           [first_request.rs]
//!               time with no call in flight                                 [idle.rs]
//! connect info  the caller's address and verified SPIFFE ID, and the inbound policy, once
//!               per connection, in every request's extensions            [connect_info.rs]
//! HTTP limits   streams, header list, head time, body size (served by [`serve()`];
//!               tonic gets the same from `mesh_tonic::server`)            [limits.rs]
//! MeshLayer     PeerIdentity into the extensions -> telemetry -> rate limits
//!               [rate_limit.rs] -> end-user JWT, when the service accepts issuers
//!               [authn.rs] -> authorization [authz.rs] -> the application [layer.rs]
//! ```
//!
//! A tonic server is meshed with `Server::builder().layer(MeshLayer::new())` over
//! `mesh-tonic`'s incoming stream; an axum `Router` (or any tower HTTP service) with
//! [`serve()`] over a [`MeshIncoming`] (or [`crate::Mesh::serve`]), which applies [`MeshLayer`]
//! itself (a router that carries `.layer(MeshLayer::new())` already is judged once). The
//! verified identity reaches handlers as a [`PeerIdentity`] request extension, the end user of
//! a verified JWT as a [`RequestPrincipal`], and an audit-allowed call's authorization decision
//! as a [`mesh_core::authz::Decision`] (see [`authz`]).
//!
//! Every server is bounded by [`ServerLimits`] (connections per listener, handshake, header
//! and idle time, HTTP/2 streams per connection, header and body size); see [`limits`] for the
//! defaults and what a caller over each limit sees.

mod accept;
mod authn;
pub mod authz;
mod connect_info;
mod first_request;
mod idle;
mod layer;
pub mod limits;
mod rate_limit;
mod serve;
mod telemetry;

pub use self::accept::{MeshIncoming, MeshTlsStream};
pub use self::authn::RequestPrincipal;
pub use self::authz::Authorizer;
pub use self::connect_info::MeshConnectInfo;
pub use self::layer::{MeshLayer, MeshService};
pub use self::limits::{BodyTooLarge, LimitedBody, ServerLimits};
pub use self::rate_limit::RETRY_PUSHBACK_HEADER;
pub use self::serve::{HttpBody, HttpService, serve, serve_with_shutdown};
pub(crate) use self::telemetry::InboundTelemetry;
pub use crate::identity::PeerIdentity;
