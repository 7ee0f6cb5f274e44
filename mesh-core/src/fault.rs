//! Fault injection: the validated `FaultInjection` filter of a rule, and the pure decision of
//! what to inject into one call, from random draws passed in.
//!
//! As in Istio's `HTTPFaultInjection` and gRPC's A33, faults are injected by the caller's
//! mesh before the call goes out: a delayed call waits, then is sent; an aborted call is
//! answered by the mesh itself and never reaches a backend. A call picked for both is delayed,
//! then aborted. The two are picked independently, each with its own percentage.
//!
//! What this means for the rest of the client (the runtime follows it):
//! - the delay runs inside the call's deadline (the route's `request` timeout or the caller's
//!   `grpc-timeout`): a delay longer than the time left ends as the timeout would;
//! - an injected abort is never retried and never counts against an endpoint for outlier
//!   ejection: no try was made (in Envoy, which Istio configures, the fault filter answers
//!   before the router, so its retries and outlier detection never see the abort either).

use std::time::Duration;

use http::StatusCode;

/// Percentages are kept in parts per million: 100 % is this.
pub const PER_MILLION: u32 = 1_000_000;

/// The longest delay a filter may inject.
pub const MAX_FAULT_DELAY: Duration = Duration::from_secs(300);

/// A rule's `FaultInjection` filter, validated. At least one of the two is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultInjection {
    /// The delay, if any.
    pub delay: Option<FaultDelay>,
    /// The abort, if any.
    pub abort: Option<FaultAbort>,
}

/// A fixed delay for a share of calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultDelay {
    /// How long; above zero and at most [`MAX_FAULT_DELAY`].
    pub fixed: Duration,
    /// Share of calls delayed, in parts per million (0 to [`PER_MILLION`]).
    pub per_million: u32,
}

/// An error answer for a share of calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAbort {
    /// The status answered.
    pub status: AbortStatus,
    /// Share of calls aborted, in parts per million (0 to [`PER_MILLION`]).
    pub per_million: u32,
}

/// The status an abort answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortStatus {
    /// An HTTP status, 400 to 599 (HTTP routes).
    Http(StatusCode),
    /// A gRPC status other than OK (gRPC routes).
    Grpc(tonic::Code),
}

/// What to inject into one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultDecision {
    /// Wait this long before going on.
    pub delay: Option<Duration>,
    /// Then answer with this instead of sending the call.
    pub abort: Option<AbortStatus>,
}

// === impl FaultInjection ===

impl FaultInjection {
    /// What to inject into one call, given two uniformly random `u32` draws: one for the
    /// delay, one for the abort.
    pub fn decide(&self, delay_draw: u32, abort_draw: u32) -> FaultDecision {
        FaultDecision {
            delay: self
                .delay
                .filter(|d| sampled(d.per_million, delay_draw))
                .map(|d| d.fixed),
            abort: self
                .abort
                .filter(|a| sampled(a.per_million, abort_draw))
                .map(|a| a.status),
        }
    }
}

// === impl FaultDecision ===

impl FaultDecision {
    /// Whether nothing is injected.
    pub fn is_none(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }
}

// === impl AbortStatus ===

impl AbortStatus {
    /// The HTTP status an HTTP caller gets. A gRPC abort is only configured on gRPC routes,
    /// which only gRPC calls reach; were an HTTP caller to get one, it reads 500.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Http(status) => *status,
            Self::Grpc(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status a gRPC caller gets: the configured one, or for an HTTP status the one
    /// gRPC maps it to (gRPC's `http-grpc-status-mapping.md`, as A33 does).
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::Grpc(code) => *code,
            Self::Http(status) => grpc_code_for_http(*status),
        }
    }
}

impl std::fmt::Display for AbortStatus {
    /// `HTTP 503` or `UNAVAILABLE`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(status) => write!(f, "HTTP {}", status.as_u16()),
            Self::Grpc(code) => f.write_str(
                crate::GRPC_STATUS_NAMES
                    .get(*code as usize)
                    .copied()
                    .unwrap_or("UNKNOWN"),
            ),
        }
    }
}

impl std::fmt::Display for FaultInjection {
    /// `delay 100ms for 50%, abort HTTP 503 for 0.1%`, for listings and messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(d) = &self.delay {
            write!(
                f,
                "delay {} for {}%",
                crate::duration::format(d.fixed),
                per_million_percent(d.per_million)
            )?;
        }
        if let Some(a) = &self.abort {
            if self.delay.is_some() {
                f.write_str(", ")?;
            }
            write!(
                f,
                "abort {} for {}%",
                a.status,
                per_million_percent(a.per_million)
            )?;
        }
        Ok(())
    }
}

/// Whether a call is picked for a share of `per_million`, given a uniformly random `u32`:
/// the draw is scaled to 0..1 000 000 and compared, so 0 never picks and [`PER_MILLION`]
/// always does.
pub fn sampled(per_million: u32, draw: u32) -> bool {
    let scaled = (u64::from(draw) * u64::from(PER_MILLION)) >> 32;
    scaled < u64::from(per_million)
}

/// The gRPC status for an HTTP status, per gRPC's `http-grpc-status-mapping.md`.
pub fn grpc_code_for_http(status: StatusCode) -> tonic::Code {
    use tonic::Code;
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A percentage (0 to 100, in steps of 0.0001) in parts per million; `Err` says why not.
pub fn percent_per_million(percent: f64) -> Result<u32, &'static str> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err("must be a number from 0 to 100");
    }
    let scaled = percent * 10_000.0;
    let rounded = scaled.round();
    // Finer steps would be rounded away silently: a 0.00001 % sample must not become 0 %.
    if (scaled - rounded).abs() > 1e-6 {
        return Err("is finer than 0.0001");
    }
    // In 0..=1e6 after the range check: the cast is exact.
    Ok(rounded as u32)
}

/// Parts per million as a percentage, for the wire and for messages.
pub fn per_million_percent(per_million: u32) -> f64 {
    f64::from(per_million) / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: u32 = PER_MILLION / 2;

    #[test]
    fn sampling_scales_the_draw_to_parts_per_million() {
        // (per million, draw, picked)
        let cases = [
            (0, 0, false),
            (0, u32::MAX, false),
            (PER_MILLION, 0, true),
            (PER_MILLION, u32::MAX, true),
            (HALF, 0, true),
            (HALF, u32::MAX / 2 - 5000, true),
            (HALF, u32::MAX / 2 + 5000, false),
            (HALF, u32::MAX, false),
            // 0.1 %: the lowest thousandth of the draws.
            (1000, u32::MAX / 1000 - 5000, true),
            (1000, u32::MAX / 1000 + 5000, false),
            // 0.0001 %: one part per million.
            (1, 4000, true),
            (1, 5000, false),
        ];
        for (per_million, draw, picked) in cases {
            assert_eq!(sampled(per_million, draw), picked, "{per_million} {draw}");
        }
    }

    #[test]
    fn over_many_draws_the_share_picked_is_the_percentage() {
        let mut rng = fastrand::Rng::with_seed(7);
        for (per_million, low, high) in [(HALF, 4800, 5200), (100_000, 900, 1100)] {
            let picked = (0..10_000)
                .filter(|_| sampled(per_million, rng.u32(..)))
                .count();
            assert!((low..high).contains(&picked), "{per_million}: {picked}");
        }
    }

    #[test]
    fn the_decision_picks_delay_and_abort_independently() {
        let fault = FaultInjection {
            delay: Some(FaultDelay {
                fixed: Duration::from_millis(100),
                per_million: HALF,
            }),
            abort: Some(FaultAbort {
                status: AbortStatus::Http(StatusCode::SERVICE_UNAVAILABLE),
                per_million: HALF,
            }),
        };
        let low = 0;
        let high = u32::MAX;
        let delay = Some(Duration::from_millis(100));
        let abort = Some(AbortStatus::Http(StatusCode::SERVICE_UNAVAILABLE));
        // (delay draw, abort draw, decision)
        let cases = [
            (low, low, FaultDecision { delay, abort }),
            (low, high, FaultDecision { delay, abort: None }),
            (high, low, FaultDecision { delay: None, abort }),
            (high, high, FaultDecision::default()),
        ];
        for (d, a, expected) in cases {
            assert_eq!(fault.decide(d, a), expected, "{d} {a}");
        }
        assert!(FaultDecision::default().is_none());

        let abort_only = FaultInjection {
            delay: None,
            ..fault
        };
        assert_eq!(abort_only.decide(low, low).delay, None);
    }

    #[test]
    fn abort_statuses_answer_both_kinds_of_caller() {
        use tonic::Code;
        // (status, HTTP caller reads, gRPC caller reads)
        let cases = [
            (
                AbortStatus::Http(StatusCode::SERVICE_UNAVAILABLE),
                503,
                Code::Unavailable,
            ),
            (
                AbortStatus::Http(StatusCode::TOO_MANY_REQUESTS),
                429,
                Code::Unavailable,
            ),
            (
                AbortStatus::Http(StatusCode::NOT_FOUND),
                404,
                Code::Unimplemented,
            ),
            (
                AbortStatus::Http(StatusCode::FORBIDDEN),
                403,
                Code::PermissionDenied,
            ),
            (
                AbortStatus::Http(StatusCode::UNAUTHORIZED),
                401,
                Code::Unauthenticated,
            ),
            (
                AbortStatus::Http(StatusCode::BAD_REQUEST),
                400,
                Code::Internal,
            ),
            (
                AbortStatus::Http(StatusCode::INTERNAL_SERVER_ERROR),
                500,
                Code::Unknown,
            ),
            (
                AbortStatus::Grpc(Code::ResourceExhausted),
                500,
                Code::ResourceExhausted,
            ),
        ];
        for (status, http, grpc) in cases {
            assert_eq!(status.http_status().as_u16(), http, "{status}");
            assert_eq!(status.grpc_code(), grpc, "{status}");
        }
        let both = FaultInjection {
            delay: Some(FaultDelay {
                fixed: Duration::from_millis(100),
                per_million: HALF,
            }),
            abort: Some(FaultAbort {
                status: AbortStatus::Grpc(Code::Unavailable),
                per_million: 1000,
            }),
        };
        assert_eq!(
            both.to_string(),
            "delay 100ms for 50%, abort UNAVAILABLE for 0.1%"
        );
    }

    #[test]
    fn percentages_become_parts_per_million_or_say_why_not() {
        let cases: [(f64, Result<u32, &str>); 9] = [
            (0.0, Ok(0)),
            (100.0, Ok(PER_MILLION)),
            (50.0, Ok(HALF)),
            (0.1, Ok(1000)),
            (0.0001, Ok(1)),
            (33.3333, Ok(333_333)),
            (0.00001, Err("is finer than 0.0001")),
            (100.5, Err("must be a number from 0 to 100")),
            (f64::NAN, Err("must be a number from 0 to 100")),
        ];
        for (percent, expected) in cases {
            assert_eq!(percent_per_million(percent), expected, "{percent}");
        }
        assert_eq!(per_million_percent(1000), 0.1);
        for percent in [0.1, 0.0001, 12.5, 99.9999] {
            let round_trip =
                percent_per_million(per_million_percent(percent_per_million(percent).unwrap()));
            assert_eq!(round_trip, percent_per_million(percent));
        }
    }
}
