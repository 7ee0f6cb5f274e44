//! The `FaultInjection` route filter as people write it, after Istio's `HTTPFaultInjection` and
//! gRPC's A33: delay some calls, abort some calls, each with its own percentage.
//!
//! In the control file it is a filter of `type: FaultInjection`; in Kubernetes the same spec
//! is the body of a `FaultInjection` resource that a route names with an `ExtensionRef` filter.

use serde::{Deserialize, Serialize};

/// What to inject into the calls a rule matches: a delay, an abort, or both (a call picked for
/// both is delayed, then aborted). At least one is required.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjectionSpec {
    /// Holds calls back before they are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelaySpec>,
    /// Answers calls with an error without sending them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbortSpec>,
}

/// A fixed delay for a share of calls.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelaySpec {
    /// How long (a duration string such as `100ms`); above 0 and at most 5 minutes.
    pub fixed_delay: String,
    /// Share of calls delayed, 0 to 100 in steps of 0.0001; 100 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<Percent>,
}

/// An error answer for a share of calls: `httpStatus` on HTTP routes, `grpcStatus` on gRPC
/// routes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbortSpec {
    /// HTTP routes: the status answered, 400 to 599. A gRPC call on an HTTP route gets the
    /// gRPC status gRPC maps it to (503 is UNAVAILABLE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u32>,
    /// gRPC routes: the status name answered (`UNAVAILABLE`), any but `OK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Share of calls aborted, 0 to 100 in steps of 0.0001; 100 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<Percent>,
}

/// A percentage as written (`50`, `0.1`). Compared by its bits, so that config types stay
/// `Eq`; validation refuses what is not a finite number from 0 to 100.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Percent(pub f64);

impl PartialEq for Percent {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Percent {}
