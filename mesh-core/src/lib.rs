//! The mesh's typed model and every pure decision, with no sockets and no runtime.
//!
//! - [`spiffe`]: SPIFFE IDs and trust domains; [`dns`]: the DNS-1123 names they and services
//!   are made of.
//! - [`config`]: the configuration model (services, endpoints, routes) as serde types, and its
//!   validation with field paths.
//! - [`snapshot`]: the validated view of destinations (and of its own inbound policy) that a
//!   client receives.
//! - [`duration`]: Gateway API duration strings (`10s`, `1h2m`).
//! - [`route`]: route matching with Gateway API precedence, weighted backend picking, and
//!   explanations of both.
//! - [`authz`]: a service's inbound policy (authorization policies, default policy, exempt
//!   paths, mTLS mode) and its pure evaluation into a [`authz::Decision`].
//! - [`budget`] and [`outlier`]: retry-budget and outlier-ejection arithmetic, with time
//!   passed in; [`rate`]: token-bucket rate-limit arithmetic, likewise; [`backoff`]: the one
//!   exponential backoff schedule with jitter; [`latency`]: the fixed exponential buckets of
//!   the latency sketches workloads report to the control service; [`hedge`]: a backend's
//!   windowed latency percentile and the delay before a hedged try.
//! - [`proto`]: the control API `mesh.control.v1` (its gRPC client and server stubs with the
//!   `grpc` feature), and [`convert`] between it and the model.
//! - [`tls`]: the trust bundle and SPIFFE certificate verification for rustls, used by the
//!   services and by the control service alike.
//! - `testing` (feature `testing`, and in this crate's own unit tests): a test CA issuing good
//!   and deliberately broken SVIDs, CSRs, the tests' trust domain and `eventually`, shared by
//!   every crate's tests.

// Tests may unwrap; `cargo clippy --all-targets` still checks the library itself without this.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod anchor_rotation;
pub mod authz;
pub mod backoff;
pub mod budget;
mod check;
pub mod config;
pub mod convert;
pub mod delta;
pub mod dns;
pub mod duration;
pub mod error;
pub mod fault;
#[cfg(test)]
mod fixtures;
pub mod headers;
pub mod hedge;
pub mod jwt;
pub mod latency;
pub mod locality;
pub mod outlier;
pub mod pem;
pub mod proto;
pub mod rate;
pub mod route;
pub mod snapshot;
pub mod spiffe;
pub mod tls;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use check::route::GRPC_STATUS_NAMES;
pub use error::{FieldError, ValidationErrors};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
