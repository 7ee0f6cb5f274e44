//! What a mesh process runs around its work, shared by the workload runtime (`mesh-tower`) and
//! the control service (`mesh-control`), so neither depends on the other and `mesh-core` stays
//! free of sockets, runtimes and global state:
//!
//! - [`admin_http`]: the small HTTP/1.1 server behind both admin ports.
//! - [`prometheus`]: the process's one Prometheus recorder (a global, by the `metrics` facade's
//!   design), so one admin port renders what both emit when they share a process.
//! - [`atomic_file`]: replacing a file so readers see the old content or the new, never part.
//!
//! It lives beside `mesh-tower` because it is runtime code (tokio, hyper); it is its own crate
//! because the control service needs it without the workload runtime.

// Tests may unwrap; `cargo clippy --all-targets` still checks the library itself without this.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin_http;
pub mod atomic_file;
pub mod prometheus;
