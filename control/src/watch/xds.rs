//! xDS for gRPC libraries' own proxyless mesh clients and servers (gRFCs A27, A28, A29, A36,
//! A41, A44, A50): the same config that Watch projects for Rust workloads, translated to
//! Envoy's resources and served over ADS on the control service's port.
//!
//! - `names`: resource names and type URLs;
//! - `listeners`, `routes`, `clusters`, `tls`, `rbac`, `matchers`: one translation each;
//! - `resources`: what a client gets for one type and set of names;
//! - `stream`: one ADS stream, its subscriptions, ACKs and NACKs.
//!
//! Clients authenticate with the mTLS certificate the `certify` command obtained (bootstrap
//! `tls` channel credentials, A65): an ADS stream without a client certificate is refused.

pub(crate) mod clusters;
pub(crate) mod listeners;
pub(crate) mod matchers;
pub(crate) mod names;
pub(crate) mod rbac;
pub(crate) mod resources;
pub(crate) mod routes;
pub(crate) mod stream;
pub(crate) mod tls;

#[cfg(test)]
mod tests;
