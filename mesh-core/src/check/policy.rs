//! Authorization checks shared by config validation and wire conversion: the wire is turned into
//! the config's policy shapes and checked here, so both refuse the same things with the same
//! messages.

use std::sync::Arc;

use super::route::{check_grpc_ident, check_grpc_service, check_path_value, http_method, port};
use super::{FirstSeen, dns_label, identity};
use crate::authz::{
    Action, AuthorizationRule, DefaultPolicy, GrpcOperation, IdentityMatch, MtlsMode, Operation,
    PathPattern, PolicyMode, ServiceAccountRef, Source,
};
use crate::config::{PolicyFromSpec, PolicyRuleSpec, PolicyToSpec};
use crate::dns::{check_dns_label, check_dns_subdomain};
use crate::error::FieldError;
use crate::spiffe::{SpiffeId, TrustDomain};

/// The longest path pattern, as for route paths.
const MAX_PATH: usize = 1024;

/// A policy's checked action, mode and rules.
pub(crate) struct PolicyParts {
    pub(crate) action: Action,
    pub(crate) mode: PolicyMode,
    pub(crate) rules: Vec<AuthorizationRule>,
}

/// A policy name: a DNS-1123 subdomain, as Kubernetes object names are.
pub(crate) fn policy_name(value: &str) -> Result<(), String> {
    check_dns_subdomain(value).map_err(|reason| format!("invalid policy name {value:?}: {reason}"))
}

/// Checks a policy name at `path` and that it is the first of its kind in `seen`.
pub(crate) fn unique_policy_name(
    path: &str,
    name: &str,
    seen: &mut FirstSeen<String>,
    errors: &mut Vec<FieldError>,
) {
    if let Err(message) = policy_name(name) {
        errors.push(FieldError::new(path, message));
    } else if let Some(first) = seen.check(name.to_owned(), path) {
        errors.push(FieldError::new(
            path,
            format!("duplicate policy name {name:?} (first at {first})"),
        ));
    }
}

/// A service's mTLS mode at `path`: `strict` when omitted.
pub(crate) fn mtls(path: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> MtlsMode {
    value.map_or(MtlsMode::Strict, |v| {
        v.parse()
            .map_err(|message: String| errors.push(FieldError::new(path, message)))
            // Reported; strict is the safe placeholder for a config that will be refused.
            .unwrap_or(MtlsMode::Strict)
    })
}

/// A default policy at `path`, when given.
pub(crate) fn default_policy(
    path: &str,
    value: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<DefaultPolicy> {
    value.and_then(|v| {
        v.parse()
            .map_err(|message: String| errors.push(FieldError::new(path, message)))
            .ok()
    })
}

/// Exempt paths at `path` (`services[0].exemptPaths`).
pub(crate) fn exempt_paths(
    path: &str,
    values: &[String],
    errors: &mut Vec<FieldError>,
) -> Vec<PathPattern> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, value)| path_pattern(&format!("{path}[{i}]"), value, errors))
        .collect()
}

/// A policy's action, mode and rules, at `path` (`policies[0]`).
pub(crate) fn policy_parts(
    path: &str,
    action: Option<&str>,
    mode: Option<&str>,
    rules: &[PolicyRuleSpec],
    trust_domain: Option<&TrustDomain>,
    errors: &mut Vec<FieldError>,
) -> Option<PolicyParts> {
    let before = errors.len();
    let action = match action {
        None => {
            errors.push(FieldError::new(
                format!("{path}.action"),
                "required: ALLOW or DENY",
            ));
            None
        }
        Some(value) => value
            .parse()
            .map_err(|message: String| {
                errors.push(FieldError::new(format!("{path}.action"), message))
            })
            .ok(),
    };
    let mode = match mode {
        None => Some(PolicyMode::Enforce),
        Some(value) => value
            .parse()
            .map_err(|message: String| {
                errors.push(FieldError::new(format!("{path}.mode"), message))
            })
            .ok(),
    };
    if rules.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.rules"),
            "at least one rule is required",
        ));
    }
    let rules: Vec<AuthorizationRule> = rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            policy_rule(&format!("{path}.rules[{i}]"), rule, trust_domain, errors)
        })
        .collect();
    if errors.len() != before {
        return None;
    }
    Some(PolicyParts {
        action: action?,
        mode: mode?,
        rules,
    })
}

fn policy_rule(
    path: &str,
    spec: &PolicyRuleSpec,
    trust_domain: Option<&TrustDomain>,
    errors: &mut Vec<FieldError>,
) -> Option<AuthorizationRule> {
    let from = match &spec.from {
        Some(from) => source(&format!("{path}.from"), from, trust_domain, errors),
        None => {
            errors.push(FieldError::new(
                format!("{path}.from"),
                "required: the callers the rule is about",
            ));
            None
        }
    };
    let principal = match &spec.principal {
        Some(p) => Some(super::jwt::principal(
            &format!("{path}.principal"),
            p,
            errors,
        )?),
        None => None,
    };
    let to = match &spec.to {
        Some(to) => Some(operation(&format!("{path}.to"), to, errors)?),
        None => None,
    };
    Some(AuthorizationRule {
        from: from?,
        principal,
        to,
    })
}

fn source(
    path: &str,
    spec: &PolicyFromSpec,
    trust_domain: Option<&TrustDomain>,
    errors: &mut Vec<FieldError>,
) -> Option<Source> {
    let before = errors.len();
    if spec.identities.is_empty()
        && spec.namespaces.is_empty()
        && spec.service_accounts.is_empty()
        && !spec.unauthenticated
    {
        errors.push(FieldError::new(
            path,
            "at least one of identities, namespaces, serviceAccounts and unauthenticated is required",
        ));
    }
    let identities = spec
        .identities
        .iter()
        .enumerate()
        .filter_map(|(i, value)| {
            identity_match(value, trust_domain)
                .map_err(|m| errors.push(FieldError::new(format!("{path}.identities[{i}]"), m)))
                .ok()
        })
        .collect();
    let namespaces = spec
        .namespaces
        .iter()
        .enumerate()
        .filter_map(|(i, value)| {
            dns_label("namespace", value)
                .map_err(|m| errors.push(FieldError::new(format!("{path}.namespaces[{i}]"), m)))
                .ok()
                .map(|()| value.clone())
        })
        .collect();
    let service_accounts = spec
        .service_accounts
        .iter()
        .enumerate()
        .filter_map(|(i, value)| {
            service_account(value)
                .map_err(|m| {
                    errors.push(FieldError::new(format!("{path}.serviceAccounts[{i}]"), m));
                })
                .ok()
        })
        .collect();
    (errors.len() == before).then_some(Source {
        identities,
        namespaces,
        service_accounts,
        unauthenticated: spec.unauthenticated,
    })
}

/// `*`, an exact SPIFFE ID, or a SPIFFE ID prefix with a trailing `*`; in `trust_domain` when
/// one is required.
fn identity_match(
    value: &str,
    trust_domain: Option<&TrustDomain>,
) -> Result<IdentityMatch, String> {
    if value == "*" {
        return Ok(IdentityMatch::Any);
    }
    let Some(prefix) = value.strip_suffix('*') else {
        return identity(value, trust_domain).map(IdentityMatch::Exact);
    };
    // What comes before the `*` must itself be a SPIFFE ID (a trailing `/` aside), so that a
    // typo is refused rather than silently matching nothing.
    let id = SpiffeId::parse(prefix.strip_suffix('/').unwrap_or(prefix))
        .map_err(|e| format!("invalid identity pattern {value:?}: {e}"))?;
    if let Some(td) = trust_domain
        && id.trust_domain() != td
    {
        return Err(format!(
            "identity {value:?} is not in trust domain {:?}",
            td.as_str()
        ));
    }
    Ok(IdentityMatch::Prefix(prefix.to_owned()))
}

/// `namespace/serviceAccount`, both DNS labels.
pub(crate) fn service_account(value: &str) -> Result<ServiceAccountRef, String> {
    let (namespace, name) = value
        .split_once('/')
        .ok_or_else(|| format!("invalid service account {value:?}: expected namespace/name"))?;
    for (what, part) in [("namespace", namespace), ("name", name)] {
        check_dns_label(part).map_err(|reason| {
            format!("invalid service account {value:?}: {what} {part:?}: {reason}")
        })?;
    }
    Ok(ServiceAccountRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

fn operation(path: &str, spec: &PolicyToSpec, errors: &mut Vec<FieldError>) -> Option<Operation> {
    let before = errors.len();
    if spec.methods.is_empty()
        && spec.paths.is_empty()
        && spec.grpc.is_empty()
        && spec.ports.is_empty()
    {
        errors.push(FieldError::new(
            path,
            "at least one of methods, paths, grpc and ports is required; omit `to` to match every request",
        ));
    }
    let methods = spec
        .methods
        .iter()
        .enumerate()
        .filter_map(|(i, m)| http_method(&format!("{path}.methods[{i}]"), m, errors))
        .collect();
    let paths = spec
        .paths
        .iter()
        .enumerate()
        .filter_map(|(i, p)| path_pattern(&format!("{path}.paths[{i}]"), p, errors))
        .collect();
    let grpc = spec
        .grpc
        .iter()
        .enumerate()
        .filter_map(|(i, g)| {
            let at = format!("{path}.grpc[{i}]");
            let service = check_grpc_service(&g.service)
                .map_err(|reason| {
                    errors.push(FieldError::new(
                        format!("{at}.service"),
                        format!("invalid gRPC service {:?}: {reason}", g.service),
                    ));
                })
                .ok();
            let method = match &g.method {
                None => Some(None),
                Some(method) => check_grpc_ident(method)
                    .map_err(|reason| {
                        errors.push(FieldError::new(
                            format!("{at}.method"),
                            format!("invalid gRPC method {method:?}: {reason}"),
                        ));
                    })
                    .ok()
                    .map(|()| Some(method.clone())),
            };
            service?;
            Some(GrpcOperation {
                service: g.service.clone(),
                method: method?,
            })
        })
        .collect();
    let ports = spec
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, &p)| port(&format!("{path}.ports[{i}]"), Some(p), errors).flatten())
        .collect();
    (errors.len() == before).then_some(Operation {
        methods,
        paths,
        grpc,
        ports,
    })
}

/// A path, or a path prefix with a trailing `*`; the part before the `*` follows the rules of
/// route paths.
fn path_pattern(path: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<PathPattern> {
    let result = if value.len() > MAX_PATH {
        Err(format!("longer than {MAX_PATH} characters"))
    } else {
        let (text, prefix) = match value.strip_suffix('*') {
            Some(text) => (text, true),
            None => (value, false),
        };
        if text.contains('*') {
            Err(format!(
                "invalid path {value:?}: '*' is only allowed at the end"
            ))
        } else {
            check_path_value(text)
                .map_err(|reason| format!("invalid path {value:?}: {reason}"))
                .map(|()| {
                    let text: Arc<str> = Arc::from(text);
                    if prefix {
                        PathPattern::Prefix(text)
                    } else {
                        PathPattern::Exact(text)
                    }
                })
        }
    };
    result
        .map_err(|message| errors.push(FieldError::new(path, message)))
        .ok()
}
