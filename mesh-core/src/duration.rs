//! Gateway API duration strings (GEP-2257): `10s`, `500ms`, `1h2m`, `0s`.
//!
//! A duration is one to four `<number><unit>` pairs, each number at most five digits, units
//! `h`, `m`, `s` or `ms`; the pairs add up, as Go's `time.ParseDuration` reads them. The
//! canonical form written back has each unit at most once, largest first, so it only exists
//! for durations of whole milliseconds under 100,000 hours: [`parse`] refuses anything longer,
//! so that every parsed duration can be written back and read again unchanged.

use std::time::Duration;

/// A string that is not a Gateway API duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    /// What was given.
    pub input: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// The longest duration accepted (99,999 hours and change), so the canonical form has at most
/// five digits per unit.
const MAX_MILLIS: u128 = 100_000 * 3_600_000 - 1;

/// Parses a Gateway API duration.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    if input.is_empty() {
        return Err(error("empty"));
    }
    let bytes = input.as_bytes();
    let mut i = 0;
    let mut pairs = 0;
    let mut millis: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &input[start..i];
        if digits.is_empty() {
            return Err(error("expected a number"));
        }
        if digits.len() > 5 {
            return Err(error("a number has more than 5 digits"));
        }
        // At most five digits: always fits.
        let number = digits.parse::<u128>().map_err(|_| error("bad number"))?;
        let unit = if input[i..].starts_with("ms") {
            i += 2;
            1
        } else {
            let unit = match bytes.get(i) {
                Some(b'h') => 3_600_000,
                Some(b'm') => 60_000,
                Some(b's') => 1_000,
                _ => return Err(error("expected a unit: h, m, s or ms")),
            };
            i += 1;
            unit
        };
        pairs += 1;
        if pairs > 4 {
            return Err(error("more than 4 number-unit pairs"));
        }
        millis += number * unit;
    }
    if millis > MAX_MILLIS {
        return Err(error("longer than 99999h"));
    }
    // Bounded by MAX_MILLIS above, so it fits in u64.
    Ok(Duration::from_millis(millis as u64))
}

/// Writes `duration` in canonical form (`1h2m3s4ms`, `0s`), truncated to whole milliseconds.
pub fn format(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, name) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")] {
        let n = millis / unit;
        millis %= unit;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_api_durations() {
        let ok = [
            ("0s", 0),
            ("0ms", 0),
            ("10s", 10_000),
            ("500ms", 500),
            ("1h2m", 3_720_000),
            ("1h2m3s4ms", 3_723_004),
            ("1s1s", 2_000),
            ("99999ms", 99_999),
        ];
        for (input, millis) in ok {
            assert_eq!(parse(input), Ok(Duration::from_millis(millis)), "{input}");
        }
        let bad = [
            ("", "empty"),
            ("10", "expected a unit: h, m, s or ms"),
            ("1.5s", "expected a unit: h, m, s or ms"),
            ("s", "expected a number"),
            ("-1s", "expected a number"),
            ("100000s", "a number has more than 5 digits"),
            ("1h1m1s1ms1s", "more than 4 number-unit pairs"),
            ("10us", "expected a unit: h, m, s or ms"),
            ("1d", "expected a unit: h, m, s or ms"),
            ("99999h1h", "longer than 99999h"),
        ];
        for (input, reason) in bad {
            assert_eq!(parse(input).unwrap_err().reason, reason, "{input}");
        }
    }

    #[test]
    fn formats_canonically_and_round_trips() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_millis(3_723_004)), "1h2m3s4ms");
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(format(Duration::from_micros(1_500)), "1ms");
        for millis in [
            1,
            999,
            1_000,
            59_999,
            3_600_000,
            99_999 * 3_600_000 + 59_999,
        ] {
            let d = Duration::from_millis(millis);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
