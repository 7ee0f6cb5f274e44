//! A test hook that makes this control service behave like a newer one: every snapshot it
//! sends passes through a [`WireTransform`] first, so a test can send what this version of
//! the code would never produce (a filter kind, a match type, an enum value a client does not
//! know) and watch the client refuse it (NACK) and keep its last good snapshot.
//!
//! Only the `testing` cargo feature can set a transform; without it [`WireTransform`] is
//! always the identity and costs one branch per snapshot sent.

use std::sync::Arc;

use mesh_core::proto;

/// Rewrites each outgoing wire snapshot; the identity by default.
#[derive(Clone, Default)]
pub struct WireTransform {
    transform: Option<Arc<dyn Fn(proto::Snapshot) -> proto::Snapshot + Send + Sync>>,
}

impl std::fmt::Debug for WireTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireTransform")
            .field("set", &self.transform.is_some())
            .finish()
    }
}

impl WireTransform {
    /// A transform applied to every snapshot sent to every subscriber (tests only).
    #[cfg(feature = "testing")]
    pub fn new(
        transform: impl Fn(proto::Snapshot) -> proto::Snapshot + Send + Sync + 'static,
    ) -> Self {
        Self {
            transform: Some(Arc::new(transform)),
        }
    }

    /// `snapshot` as it goes on the wire.
    pub(crate) fn apply(&self, snapshot: proto::Snapshot) -> proto::Snapshot {
        match &self.transform {
            Some(transform) => transform(snapshot),
            None => snapshot,
        }
    }
}
