//! Checks a rule's `hedging` block (see [`HedgingSpec`]) into a [`HedgingPolicy`].

use std::time::Duration;

use super::route::statuses;
use crate::config::HedgingSpec;
use crate::duration;
use crate::error::FieldError;
use crate::snapshot::{HedgeDelay, HedgingPolicy, RouteKind};

/// Tries in all, as gRPC A6 bounds `maxAttempts` (more are treated as 5 there; refused here).
pub(crate) const MAX_HEDGED_ATTEMPTS: u32 = 5;
/// Tries in all when `maxAttempts` is omitted: the first and one hedge.
const DEFAULT_ATTEMPTS: u32 = 2;
/// The longest fixed delay: a hedge later than this is no help to any caller.
const MAX_FIXED_DELAY: Duration = Duration::from_secs(60);
/// The percentile when `delay` is omitted (Finagle's backup requests' usual choice).
const DEFAULT_PERCENTILE: u8 = 95;
/// The percentiles a delay may name: below the median most calls would be hedged.
const PERCENTILES: std::ops::RangeInclusive<u8> = 50..=99;

/// The policy `spec` describes, or `None` with its errors pushed; `path` is
/// `services[0].routes[1].rules[2].hedging`.
pub(crate) fn hedging(
    path: &str,
    kind: RouteKind,
    spec: &HedgingSpec,
    errors: &mut Vec<FieldError>,
) -> Option<HedgingPolicy> {
    let before = errors.len();
    let max_attempts = spec.max_attempts.unwrap_or(DEFAULT_ATTEMPTS);
    if !(2..=MAX_HEDGED_ATTEMPTS).contains(&max_attempts) {
        errors.push(FieldError::new(
            format!("{path}.maxAttempts"),
            format!("{max_attempts} is out of range 2 to {MAX_HEDGED_ATTEMPTS}"),
        ));
    }
    let delay = match spec.delay.as_deref() {
        None => Some(HedgeDelay::Percentile(DEFAULT_PERCENTILE)),
        Some(value) => delay(value)
            .map_err(|message| errors.push(FieldError::new(format!("{path}.delay"), message)))
            .ok(),
    };
    let (non_fatal_codes, non_fatal_grpc_codes) = statuses(
        path,
        kind,
        ("nonFatalCodes", &spec.non_fatal_codes),
        ("nonFatalStatuses", &spec.non_fatal_statuses),
        errors,
    );
    let delay = delay?;
    (errors.len() == before).then_some(HedgingPolicy {
        max_attempts,
        delay,
        non_fatal_codes,
        non_fatal_grpc_codes,
    })
}

/// A `delay`: `p50` to `p99`, or a duration of at most [`MAX_FIXED_DELAY`].
fn delay(value: &str) -> Result<HedgeDelay, String> {
    if let Some(digits) = value.strip_prefix('p') {
        return match digits.parse::<u8>() {
            Ok(p) if PERCENTILES.contains(&p) => Ok(HedgeDelay::Percentile(p)),
            _ => Err(format!(
                "{value:?}: a percentile is p{} to p{}",
                PERCENTILES.start(),
                PERCENTILES.end()
            )),
        };
    }
    let fixed = duration::parse(value).map_err(|e| e.to_string())?;
    if fixed > MAX_FIXED_DELAY {
        return Err(format!(
            "{value} is longer than {}",
            duration::format(MAX_FIXED_DELAY)
        ));
    }
    Ok(HedgeDelay::Fixed(fixed))
}

/// The wire's and the config's spelling of `delay`.
pub(crate) fn format_delay(delay: HedgeDelay) -> String {
    match delay {
        HedgeDelay::Fixed(d) => duration::format(d),
        HedgeDelay::Percentile(p) => format!("p{p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_percentiles_or_bounded_durations() {
        let ms = Duration::from_millis;
        let cases: [(&str, Result<HedgeDelay, ()>); 10] = [
            ("p95", Ok(HedgeDelay::Percentile(95))),
            ("p50", Ok(HedgeDelay::Percentile(50))),
            ("p99", Ok(HedgeDelay::Percentile(99))),
            ("p49", Err(())),
            ("p100", Err(())),
            ("p", Err(())),
            ("20ms", Ok(HedgeDelay::Fixed(ms(20)))),
            ("0s", Ok(HedgeDelay::Fixed(Duration::ZERO))),
            ("61s", Err(())),
            ("soon", Err(())),
        ];
        for (value, expected) in cases {
            assert_eq!(delay(value).map_err(|_| ()), expected, "{value}");
            if let Ok(parsed) = expected {
                assert_eq!(delay(&format_delay(parsed)), Ok(parsed), "{value}");
            }
        }
    }
}
