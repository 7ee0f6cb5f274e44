//! Deadlines: the gRPC `grpc-timeout` header (a caller's deadline, honoured and passed on
//! reduced by the time already spent), and bounding a future by a timeout.

use std::io::Write as _;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::{HeaderMap, HeaderValue};

pub(crate) use crate::inbound_deadline::{GRPC_TIMEOUT, grpc_timeout};

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
