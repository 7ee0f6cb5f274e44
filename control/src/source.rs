//! Where the config comes from: a YAML control file ([`file`]) or, with the `kubernetes`
//! feature, the Kubernetes API ([`kubernetes`]). Either becomes the same versioned
//! [`State`](crate::state::State).

use std::path::PathBuf;

pub mod file;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;

/// Where the control service's config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A YAML control file, polled for edits.
    File(PathBuf),
    /// YAML text, fixed for the life of the service.
    Inline(String),
    /// The Kubernetes API: Services, EndpointSlices, Pods, GAMMA routes and
    /// `AuthorizationPolicy` objects; `Certify` then authenticates pods by TokenReview.
    #[cfg(feature = "kubernetes")]
    Kubernetes(kubernetes::KubernetesSource),
}
