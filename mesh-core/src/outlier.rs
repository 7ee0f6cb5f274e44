//! Outlier-ejection arithmetic: which endpoints of a set are ejected, for how long.
//!
//! An endpoint with `consecutive_failures` failures in a row (or, optionally, a success rate
//! under a threshold over enough requests) is ejected for `base_ejection × n`, where `n` counts
//! its ejections (capped at `max_ejection`), but never when that would leave more than
//! `max_ejection_percent` of the set ejected or no endpoint ready. Each `base_ejection` spent
//! back in service without being ejected forgives one past ejection. Time is passed in.

use std::time::{Duration, Instant};

/// Ejection parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint (5 by default).
    pub consecutive_failures: u32,
    /// The first ejection's length (30 s by default); later ones are multiples.
    pub base_ejection: Duration,
    /// The longest ejection (300 s by default).
    pub max_ejection: Duration,
    /// The most of the set that may be ejected at once, in percent (50 by default); at least
    /// one endpoint always stays.
    pub max_ejection_percent: u32,
    /// The optional success-rate rule.
    pub success_rate: Option<SuccessRateConfig>,
}

/// Eject an endpoint whose success rate over `min_requests` requests falls below a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuccessRateConfig {
    /// Requests needed before the rate is judged; the count restarts after each judgement.
    pub min_requests: u32,
    /// Success rate below which the endpoint is ejected, in percent.
    pub threshold_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
            success_rate: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Health {
    consecutive_failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    /// When the endpoint last came back (or was forgiven an ejection).
    back_since: Option<Instant>,
    successes: u32,
    failures: u32,
}

/// An ejection that [`OutlierDetector::record`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Which endpoint.
    pub endpoint: usize,
    /// For how long.
    pub duration: Duration,
    /// The how-manyth ejection this is (after forgiveness).
    pub count: u32,
}

/// The ejection state of one endpoint set, by index.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    config: OutlierConfig,
    endpoints: Vec<Health>,
}

impl OutlierDetector {
    /// A detector for `endpoints` endpoints, none ejected.
    pub fn new(config: OutlierConfig, endpoints: usize) -> Self {
        Self {
            config,
            endpoints: vec![Health::default(); endpoints],
        }
    }

    /// The detector of a new endpoint set: `previous[i]` is the index, in this detector, of
    /// the new set's `i`th endpoint when it was already known. Endpoints that stay keep their
    /// failure counts, ejection and back-off (so an endpoint-set change neither forgives an
    /// ejected endpoint nor lets more than the allowed share be ejected); new ones start
    /// afresh.
    pub fn carried(&self, previous: &[Option<usize>]) -> Self {
        Self {
            config: self.config,
            endpoints: previous
                .iter()
                .map(|old| {
                    old.and_then(|i| self.endpoints.get(i).copied())
                        .unwrap_or_default()
                })
                .collect(),
        }
    }

    /// Whether `endpoint` is ejected at `now`.
    pub fn is_ejected(&self, endpoint: usize, now: Instant) -> bool {
        self.endpoints
            .get(endpoint)
            .and_then(|h| h.ejected_until)
            .is_some_and(|until| now < until)
    }

    /// How many endpoints are ejected at `now`.
    pub fn ejected_count(&self, now: Instant) -> usize {
        (0..self.endpoints.len())
            .filter(|&i| self.is_ejected(i, now))
            .count()
    }

    /// Records one response from `endpoint`; returns the ejection it causes, if any.
    pub fn record(&mut self, endpoint: usize, success: bool, now: Instant) -> Option<Ejection> {
        let allowed = self.max_ejected();
        let ejected = self.ejected_count(now);
        let config = self.config;
        let health = self.endpoints.get_mut(endpoint)?;
        if let Some(until) = health.ejected_until
            && now >= until
        {
            // Back in service: start afresh, remembering past ejections for the backoff.
            health.ejected_until = None;
            health.back_since = Some(until);
            health.consecutive_failures = 0;
        }
        // Forgive one past ejection per base period spent back in service.
        if let Some(since) = health.back_since
            && health.ejections > 0
            && now.saturating_duration_since(since) >= config.base_ejection
        {
            health.ejections -= 1;
            health.back_since = Some(now);
        }
        if success {
            health.consecutive_failures = 0;
            health.successes += 1;
        } else {
            health.consecutive_failures += 1;
            health.failures += 1;
        }
        let mut eject = health.consecutive_failures >= config.consecutive_failures;
        if let Some(rate) = config.success_rate {
            let total = health.successes + health.failures;
            if total >= rate.min_requests.max(1) {
                eject |= u64::from(health.successes) * 100
                    < u64::from(rate.threshold_percent) * u64::from(total);
                health.successes = 0;
                health.failures = 0;
            }
        }
        if !eject || health.ejected_until.is_some() || ejected >= allowed {
            return None;
        }
        health.ejections += 1;
        let duration = config
            .base_ejection
            .saturating_mul(health.ejections)
            .min(config.max_ejection);
        health.ejected_until = Some(now + duration);
        health.consecutive_failures = 0;
        health.successes = 0;
        health.failures = 0;
        Some(Ejection {
            endpoint,
            duration,
            count: health.ejections,
        })
    }

    /// The most endpoints that may be ejected at once: the percentage of the set, rounded
    /// down, and always leaving one.
    fn max_ejected(&self) -> usize {
        let n = self.endpoints.len();
        let by_percent = n * self.config.max_ejection_percent.min(100) as usize / 100;
        by_percent.min(n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(
        d: &mut OutlierDetector,
        endpoint: usize,
        times: u32,
        now: Instant,
    ) -> Option<Ejection> {
        (0..times)
            .filter_map(|_| d.record(endpoint, false, now))
            .last()
    }

    #[test]
    fn consecutive_failures_eject_with_growing_backoff() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(OutlierConfig::default(), 4);
        assert_eq!(fail(&mut d, 0, 4, t0), None);
        d.record(0, true, t0);
        assert_eq!(fail(&mut d, 0, 4, t0), None, "a success resets the count");
        let first = fail(&mut d, 0, 1, t0).unwrap();
        assert_eq!((first.duration, first.count), (Duration::from_secs(30), 1));
        assert!(d.is_ejected(0, t0 + Duration::from_secs(29)));
        assert!(!d.is_ejected(0, t0 + Duration::from_secs(30)));
        // Back at 30 s, failing again at once: ejected for twice as long.
        let t1 = t0 + Duration::from_secs(30);
        let second = fail(&mut d, 0, 5, t1).unwrap();
        assert_eq!(
            (second.duration, second.count),
            (Duration::from_secs(60), 2)
        );
        // Repeated ejections are capped at max_ejection.
        let mut t = t1 + second.duration;
        let mut last = second;
        for _ in 0..20 {
            last = fail(&mut d, 0, 5, t).unwrap();
            t += last.duration;
        }
        assert_eq!(last.duration, Duration::from_secs(300));
    }

    #[test]
    fn good_behaviour_is_forgiven() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(OutlierConfig::default(), 2);
        let e = fail(&mut d, 0, 5, t0).unwrap();
        let back = t0 + e.duration;
        // Healthy for a full base period after coming back: the next ejection is a first one.
        d.record(0, true, back);
        d.record(0, true, back + Duration::from_secs(30));
        let again = fail(&mut d, 0, 5, back + Duration::from_secs(31)).unwrap();
        assert_eq!(again.count, 1);
    }

    #[test]
    fn never_ejects_below_the_floor() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(OutlierConfig::default(), 4);
        assert!(fail(&mut d, 0, 5, t0).is_some());
        assert!(fail(&mut d, 1, 5, t0).is_some());
        assert_eq!(fail(&mut d, 2, 5, t0), None, "50 % of 4 is 2");
        assert_eq!(d.ejected_count(t0), 2);

        // A single endpoint is never ejected, whatever the percentage.
        let all = OutlierConfig {
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        };
        let mut one = OutlierDetector::new(all, 1);
        assert_eq!(fail(&mut one, 0, 50, t0), None);
        let mut two = OutlierDetector::new(all, 2);
        assert!(fail(&mut two, 0, 5, t0).is_some());
        assert_eq!(fail(&mut two, 1, 5, t0), None, "one endpoint always stays");
    }

    #[test]
    fn success_rate_rule() {
        let t0 = Instant::now();
        let config = OutlierConfig {
            consecutive_failures: 1000,
            success_rate: Some(SuccessRateConfig {
                min_requests: 10,
                threshold_percent: 80,
            }),
            ..OutlierConfig::default()
        };
        let mut d = OutlierDetector::new(config, 3);
        // 8 of 10 succeed: at the threshold, not below it.
        for i in 0..10 {
            assert_eq!(d.record(0, i % 5 != 0, t0), None);
        }
        // 7 of 10: ejected on the tenth.
        let results: Vec<_> = (0..10).map(|i| d.record(0, i >= 3, t0)).collect();
        assert!(results[..9].iter().all(Option::is_none));
        assert_eq!(results[9].map(|e| e.count), Some(1));
    }

    #[test]
    fn state_survives_an_endpoint_set_change_for_endpoints_that_stay() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(OutlierConfig::default(), 4);
        // Endpoint 1 ejected; endpoint 2 one failure short of it.
        assert!(fail(&mut d, 1, 5, t0).is_some());
        assert!(fail(&mut d, 2, 4, t0).is_none());
        // The set changes: 0 goes, a new one comes first, 1, 2 and 3 stay (reordered).
        let carried = d.carried(&[None, Some(2), Some(1), Some(3)]);
        assert!(
            carried.is_ejected(2, t0),
            "the ejected endpoint stays ejected"
        );
        assert!(!carried.is_ejected(0, t0));
        let mut carried = carried;
        // Endpoint 2 (now index 1) needs one more failure, not five.
        assert!(carried.record(1, false, t0).is_some());
        // Its back-off grows from its own past, not from a fresh start.
        let t1 = t0 + Duration::from_secs(31);
        assert!(!carried.is_ejected(2, t1));
        let again = fail(&mut carried, 2, 5, t1).expect("ejected again");
        assert_eq!(again.count, 2);
    }
}
