//! The verified identity of a peer: what the server side learned from a caller's certificate,
//! handed to handlers, authorization and telemetry alike.

use std::sync::Arc;

use mesh_core::SpiffeId;

/// The verified SPIFFE ID of the caller, put in every request's extensions by the mesh.
/// Cloning it (once per request) only bumps a reference count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity(Arc<SpiffeId>);

impl PeerIdentity {
    /// The identity of a caller whose certificate was verified.
    pub fn new(id: SpiffeId) -> Self {
        Self(Arc::new(id))
    }

    /// The caller's SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        &self.0
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}
