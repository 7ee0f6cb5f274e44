//! Helpers shared by the crate's unit tests.

use mesh_core::TrustDomain;

/// The trust domain most tests use, `mesh.local`.
pub(crate) fn td() -> TrustDomain {
    trust_domain("mesh.local")
}

/// The trust domain `name`, which must be valid.
pub(crate) fn trust_domain(name: &str) -> TrustDomain {
    TrustDomain::new(name).expect("valid trust domain")
}
