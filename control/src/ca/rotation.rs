//! Automatic trust-anchor rotation of a root the control service keeps itself (a dev or an
//! in-memory CA): a task that ticks the pure state machine of [`mesh_core::anchor_rotation`],
//! stores each step where the CA's state lives (`rotation_store`: memory, the dev state
//! directory, or a Kubernetes Secret shared by the replicas) and carries it out.
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
use super::rotation_store::{Resumed, RotationStore, Saved, StoreError};
use super::trust_bundle;
use crate::admin::metrics;
use crate::serve::tls::SvidResolver;
use crate::state::StateStore;
use crate::watch::registry::Registry;

/// How often the rotation looks at the clock and the subscribers. Only the clock is read in
/// `Steady`; the subscriber list only while a rotation is under way.
const TICK: Duration = Duration::from_millis(250);

/// How many ticks between reads of a shared stored state (two seconds).
const SYNC_TICKS: u32 = 8;

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
    /// `root_expired`, or `adopted` from another replica).
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
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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

/// The rotation task's state: the schedule, the machine with roots A and B, and where it is
/// stored.
struct Rotator {
    schedule: RotationSchedule,
    trust_domain: TrustDomain,
    state: Resumed,
    store: RotationStore,
    overlap_version: u64,
    /// Ticks until the stored state is read again (when other replicas share it).
    until_sync: u32,
    status: Arc<RotationStatus>,
    targets: Targets,
}

/// The CA a rotation state issues with: A with roots A (+ B) until the switch, then B with
/// roots A + B, then (as the next `Steady`) B alone.
pub(crate) fn ca_for(trust_domain: &TrustDomain, state: &Resumed) -> Result<Ca, CaError> {
    let current = &state.current;
    match (&state.next, state.rotation.phase) {
        (Some(next), Phase::IssuingNext) => Ca::from_pair(
            trust_domain,
            next,
            vec![current.cert.clone(), next.cert.clone()],
        ),
        (Some(next), _) => Ca::from_pair(
            trust_domain,
            current,
            vec![current.cert.clone(), next.cert.clone()],
        ),
        (None, _) => Ca::from_pair(trust_domain, current, vec![current.cert.clone()]),
    }
}

/// Reads the stored rotation state, or starts one on the `seed` root and stores it (adopting
/// what another replica stored first). Leaves signed by A before a restart are not counted by
/// this process: a state resumed while issuing from B assumes A signed until the switch.
pub(crate) async fn resume(
    store: &mut RotationStore,
    seed: impl FnOnce() -> Result<RootPair, CaError>,
    leaf_lifetime: Duration,
) -> Result<Resumed, StoreError> {
    if let Some(state) = store.load().await? {
        if state.rotation.phase == Phase::IssuingNext {
            state
                .current
                .assume_signed_until(state.rotation.since + leaf_lifetime);
        }
        tracing::info!(
            phase = state.rotation.phase.as_str(),
            root = %state.current.key_id(),
            "resumed the CA's stored rotation state"
        );
        return Ok(state);
    }
    let fresh = Resumed {
        rotation: Rotation::steady(SystemTime::now()),
        current: seed()?,
        next: None,
        generation: 0,
    };
    match store.save(&fresh).await? {
        Saved::Stored => Ok(fresh),
        Saved::Adopt(other) => Ok(*other),
    }
}

/// Starts rotating from `state` (the CA in `targets` is [`ca_for`] it) on `schedule`.
pub(crate) fn spawn(
    schedule: RotationSchedule,
    trust_domain: TrustDomain,
    state: Resumed,
    store: RotationStore,
    targets: Targets,
) -> (JoinHandle<()>, Arc<RotationStatus>) {
    let status = Arc::new(RotationStatus(Mutex::new(RotationView {
        phase: state.rotation.phase.as_str(),
        root_key_id: String::new(),
        next_root_key_id: None,
        issuer_key_id: String::new(),
        root_expires: state.current.not_after,
        overlap_version: None,
        history: Vec::new(),
    })));
    let mut rotator = Rotator {
        schedule,
        trust_domain,
        state,
        store,
        // Whatever version subscribers hold now carries the roots of the state resumed.
        overlap_version: targets.state.current().version,
        until_sync: SYNC_TICKS,
        status: status.clone(),
        targets,
    };
    rotator.show(None);
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
        if self.store.shared() {
            self.until_sync = self.until_sync.saturating_sub(1);
            if self.until_sync == 0 {
                self.until_sync = SYNC_TICKS;
                self.sync().await;
            }
        }
        let seen = self.observe(now);
        let step = self.state.rotation.decide(&self.schedule, &seen);
        if step == Step::Stay {
            return;
        }
        let next = match self.next_state(step, now) {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, phase = self.state.rotation.phase.as_str(), "root rotation step failed; retrying");
                return;
            }
        };
        let (state, reason) = match self.store.save(&next).await {
            Ok(Saved::Stored) => (next, reason(step)),
            Ok(Saved::Adopt(other)) => {
                tracing::info!(
                    phase = other.rotation.phase.as_str(),
                    "another replica took the rotation step first; adopting its state"
                );
                (*other, "adopted")
            }
            Err(error) => {
                tracing::warn!(%error, "storing the rotation step failed; retrying");
                return;
            }
        };
        if let Err(error) = self.enter(state, reason).await {
            tracing::warn!(%error, "root rotation step failed; retrying");
        }
    }

    /// Reads the stored state and adopts it if another replica moved on.
    async fn sync(&mut self) {
        match self.store.load().await {
            Ok(Some(stored)) if stored.generation > self.state.generation => {
                tracing::info!(
                    phase = stored.rotation.phase.as_str(),
                    "another replica took a rotation step; adopting it"
                );
                if let Err(error) = self.enter(stored, "adopted").await {
                    tracing::warn!(%error, "adopting the stored rotation state failed");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "reading the stored rotation state failed"),
        }
    }

    /// What the machine needs to know; the subscriber list is read only mid-rotation.
    fn observe(&self, now: SystemTime) -> Observed {
        let mut seen = Observed {
            now,
            root_not_before: self.state.current.not_before,
            root_not_after: self.state.current.not_after,
            all_acked: true,
            all_on_next: false,
            old_leaves_until: self.state.current.signed_until(),
        };
        if self.state.rotation.phase == Phase::Steady {
            return seen;
        }
        let subscribers = self.targets.registry.list();
        let behind: Vec<_> = subscribers
            .iter()
            .filter(|s| s.last_acked_version < Some(self.overlap_version))
            .collect();
        seen.all_acked = behind.is_empty();
        if self.state.rotation.phase == Phase::Overlap
            && !seen.all_acked
            && now >= self.state.rotation.since + self.schedule.ack_timeout
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
        let next_id = self.state.next.as_ref().map(RootPair::key_id);
        seen.all_on_next = !subscribers.is_empty()
            && next_id.is_some()
            && subscribers
                .iter()
                .all(|s| s.certificate_issuer.is_some() && s.certificate_issuer == next_id);
        seen
    }

    /// The state `step` leads to (a new root B for `StartOverlap`).
    fn next_state(&self, step: Step, now: SystemTime) -> Result<Resumed, CaError> {
        let rotation = self.state.rotation.after(step, now);
        let generation = next_generation(&self.state);
        Ok(match step {
            Step::StartOverlap => Resumed {
                rotation,
                current: self.state.current.clone(),
                next: Some(RootPair::generate(
                    &self.trust_domain,
                    self.schedule.root_lifetime,
                )?),
                generation,
            },
            Step::DropOld(_) => Resumed {
                rotation,
                current: self
                    .state
                    .next
                    .clone()
                    .unwrap_or_else(|| self.state.current.clone()),
                next: None,
                generation,
            },
            Step::Stay | Step::SwitchIssuer(_) => Resumed {
                rotation,
                generation,
                ..self.state.clone()
            },
        })
    }

    /// Puts `state` in force: its CA (the control service's own certificate re-issued first
    /// when the issuer changes), its roots everywhere; then shows it.
    async fn enter(&mut self, state: Resumed, reason: &'static str) -> Result<(), StepError> {
        let ca = ca_for(&self.trust_domain, &state)?;
        let issuer_changed = issuer_key_id(&state) != issuer_key_id(&self.state);
        if issuer_changed {
            // Subscribers that drop the old root must still verify the control service.
            self.targets
                .own
                .reissue(&ca, &self.targets.own_id, self.targets.leaf_lifetime)?;
        }
        let roots_changed = state.next.as_ref().map(|n| &n.cert)
            != self.state.next.as_ref().map(|n| &n.cert)
            || state.current.cert != self.state.current.cert;
        self.state = state;
        if roots_changed {
            if let Some(version) = self.apply(ca).await {
                self.overlap_version = version;
            }
        } else {
            self.targets.ca.store(Arc::new(ca));
        }
        self.show(Some(reason));
        Ok(())
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

    /// Logs, counts and shows the state in force; `reason` names the step that led to it.
    fn show(&self, reason: Option<&'static str>) {
        let phase = self.state.rotation.phase;
        let (root, next) = (
            self.state.current.key_id(),
            self.state.next.as_ref().map(RootPair::key_id),
        );
        metrics::rotation_phase(phase.as_gauge(), self.state.current.not_after);
        if let Some(reason) = reason {
            tracing::info!(
                phase = phase.as_str(),
                reason,
                %root,
                ?next,
                version = self.overlap_version,
                "root rotation step"
            );
            metrics::rotation_step(phase.as_str(), reason);
        }
        let issuer = issuer_key_id(&self.state);
        let since = self.state.rotation.since;
        self.status.update(|view| {
            view.phase = phase.as_str();
            view.root_key_id = root;
            view.next_root_key_id = next;
            view.issuer_key_id = issuer;
            view.root_expires = self.state.current.not_after;
            view.overlap_version = (phase != Phase::Steady).then_some(self.overlap_version);
            if let Some(reason) = reason {
                if view.history.len() == HISTORY {
                    view.history.remove(0);
                }
                view.history.push(Transition {
                    phase: phase.as_str(),
                    reason,
                    at: since,
                });
            }
        });
    }
}

/// The generation a step from `state` writes.
fn next_generation(state: &Resumed) -> u64 {
    state.generation + 1
}

/// The key identifier of the root `state` issues with.
fn issuer_key_id(state: &Resumed) -> String {
    match (&state.next, state.rotation.phase) {
        (Some(next), Phase::IssuingNext) => next.key_id(),
        _ => state.current.key_id(),
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
