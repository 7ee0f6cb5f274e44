//! The mesh's typed model and every pure decision, with no sockets and no runtime.
//!
//! - [`spiffe`]: SPIFFE IDs and trust domains.
//! - [`config`]: the configuration model (services, endpoints, routes) as serde types, and its
//!   validation with field paths.
//! - [`snapshot`]: the validated view of destinations that a client receives.
//! - [`proto`]: the control API `mesh.control.v1`, and [`convert`] between it and the model.
//! - [`tls`]: the trust bundle and SPIFFE certificate verification for rustls, used by the
//!   services and by the control service alike.
//! - `testing` (feature `testing`): a test CA issuing good and deliberately broken SVIDs, shared
//!   by every crate's tests.

// Tests may unwrap; `cargo clippy --all-targets` still checks the library itself without this.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod check;
pub mod config;
pub mod convert;
pub mod error;
mod pem;
pub mod proto;
pub mod snapshot;
pub mod spiffe;
pub mod tls;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::{FieldError, ValidationErrors};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
