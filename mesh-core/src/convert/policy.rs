//! Conversions of the inbound policy between the model ([`crate::authz`]) and the wire.
//!
//! Wire to model turns each policy into the config's shapes and checks it with the same code as
//! the config (`check::policy`), so both refuse the same things with the same messages. An
//! empty `mtls` or `mode` is the default (`strict`, `enforce`); an empty `default_policy` is an
//! error, since guessing one could open a service up. Identities are not tied to a trust domain
//! here, as for endpoints.

use super::{non_empty, non_empty_owned, service_ref};
use crate::authz::{AuthorizationPolicy, AuthorizationRule, InboundPolicy, Operation, Source};
use crate::check::{self, FirstSeen};
use crate::config::{
    ClaimConditionSpec, GrpcOperationSpec, JwtHeaderSpec, JwtRuleSpec, PolicyFromSpec,
    PolicyPrincipalSpec, PolicyRuleSpec, PolicyToSpec,
};
use crate::error::FieldError;
use crate::jwt::{JwtRule, MAX_JWT_RULES};
use crate::proto;

// === model to wire ===

impl From<&InboundPolicy> for proto::InboundPolicy {
    fn from(inbound: &InboundPolicy) -> Self {
        Self {
            service: Some((&inbound.service).into()),
            mtls: inbound.mtls.as_str().to_owned(),
            default_policy: inbound.default_policy.as_str().to_owned(),
            exempt_paths: inbound
                .exempt_paths
                .iter()
                .map(ToString::to_string)
                .collect(),
            policies: inbound.policies.iter().map(Into::into).collect(),
            rate_limits: inbound.rate_limits.iter().map(Into::into).collect(),
            jwt_rules: inbound.jwt_rules.iter().map(Into::into).collect(),
        }
    }
}

impl From<&JwtRule> for proto::JwtRule {
    fn from(rule: &JwtRule) -> Self {
        Self {
            issuer: rule.issuer.to_string(),
            audiences: rule.audiences.clone(),
            from_headers: rule
                .from_headers
                .iter()
                .map(|h| proto::JwtHeader {
                    name: h.name.clone(),
                    prefix: h.prefix.clone(),
                })
                .collect(),
            jwks_uri: rule.jwks_uri.clone().unwrap_or_default(),
            jwks: rule.jwks.as_deref().unwrap_or_default().to_owned(),
        }
    }
}

impl From<&AuthorizationPolicy> for proto::AuthorizationPolicy {
    fn from(policy: &AuthorizationPolicy) -> Self {
        Self {
            name: policy.name.to_string(),
            route: policy.route.as_deref().unwrap_or_default().to_owned(),
            action: policy.action.as_str().to_owned(),
            mode: policy.mode.as_str().to_owned(),
            rules: policy.rules.iter().map(Into::into).collect(),
        }
    }
}

impl From<&AuthorizationRule> for proto::AuthorizationRule {
    fn from(rule: &AuthorizationRule) -> Self {
        Self {
            from: Some((&rule.from).into()),
            to: rule.to.as_ref().map(Into::into),
            principal: rule.principal.as_ref().map(|p| proto::PolicyPrincipal {
                request_principals: p
                    .request_principals
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                claims: p
                    .claims
                    .iter()
                    .map(|c| proto::ClaimCondition {
                        name: c.name.clone(),
                        values: c.values.clone(),
                    })
                    .collect(),
            }),
        }
    }
}

impl From<&Source> for proto::PolicyFrom {
    fn from(source: &Source) -> Self {
        Self {
            identities: source.identities.iter().map(ToString::to_string).collect(),
            namespaces: source.namespaces.clone(),
            service_accounts: source
                .service_accounts
                .iter()
                .map(ToString::to_string)
                .collect(),
            unauthenticated: source.unauthenticated,
        }
    }
}

impl From<&Operation> for proto::PolicyTo {
    fn from(operation: &Operation) -> Self {
        Self {
            methods: operation.methods.iter().map(ToString::to_string).collect(),
            paths: operation.paths.iter().map(ToString::to_string).collect(),
            grpc: operation
                .grpc
                .iter()
                .map(|g| proto::GrpcOperation {
                    service: g.service.clone(),
                    method: g.method.clone().unwrap_or_default(),
                })
                .collect(),
            ports: operation.ports.iter().map(|&p| u32::from(p)).collect(),
        }
    }
}

// === wire to model ===

/// The inbound policy at `path` (`inbound`); `None` when anything is wrong (reported).
pub(super) fn inbound(
    path: &str,
    wire: proto::InboundPolicy,
    errors: &mut Vec<FieldError>,
) -> Option<InboundPolicy> {
    let before = errors.len();
    let service = service_ref(&format!("{path}.service"), wire.service.as_ref(), errors);
    let mtls = check::policy::mtls(&format!("{path}.mtls"), non_empty(&wire.mtls), errors);
    let default_path = format!("{path}.defaultPolicy");
    let default_policy = match non_empty(&wire.default_policy) {
        None => {
            errors.push(FieldError::new(&default_path, "missing"));
            None
        }
        value => check::policy::default_policy(&default_path, value, errors),
    };
    let exempt_paths =
        check::policy::exempt_paths(&format!("{path}.exemptPaths"), &wire.exempt_paths, errors);
    let mut names = FirstSeen::new();
    let mut policies = Vec::with_capacity(wire.policies.len());
    for (i, policy) in wire.policies.iter().enumerate() {
        let policy_path = format!("{path}.policies[{i}]");
        check::policy::unique_policy_name(
            &format!("{policy_path}.name"),
            &policy.name,
            &mut names,
            errors,
        );
        let route = non_empty(&policy.route);
        if let Some(route) = route
            && let Err(message) = check::route_name(route)
        {
            errors.push(FieldError::new(format!("{policy_path}.route"), message));
        }
        let rules: Vec<PolicyRuleSpec> = policy.rules.iter().map(rule_spec).collect();
        if let Some(parts) = check::policy::policy_parts(
            &policy_path,
            non_empty(&policy.action),
            non_empty(&policy.mode),
            &rules,
            None,
            errors,
        ) {
            policies.push(AuthorizationPolicy {
                name: policy.name.as_str().into(),
                route: route.map(Into::into),
                action: parts.action,
                mode: parts.mode,
                rules: parts.rules,
            });
        }
    }
    let mut issuers = FirstSeen::new();
    let mut jwt_rules = Vec::with_capacity(wire.jwt_rules.len());
    if wire.jwt_rules.len() > MAX_JWT_RULES {
        errors.push(FieldError::new(
            format!("{path}.jwtRules"),
            format!("at most {MAX_JWT_RULES} issuers"),
        ));
    }
    for (i, rule) in wire.jwt_rules.iter().enumerate() {
        let rule_path = format!("{path}.jwtRules[{i}]");
        if let Some(rule) = check::jwt::jwt_rule(&rule_path, &jwt_rule_spec(rule), true, errors) {
            if let Some(first) = issuers.check(rule.issuer.clone(), &rule_path) {
                errors.push(FieldError::new(
                    format!("{rule_path}.issuer"),
                    format!("duplicate issuer (first at {first})"),
                ));
            }
            jwt_rules.push(rule);
        }
    }
    let rate_limits =
        super::rate_limit::rate_limits(&format!("{path}.rateLimits"), &wire.rate_limits, errors);
    if errors.len() != before {
        return None;
    }
    Some(InboundPolicy {
        service: service?,
        mtls,
        default_policy: default_policy?,
        exempt_paths,
        policies,
        jwt_rules,
        rate_limits,
    })
}

/// The wire JWT rule in the config's shape. A `jwksUri` rule whose keys were not fetched yet
/// comes with an empty `jwks`; it carries the URI alone.
fn jwt_rule_spec(wire: &proto::JwtRule) -> JwtRuleSpec {
    JwtRuleSpec {
        issuer: wire.issuer.clone(),
        audiences: wire.audiences.clone(),
        jwks_uri: non_empty_owned(&wire.jwks_uri),
        jwks: non_empty_owned(&wire.jwks),
        from_headers: wire
            .from_headers
            .iter()
            .map(|h| JwtHeaderSpec {
                name: h.name.clone(),
                prefix: non_empty_owned(&h.prefix),
            })
            .collect(),
    }
}

/// The wire rule in the config's shape.
fn rule_spec(wire: &proto::AuthorizationRule) -> PolicyRuleSpec {
    PolicyRuleSpec {
        principal: wire.principal.as_ref().map(|p| PolicyPrincipalSpec {
            request_principals: p.request_principals.clone(),
            claims: p
                .claims
                .iter()
                .map(|c| ClaimConditionSpec {
                    name: c.name.clone(),
                    values: c.values.clone(),
                })
                .collect(),
        }),
        from: wire.from.as_ref().map(|f| PolicyFromSpec {
            identities: f.identities.clone(),
            namespaces: f.namespaces.clone(),
            service_accounts: f.service_accounts.clone(),
            unauthenticated: f.unauthenticated,
        }),
        to: wire.to.as_ref().map(|t| PolicyToSpec {
            methods: t.methods.clone(),
            paths: t.paths.clone(),
            grpc: t
                .grpc
                .iter()
                .map(|g| GrpcOperationSpec {
                    service: g.service.clone(),
                    method: non_empty_owned(&g.method),
                })
                .collect(),
            ports: t.ports.clone(),
        }),
    }
}
