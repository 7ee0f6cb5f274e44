//! The gRPC `grpc-timeout` header: a caller's deadline, honoured and passed on reduced by the
//! time already spent.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header's name (a ready `HeaderName`: a `&str` would be parsed at every lookup).
pub(crate) static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The caller's deadline, if it sent a valid `grpc-timeout` (`<digits><unit>`, at most eight
/// digits, unit one of `H M S m u n`).
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Writes `remaining` as a `grpc-timeout` value, in the finest unit that fits eight digits.
pub(crate) fn set_grpc_timeout(headers: &mut HeaderMap, remaining: Duration) {
    const MAX: u128 = 99_999_999;
    let nanos = remaining.as_nanos();
    let value = if nanos <= MAX {
        format!("{nanos}n")
    } else if nanos / 1_000 <= MAX {
        format!("{}u", nanos / 1_000)
    } else if nanos / 1_000_000 <= MAX {
        format!("{}m", nanos / 1_000_000)
    } else if remaining.as_secs() <= MAX as u64 {
        format!("{}S", remaining.as_secs())
    } else {
        format!("{}H", (remaining.as_secs() / 3600).min(MAX as u64))
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(GRPC_TIMEOUT.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_bad_values() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("9n", Some(Duration::from_nanos(9))),
            ("123456789m", None),
            ("m", None),
            ("10x", None),
            ("", None),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(GRPC_TIMEOUT.clone(), HeaderValue::from_static(value));
            assert_eq!(grpc_timeout(&headers), expected, "{value}");
        }
    }

    #[test]
    fn writes_a_value_that_parses_back_within_its_unit() {
        for remaining in [
            Duration::from_nanos(5),
            Duration::from_millis(1500),
            Duration::from_secs(100_000),
        ] {
            let mut headers = HeaderMap::new();
            set_grpc_timeout(&mut headers, remaining);
            let back = grpc_timeout(&headers).unwrap();
            assert!(
                back <= remaining && remaining - back < Duration::from_millis(1),
                "{remaining:?} -> {back:?}"
            );
        }
    }
}
