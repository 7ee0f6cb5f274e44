//! Automatic trust-anchor rotation of a root the control service made itself (an in-memory
//! CA): a task that ticks the pure state machine of [`mesh_core::anchor_rotation`] and carries
//! out each step.
//!
//! - `StartOverlap`: make root B, publish `A + B` (to Watch subscribers, the control service's
//!   own client trust and the trust bundle file), keep issuing with A;
//! - `SwitchIssuer`: once every subscriber ACKed a version carrying `A + B` (or after
//!   `ack_timeout`, logged with who is behind), issue with B, the control service's own
//!   certificate first;
//! - `DropOld`: once every subscriber presents a leaf from B on its Watch stream, or the last
//!   leaf A signed expired, publish B alone.
//!
//! Each step is logged, counted in metrics and shown on `/subscribers` ([`RotationStatus`]).
//! What the control service can see of a subscriber's certificate is the one its Watch stream
//! connected with, which a long-lived stream keeps after a renewal; so the sure bound for
//! dropping A is the expiry of the last leaf A signed, tracked by the CA itself, and "every
//! subscriber on B" is the early way out when streams reconnected.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use mesh_core::anchor_rotation::{Observed, Phase, Rotation, RotationSchedule, Step};
use mesh_core::tls::TrustStore;
use mesh_core::{SpiffeId, TrustDomain};
use tokio::task::JoinHandle;

use super::issuer::{Ca, CaError, CaHandle, RootPair};
use super::trust_bundle;
use crate::admin::metrics;
use crate::serve::tls::SvidResolver;
use crate::state::StateStore;
use crate::watch::registry::Registry;

/// How often the rotation looks at the clock and the subscribers. Only the clock is read in
/// `Steady`; the subscriber list only while a rotation is under way.
const TICK: Duration = Duration::from_millis(250);

/// How many transitions `/subscribers` shows.
const HISTORY: usize = 16;

/// What a rotation updates, besides the CA.
pub(crate) struct Targets {
    pub(crate) ca: CaHandle,
    pub(crate) server_trust: TrustStore,
    pub(crate) state: Arc<StateStore>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) trust_bundle_out: Option<PathBuf>,
    /// The control service's own certificate, re-issued from B as soon as B issues.
    pub(crate) own: Arc<SvidResolver>,
    pub(crate) own_id: SpiffeId,
    pub(crate) leaf_lifetime: Duration,
}

/// One step a rotation took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    /// The phase entered.
    pub(crate) phase: &'static str,
    /// Why (`scheduled`, `acked`, `ack_timeout`, `all_on_next`, `old_leaves_expired`,
    /// `root_expired`).
    pub(crate) reason: &'static str,
    /// When.
    pub(crate) at: SystemTime,
}

/// Where the rotation stands, for `/subscribers` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RotationView {
    /// The phase.
    pub(crate) phase: &'static str,
    /// The key identifier of the root in force (A), hex.
    pub(crate) root_key_id: String,
    /// The key identifier of the next root (B) while one exists.
    pub(crate) next_root_key_id: Option<String>,
    /// The key identifier of the root that signs leaves now.
    pub(crate) issuer_key_id: String,
    /// When the root in force expires.
    pub(crate) root_expires: SystemTime,
    /// The config version that carried `A + B` (while a rotation is under way).
    pub(crate) overlap_version: Option<u64>,
    /// The last transitions, oldest first.
    pub(crate) history: Vec<Transition>,
}

/// The rotation's state as the admin port reads it.
#[derive(Debug)]
pub(crate) struct RotationStatus(Mutex<RotationView>);

impl RotationStatus {
    /// A copy of the view.
    pub(crate) fn view(&self) -> RotationView {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn update(&self, f: impl FnOnce(&mut RotationView)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Why a rotation step failed; the rotation retries at the next tick.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// Making a root or a CA from it failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The control service's own certificate could not be re-issued from B.
    #[error("re-issuing the control service's certificate: {0}")]
    Own(#[from] crate::serve::tls::ServerCertError),
}

/// The rotation task's state: the schedule, the machine, and roots A and B.
struct Rotator {
    schedule: RotationSchedule,
    trust_domain: TrustDomain,
    rotation: Rotation,
    current: RootPair,
    next: Option<RootPair>,
    overlap_version: u64,
    status: Arc<RotationStatus>,
    targets: Targets,
}

/// Starts rotating `current` (the root the CA in `targets` issues with) on `schedule`.
pub(crate) fn spawn(
    schedule: RotationSchedule,
    trust_domain: TrustDomain,
    current: RootPair,
    targets: Targets,
) -> (JoinHandle<()>, Arc<RotationStatus>) {
    let key_id = current.key_id();
    let status = Arc::new(RotationStatus(Mutex::new(RotationView {
        phase: Phase::Steady.as_str(),
        root_key_id: key_id.clone(),
        next_root_key_id: None,
        issuer_key_id: key_id,
        root_expires: current.not_after,
        overlap_version: None,
        history: Vec::new(),
    })));
    metrics::rotation_phase(Phase::Steady.as_gauge(), current.not_after);
    let mut rotator = Rotator {
        schedule,
        trust_domain,
        rotation: Rotation::steady(SystemTime::now()),
        current,
        next: None,
        overlap_version: 0,
        status: status.clone(),
        targets,
    };
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            rotator.tick(SystemTime::now()).await;
        }
    });
    (task, status)
}

// === impl Rotator ===

impl Rotator {
    async fn tick(&mut self, now: SystemTime) {
        let seen = self.observe(now);
        let step = self.rotation.decide(&self.schedule, &seen);
        if step == Step::Stay {
            return;
        }
        match self.take(step).await {
            Ok(()) => {
                self.rotation = self.rotation.after(step, now);
                self.record(step, now);
            }
            Err(error) => {
                tracing::warn!(%error, phase = self.rotation.phase.as_str(), "root rotation step failed; retrying");
            }
        }
    }

    /// What the machine needs to know; the subscriber list is read only mid-rotation.
    fn observe(&self, now: SystemTime) -> Observed {
        let mut seen = Observed {
            now,
            root_not_before: self.current.not_before,
            root_not_after: self.current.not_after,
            all_acked: true,
            all_on_next: false,
            old_leaves_until: self.current.signed_until(),
        };
        if self.rotation.phase == Phase::Steady {
            return seen;
        }
        let subscribers = self.targets.registry.list();
        let behind: Vec<_> = subscribers
            .iter()
            .filter(|s| s.last_acked_version < Some(self.overlap_version))
            .collect();
        seen.all_acked = behind.is_empty();
        if self.rotation.phase == Phase::Overlap
            && !seen.all_acked
            && now >= self.rotation.since + self.schedule.ack_timeout
        {
            for s in &behind {
                tracing::warn!(
                    id = s.id,
                    node = %s.node,
                    identity = %s.identity,
                    acked = ?s.last_acked_version,
                    needed = self.overlap_version,
                    "subscriber did not ACK the two-root bundle in time; issuing from the new root anyway"
                );
            }
        }
        let next_id = self.next.as_ref().map(RootPair::key_id);
        seen.all_on_next = !subscribers.is_empty()
            && next_id.is_some()
            && subscribers
                .iter()
                .all(|s| s.certificate_issuer.is_some() && s.certificate_issuer == next_id);
        seen
    }

    async fn take(&mut self, step: Step) -> Result<(), StepError> {
        match step {
            Step::Stay => Ok(()),
            Step::StartOverlap => {
                let next = RootPair::generate(&self.trust_domain, self.schedule.root_lifetime)?;
                let roots = vec![self.current.cert.clone(), next.cert.clone()];
                let ca = Ca::from_pair(&self.trust_domain, &self.current, roots)?;
                self.next = Some(next);
                let published = self.apply(ca).await;
                self.overlap_version =
                    published.unwrap_or_else(|| self.targets.state.current().version);
                Ok(())
            }
            Step::SwitchIssuer(_) => {
                let Some(next) = &self.next else {
                    // Only `StartOverlap` leads here, and it sets `next`.
                    return Ok(());
                };
                let roots = vec![self.current.cert.clone(), next.cert.clone()];
                let ca = Arc::new(Ca::from_pair(&self.trust_domain, next, roots)?);
                // The control service's own certificate first: subscribers that drop A must
                // still verify it.
                self.targets.own.reissue(
                    &ca,
                    &self.targets.own_id,
                    self.targets.leaf_lifetime,
                )?;
                self.targets.ca.store(ca);
                Ok(())
            }
            Step::DropOld(_) => {
                let Some(next) = self.next.take() else {
                    return Ok(());
                };
                let ca = Ca::from_pair(&self.trust_domain, &next, vec![next.cert.clone()])?;
                self.current = next;
                self.apply(ca).await;
                Ok(())
            }
        }
    }

    /// Puts a CA with new roots in force, the way a file CA's reload does: the server's
    /// trust, the trust bundle file, the CA, then the roots over Watch.
    async fn apply(&self, ca: Ca) -> Option<u64> {
        let bundle = ca.trust_bundle();
        let roots = bundle.roots().to_vec();
        self.targets.server_trust.store(bundle);
        if let Some(path) = &self.targets.trust_bundle_out
            && let Err(error) = trust_bundle::write_async(path.clone(), ca.trust_bundle_pem()).await
        {
            tracing::warn!(%error, "writing the rotated trust bundle failed");
        }
        self.targets.ca.store(Arc::new(ca));
        self.targets.state.publish_trust_bundle(roots)
    }

    /// Logs, counts and shows the step just taken.
    fn record(&self, step: Step, now: SystemTime) {
        let reason = reason(step);
        let phase = self.rotation.phase;
        tracing::info!(
            phase = phase.as_str(),
            reason,
            root = %self.current.key_id(),
            next = ?self.next.as_ref().map(RootPair::key_id),
            version = self.overlap_version,
            "root rotation step"
        );
        metrics::rotation_phase(phase.as_gauge(), self.current.not_after);
        metrics::rotation_step(phase.as_str(), reason);
        let issuer = match (phase, &self.next) {
            (Phase::IssuingNext, Some(next)) => next.key_id(),
            _ => self.current.key_id(),
        };
        self.status.update(|view| {
            view.phase = phase.as_str();
            view.root_key_id = self.current.key_id();
            view.next_root_key_id = self.next.as_ref().map(RootPair::key_id);
            view.issuer_key_id = issuer;
            view.root_expires = self.current.not_after;
            view.overlap_version = (phase != Phase::Steady).then_some(self.overlap_version);
            if view.history.len() == HISTORY {
                view.history.remove(0);
            }
            view.history.push(Transition {
                phase: phase.as_str(),
                reason,
                at: now,
            });
        });
    }
}

/// The reason label of a step.
fn reason(step: Step) -> &'static str {
    use mesh_core::anchor_rotation::{DropReason, SwitchReason};
    match step {
        Step::Stay => "stay",
        Step::StartOverlap => "scheduled",
        Step::SwitchIssuer(SwitchReason::Acked) => "acked",
        Step::SwitchIssuer(SwitchReason::AckTimeout) => "ack_timeout",
        Step::DropOld(DropReason::AllOnNext) => "all_on_next",
        Step::DropOld(DropReason::OldLeavesExpired) => "old_leaves_expired",
        Step::DropOld(DropReason::RootExpired) => "root_expired",
    }
}

