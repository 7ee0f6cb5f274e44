//! The `Watch` fan-out: every subscriber's stream, what it is sent, and who is on which
//! version.
//!
//! - `stream`: the `Watch` RPC, one response stream per subscriber, polled by its connection's
//!   task;
//! - `projection`: the snapshot a subscription gets at one version, computed once however many
//!   subscribers share the subscription;
//! - `encoded`: that snapshot or increment encoded once, and each subscriber's stream item
//!   sharing the bytes;
//! - `own_service`: who may name a service as its own (only its replicas);
//! - `limits`: how many streams and destinations one identity may hold ([`WatchLimits`](crate::WatchLimits));
//! - `registry`: every live subscriber and the versions it was sent, acked and rejected;
//! - `propagation`: how long a version takes to reach the subscribers it changed;
//! - [`skew`]: a test hook that rewrites every snapshot sent (version-skew tests);
//! - `xds`: the same config served to gRPC libraries over xDS (ADS).

pub(crate) mod encoded;
pub(crate) mod limits;
pub(crate) mod own_service;
pub(crate) mod projection;
pub(crate) mod propagation;
pub(crate) mod registry;
pub mod skew;
pub(crate) mod stream;
pub(crate) mod xds;
