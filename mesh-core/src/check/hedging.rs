//! Checks a rule's `hedging` block (see [`HedgingSpec`]) into a [`HedgingPolicy`]; its
//! statuses are checked as a retry policy's are, by `super::route`, which calls this.

use std::time::Duration;

use http::StatusCode;

use crate::config::HedgingSpec;
use crate::duration;
use crate::error::FieldError;
use crate::snapshot::{HedgeDelay, HedgingPolicy};

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

/// The policy `spec` describes, with its non-fatal statuses checked already (`checked`:
/// whether they were all good), or `None` with its errors pushed; `path` is
/// `services[0].routes[1].rules[2].hedging`.
pub(crate) fn hedging(
    path: &str,
    spec: &HedgingSpec,
    (non_fatal_codes, non_fatal_grpc_codes, checked): (Vec<StatusCode>, Vec<tonic::Code>, bool),
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
    let delay = delay?;
    (checked && errors.len() == before).then_some(HedgingPolicy {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ROUTES, name, parse};
    use crate::snapshot::RouteRule;
    use crate::testing::trust_domain_named;

    /// The first rule of a route of `kind` with `rule` (YAML fields) added, validated: its
    /// policy, or the errors' strings.
    fn rule(kind: &str, fields: &str) -> Result<RouteRule, Vec<String>> {
        let yaml = format!(
            r#"
services:
  - name: s
    endpoints: [{{address: 10.0.0.1:80, identity: spiffe://cluster.local/ns/default/sa/s}}]
    routes:
      - name: r
        kind: {kind}
        rules:
          - backendRefs: [{{name: s}}]
            {fields}
"#
        );
        match parse(&yaml).validate(&trust_domain_named("cluster.local")) {
            Ok(valid) => Ok(valid.destination(&name("s.default")).routes[0].rules[0].clone()),
            Err(errors) => Err(errors.errors().iter().map(ToString::to_string).collect()),
        }
    }

    #[test]
    fn policies_are_checked_with_their_field_paths() {
        let at = "services[0].routes[0].rules[0].hedging";
        /// A route kind, a rule's fields, and the policy or the errors expected.
        type Case<'a> = (&'a str, &'a str, Result<HedgingPolicy, Vec<String>>);
        let cases: [Case<'_>; 8] = [
            (
                "http",
                "hedging: {}",
                Ok(HedgingPolicy {
                    max_attempts: 2,
                    delay: HedgeDelay::Percentile(95),
                    non_fatal_codes: Vec::new(),
                    non_fatal_grpc_codes: Vec::new(),
                }),
            ),
            (
                "grpc",
                "hedging: {maxAttempts: 5, delay: 0s, nonFatalStatuses: [UNAVAILABLE]}",
                Ok(HedgingPolicy {
                    max_attempts: 5,
                    delay: HedgeDelay::Fixed(Duration::ZERO),
                    non_fatal_codes: Vec::new(),
                    non_fatal_grpc_codes: vec![tonic::Code::Unavailable],
                }),
            ),
            (
                "http",
                "hedging: {maxAttempts: 1}",
                Err(vec![format!("{at}.maxAttempts: 1 is out of range 2 to 5")]),
            ),
            (
                "http",
                "hedging: {maxAttempts: 6, delay: p100}",
                Err(vec![
                    format!("{at}.maxAttempts: 6 is out of range 2 to 5"),
                    format!(r#"{at}.delay: "p100": a percentile is p50 to p99"#),
                ]),
            ),
            (
                "http",
                "hedging: {delay: 2m}",
                Err(vec![format!("{at}.delay: 2m is longer than 1m")]),
            ),
            (
                "http",
                "hedging: {nonFatalCodes: [200], nonFatalStatuses: [UNAVAILABLE]}",
                Err(vec![
                    format!(
                        "{at}.nonFatalStatuses: gRPC statuses apply to gRPC routes; HTTP routes use nonFatalCodes"
                    ),
                    format!("{at}.nonFatalCodes[0]: status code 200 is out of range 400 to 599"),
                ]),
            ),
            (
                "grpc",
                "hedging: {nonFatalStatuses: [OK]}",
                Err(vec![format!(
                    r#"{at}.nonFatalStatuses[0]: unknown or non-error gRPC status "OK""#
                )]),
            ),
            // As gRPC's service config: retries or hedging, not both.
            (
                "http",
                "retry: {codes: [503]}\n            hedging: {}",
                Err(vec![format!(
                    "{at}: a rule has either a retry policy or a hedging policy, not both"
                )]),
            ),
        ];
        for (kind, fields, expected) in cases {
            let found = rule(kind, fields).map(|r| r.hedging.unwrap());
            assert_eq!(found, expected, "{kind}: {fields}");
        }
    }

    #[test]
    fn the_fixture_round_trips_through_the_wire() {
        let valid = parse(ROUTES)
            .validate(&trust_domain_named("cluster.local"))
            .unwrap();
        let greeter = valid.destination(&name("greeter.default"));
        let pinned = &greeter.routes[0].rules[0];
        assert_eq!(
            pinned.hedging,
            Some(HedgingPolicy {
                max_attempts: 3,
                delay: HedgeDelay::Fixed(Duration::from_millis(20)),
                non_fatal_codes: vec![http::StatusCode::SERVICE_UNAVAILABLE],
                non_fatal_grpc_codes: Vec::new(),
            })
        );
        let wire = crate::proto::RouteRule::from(pinned);
        let sent = wire.hedging.as_ref().unwrap();
        assert_eq!((sent.max_attempts, sent.delay.as_str()), (3, "20ms"));
    }

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
                assert_eq!(delay(&parsed.to_string()), Ok(parsed), "{value}");
            }
        }
    }
}
