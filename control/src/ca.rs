//! Workload identity: who a caller is, and the certificate authority that signs for it.
//!
//! - `issuer`: the CA itself ([`Ca`]), loaded from files, kept as a dev root in a state
//!   directory, or made in memory; it signs workload SVIDs from CSRs on parameters it builds
//!   itself (the CSR contributes only its public key);
//! - `reload`: follows a CA kept in files and rotates roots with overlap;
//! - `rotation`: rotates the roots of a CA the control service made itself (dev and in-memory),
//!   on a schedule, through the phases of `mesh_core::anchor_rotation`;
//! - `rotation_store`: where a rotating CA keeps its roots and phase (a Kubernetes Secret);
//! - `key_id`: which root signed a leaf, by key identifier;
//! - `trust_bundle`: the trust bundle PEM file written for workloads that read anchors from disk;
//! - [`authn`]: turns a caller's token into the SPIFFE ID it proves (the control file's
//!   bootstrap tokens; Kubernetes TokenReview plugs in behind the same trait);
//! - [`dns_names`]: the DNS names a workload's certificate carries beside its SPIFFE ID, from
//!   the services its identity serves;
//! - `certify`: the `Certify` RPC, which puts the two together.

pub mod authn;
pub(crate) mod certify;
pub mod dns_names;
mod issuer;
pub(crate) mod key_id;
pub(crate) mod reload;
pub(crate) mod rotation;
pub(crate) mod rotation_store;
pub(crate) mod trust_bundle;

pub use issuer::{Ca, CaError, CaSource, DEFAULT_CERT_LIFETIME, Issued, MAX_CSR_BYTES, SignError};
pub(crate) use issuer::{CaHandle, RootPair};
