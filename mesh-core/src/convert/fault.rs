//! The `FaultInjection` filter between the model and the wire. The wire is read into the
//! config's shape, so that it is checked exactly as the control file is.

use crate::config::{FaultAbortSpec, FaultDelaySpec, FaultInjectionSpec, Percent};
use crate::duration;
use crate::fault::{AbortStatus, FaultInjection, per_million_percent};
use crate::proto;

/// The model's filter on the wire.
pub(crate) fn to_wire(fault: &FaultInjection) -> proto::FaultInjection {
    proto::FaultInjection {
        delay: fault.delay.map(|d| proto::FaultDelay {
            fixed_delay: duration::format(d.fixed),
            percent: per_million_percent(d.per_million),
        }),
        abort: fault.abort.map(|a| {
            let (http_status, grpc_status) = match a.status {
                AbortStatus::Http(status) => (u32::from(status.as_u16()), String::new()),
                AbortStatus::Grpc(code) => (
                    0,
                    crate::GRPC_STATUS_NAMES
                        .get(code as usize)
                        .copied()
                        .unwrap_or("UNKNOWN")
                        .to_owned(),
                ),
            };
            proto::FaultAbort {
                http_status,
                grpc_status,
                percent: per_million_percent(a.per_million),
            }
        }),
    }
}

/// The wire's filter in the config's shape (checked by the caller as a config filter is).
pub(crate) fn from_wire(wire: &proto::FaultInjection) -> FaultInjectionSpec {
    FaultInjectionSpec {
        delay: wire.delay.as_ref().map(|d| FaultDelaySpec {
            fixed_delay: d.fixed_delay.clone(),
            percent: Some(Percent(d.percent)),
        }),
        abort: wire.abort.as_ref().map(|a| FaultAbortSpec {
            http_status: (a.http_status != 0).then_some(a.http_status),
            grpc_status: (!a.grpc_status.is_empty()).then(|| a.grpc_status.clone()),
            percent: Some(Percent(a.percent)),
        }),
    }
}
