//! Automatic trust-anchor rotation of a CA's own root, as a pure state machine: the schedule,
//! its bounds, and the decision taken at each tick. Time and what the control service observes
//! are passed in, so every transition is tested without a clock or a network.
//!
//! The phases, in order, for roots A (in force) and B (next):
//!
//! 1. [`Phase::Steady`]: roots `A`, issuing with A. At `rotate_at_percent` of A's life, B is
//!    made and `A + B` published: [`Step::StartOverlap`].
//! 2. [`Phase::Overlap`]: roots `A + B`, still issuing with A, until every subscriber ACKed a
//!    version carrying `A + B` (or `ack_timeout` passed): [`Step::SwitchIssuer`].
//! 3. [`Phase::IssuingNext`]: roots `A + B`, issuing with B, until no leaf signed by A can
//!    still be in use (every subscriber presents a B leaf, or the last leaf A signed expired,
//!    or A itself expired): [`Step::DropOld`], back to `Steady` with B alone.
//!
//! A subscriber that never ACKs does not hold the rotation forever: after `ack_timeout` the
//! issuer switches anyway and the step says so ([`SwitchReason::AckTimeout`]). This is the
//! trade SPIRE makes (it prepares the next CA, publishes it, and activates it on a timer,
//! without waiting for agents) and what Linkerd's and Istio's manual procedures leave to the
//! operator; waiting for ACKs first, with a bound, is strictly safer than the timer alone.
//! Dropping A never waits on a subscriber: it waits on the certificates themselves.

use std::time::{Duration, SystemTime};

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// One root, issuing with it.
    Steady,
    /// Both roots published, still issuing with the old one, waiting for ACKs.
    Overlap,
    /// Both roots published, issuing with the new one, waiting for the old leaves to go.
    IssuingNext,
}

impl Phase {
    /// The phase's number for a gauge: 0 steady, 1 overlap, 2 issuing with the next root.
    pub fn as_gauge(self) -> u8 {
        match self {
            Self::Steady => 0,
            Self::Overlap => 1,
            Self::IssuingNext => 2,
        }
    }

    /// The phase's name, as logs and `/subscribers` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Steady => "steady",
            Self::Overlap => "overlap",
            Self::IssuingNext => "issuing_next",
        }
    }
}

/// When to rotate, and how long to wait for ACKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationSchedule {
    /// The lifetime of every root made (default [`DEFAULT_ROOT_LIFETIME`], at least
    /// [`MIN_ROOT_LIFETIME`]).
    pub root_lifetime: Duration,
    /// At which share of a root's life the next one is made (default 66, 50 to 90).
    pub rotate_at_percent: u8,
    /// How long to wait for every subscriber's ACK of `A + B` before issuing with B anyway
    /// (default [`DEFAULT_ACK_TIMEOUT`], at least one second).
    pub ack_timeout: Duration,
}

/// One year.
pub const DEFAULT_ROOT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The shortest root lifetime accepted: short enough for tests, long enough for a handshake.
pub const MIN_ROOT_LIFETIME: Duration = Duration::from_secs(10);
/// Ten minutes: time for every subscriber to reconnect at least once after a blip.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(10 * 60);

impl Default for RotationSchedule {
    fn default() -> Self {
        Self {
            root_lifetime: DEFAULT_ROOT_LIFETIME,
            rotate_at_percent: 66,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
        }
    }
}

/// Why a schedule was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `root_lifetime` is below [`MIN_ROOT_LIFETIME`].
    #[error("root_rotation.root_lifetime: {0:?} is below the minimum of 10s")]
    RootLifetime(Duration),
    /// `rotate_at_percent` is outside 50..=90.
    #[error("root_rotation.rotate_at_percent: {0} is outside 50 to 90")]
    RotateAt(u8),
    /// `ack_timeout` is below one second.
    #[error("root_rotation.ack_timeout: must be at least 1s")]
    AckTimeout,
    /// The rotation cannot finish within the root's remaining life.
    #[error(
        "root_rotation.root_lifetime: the rotation needs ack_timeout ({ack_timeout:?}) plus \
         the leaf lifetime ({leaf_lifetime:?}) after it starts, more than the {left:?} left \
         of a root at rotate_at_percent"
    )]
    TooShort {
        /// The ACK bound.
        ack_timeout: Duration,
        /// The longest leaf lifetime.
        leaf_lifetime: Duration,
        /// What is left of a root's life when its rotation starts.
        left: Duration,
    },
}

// === impl RotationSchedule ===

impl RotationSchedule {
    /// Checks the bounds, and that a rotation started at `rotate_at_percent` can wait
    /// `ack_timeout` and then a whole `leaf_lifetime` before the old root expires: otherwise
    /// leaves signed by the old root would die with it while still in use.
    pub fn check(&self, leaf_lifetime: Duration) -> Result<(), ScheduleError> {
        if self.root_lifetime < MIN_ROOT_LIFETIME {
            return Err(ScheduleError::RootLifetime(self.root_lifetime));
        }
        if !(50..=90).contains(&self.rotate_at_percent) {
            return Err(ScheduleError::RotateAt(self.rotate_at_percent));
        }
        if self.ack_timeout < Duration::from_secs(1) {
            return Err(ScheduleError::AckTimeout);
        }
        let left = self.root_lifetime - self.rotate_after();
        let needed = self.ack_timeout.saturating_add(leaf_lifetime);
        if needed >= left {
            return Err(ScheduleError::TooShort {
                ack_timeout: self.ack_timeout,
                leaf_lifetime,
                left,
            });
        }
        Ok(())
    }

    /// How long after a root's start its rotation begins.
    pub fn rotate_after(&self) -> Duration {
        self.root_lifetime
            .mul_f64(f64::from(self.rotate_at_percent.min(100)) / 100.0)
    }
}

/// What the control service sees at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Now.
    pub now: SystemTime,
    /// When the root in force (A) became valid.
    pub root_not_before: SystemTime,
    /// When A expires.
    pub root_not_after: SystemTime,
    /// Every live subscriber ACKed a version that carries `A + B` (true with none).
    pub all_acked: bool,
    /// Every live subscriber presented a leaf signed by B (false with none: nothing seen).
    pub all_on_next: bool,
    /// The expiry of the last leaf A signed (`None`: it signed none).
    pub old_leaves_until: Option<SystemTime>,
}

/// Why the issuer switched to B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    /// Every subscriber ACKed `A + B`.
    Acked,
    /// `ack_timeout` passed with some subscriber still behind.
    AckTimeout,
}

/// Why A was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Every subscriber presented a leaf signed by B.
    AllOnNext,
    /// The last leaf A signed has expired.
    OldLeavesExpired,
    /// A itself expired (nothing it signed verifies any more).
    RootExpired,
}

/// What to do at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet.
    Stay,
    /// Make B and publish `A + B`; issuing stays with A.
    StartOverlap,
    /// Issue with B from now on; the roots stay `A + B`.
    SwitchIssuer(SwitchReason),
    /// Publish B alone; B becomes the root in force.
    DropOld(DropReason),
}

/// A rotation's state: its phase and when it entered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The phase.
    pub phase: Phase,
    /// When the phase was entered.
    pub since: SystemTime,
}

// === impl Rotation ===

impl Rotation {
    /// A rotation in `Steady` from `now`.
    pub fn steady(now: SystemTime) -> Self {
        Self {
            phase: Phase::Steady,
            since: now,
        }
    }

    /// The step to take now under `schedule`.
    pub fn decide(&self, schedule: &RotationSchedule, seen: &Observed) -> Step {
        match self.phase {
            Phase::Steady => {
                let due = seen.root_not_before + schedule.rotate_after();
                if seen.now >= due {
                    Step::StartOverlap
                } else {
                    Step::Stay
                }
            }
            Phase::Overlap => {
                if seen.all_acked {
                    Step::SwitchIssuer(SwitchReason::Acked)
                } else if seen.now >= self.since + schedule.ack_timeout {
                    Step::SwitchIssuer(SwitchReason::AckTimeout)
                } else {
                    Step::Stay
                }
            }
            Phase::IssuingNext => {
                if seen.now >= seen.root_not_after {
                    Step::DropOld(DropReason::RootExpired)
                } else if seen.all_on_next {
                    Step::DropOld(DropReason::AllOnNext)
                } else if seen.old_leaves_until.is_none_or(|until| seen.now >= until) {
                    Step::DropOld(DropReason::OldLeavesExpired)
                } else {
                    Step::Stay
                }
            }
        }
    }

    /// The state after taking `step` at `now`.
    pub fn after(&self, step: Step, now: SystemTime) -> Self {
        let phase = match step {
            Step::Stay => return *self,
            Step::StartOverlap => Phase::Overlap,
            Step::SwitchIssuer(_) => Phase::IssuingNext,
            Step::DropOld(_) => Phase::Steady,
        };
        Self { phase, since: now }
    }
}

#[cfg(test)]
mod tests;
