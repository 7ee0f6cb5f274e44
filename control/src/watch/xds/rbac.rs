//! A service's authorization policies as gRPC RBAC filters (gRFC A41) for xDS servers.
//!
//! The mesh evaluates exemptions, then DENY policies, then ALLOW policies, then the service's
//! default. That becomes two filters in a row: a DENY filter holding every enforced DENY rule
//! (each excluding the exempt paths), then an ALLOW filter holding every enforced ALLOW rule and
//! the exempt paths, or, when no ALLOW policy exists, the default (`deny` allows only the
//! exempt paths, `all-authenticated` any caller with a certificate, `all-unauthenticated` and
//! `audit` need no filter). Audit-mode policies decide nothing and are left out.
//!
//! What A41 cannot express fails closed: a policy limited to one of the service's routes (an
//! xDS server has no routes to match) or conditions on the end user (JWT) make the whole
//! service deny every call, and [`Translation::refused`] says why, for the log.
//! mTLS is always required on an xDS server's listener, so `permissive` is served as `strict`
//! and `unauthenticated` sources match no caller.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{PathMatcher, StringMatcher, path_matcher};
use http::Method;
use mesh_core::authz::{
    Action, AuthorizationRule, DefaultPolicy, IdentityMatch, InboundPolicy, Operation, PathPattern,
    PolicyMode, Source,
};

use super::matchers::{escape, exact, prefix, regex_matcher};

/// The RBAC filters of a service, in order, with their filter names.
#[derive(Debug, Default)]
pub(crate) struct Translation {
    /// `(filter name, filter config)`, DENY before ALLOW.
    pub(crate) filters: Vec<(&'static str, Rbac)>,
    /// Why the policy could not be translated and every call is denied instead.
    pub(crate) refused: Option<String>,
}

/// Translates `policy`.
pub(crate) fn translate(policy: &InboundPolicy) -> Translation {
    if let Some(reason) = untranslatable(policy) {
        return Translation {
            filters: vec![(
                "mesh.rbac.allow",
                filter(rbac::Action::Allow, HashMap::new()),
            )],
            refused: Some(format!(
                "{}: {reason}; every call is denied on xDS servers",
                policy.service
            )),
        };
    }
    let enforced = |action: Action| {
        policy
            .policies
            .iter()
            .filter(move |p| p.mode == PolicyMode::Enforce && p.action == action)
    };
    let exempt: Vec<Permission> = policy.exempt_paths.iter().map(path_permission).collect();
    let mut filters = Vec::new();

    let mut deny = HashMap::new();
    for p in enforced(Action::Deny) {
        for (i, rule) in p.rules.iter().enumerate() {
            let mut permission = operation(rule);
            if !exempt.is_empty() {
                permission = and(vec![permission, not(or(exempt.clone()))]);
            }
            deny.insert(
                format!("{}[{i}]", p.name),
                policy_of(permission, source(&rule.from)),
            );
        }
    }
    if !deny.is_empty() {
        filters.push(("mesh.rbac.deny", filter(rbac::Action::Deny, deny)));
    }

    let mut allow = HashMap::new();
    for p in enforced(Action::Allow) {
        for (i, rule) in p.rules.iter().enumerate() {
            allow.insert(
                format!("{}[{i}]", p.name),
                policy_of(operation(rule), source(&rule.from)),
            );
        }
    }
    let has_allow = !allow.is_empty();
    if !has_allow {
        match policy.default_policy {
            DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => {}
            DefaultPolicy::AllAuthenticated => {
                allow.insert(
                    "default:all-authenticated".to_owned(),
                    policy_of(any_permission(), any_authenticated()),
                );
            }
            // An ALLOW filter with nothing (but the exempt paths) in it denies every call.
            DefaultPolicy::Deny => {}
        }
    }
    let needs_allow = has_allow
        || matches!(
            policy.default_policy,
            DefaultPolicy::AllAuthenticated | DefaultPolicy::Deny
        );
    if needs_allow {
        if !exempt.is_empty() {
            allow.insert(
                "exempt".to_owned(),
                policy_of(
                    or(exempt),
                    Principal {
                        identifier: Some(principal::Identifier::Any(true)),
                    },
                ),
            );
        }
        filters.push(("mesh.rbac.allow", filter(rbac::Action::Allow, allow)));
    }
    Translation {
        filters,
        refused: None,
    }
}

/// Why `policy` cannot be served to an xDS server, if it cannot.
fn untranslatable(policy: &InboundPolicy) -> Option<String> {
    policy
        .policies
        .iter()
        .filter(|p| p.mode == PolicyMode::Enforce)
        .find_map(|p| {
            if let Some(route) = &p.route {
                return Some(format!(
                    "policy {:?} targets the route {route:?}, which xDS servers cannot match",
                    p.name
                ));
            }
            p.rules.iter().any(|r| r.principal.is_some()).then(|| {
                format!(
                    "policy {:?} has end-user (JWT) conditions, which xDS servers cannot check",
                    p.name
                )
            })
        })
}

fn filter(action: rbac::Action, policies: HashMap<String, Policy>) -> Rbac {
    Rbac {
        rules: Some(RbacRules {
            action: action as i32,
            policies,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn policy_of(permission: Permission, principal: Principal) -> Policy {
    Policy {
        permissions: vec![permission],
        principals: vec![principal],
        ..Default::default()
    }
}

/// Who a rule admits: any of its identities, namespaces and service accounts.
fn source(from: &Source) -> Principal {
    let mut ids: Vec<Principal> = Vec::new();
    for identity in &from.identities {
        ids.push(match identity {
            IdentityMatch::Any => any_authenticated(),
            IdentityMatch::Exact(id) => authenticated(exact(id.as_str())),
            IdentityMatch::Prefix(p) => authenticated(prefix(p)),
        });
    }
    for namespace in &from.namespaces {
        ids.push(authenticated(regex_matcher(&format!(
            "spiffe://[^/]+/ns/{}/sa/[^/]+",
            escape(namespace)
        ))));
    }
    for account in &from.service_accounts {
        ids.push(authenticated(regex_matcher(&format!(
            "spiffe://[^/]+/ns/{}/sa/{}",
            escape(&account.namespace),
            escape(&account.name)
        ))));
    }
    if ids.is_empty() {
        // Only callers without an identity, and there are none over mTLS.
        return Principal {
            identifier: Some(principal::Identifier::NotId(Box::new(Principal {
                identifier: Some(principal::Identifier::Any(true)),
            }))),
        };
    }
    Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    }
}

fn any_authenticated() -> Principal {
    // Every certificate the mesh issues names a SPIFFE ID.
    authenticated(prefix("spiffe://"))
}

fn authenticated(name: StringMatcher) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(name),
            },
        )),
    }
}

/// What a rule's `to` admits: every non-empty list must have a matching entry.
fn operation(rule: &AuthorizationRule) -> Permission {
    let Some(to) = &rule.to else {
        return any_permission();
    };
    let mut all = Vec::new();
    if let Some(methods) = methods(to) {
        all.push(methods);
    }
    if !to.paths.is_empty() {
        all.push(or(to.paths.iter().map(path_permission).collect()));
    }
    if !to.grpc.is_empty() {
        all.push(or(to
            .grpc
            .iter()
            .map(|g| {
                url_path(match &g.method {
                    Some(method) => exact(&format!("/{}/{method}", g.service)),
                    None => prefix(&format!("/{}/", g.service)),
                })
            })
            .collect()));
    }
    if !to.ports.is_empty() {
        all.push(or(to
            .ports
            .iter()
            .map(|p| Permission {
                rule: Some(permission::Rule::DestinationPort(u32::from(*p))),
            })
            .collect()));
    }
    match all.len() {
        0 => any_permission(),
        1 => all.remove(0),
        _ => and(all),
    }
}

/// A method condition for gRPC calls, which are all POSTs: none when POST is listed.
fn methods(to: &Operation) -> Option<Permission> {
    if to.methods.is_empty() || to.methods.contains(&Method::POST) {
        return None;
    }
    Some(Permission {
        rule: Some(permission::Rule::Header(HeaderMatcher {
            name: ":method".to_owned(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(exact(
                to.methods[0].as_str(),
            ))),
            ..Default::default()
        })),
    })
}

fn path_permission(path: &PathPattern) -> Permission {
    url_path(match path {
        PathPattern::Exact(p) => exact(p),
        PathPattern::Prefix(p) => prefix(p),
    })
}

fn url_path(matcher: StringMatcher) -> Permission {
    Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(matcher)),
        })),
    }
}

fn any_permission() -> Permission {
    Permission {
        rule: Some(permission::Rule::Any(true)),
    }
}

fn and(rules: Vec<Permission>) -> Permission {
    Permission {
        rule: Some(permission::Rule::AndRules(permission::Set { rules })),
    }
}

fn or(rules: Vec<Permission>) -> Permission {
    Permission {
        rule: Some(permission::Rule::OrRules(permission::Set { rules })),
    }
}

fn not(rule: Permission) -> Permission {
    Permission {
        rule: Some(permission::Rule::NotRule(Box::new(rule))),
    }
}
