//! Outlier-ejection arithmetic: which endpoints of a set are ejected, for how long.
//!
//! One failure-accrual model for every backend: an endpoint is ejected when it fails
//! `consecutive_failures` calls in a row, or (optionally) when the exponentially weighted
//! moving average of its successes falls under a threshold once it has answered at least
//! `min_requests` calls since it was last judged healthy. An ejection lasts `base_ejection × n`,
//! where `n` counts its ejections (capped at `max_ejection`): a back-off that grows while the
//! endpoint keeps failing, and each `base_ejection` spent back in service without being ejected
//! forgives one past ejection. The floor: never more than `max_ejection_percent` of the set
//! ejected at once, and never fewer than `min_ready` endpoints left in service (at least one).
//!
//! The average is over calls, not time: each answer moves it by `2 / (min_requests + 1)` of the
//! way to 1 (success) or 0 (failure), the usual EWMA with a window of `min_requests` calls, so a
//! busy endpoint and a quiet one are judged on the same number of answers. Time is passed in.

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
    /// The most of the set that may be ejected at once, in percent (50 by default).
    pub max_ejection_percent: u32,
    /// The fewest endpoints left in service, whatever the percentage (1 by default; 0 is
    /// taken as 1: an ejection never empties the set).
    pub min_ready: u32,
    /// The optional success-rate rule.
    pub success_rate: Option<SuccessRateConfig>,
}

/// Eject an endpoint whose success-rate average falls below a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuccessRateConfig {
    /// Answers needed, since the endpoint joined or came back, before its average is judged;
    /// also the average's window (each answer weighs `2 / (min_requests + 1)`).
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
            min_ready: 1,
            success_rate: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Health {
    consecutive_failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    /// When the endpoint last came back (or was forgiven an ejection).
    back_since: Option<Instant>,
    /// The success average, 1.0 for an endpoint with no failure yet.
    success_average: f64,
    /// Answers counted into the average since it was last reset, up to `min_requests`.
    answers: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            consecutive_failures: 0,
            ejections: 0,
            ejected_until: None,
            back_since: None,
            success_average: 1.0,
            answers: 0,
        }
    }
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
        } else {
            health.consecutive_failures += 1;
        }
        let mut eject = health.consecutive_failures >= config.consecutive_failures;
        if let Some(rate) = config.success_rate {
            let window = rate.min_requests.max(1);
            let weight = 2.0 / (f64::from(window) + 1.0);
            let answer = if success { 1.0 } else { 0.0 };
            health.success_average += (answer - health.success_average) * weight;
            health.answers = health.answers.saturating_add(1).min(window);
            eject |= health.answers >= window
                && health.success_average * 100.0 < f64::from(rate.threshold_percent);
        }
        if !eject || health.ejected_until.is_some() {
            return None;
        }
        // Only an ejection counts the ejected endpoints (every endpoint's state): a response
        // costs the same with three endpoints or three thousand. This endpoint is not ejected
        // now (checked above), so counting after updating it counts what counting before did.
        if self.ejected_count(now) >= self.max_ejected() {
            return None;
        }
        // In range: `get_mut` found it above.
        let health = &mut self.endpoints[endpoint];
        health.ejections += 1;
        let duration = config
            .base_ejection
            .saturating_mul(health.ejections)
            .min(config.max_ejection);
        health.ejected_until = Some(now + duration);
        health.consecutive_failures = 0;
        // Back in service, it is judged afresh on its next `min_requests` answers.
        health.success_average = 1.0;
        health.answers = 0;
        Some(Ejection {
            endpoint,
            duration,
            count: health.ejections,
        })
    }

    /// The most endpoints that may be ejected at once: the percentage of the set, rounded
    /// down, and always leaving `min_ready` (at least one).
    fn max_ejected(&self) -> usize {
        let n = self.endpoints.len();
        let by_percent = n * self.config.max_ejection_percent.min(100) as usize / 100;
        let floor = usize::try_from(self.config.min_ready.max(1)).unwrap_or(usize::MAX);
        by_percent.min(n.saturating_sub(floor))
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
    fn success_rate_average() {
        let t0 = Instant::now();
        let config = OutlierConfig {
            consecutive_failures: 1000,
            success_rate: Some(SuccessRateConfig {
                min_requests: 50,
                threshold_percent: 80,
            }),
            ..OutlierConfig::default()
        };
        let mut d = OutlierDetector::new(config, 3);
        // One failure in ten (90 %) never falls under 80 %, however long it goes on.
        for i in 0..2000 {
            assert_eq!(d.record(0, i % 10 != 9, t0), None, "answer {i}");
        }
        // One in two: ejected, but only once it has answered `min_requests` times, although
        // the average falls under the threshold well before.
        let ejected_at = (0..200)
            .position(|i| d.record(1, i % 2 == 0, t0).is_some())
            .expect("ejected");
        assert_eq!(ejected_at, 49);
        // Back in service after its ejection, it is judged afresh: not ejected again before
        // another `min_requests` answers, even failing every one of them.
        let back = t0 + Duration::from_secs(30);
        let again = (0..200)
            .position(|_| d.record(1, false, back).is_some())
            .expect("ejected again");
        assert_eq!(again, 49);
    }

    #[test]
    fn min_ready_is_a_floor_under_the_percentage() {
        let t0 = Instant::now();
        let config = OutlierConfig {
            max_ejection_percent: 100,
            min_ready: 3,
            ..OutlierConfig::default()
        };
        let mut d = OutlierDetector::new(config, 5);
        assert!(fail(&mut d, 0, 5, t0).is_some());
        assert!(fail(&mut d, 1, 5, t0).is_some());
        assert_eq!(fail(&mut d, 2, 5, t0), None, "three must stay in service");
        // When one comes back, another may go.
        let later = t0 + Duration::from_secs(30);
        assert!(!d.is_ejected(0, later));
        assert!(fail(&mut d, 2, 5, later).is_some());
        // A floor above the set's size ejects nothing.
        let mut small = OutlierDetector::new(config, 2);
        assert_eq!(fail(&mut small, 0, 50, t0), None);
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
