//! Retry-budget arithmetic (as Finagle and Linkerd do it): retries may add at most a share of
//! recent requests, plus a small floor per second, so a failing backend cannot cause a storm.
//!
//! Each request deposits `ratio_percent / 100` of a token, each retry withdraws one, and the
//! floor adds `min_retries_per_sec × ttl` tokens; only what happened within the last `ttl`
//! counts. Time is passed in (`Instant`s), so the type is deterministic and needs no runtime.

use std::time::{Duration, Instant};

/// Retry budget parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a percentage of requests (20 by default).
    pub ratio_percent: u32,
    /// Retries allowed per second regardless of traffic (10 by default).
    pub min_retries_per_sec: u32,
    /// How long a deposit or withdrawal counts (10 s by default); whole seconds, 1 to 60.
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio_percent: 20,
            min_retries_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// One second's deposits and withdrawals.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    second: u64,
    requests: u64,
    retries: u64,
}

/// A retry budget over a sliding window of one-second slots.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    origin: Instant,
    slots: Vec<Slot>,
}

impl RetryBudget {
    /// An empty budget whose clock starts at `now`.
    pub fn new(config: RetryBudgetConfig, now: Instant) -> Self {
        let secs = config.ttl.as_secs().clamp(1, 60);
        Self {
            config: RetryBudgetConfig {
                ttl: Duration::from_secs(secs),
                ..config
            },
            origin: now,
            // `secs` is at most 60.
            slots: vec![Slot::default(); secs as usize],
        }
    }

    /// The parameters in force (the ttl rounded to whole seconds, 1 to 60).
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    /// Records a first attempt.
    pub fn deposit(&mut self, now: Instant) {
        self.slot(now).requests += 1;
    }

    /// Takes a token for one retry; `false` (and nothing recorded) when the budget is spent.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.balance_milli(now) < 1000 {
            return false;
        }
        self.slot(now).retries += 1;
        true
    }

    /// Whole retries available now.
    pub fn balance(&self, now: Instant) -> u64 {
        u64::try_from(self.balance_milli(now) / 1000).unwrap_or(0)
    }

    /// Tokens in thousandths, so a 20 % deposit is exact.
    fn balance_milli(&self, now: Instant) -> i128 {
        let second = self.second(now);
        let window = self.slots.len() as u64;
        let (requests, retries) = self
            .slots
            .iter()
            .filter(|s| second.saturating_sub(s.second) < window && s.second <= second)
            .fold((0u64, 0u64), |(r, t), s| (r + s.requests, t + s.retries));
        let reserve = i128::from(self.config.min_retries_per_sec) * i128::from(window) * 1000;
        let earned = i128::from(requests) * i128::from(self.config.ratio_percent) * 10;
        reserve + earned - i128::from(retries) * 1000
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn slot(&mut self, now: Instant) -> &mut Slot {
        let second = self.second(now);
        let len = self.slots.len() as u64;
        // `second % len` is below `len`, a `usize`.
        let slot = &mut self.slots[(second % len) as usize];
        if slot.second != second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_then_ratio_then_expiry() {
        let t0 = Instant::now();
        let config = RetryBudgetConfig {
            ratio_percent: 20,
            min_retries_per_sec: 1,
            ttl: Duration::from_secs(10),
        };
        let mut budget = RetryBudget::new(config, t0);
        // The floor alone: 1 per second over 10 s.
        assert_eq!(budget.balance(t0), 10);
        for _ in 0..10 {
            assert!(budget.try_withdraw(t0));
        }
        assert!(!budget.try_withdraw(t0), "the floor is spent");
        // 100 requests earn 20 retries; 4 requests earn nothing whole yet (0.8).
        for _ in 0..104 {
            budget.deposit(t0);
        }
        assert_eq!(budget.balance(t0), 20);
        for _ in 0..20 {
            assert!(budget.try_withdraw(t0 + Duration::from_secs(1)));
        }
        assert!(!budget.try_withdraw(t0 + Duration::from_secs(1)));
        budget.deposit(t0 + Duration::from_secs(1));
        assert!(
            budget.try_withdraw(t0 + Duration::from_secs(1)),
            "0.8 + 0.2 = 1"
        );
        // After the ttl the first second's deposits and withdrawals no longer count.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            budget.balance(later),
            0,
            "21 retries in second 1 outweigh the floor"
        );
        assert_eq!(budget.balance(t0 + Duration::from_secs(11)), 10);
    }

    #[test]
    fn defaults_are_twenty_percent_plus_ten_per_second() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(RetryBudgetConfig::default(), t0);
        assert_eq!(budget.balance(t0), 100);
        for _ in 0..1000 {
            budget.deposit(t0);
        }
        assert_eq!(budget.balance(t0), 300);
        // Every call failing: retries stop at the budget, well short of one per call.
        let allowed = (0..1000).filter(|_| budget.try_withdraw(t0)).count();
        assert_eq!(allowed, 300);
    }
}
