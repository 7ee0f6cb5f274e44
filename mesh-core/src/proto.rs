//! The generated `mesh.control.v1` messages, and with the `grpc` feature its gRPC stubs.
//!
//! Clients bring their own channel (any `tonic::client::GrpcService`); the control service
//! implements `control_server::Control`. Both use `codec::Codec`: prost's, with a request
//! the server cannot decode answered INVALID_ARGUMENT rather than INTERNAL.

#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("mesh.control.v1");

#[cfg(feature = "grpc")]
pub mod codec;

/// [`NackDetail::code`] of a field whose value cannot be used.
pub const NACK_INVALID_FIELD: &str = "invalid_field";
/// [`NackDetail::code`] of trust roots that cannot be installed.
pub const NACK_TRUST_BUNDLE: &str = "trust_bundle";

/// The most entries of an [`EdgeReport`] a control service reads; workloads send no more.
pub const MAX_EDGE_REPORT_EDGES: usize = 256;

impl NackDetail {
    /// A problem with `field` of a refused snapshot, of kind `code`.
    pub fn new(field: &str, message: &str, code: &str) -> Self {
        Self {
            field: field.to_owned(),
            message: message.to_owned(),
            code: code.to_owned(),
        }
    }
}
