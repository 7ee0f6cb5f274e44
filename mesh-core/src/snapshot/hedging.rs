//! A rule's hedging policy, validated (see `crate::config::HedgingSpec` for the YAML).

use std::time::Duration;

use http::StatusCode;

/// When the next hedged try is sent after the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeDelay {
    /// A fixed delay (zero: every try at once).
    Fixed(Duration),
    /// This percentile (50 to 99) of the backend's observed latency to response headers.
    Percentile(u8),
}

impl std::fmt::Display for HedgeDelay {
    /// As the config spells it: `p95`, or a duration (`20ms`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(d) => f.write_str(&crate::duration::format(*d)),
            Self::Percentile(p) => write!(f, "p{p}"),
        }
    }
}

/// Hedging as gRPC A6 defines it: up to `max_attempts` tries in all, each to another
/// endpoint, `delay` apart; the first response that is not a non-fatal status wins and the
/// other tries are cancelled; each try after the first takes a token from the retry budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HedgingPolicy {
    /// Tries in all, the first one included (2 to 5).
    pub max_attempts: u32,
    /// When the next try is sent.
    pub delay: HedgeDelay,
    /// HTTP routes: statuses after which the next try is sent at once.
    pub non_fatal_codes: Vec<StatusCode>,
    /// gRPC routes: statuses after which the next try is sent at once.
    pub non_fatal_grpc_codes: Vec<tonic::Code>,
}

impl HedgingPolicy {
    /// Whether an HTTP response with `status` leaves the call to the other tries.
    pub fn non_fatal_status(&self, status: StatusCode) -> bool {
        self.non_fatal_codes.contains(&status)
    }

    /// Whether a gRPC status leaves the call to the other tries.
    pub fn non_fatal_grpc(&self, code: tonic::Code) -> bool {
        self.non_fatal_grpc_codes.contains(&code)
    }

    /// Whether a broken connection leaves the call to the other tries: that is what
    /// UNAVAILABLE and 502/503 mean.
    pub fn non_fatal_broken_connection(&self) -> bool {
        self.non_fatal_grpc(tonic::Code::Unavailable)
            || self.non_fatal_status(StatusCode::SERVICE_UNAVAILABLE)
            || self.non_fatal_status(StatusCode::BAD_GATEWAY)
    }
}
