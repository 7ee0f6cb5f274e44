//! The generated `mesh.control.v1` messages, and with the `grpc` feature its gRPC stubs.
//!
//! Clients bring their own channel (any `tonic::client::GrpcService`); the control service
//! implements `control_server::Control`. Both use `codec::Codec`: prost's, with a request
//! the server cannot decode answered INVALID_ARGUMENT rather than INTERNAL.

#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("mesh.control.v1");

#[cfg(feature = "grpc")]
pub mod codec;
