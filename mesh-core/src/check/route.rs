//! Route checks shared by config validation and wire conversion: the wire is turned into the
//! config's route shapes and checked here, so both refuse exactly the same things.
//!
//! Limits follow the Gateway API CRDs where they have one (16 headers or query parameters per
//! match, 16 backends and filters per rule, 64 HTTP or 8 gRPC matches per rule, 1024-character
//! paths, 4096-character header values).

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};

use super::{FirstSeen, dns_label};
use crate::config::{
    CreationTimestamp, FilterSpec, GrpcMethodMatchSpec, HeaderModifierSpec, MethodMatchSpec,
    PathMatchSpec, RequestMirrorSpec, RetrySpec, RouteMatchSpec, RouteRuleSpec, TimeoutsSpec,
    ValueMatchSpec,
};
use crate::duration;
use crate::error::FieldError;
use crate::snapshot::{
    GrpcMethodMatch, GrpcRouteMatch, HeaderMatch, HeaderModifier, HedgingPolicy, HttpRouteMatch,
    PathMatch, Pattern, QueryParamMatch, RequestMirror, RetryPolicy, RouteFilter, RouteKind,
    RouteMatch, ServiceName, Timeouts, ValueMatch,
};

/// The most retries after the first try: more only multiplies load on a failing backend.
pub(crate) const MAX_RETRY_ATTEMPTS: u32 = 10;
const MAX_HTTP_MATCHES: usize = 64;
const MAX_GRPC_MATCHES: usize = 8;
const MAX_CONDITIONS: usize = 16;
pub(crate) const MAX_BACKEND_REFS: usize = 16;
const MAX_FILTERS: usize = 16;
const MAX_PATH: usize = 1024;
const MAX_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 4096;

/// The gRPC status names, in code order (`OK` is code 0 and never retried): the names of
/// gRPC's `statuscodes.md`, as configs spell them and OpenTelemetry's `rpc.status_code` does.
pub const GRPC_STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of a gRPC status code, as the config spells it.
pub(crate) fn grpc_status_name(code: tonic::Code) -> &'static str {
    GRPC_STATUS_NAMES
        .get(code as usize)
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Everything a rule has beyond its name and backends, validated.
pub(crate) struct RuleParts {
    pub(crate) matches: Vec<RouteMatch>,
    pub(crate) filters: Vec<RouteFilter>,
    pub(crate) timeouts: Timeouts,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) hedging: Option<HedgingPolicy>,
}

/// A route's `kind`: `http` when omitted.
pub(crate) fn route_kind(
    path: &str,
    kind: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> RouteKind {
    match kind {
        None | Some("http") => RouteKind::Http,
        Some("grpc") => RouteKind::Grpc,
        Some(other) => {
            errors.push(FieldError::new(
                path,
                format!("unknown route kind {other:?}: expected \"http\" or \"grpc\""),
            ));
            RouteKind::Http
        }
    }
}

/// A route's creation time, in Unix seconds (fractions of a second are dropped).
pub(crate) fn creation_timestamp(
    path: &str,
    value: Option<&CreationTimestamp>,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    match value? {
        CreationTimestamp::Unix(secs) => Some(*secs),
        CreationTimestamp::Rfc3339(s) => {
            match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
                Ok(t) => Some(t.unix_timestamp()),
                Err(e) => {
                    errors.push(FieldError::new(
                        path,
                        format!("invalid RFC 3339 time {s:?}: {e}"),
                    ));
                    None
                }
            }
        }
    }
}

/// Checks a rule's matches, filters, timeouts, retry and hedging policies; `rule_path` is
/// `services[0].routes[1].rules[2]`. Backend references are the caller's.
pub(crate) fn rule_parts(
    rule_path: &str,
    kind: RouteKind,
    route_namespace: &str,
    rule: &RouteRuleSpec,
    errors: &mut Vec<FieldError>,
) -> RuleParts {
    let max_matches = match kind {
        RouteKind::Http => MAX_HTTP_MATCHES,
        RouteKind::Grpc => MAX_GRPC_MATCHES,
    };
    too_many(
        &format!("{rule_path}.matches"),
        rule.matches.len(),
        max_matches,
        errors,
    );
    let matches = rule
        .matches
        .iter()
        .enumerate()
        .filter_map(|(i, m)| route_match(&format!("{rule_path}.matches[{i}]"), kind, m, errors))
        .collect();
    too_many(
        &format!("{rule_path}.filters"),
        rule.filters.len(),
        MAX_FILTERS,
        errors,
    );
    too_many(
        &format!("{rule_path}.backendRefs"),
        rule.backend_refs.len(),
        MAX_BACKEND_REFS,
        errors,
    );
    let mut kinds_seen = FirstSeen::new();
    let filters = rule
        .filters
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let path = format!("{rule_path}.filters[{i}]");
            filter(&path, kind, route_namespace, f, &mut kinds_seen, errors)
        })
        .collect();
    let timeouts = rule
        .timeouts
        .as_ref()
        .map(|t| timeouts(&format!("{rule_path}.timeouts"), t, errors))
        .unwrap_or_default();
    let retry = rule
        .retry
        .as_ref()
        .and_then(|r| retry(&format!("{rule_path}.retry"), kind, r, errors));
    let hedging_path = format!("{rule_path}.hedging");
    if rule.retry.is_some() && rule.hedging.is_some() {
        // As gRPC's service config: a method has either a retry or a hedging policy.
        errors.push(FieldError::new(
            &hedging_path,
            "a rule has either a retry policy or a hedging policy, not both",
        ));
    }
    let hedging = rule.hedging.as_ref().and_then(|h| {
        let before = errors.len();
        let (codes, grpc_codes) = statuses(
            &hedging_path,
            kind,
            ("nonFatalCodes", &h.non_fatal_codes),
            ("nonFatalStatuses", &h.non_fatal_statuses),
            errors,
        );
        let checked = errors.len() == before;
        super::hedging::hedging(&hedging_path, h, (codes, grpc_codes, checked), errors)
    });
    RuleParts {
        matches,
        filters,
        timeouts,
        retry,
        hedging,
    }
}

fn too_many(path: &str, len: usize, max: usize, errors: &mut Vec<FieldError>) {
    if len > max {
        errors.push(FieldError::new(
            path,
            format!("{len} entries, at most {max} allowed"),
        ));
    }
}

fn route_match(
    path: &str,
    kind: RouteKind,
    spec: &RouteMatchSpec,
    errors: &mut Vec<FieldError>,
) -> Option<RouteMatch> {
    let before = errors.len();
    let headers = header_matches(&format!("{path}.headers"), &spec.headers, errors);
    let result = match kind {
        RouteKind::Http => {
            let path_match = path_match(&format!("{path}.path"), spec.path.as_ref(), errors);
            let method = match &spec.method {
                None => None,
                Some(MethodMatchSpec::Http(m)) => http_method(&format!("{path}.method"), m, errors),
                Some(MethodMatchSpec::Grpc(_)) => {
                    errors.push(FieldError::new(
                        format!("{path}.method"),
                        "an HTTP route matches a method name such as \"GET\", not a gRPC service/method",
                    ));
                    None
                }
            };
            let query_params =
                query_matches(&format!("{path}.queryParams"), &spec.query_params, errors);
            path_match.map(|path| {
                RouteMatch::Http(HttpRouteMatch {
                    path,
                    method,
                    headers,
                    query_params,
                })
            })
        }
        RouteKind::Grpc => {
            if spec.path.is_some() {
                errors.push(FieldError::new(
                    format!("{path}.path"),
                    "a gRPC route matches service and method, not paths",
                ));
            }
            if !spec.query_params.is_empty() {
                errors.push(FieldError::new(
                    format!("{path}.queryParams"),
                    "a gRPC route has no query parameters",
                ));
            }
            let method = match &spec.method {
                None => None,
                Some(MethodMatchSpec::Grpc(m)) => grpc_method(&format!("{path}.method"), m, errors),
                Some(MethodMatchSpec::Http(m)) => {
                    errors.push(FieldError::new(
                        format!("{path}.method"),
                        format!(
                            "a gRPC route matches {{service, method}}, not an HTTP method ({m:?})"
                        ),
                    ));
                    None
                }
            };
            Some(RouteMatch::Grpc(GrpcRouteMatch { method, headers }))
        }
    };
    // A match with any error is dropped whole; the errors say why.
    (errors.len() == before).then_some(result).flatten()
}

/// The HTTP methods Gateway API allows in a match.
const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

pub(crate) fn http_method(path: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<Method> {
    if !HTTP_METHODS.contains(&value) {
        errors.push(FieldError::new(
            path,
            format!(
                "unknown method {value:?}: expected one of {}",
                HTTP_METHODS.join(", ")
            ),
        ));
        return None;
    }
    Method::from_bytes(value.as_bytes()).ok()
}

fn path_match(
    path: &str,
    spec: Option<&PathMatchSpec>,
    errors: &mut Vec<FieldError>,
) -> Option<PathMatch> {
    let Some(spec) = spec else {
        return Some(PathMatch::Prefix("/".to_owned()));
    };
    let value = spec.value.clone().unwrap_or_else(|| "/".to_owned());
    let value_path = format!("{path}.value");
    let kind = spec.kind.as_deref().unwrap_or("PathPrefix");
    if value.len() > MAX_PATH {
        errors.push(FieldError::new(
            &value_path,
            format!("longer than {MAX_PATH} characters"),
        ));
        return None;
    }
    match kind {
        "Exact" | "PathPrefix" => match check_path_value(&value) {
            Ok(()) if kind == "Exact" => Some(PathMatch::Exact(value)),
            Ok(()) => Some(PathMatch::Prefix(value)),
            Err(reason) => {
                errors.push(FieldError::new(
                    &value_path,
                    format!("invalid path {value:?}: {reason}"),
                ));
                None
            }
        },
        "RegularExpression" => {
            pattern(&value_path, &value, errors).map(PathMatch::RegularExpression)
        }
        other => {
            errors.push(FieldError::new(
                format!("{path}.type"),
                format!(
                    "unknown path match type {other:?}: expected Exact, PathPrefix or RegularExpression"
                ),
            ));
            None
        }
    }
}

/// The Gateway API CRD's rules for Exact and PathPrefix values.
pub(crate) fn check_path_value(value: &str) -> Result<(), &'static str> {
    if !value.starts_with('/') {
        return Err("must start with '/'");
    }
    if value.contains("//") {
        return Err("must not contain '//'");
    }
    if value.contains("/./")
        || value.contains("/../")
        || value.ends_with("/.")
        || value.ends_with("/..")
    {
        return Err("must not contain '.' or '..' segments");
    }
    if value.contains("%2f") || value.contains("%2F") {
        return Err("must not contain an encoded '/' (%2F)");
    }
    if value.contains('#') || value.contains('?') {
        return Err("must not contain '#' or '?'");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    Ok(())
}

fn pattern(path: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<Pattern> {
    match Pattern::new(value) {
        Ok(p) => Some(p),
        Err(e) => {
            // The regex crate's message spans several lines, drawing a caret under the
            // problem; its last line says what the problem is.
            let message = e.to_string();
            let reason = message
                .lines()
                .last()
                .map(|line| line.trim_start_matches("error: "))
                .unwrap_or(&message)
                .to_owned();
            errors.push(FieldError::new(
                path,
                format!("invalid regular expression {value:?}: {reason}"),
            ));
            None
        }
    }
}

fn value_match_kind(path: &str, kind: Option<&str>, errors: &mut Vec<FieldError>) -> Option<bool> {
    match kind.unwrap_or("Exact") {
        "Exact" => Some(false),
        "RegularExpression" => Some(true),
        other => {
            errors.push(FieldError::new(
                format!("{path}.type"),
                format!("unknown match type {other:?}: expected Exact or RegularExpression"),
            ));
            None
        }
    }
}

fn header_matches(
    path: &str,
    specs: &[ValueMatchSpec],
    errors: &mut Vec<FieldError>,
) -> Vec<HeaderMatch> {
    too_many(path, specs.len(), MAX_CONDITIONS, errors);
    let mut seen = FirstSeen::new();
    specs
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| {
            let path = format!("{path}[{i}]");
            let regex = value_match_kind(&path, spec.kind.as_deref(), errors);
            let name = header_name(&format!("{path}.name"), &spec.name, errors);
            if let Some(name) = &name
                && let Some(first) = seen.check(name.clone(), &format!("{path}.name"))
            {
                errors.push(FieldError::new(
                    format!("{path}.name"),
                    format!("duplicate header {:?} (first at {first})", name.as_str()),
                ));
                return None;
            }
            let value_path = format!("{path}.value");
            let value = match regex? {
                true => ValueMatch::RegularExpression(pattern(&value_path, &spec.value, errors)?),
                false => {
                    header_value(&value_path, &spec.value, errors)?;
                    ValueMatch::Exact(spec.value.clone())
                }
            };
            Some(HeaderMatch { name: name?, value })
        })
        .collect()
}

fn query_matches(
    path: &str,
    specs: &[ValueMatchSpec],
    errors: &mut Vec<FieldError>,
) -> Vec<QueryParamMatch> {
    too_many(path, specs.len(), MAX_CONDITIONS, errors);
    let mut seen = FirstSeen::new();
    specs
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| {
            let path = format!("{path}[{i}]");
            let regex = value_match_kind(&path, spec.kind.as_deref(), errors);
            let name_path = format!("{path}.name");
            let name_ok = match check_token(&spec.name) {
                Ok(()) => match seen.check(spec.name.as_str(), &name_path) {
                    None => true,
                    Some(first) => {
                        errors.push(FieldError::new(
                            &name_path,
                            format!(
                                "duplicate query parameter {:?} (first at {first})",
                                spec.name
                            ),
                        ));
                        false
                    }
                },
                Err(reason) => {
                    errors.push(FieldError::new(
                        &name_path,
                        format!("invalid query parameter name {:?}: {reason}", spec.name),
                    ));
                    false
                }
            };
            let value_path = format!("{path}.value");
            let value = match regex? {
                true => ValueMatch::RegularExpression(pattern(&value_path, &spec.value, errors)?),
                false => {
                    if spec.value.is_empty() || spec.value.len() > 1024 {
                        errors.push(FieldError::new(&value_path, "must be 1 to 1024 characters"));
                        return None;
                    }
                    ValueMatch::Exact(spec.value.clone())
                }
            };
            name_ok.then(|| QueryParamMatch {
                name: spec.name.clone(),
                value,
            })
        })
        .collect()
}

/// An RFC 7230 token (header and query parameter names), 1 to 256 characters.
fn check_token(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("empty");
    }
    if value.len() > MAX_NAME {
        return Err("longer than 256 characters");
    }
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !value.bytes().all(tchar) {
        return Err("only letters, digits and !#$%&'*+-.^_`|~ are allowed");
    }
    Ok(())
}

fn header_name(path: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<HeaderName> {
    let checked = check_token(value).and_then(|()| {
        HeaderName::from_bytes(value.as_bytes()).map_err(|_| "not a valid header name")
    });
    match checked {
        Ok(name) => Some(name),
        Err(reason) => {
            errors.push(FieldError::new(
                path,
                format!("invalid header name {value:?}: {reason}"),
            ));
            None
        }
    }
}

fn header_value(path: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<HeaderValue> {
    let checked = if value.len() > MAX_HEADER_VALUE {
        Err("longer than 4096 characters")
    } else {
        HeaderValue::from_str(value).map_err(|_| "control characters are not allowed")
    };
    match checked {
        Ok(v) => Some(v),
        Err(reason) => {
            errors.push(FieldError::new(
                path,
                format!("invalid header value {value:?}: {reason}"),
            ));
            None
        }
    }
}

fn grpc_method(
    path: &str,
    spec: &GrpcMethodMatchSpec,
    errors: &mut Vec<FieldError>,
) -> Option<GrpcMethodMatch> {
    let regex = value_match_kind(path, spec.kind.as_deref(), errors)?;
    if spec.service.is_none() && spec.method.is_none() {
        errors.push(FieldError::new(
            path,
            "at least one of service and method is required",
        ));
        return None;
    }
    let one = |field: &str, value: &Option<String>, errors: &mut Vec<FieldError>| {
        let Some(value) = value else {
            return Some(None);
        };
        let field_path = format!("{path}.{field}");
        if regex {
            return pattern(&field_path, value, errors)
                .map(|p| Some(ValueMatch::RegularExpression(p)));
        }
        let valid = if field == "service" {
            check_grpc_service(value)
        } else {
            check_grpc_ident(value)
        };
        match valid {
            Ok(()) => Some(Some(ValueMatch::Exact(value.clone()))),
            Err(reason) => {
                errors.push(FieldError::new(
                    field_path,
                    format!("invalid gRPC {field} {value:?}: {reason}"),
                ));
                None
            }
        }
    };
    let service = one("service", &spec.service, errors);
    let method = one("method", &spec.method, errors);
    Some(GrpcMethodMatch {
        service: service?,
        method: method?,
    })
}

/// A protobuf identifier: a letter or `_`, then letters, digits or `_`.
pub(crate) fn check_grpc_ident(value: &str) -> Result<(), &'static str> {
    let mut bytes = value.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return Err("must start with a letter or '_'"),
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err("only letters, digits and '_' are allowed");
    }
    if value.len() > 1024 {
        return Err("longer than 1024 characters");
    }
    Ok(())
}

/// A fully qualified service: dot-separated identifiers (`helloworld.Greeter`).
pub(crate) fn check_grpc_service(value: &str) -> Result<(), &'static str> {
    if value.len() > 1024 {
        return Err("longer than 1024 characters");
    }
    value
        .split('.')
        .try_for_each(check_grpc_ident)
        .map_err(|_| "must be dot-separated identifiers such as helloworld.Greeter")
}

fn filter(
    path: &str,
    route_kind: RouteKind,
    route_namespace: &str,
    spec: &FilterSpec,
    kinds_seen: &mut FirstSeen<&'static str>,
    errors: &mut Vec<FieldError>,
) -> Option<RouteFilter> {
    let kind: &'static str = match spec.kind.as_str() {
        "RequestHeaderModifier" => "RequestHeaderModifier",
        "ResponseHeaderModifier" => "ResponseHeaderModifier",
        "RequestMirror" => "RequestMirror",
        "FaultInjection" => "FaultInjection",
        other => {
            errors.push(FieldError::new(
                format!("{path}.type"),
                format!(
                    "unsupported filter type {other:?}: expected RequestHeaderModifier, \
                     ResponseHeaderModifier, RequestMirror or FaultInjection"
                ),
            ));
            return None;
        }
    };
    // Exactly the field that `type` names may be set, as the Gateway API CRD requires.
    let fields = [
        (
            "requestHeaderModifier",
            "RequestHeaderModifier",
            spec.request_header_modifier.is_some(),
        ),
        (
            "responseHeaderModifier",
            "ResponseHeaderModifier",
            spec.response_header_modifier.is_some(),
        ),
        (
            "requestMirror",
            "RequestMirror",
            spec.request_mirror.is_some(),
        ),
        (
            "faultInjection",
            "FaultInjection",
            spec.fault_injection.is_some(),
        ),
    ];
    let mut ok = true;
    for (field, owner, set) in fields {
        if owner == kind && !set {
            errors.push(FieldError::new(
                format!("{path}.{field}"),
                format!("required when type is {kind}"),
            ));
            ok = false;
        } else if owner != kind && set {
            errors.push(FieldError::new(
                format!("{path}.{field}"),
                format!("not allowed when type is {kind}"),
            ));
            ok = false;
        }
    }
    // Header modifiers and fault injection may appear once per rule; mirrors may repeat.
    if kind != "RequestMirror"
        && let Some(first) = kinds_seen.check(kind, path)
    {
        errors.push(FieldError::new(
            format!("{path}.type"),
            format!("{kind} may appear once per rule (first at {first})"),
        ));
        ok = false;
    }
    if !ok {
        return None;
    }
    match kind {
        "RequestHeaderModifier" => spec
            .request_header_modifier
            .as_ref()
            .and_then(|m| header_modifier(&format!("{path}.requestHeaderModifier"), m, errors))
            .map(RouteFilter::RequestHeaderModifier),
        "ResponseHeaderModifier" => spec
            .response_header_modifier
            .as_ref()
            .and_then(|m| header_modifier(&format!("{path}.responseHeaderModifier"), m, errors))
            .map(RouteFilter::ResponseHeaderModifier),
        "FaultInjection" => spec
            .fault_injection
            .as_ref()
            .and_then(|f| {
                super::fault::fault_injection(
                    &format!("{path}.faultInjection"),
                    route_kind,
                    f,
                    errors,
                )
            })
            .map(RouteFilter::FaultInjection),
        _ => spec
            .request_mirror
            .as_ref()
            .and_then(|m| {
                request_mirror(&format!("{path}.requestMirror"), route_namespace, m, errors)
            })
            .map(RouteFilter::RequestMirror),
    }
}

fn header_modifier(
    path: &str,
    spec: &HeaderModifierSpec,
    errors: &mut Vec<FieldError>,
) -> Option<HeaderModifier> {
    let before = errors.len();
    let pairs =
        |list: &str, headers: &[crate::config::HeaderSpec], errors: &mut Vec<FieldError>| {
            too_many(
                &format!("{path}.{list}"),
                headers.len(),
                MAX_CONDITIONS,
                errors,
            );
            let mut seen = FirstSeen::new();
            headers
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let item = format!("{path}.{list}[{i}]");
                    let name = header_name(&format!("{item}.name"), &h.name, errors)?;
                    if let Some(first) = seen.check(name.clone(), &format!("{item}.name")) {
                        errors.push(FieldError::new(
                            format!("{item}.name"),
                            format!("duplicate header {:?} (first at {first})", name.as_str()),
                        ));
                        return None;
                    }
                    let value = header_value(&format!("{item}.value"), &h.value, errors)?;
                    Some((name, value))
                })
                .collect::<Vec<_>>()
        };
    let set = pairs("set", &spec.set, errors);
    let add = pairs("add", &spec.add, errors);
    too_many(
        &format!("{path}.remove"),
        spec.remove.len(),
        MAX_CONDITIONS,
        errors,
    );
    let mut seen = FirstSeen::new();
    let remove = spec
        .remove
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let item = format!("{path}.remove[{i}]");
            let name = header_name(&item, n, errors)?;
            if let Some(first) = seen.check(name.clone(), &item) {
                errors.push(FieldError::new(
                    &item,
                    format!("duplicate header {:?} (first at {first})", name.as_str()),
                ));
                return None;
            }
            Some(name)
        })
        .collect();
    (errors.len() == before).then_some(HeaderModifier { set, add, remove })
}

fn request_mirror(
    path: &str,
    route_namespace: &str,
    spec: &RequestMirrorSpec,
    errors: &mut Vec<FieldError>,
) -> Option<RequestMirror> {
    let backend_path = format!("{path}.backendRef");
    let backend = service(
        &backend_path,
        &spec.backend_ref.name,
        spec.backend_ref.namespace.as_deref(),
        route_namespace,
        errors,
    );
    let port = port(
        &format!("{backend_path}.port"),
        spec.backend_ref.port,
        errors,
    );
    let percent = spec.percent.unwrap_or(100);
    if percent > 100 {
        errors.push(FieldError::new(
            format!("{path}.percent"),
            format!("percent {percent} is out of range 0 to 100"),
        ));
        return None;
    }
    Some(RequestMirror {
        backend: backend?,
        port: port?,
        percent,
    })
}

/// A referenced service at `path` (`...backendRefs[0]`): `name`, and `namespace` or the route's.
pub(crate) fn service(
    path: &str,
    name: &str,
    namespace: Option<&str>,
    route_namespace: &str,
    errors: &mut Vec<FieldError>,
) -> Option<ServiceName> {
    let mut ok = true;
    if let Err(message) = dns_label("name", name) {
        errors.push(FieldError::new(format!("{path}.name"), message));
        ok = false;
    }
    // Gateway API: a reference without a namespace means the route's own, and a route listed
    // under a service lives in that service's namespace.
    let resolved = namespace.unwrap_or(route_namespace);
    if let Err(message) = dns_label("namespace", resolved) {
        // An omitted namespace inherits the service's, which is reported there already.
        if namespace.is_some() {
            errors.push(FieldError::new(format!("{path}.namespace"), message));
        }
        ok = false;
    }
    ok.then(|| ServiceName {
        namespace: resolved.to_owned(),
        name: name.to_owned(),
    })
}

/// An optional port, 1 to 65535: `None` when invalid (reported), `Some(None)` when omitted.
pub(crate) fn port(
    path: &str,
    value: Option<u32>,
    errors: &mut Vec<FieldError>,
) -> Option<Option<u16>> {
    match value {
        None => Some(None),
        Some(p) => match u16::try_from(p) {
            Ok(p) if p != 0 => Some(Some(p)),
            _ => {
                errors.push(FieldError::new(
                    path,
                    format!("port {p} is out of range 1 to 65535"),
                ));
                None
            }
        },
    }
}

fn duration_field(
    path: &str,
    value: Option<&String>,
    errors: &mut Vec<FieldError>,
) -> Option<Duration> {
    let value = value?;
    duration::parse(value)
        .map_err(|e| errors.push(FieldError::new(path, e.to_string())))
        .ok()
}

fn timeouts(path: &str, spec: &TimeoutsSpec, errors: &mut Vec<FieldError>) -> Timeouts {
    let request = duration_field(&format!("{path}.request"), spec.request.as_ref(), errors);
    let backend_request = duration_field(
        &format!("{path}.backendRequest"),
        spec.backend_request.as_ref(),
        errors,
    );
    // As in the Gateway API CRD: a per-try timeout longer than a (non-zero) request timeout
    // could never fire, and is a mistake.
    if let (Some(request), Some(backend)) = (request, backend_request)
        && !request.is_zero()
        && backend > request
    {
        errors.push(FieldError::new(
            format!("{path}.backendRequest"),
            format!(
                "{} is longer than the request timeout {}",
                duration::format(backend),
                duration::format(request)
            ),
        ));
    }
    Timeouts {
        request,
        backend_request,
    }
}

fn retry(
    path: &str,
    kind: RouteKind,
    spec: &RetrySpec,
    errors: &mut Vec<FieldError>,
) -> Option<RetryPolicy> {
    let before = errors.len();
    let (codes, grpc_codes) = statuses(
        path,
        kind,
        ("codes", &spec.codes),
        ("statuses", &spec.statuses),
        errors,
    );
    let attempts = spec.attempts.unwrap_or(1);
    if attempts > MAX_RETRY_ATTEMPTS {
        errors.push(FieldError::new(
            format!("{path}.attempts"),
            format!("{attempts} attempts is out of range 0 to {MAX_RETRY_ATTEMPTS}"),
        ));
    }
    let backoff = duration_field(&format!("{path}.backoff"), spec.backoff.as_ref(), errors);
    (errors.len() == before).then_some(RetryPolicy {
        codes,
        grpc_codes,
        attempts,
        backoff,
    })
}

/// A policy's HTTP status codes (400 to 599, for HTTP routes) and gRPC status names (known
/// error statuses, for gRPC routes), each given as its field's name and its values.
pub(crate) fn statuses(
    path: &str,
    kind: RouteKind,
    (codes_field, codes): (&str, &[u32]),
    (statuses_field, names): (&str, &[String]),
    errors: &mut Vec<FieldError>,
) -> (Vec<StatusCode>, Vec<tonic::Code>) {
    let mut http = Vec::with_capacity(codes.len());
    let mut grpc = Vec::with_capacity(names.len());
    match kind {
        RouteKind::Http => {
            if !names.is_empty() {
                errors.push(FieldError::new(
                    format!("{path}.{statuses_field}"),
                    format!("gRPC statuses apply to gRPC routes; HTTP routes use {codes_field}"),
                ));
            }
            for (i, &code) in codes.iter().enumerate() {
                match u16::try_from(code).ok().filter(|c| (400..=599).contains(c)) {
                    // In range 400 to 599, so a valid status code.
                    Some(c) => http.extend(StatusCode::from_u16(c).ok()),
                    None => errors.push(FieldError::new(
                        format!("{path}.{codes_field}[{i}]"),
                        format!("status code {code} is out of range 400 to 599"),
                    )),
                }
            }
        }
        RouteKind::Grpc => {
            if !codes.is_empty() {
                errors.push(FieldError::new(
                    format!("{path}.{codes_field}"),
                    format!(
                        "HTTP status codes apply to HTTP routes; gRPC routes use {statuses_field}"
                    ),
                ));
            }
            for (i, name) in names.iter().enumerate() {
                match GRPC_STATUS_NAMES.iter().position(|n| n == name) {
                    Some(code) if code > 0 => grpc.push(tonic::Code::from_i32(code as i32)),
                    _ => errors.push(FieldError::new(
                        format!("{path}.{statuses_field}[{i}]"),
                        format!("unknown or non-error gRPC status {name:?}"),
                    )),
                }
            }
        }
    }
    (http, grpc)
}
