//! A test hook that makes this control service behave like a newer one: every snapshot it
//! sends passes through a [`WireTransform`] first, so a test can send what this version of
//! the code would never produce (a filter kind, a match type, an enum value a client does not
//! know) and watch the client refuse it (NACK) and keep its last good snapshot.
//!
//! Two more hooks play other control services and a lossy path: [`WireTransform::full_only`]
//! sends full snapshots whatever the subscriber supports (a control service that predates
//! increments), and [`WireTransform::dropping`] loses chosen messages after they are recorded
//! as sent (a gap, which the subscriber must detect and resync from).
//!
//! Only the `testing` cargo feature can set a transform; without it [`WireTransform`] is
//! always the identity and costs one branch per snapshot sent.

use std::sync::Arc;

use mesh_core::proto;

/// Rewrites each outgoing wire snapshot; the identity by default.
#[derive(Clone, Default)]
pub struct WireTransform {
    transform: Option<Arc<dyn Fn(proto::Snapshot) -> proto::Snapshot + Send + Sync>>,
    /// Never send increments.
    full_only: bool,
    /// Messages to lose after recording them as sent.
    drop: Option<Arc<DropFn>>,
}

/// Chooses the messages to lose.
type DropFn = dyn Fn(&proto::Snapshot) -> bool + Send + Sync;

impl std::fmt::Debug for WireTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireTransform")
            .field("set", &self.transform.is_some())
            .field("full_only", &self.full_only)
            .field("drop", &self.drop.is_some())
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
            ..Self::default()
        }
    }

    /// Plays a control service that predates increments: every message is a full snapshot,
    /// whatever the subscriber announces (tests only).
    #[cfg(feature = "testing")]
    pub fn full_only(mut self) -> Self {
        self.full_only = true;
        self
    }

    /// Loses every message (a full snapshot or an increment, after the base version is set)
    /// for which `drop` returns true: it is recorded as sent but never reaches the subscriber
    /// (tests only).
    #[cfg(feature = "testing")]
    pub fn dropping(
        mut self,
        drop: impl Fn(&proto::Snapshot) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.drop = Some(Arc::new(drop));
        self
    }

    /// Whether messages are rewritten on their way out (tests only): then a projection's
    /// wire form cannot be carried to the next version by changing its version number.
    pub(crate) fn rewrites(&self) -> bool {
        self.transform.is_some()
    }

    /// Whether increments may be sent.
    pub(crate) fn increments(&self) -> bool {
        !self.full_only
    }

    /// Whether the message `message` makes is to be lost (it is made only when a test asks
    /// to lose some: subscribers are sent shared encodings, not messages of their own).
    pub(crate) fn drops(&self, message: impl FnOnce() -> proto::Snapshot) -> bool {
        self.drop.as_ref().is_some_and(|drop| drop(&message()))
    }

    /// `snapshot` as it goes on the wire.
    pub(crate) fn apply(&self, snapshot: proto::Snapshot) -> proto::Snapshot {
        match &self.transform {
            Some(transform) => transform(snapshot),
            None => snapshot,
        }
    }
}
