//! [`InboundLimiter`]: a service's rate-limit policies compiled with their state, deciding
//! each call it receives. Time is passed in; the state is atomics and one short lock per
//! policy with per-caller limits, so it needs no runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::callers::{CallerLimit, Callers, MAX_TRACKED_CALLERS};
use super::gcra::{AtomicGcra, Gcra};
use super::policy::{LimitKind, RateLimit, RateLimitPolicy};
use crate::spiffe::SpiffeId;

/// The rate-limit policies of one service and their state.
///
/// Built again only when the policies change, and then each policy that did not change keeps
/// its state ([`InboundLimiter::update`]): a new snapshot does not refill anyone's limit.
#[derive(Debug)]
pub struct InboundLimiter {
    /// What the TATs count from.
    epoch: Instant,
    policies: Box<[Arc<PolicyState>]>,
    /// Whether a policy targets a route: only then must a call's route be found.
    needs_route: bool,
}

/// One policy and its state.
#[derive(Debug)]
struct PolicyState {
    policy: RateLimitPolicy,
    total: Option<(Gcra, AtomicGcra)>,
    identity: Option<Gcra>,
    /// One shared state per override.
    overrides: Box<[(Gcra, AtomicGcra)]>,
    /// Per-caller state, when the policy has per-identity limits or overrides.
    callers: Option<Callers>,
}

/// A call refused by a rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The policy whose limit refused it.
    pub policy: Arc<str>,
    /// Which of its limits.
    pub kind: LimitKind,
    /// That limit.
    pub limit: RateLimit,
    /// How long until a call would be admitted (at least 1 ms).
    pub retry_after: Duration,
}

// === impl InboundLimiter ===

impl InboundLimiter {
    /// The limiter for `policies`, keeping the state of each policy `previous` had unchanged;
    /// `None` when there are no policies. `previous` itself is returned when nothing changed.
    pub fn update(
        previous: Option<&Arc<Self>>,
        policies: &[RateLimitPolicy],
        now: Instant,
    ) -> Option<Arc<Self>> {
        if policies.is_empty() {
            return None;
        }
        if let Some(previous) = previous
            && previous.policies.len() == policies.len()
            && previous
                .policies
                .iter()
                .zip(policies)
                .all(|(state, policy)| state.policy == *policy)
        {
            return Some(previous.clone());
        }
        let states = policies
            .iter()
            .map(|policy| {
                previous
                    .and_then(|p| p.policies.iter().find(|s| s.policy == *policy))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(PolicyState::new(policy.clone())))
            })
            .collect();
        Some(Arc::new(Self {
            epoch: previous.map_or(now, |p| p.epoch),
            policies: states,
            needs_route: policies.iter().any(|p| p.route.is_some()),
        }))
    }

    /// Whether a policy targets a route, so [`InboundLimiter::check`] needs the call's route.
    pub fn needs_route(&self) -> bool {
        self.needs_route
    }

    /// Decides a call from `caller` (`None`: no identity) that matched `route` (`None`: no
    /// route, or none needed), at `now`. Every policy for the service, and for that route,
    /// must admit it; the first that refuses says why.
    pub fn check(
        &self,
        route: Option<&str>,
        caller: Option<&SpiffeId>,
        now: Instant,
    ) -> Result<(), Limited> {
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        for state in &self.policies {
            if let Some(target) = &state.policy.route
                && route != Some(&**target)
            {
                continue;
            }
            state.check(caller, now)?;
        }
        Ok(())
    }

    /// How many callers the policy `name` tracks now (for tests and operators).
    pub fn tracked_callers(&self, name: &str) -> usize {
        self.policies
            .iter()
            .find(|s| &*s.policy.name == name)
            .and_then(|s| s.callers.as_ref())
            .map_or(0, Callers::len)
    }
}

// === impl PolicyState ===

impl PolicyState {
    fn new(policy: RateLimitPolicy) -> Self {
        let shared = |limit: &RateLimit| (limit.gcra(), AtomicGcra::new());
        let callers = (policy.identity.is_some() || !policy.overrides.is_empty())
            .then(|| Callers::new(MAX_TRACKED_CALLERS));
        Self {
            total: policy.total.as_ref().map(shared),
            identity: policy.identity.as_ref().map(RateLimit::gcra),
            overrides: policy.overrides.iter().map(|o| shared(&o.limit)).collect(),
            callers,
            policy,
        }
    }

    /// The caller's own (or its override's) limit first, so that a caller over its own
    /// limit spends nothing of the total the others share; then the total, which gives the
    /// caller's call back when it refuses.
    fn check(&self, caller: Option<&SpiffeId>, now: u64) -> Result<(), Limited> {
        let mut refund = None;
        if let Some(callers) = &self.callers {
            let decided = callers.admit(caller, self.identity.as_ref(), now, |id| {
                self.policy.limit_for(Some(id)).and_then(|(index, _)| index)
            });
            match decided {
                CallerLimit::Own(Ok(())) => refund = self.identity.as_ref(),
                CallerLimit::Own(Err(wait)) => {
                    return Err(self.limited(LimitKind::Identity, self.policy.identity, wait));
                }
                CallerLimit::Override(index) => {
                    let (limit, state) = &self.overrides[index];
                    if let Err(wait) = state.try_acquire(limit, now) {
                        let limit = self.policy.overrides.get(index).map(|o| o.limit);
                        return Err(self.limited(LimitKind::Override, limit, duration_nanos(wait)));
                    }
                }
            }
        }
        if let Some((limit, state)) = &self.total
            && let Err(wait) = state.try_acquire(limit, now)
        {
            if let (Some(refund), Some(callers)) = (refund, &self.callers) {
                callers.refund(caller, refund);
            }
            return Err(self.limited(LimitKind::Total, self.policy.total, duration_nanos(wait)));
        }
        Ok(())
    }

    fn limited(&self, kind: LimitKind, limit: Option<RateLimit>, wait_ns: u64) -> Limited {
        Limited {
            policy: self.policy.name.clone(),
            kind,
            // Always `Some` for the kind that refused.
            limit: limit.unwrap_or(RateLimit {
                requests_per_second: 0,
                burst: 0,
            }),
            retry_after: Duration::from_nanos(wait_ns).max(Duration::from_millis(1)),
        }
    }
}

fn duration_nanos(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX)
}

// === impl Limited ===

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rate limited by policy \"{}\" ({} limit {})",
            self.policy, self.kind, self.limit
        )
    }
}
