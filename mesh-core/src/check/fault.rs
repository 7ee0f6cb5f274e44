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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::fault::{AbortStatus, FaultAbort, FaultDelay, FaultInjection};
    use crate::fixtures::{name, parse};
    use crate::snapshot::{RouteFilter, Snapshot};
    use crate::testing::trust_domain_named;
    use crate::{ValidationErrors, proto};

    /// A config of service `a` with one route of `kind` whose one rule has `filters`.
    fn config(kind: &str, filters: &str) -> String {
        format!(
            "services:\n  - name: a\n    routes:\n      - name: r\n        kind: {kind}\n        \
             rules: [{{backendRefs: [{{name: a}}], filters: {filters}}}]\n"
        )
    }

    fn validate(yaml: &str) -> Result<crate::config::ValidConfig, ValidationErrors> {
        parse(yaml).validate(&trust_domain_named("cluster.local"))
    }

    #[test]
    fn bad_faults_report_each_field() {
        let f = "services[0].routes[0].rules[0].filters";
        // (route kind, filters, errors)
        let cases: &[(&str, &str, &[String])] = &[
            (
                "http",
                "[{type: FaultInjection, faultInjection: {}}]",
                &[format!("{f}[0].faultInjection: set delay, abort or both")],
            ),
            (
                "http",
                "[{type: FaultInjection}]",
                &[format!(
                    "{f}[0].faultInjection: required when type is FaultInjection"
                )],
            ),
            (
                "http",
                "[{type: FaultInjection, faultInjection: \
                  {delay: {fixedDelay: 0s, percent: 101}, abort: {httpStatus: 200, percent: -1}}}]",
                &[
                    format!(
                        "{f}[0].faultInjection.delay.percent: 101 must be a number from 0 to 100"
                    ),
                    format!("{f}[0].faultInjection.delay.fixedDelay: must be above 0"),
                    format!(
                        "{f}[0].faultInjection.abort.percent: -1 must be a number from 0 to 100"
                    ),
                    format!(
                        "{f}[0].faultInjection.abort.httpStatus: status code 200 is out of range 400 to 599"
                    ),
                ],
            ),
            (
                "http",
                "[{type: FaultInjection, faultInjection: \
                  {delay: {fixedDelay: 6m, percent: 0.00001}, abort: {grpcStatus: UNAVAILABLE}}}]",
                &[
                    format!("{f}[0].faultInjection.delay.percent: 0.00001 is finer than 0.0001"),
                    format!(
                        "{f}[0].faultInjection.delay.fixedDelay: 6m is longer than the longest fault delay, 5m"
                    ),
                    format!(
                        "{f}[0].faultInjection.abort.grpcStatus: gRPC statuses apply to gRPC routes; HTTP routes use httpStatus"
                    ),
                ],
            ),
            (
                "grpc",
                "[{type: FaultInjection, faultInjection: {abort: {httpStatus: 503}}}, \
                  {type: FaultInjection, faultInjection: {abort: {grpcStatus: OK}}}]",
                &[
                    format!(
                        "{f}[0].faultInjection.abort.httpStatus: HTTP statuses apply to HTTP routes; gRPC routes use grpcStatus"
                    ),
                    format!(
                        "{f}[1].type: FaultInjection may appear once per rule (first at {f}[0])"
                    ),
                ],
            ),
            (
                "grpc",
                "[{type: FaultInjection, faultInjection: {abort: {percent: 5}}}]",
                &[format!(
                    "{f}[0].faultInjection.abort.grpcStatus: required on gRPC routes"
                )],
            ),
        ];
        for (kind, filters, expected) in cases {
            let errors = validate(&config(kind, filters)).expect_err(filters);
            let got: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
            assert_eq!(&got, expected, "{filters}");
        }
    }

    #[test]
    fn a_valid_fault_is_typed_and_crosses_the_wire_unchanged() {
        let cases = [
            (
                "http",
                "[{type: FaultInjection, faultInjection: \
                  {delay: {fixedDelay: 150ms, percent: 0.1}, abort: {httpStatus: 503}}}]",
                FaultInjection {
                    delay: Some(FaultDelay {
                        fixed: Duration::from_millis(150),
                        per_million: 1000,
                    }),
                    abort: Some(FaultAbort {
                        status: AbortStatus::Http(http::StatusCode::SERVICE_UNAVAILABLE),
                        per_million: 1_000_000,
                    }),
                },
            ),
            (
                "grpc",
                "[{type: FaultInjection, faultInjection: \
                  {abort: {grpcStatus: RESOURCE_EXHAUSTED, percent: 33.3333}}}]",
                FaultInjection {
                    delay: None,
                    abort: Some(FaultAbort {
                        status: AbortStatus::Grpc(tonic::Code::ResourceExhausted),
                        per_million: 333_333,
                    }),
                },
            ),
        ];
        for (kind, filters, expected) in cases {
            let valid = validate(&config(kind, filters)).expect(filters);
            let destination = valid.destination(&name("a.default"));
            assert_eq!(
                destination.routes[0].rules[0].filters,
                [RouteFilter::FaultInjection(expected)]
            );
            let model = Snapshot {
                zone: String::new(),
                inbound: None,
                trust_bundle: Vec::new(),
                version: 1,
                destinations: vec![destination],
            };
            let wire = proto::Snapshot::from(&model);
            let bytes = prost::Message::encode_to_vec(&wire);
            let decoded: proto::Snapshot = prost::Message::decode(bytes.as_slice()).unwrap();
            assert_eq!(Snapshot::try_from(decoded).unwrap(), model, "{filters}");
        }
    }
}
