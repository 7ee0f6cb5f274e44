//! The generated `mesh.control.v1` messages, and with the `grpc` feature its gRPC stubs.
//!
//! Clients bring their own channel (any `tonic::client::GrpcService`); the control service
//! implements `control_server::Control`.

#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("mesh.control.v1");
