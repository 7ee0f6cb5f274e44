//! Deadlines: the gRPC `grpc-timeout` header (a caller's deadline, honoured and passed on
//! reduced by the time already spent), and bounding a future by a timeout.

use std::io::Write as _;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::{HeaderMap, HeaderName, HeaderValue};

/// `future`, bounded by `limit` when there is one; `Err(limit)` when it ran out.
///
/// One future either way, for one await point: a `match` with an await in each arm would make
/// the caller's state machine hold `future`'s state twice (a call's state was over 10 KB).
pub(crate) fn within<F: Future>(
    limit: Option<Duration>,
    future: F,
) -> impl Future<Output = Result<F::Output, Duration>> {
    match limit {
        Some(limit) => {
            Either::Left(tokio::time::timeout(limit, future).map(move |r| r.map_err(|_| limit)))
        }
        None => Either::Right(future.map(Ok)),
    }
}

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

/// From this far off, a deadline is passed on in whole milliseconds (as Envoy passes it on):
/// truncating takes off less than 1 %, and the value stays the same from call to call, so
/// HPACK sends it as one index byte instead of a new literal that churns both sides' tables.
const MILLISECONDS_FROM: Duration = Duration::from_millis(100);

/// Writes `remaining` as a `grpc-timeout` value, never later than `remaining`: in whole
/// milliseconds from [`MILLISECONDS_FROM`] on, else in the finest unit that fits eight digits.
pub(crate) fn set_grpc_timeout(headers: &mut HeaderMap, remaining: Duration) {
    const MAX: u128 = 99_999_999;
    let nanos = remaining.as_nanos();
    let (amount, unit) = if remaining < MILLISECONDS_FROM && nanos <= MAX {
        (nanos, 'n')
    } else if remaining < MILLISECONDS_FROM {
        (nanos / 1_000, 'u')
    } else if nanos / 1_000_000 <= MAX {
        (nanos / 1_000_000, 'm')
    } else if u128::from(remaining.as_secs()) <= MAX {
        (u128::from(remaining.as_secs()), 'S')
    } else {
        ((u128::from(remaining.as_secs()) / 3600).min(MAX), 'H')
    };
    // Eight digits and a unit: formatted on the stack, copied once into the header value.
    let mut buffer = [0u8; 16];
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    if write!(cursor, "{amount}{unit}").is_ok() {
        let written = usize::try_from(cursor.position()).unwrap_or(0);
        if let Ok(value) = HeaderValue::from_bytes(&buffer[..written]) {
            headers.insert(GRPC_TIMEOUT.clone(), value);
        }
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

    fn written(remaining: Duration) -> String {
        let mut headers = HeaderMap::new();
        set_grpc_timeout(&mut headers, remaining);
        headers[&GRPC_TIMEOUT].to_str().unwrap().to_owned()
    }

    #[test]
    fn far_deadlines_go_in_whole_milliseconds_near_ones_finer() {
        // The same value call after call, whatever the microseconds already spent.
        assert_eq!(
            written(Duration::from_secs(5) - Duration::from_micros(13)),
            "4999m"
        );
        assert_eq!(
            written(Duration::from_secs(5) - Duration::from_micros(870)),
            "4999m"
        );
        assert_eq!(written(Duration::from_millis(100)), "100m");
        assert_eq!(written(Duration::from_micros(99_999)), "99999000n");
        assert_eq!(written(Duration::from_nanos(5)), "5n");
        assert_eq!(written(Duration::from_secs(200_000)), "200000S");
        assert_eq!(written(Duration::from_secs(u64::MAX / 2)), "99999999H");
    }

    #[test]
    fn writes_a_value_that_parses_back_within_its_unit() {
        for remaining in [
            Duration::from_nanos(5),
            Duration::from_micros(99_999),
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
