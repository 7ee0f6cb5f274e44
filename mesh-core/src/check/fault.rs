//! Checks of the `FaultInjection` filter, shared by config validation and wire conversion.
//!
//! Bounds: a delay above zero and at most [`MAX_FAULT_DELAY`]; percentages from 0 to 100 in
//! steps of 0.0001 (100 when omitted); an abort status of 400 to 599 on HTTP routes, a gRPC
//! status name other than `OK` on gRPC routes.

use http::StatusCode;

use crate::config::{FaultAbortSpec, FaultDelaySpec, FaultInjectionSpec, Percent};
use crate::duration;
use crate::error::FieldError;
use crate::fault::{
    AbortStatus, FaultAbort, FaultDelay, FaultInjection, MAX_FAULT_DELAY, PER_MILLION,
    percent_per_million,
};
use crate::snapshot::RouteKind;

/// Checks a `faultInjection` at `path` on a route of `kind`.
pub(crate) fn fault_injection(
    path: &str,
    kind: RouteKind,
    spec: &FaultInjectionSpec,
    errors: &mut Vec<FieldError>,
) -> Option<FaultInjection> {
    if spec.delay.is_none() && spec.abort.is_none() {
        errors.push(FieldError::new(path, "set delay, abort or both"));
        return None;
    }
    let before = errors.len();
    let delay = spec
        .delay
        .as_ref()
        .and_then(|d| delay(&format!("{path}.delay"), d, errors));
    let abort = spec
        .abort
        .as_ref()
        .and_then(|a| abort(&format!("{path}.abort"), kind, a, errors));
    (errors.len() == before).then_some(FaultInjection { delay, abort })
}

fn delay(path: &str, spec: &FaultDelaySpec, errors: &mut Vec<FieldError>) -> Option<FaultDelay> {
    let per_million = percent(&format!("{path}.percent"), spec.percent, errors);
    let fixed_path = format!("{path}.fixedDelay");
    let fixed = match duration::parse(&spec.fixed_delay) {
        Ok(d) if d.is_zero() => {
            errors.push(FieldError::new(&fixed_path, "must be above 0"));
            None
        }
        Ok(d) if d > MAX_FAULT_DELAY => {
            errors.push(FieldError::new(
                &fixed_path,
                format!(
                    "{} is longer than the longest fault delay, {}",
                    duration::format(d),
                    duration::format(MAX_FAULT_DELAY)
                ),
            ));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(FieldError::new(&fixed_path, e.to_string()));
            None
        }
    };
    Some(FaultDelay {
        fixed: fixed?,
        per_million: per_million?,
    })
}

fn abort(
    path: &str,
    kind: RouteKind,
    spec: &FaultAbortSpec,
    errors: &mut Vec<FieldError>,
) -> Option<FaultAbort> {
    let per_million = percent(&format!("{path}.percent"), spec.percent, errors);
    let status = match (kind, spec.http_status, &spec.grpc_status) {
        (RouteKind::Http, Some(code), None) => {
            match u16::try_from(code).ok().filter(|c| (400..=599).contains(c)) {
                // In range 400 to 599, so a valid status code.
                Some(c) => StatusCode::from_u16(c).ok().map(AbortStatus::Http),
                None => {
                    errors.push(FieldError::new(
                        format!("{path}.httpStatus"),
                        format!("status code {code} is out of range 400 to 599"),
                    ));
                    None
                }
            }
        }
        (RouteKind::Grpc, None, Some(name)) => {
            match crate::GRPC_STATUS_NAMES.iter().position(|n| n == name) {
                // A position in the 17 names: a valid code.
                Some(code) if code > 0 => Some(AbortStatus::Grpc(tonic::Code::from_i32(
                    i32::try_from(code).unwrap_or(2),
                ))),
                _ => {
                    errors.push(FieldError::new(
                        format!("{path}.grpcStatus"),
                        format!("unknown or non-error gRPC status {name:?}"),
                    ));
                    None
                }
            }
        }
        (RouteKind::Http, _, Some(_)) => {
            errors.push(FieldError::new(
                format!("{path}.grpcStatus"),
                "gRPC statuses apply to gRPC routes; HTTP routes use httpStatus",
            ));
            None
        }
        (RouteKind::Grpc, Some(_), _) => {
            errors.push(FieldError::new(
                format!("{path}.httpStatus"),
                "HTTP statuses apply to HTTP routes; gRPC routes use grpcStatus",
            ));
            None
        }
        (RouteKind::Http, None, None) => {
            errors.push(FieldError::new(
                format!("{path}.httpStatus"),
                "required on HTTP routes",
            ));
            None
        }
        (RouteKind::Grpc, None, None) => {
            errors.push(FieldError::new(
                format!("{path}.grpcStatus"),
                "required on gRPC routes",
            ));
            None
        }
    };
    Some(FaultAbort {
        status: status?,
        per_million: per_million?,
    })
}

/// A percentage in parts per million; 100 % when omitted.
fn percent(path: &str, value: Option<Percent>, errors: &mut Vec<FieldError>) -> Option<u32> {
    let Some(Percent(value)) = value else {
        return Some(PER_MILLION);
    };
    percent_per_million(value)
        .map_err(|reason| errors.push(FieldError::new(path, format!("{value} {reason}"))))
        .ok()
}
