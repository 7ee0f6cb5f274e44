//! The Kubernetes config source: Services, EndpointSlices, Pods, GAMMA HTTPRoutes and
//! GRPCRoutes, and the mesh's `AuthorizationPolicy` CRD, watched with kube-rs and turned into
//! the same versioned [`State`](crate::State) the file source publishes; and the TokenReview
//! authenticator that `Certify` uses for pods.
//!
//! - `index`: a pure state machine fed with watch events that builds a
//!   [`ValidConfig`](mesh_core::config::ValidConfig), as the file source does;
//! - `route`: HTTPRoute / GRPCRoute to the mesh's route model;
//! - [`crd`]: the `AuthorizationPolicy` and `LocalRateLimitPolicy` custom resources
//!   ([`crds_yaml`] prints their CRDs);
//! - `sync`: the watchers, the first full sync, and publishing;
//! - `status` and `lease`: route status, written by one replica at a time;
//! - [`token_review`]: Certify's authenticator for pods, [`TokenReviewAuthenticator`].
//!
//! Every replica watches and serves from its own cache; replicas share nothing, so a client
//! may reconnect to any of them.
//!
//! # Getting started
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_control::k8s::KubernetesSource;
//! use mesh_control::{ConfigSource, ControlOptions};
//! use mesh_core::TrustDomain;
//!
//! // In a pod: the in-cluster config (service account token, KUBERNETES_SERVICE_HOST).
//! let client = kube::Client::try_default().await?;
//! let options = ControlOptions::new(
//!     TrustDomain::new("cluster.local")?,
//!     ConfigSource::Kubernetes(KubernetesSource::new(client)),
//! );
//! let control = mesh_control::start(options).await?;
//! # control.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

pub mod bundle;
pub(crate) mod ca_secret;
// KubeSchema's derive re-declares each struct (with its `pub` fields) inside a function to
// build the schema; that copy trips `unreachable_pub`.
#[allow(unreachable_pub)]
pub mod crd;
pub(crate) mod index;
pub(crate) mod lease;
pub(crate) mod route;
pub(crate) mod status;
pub(crate) mod sync;
pub mod token_review;

pub use crd::{
    AuthorizationPolicy, AuthorizationPolicySpec, FaultInjection, FaultInjectionSpec,
    LocalRateLimitPolicy, LocalRateLimitPolicySpec, RequestAuthentication,
    RequestAuthenticationSpec, crds_yaml,
};
pub use sync::{SyncError, read_once};
pub use token_review::TokenReviewAuthenticator;

/// The audience the mesh asks for in projected ServiceAccount tokens (and checks in
/// TokenReview) unless told otherwise.
pub const DEFAULT_AUDIENCE: &str = "mesh-control";

/// The controller name under which the mesh writes route status.
pub const CONTROLLER_NAME: &str = "mesh.dev/mesh-control";

/// How long [`start`](crate::start()) waits for the first full list of every kind.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to read the cluster.
#[derive(Clone)]
pub struct KubernetesSource {
    /// The API client (`kube::Client::try_default()` in a pod).
    pub client: kube::Client,
    /// The audience `Certify` requires of a workload's token (default `mesh-control`).
    pub audience: String,
    /// The mesh-wide default policy (see [`mesh_core::config::MeshConfig::default_policy`]).
    pub default_policy: Option<String>,
    /// How long start-up waits for the first full sync before failing.
    pub sync_timeout: Duration,
    /// Whether to write route status (by whichever replica holds the Lease).
    pub write_status: bool,
    /// This replica's name in the Lease (default `$POD_NAME`, else `$HOSTNAME`).
    pub holder: String,
    // Compared by identity in `PartialEq`: two sources are the same when they share a client.
    id: Arc<()>,
}

// === impl KubernetesSource ===

impl KubernetesSource {
    /// Reads the cluster through `client`, with the default audience and sync timeout.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            audience: DEFAULT_AUDIENCE.to_owned(),
            default_policy: None,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            write_status: true,
            holder: std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| format!("mesh-control-{}", std::process::id())),
            id: Arc::new(()),
        }
    }
}

impl std::fmt::Debug for KubernetesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSource")
            .field("audience", &self.audience)
            .field("default_policy", &self.default_policy)
            .field("sync_timeout", &self.sync_timeout)
            .field("write_status", &self.write_status)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

// `ConfigSource` is `PartialEq + Eq`; a client has no equality of its own, so a source equals
// its clones only.
impl PartialEq for KubernetesSource {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.id, &other.id)
            && self.audience == other.audience
            && self.default_policy == other.default_policy
            && self.sync_timeout == other.sync_timeout
            && self.write_status == other.write_status
            && self.holder == other.holder
    }
}

impl Eq for KubernetesSource {}
