//! The deadline a request arrives with (its `grpc-timeout`), and how the calls its handler
//! makes inherit it: while the server stack polls a request's handler, the request's deadline
//! is the thread's current one, and the client stack reads it when a call is made from there.
//! An outbound call then ends by the inbound deadline (less the time already spent) even if the
//! handler passed nothing on, as gRPC's deadline propagation does for a `Context`, and a
//! server stops working for a caller that has given up. A call opts out with the
//! [`NoInheritedDeadline`] request extension.
//!
//! A thread-local rather than a tokio task-local: the handler is polled inside the server's
//! own future on the same thread, so setting it around that poll costs two stores, and
//! nothing at all for a request without a deadline. Work the handler spawns onto other tasks
//! does not inherit it (as it would not inherit a task-local either).

use std::cell::Cell;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName};

/// The header's name (a ready `HeaderName`: a `&str` would be parsed at every lookup).
pub(crate) static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The caller's deadline, if it sent a valid `grpc-timeout` (`<digits><unit>`, at most eight
/// digits, unit one of `H M S m u n`).
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(mesh_core::headers::first(headers, &GRPC_TIMEOUT)?)
}

/// [`grpc_timeout`] for a `grpc-timeout` value already found.
pub(crate) fn parse_grpc_timeout(value: &http::HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
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

/// Marks a request whose call must not inherit the deadline of the request being served
/// (`request.extensions_mut().insert(NoInheritedDeadline)`): work that must finish even if
/// the caller that caused it gave up.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInheritedDeadline;

thread_local! {
    /// The deadline of the request whose handler this thread is polling, if it has one.
    static CURRENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The deadline calls made now inherit.
pub(crate) fn current() -> Option<Instant> {
    CURRENT.with(Cell::get)
}

/// Makes `deadline` the current one until the guard is dropped (then the one before comes
/// back).
pub(crate) fn enter(deadline: Instant) -> Entered {
    Entered(CURRENT.with(|current| current.replace(Some(deadline))))
}

/// The deadline in force before [`enter`], put back when dropped.
#[derive(Debug)]
pub(crate) struct Entered(Option<Instant>);

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

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
    fn a_deadline_is_current_inside_its_scope_only() {
        assert_eq!(current(), None);
        let outer = Instant::now() + Duration::from_secs(1);
        let inner = outer - Duration::from_millis(500);
        {
            let _outer = enter(outer);
            assert_eq!(current(), Some(outer));
            {
                let _inner = enter(inner);
                assert_eq!(current(), Some(inner));
            }
            assert_eq!(current(), Some(outer));
        }
        assert_eq!(current(), None);
    }
}
