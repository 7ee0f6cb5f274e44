//! A route rule's `hedging` block as written (gRPC A6's `hedgingPolicy`, with Finagle's
//! delay from an observed percentile); checked by `crate::check::hedging`.

use serde::{Deserialize, Serialize};

/// Hedging: while a try is outstanding, further tries of the same request go to other
/// endpoints, and the first answer wins. A rule has either `retry` or `hedging`, as a gRPC
/// method has either a retry or a hedging policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HedgingSpec {
    /// Tries in all, the first one included: 2 to 5; 2 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// How long after a try the next one is sent: a duration (`0s` to `60s`; `0s` sends every
    /// try at once), or `p50` to `p99`, that percentile of the backend's observed latency
    /// (at least 1 ms; no hedge until enough calls were seen). `p95` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// HTTP routes: response status codes (400 to 599) that do not end the call: the next
    /// try is sent at once instead of after the delay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_fatal_codes: Vec<u32>,
    /// gRPC routes: status names (`UNAVAILABLE`) that do not end the call, as
    /// `nonFatalCodes` for HTTP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_fatal_statuses: Vec<String>,
}
