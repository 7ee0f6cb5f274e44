//! Helpers shared by the crate's unit tests.

use mesh_core::TrustDomain;

/// The trust domain the tests use unless they need another one, `mesh.local`.
pub(crate) fn td() -> TrustDomain {
    trust_domain_named("mesh.local")
}

/// The trust domain `name`, which must be valid.
pub(crate) fn trust_domain_named(name: &str) -> TrustDomain {
    TrustDomain::new(name).expect("valid trust domain")
}
