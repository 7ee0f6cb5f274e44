//! Rate-limit checks shared by config validation and wire conversion: the wire is turned into
//! the config's shapes and checked here, so both refuse the same things with the same
//! messages.

use super::identity;
use super::policy::service_account;
use crate::config::{LimitSpec, OverrideSpec};
use crate::error::FieldError;
use crate::rate::{
    ClientMatch, MAX_BURST, MAX_OVERRIDES, MAX_REQUESTS_PER_SECOND, RateLimit, RateLimitOverride,
};
use crate::spiffe::TrustDomain;

/// A policy's checked limits.
pub(crate) struct RateLimitParts {
    pub(crate) total: Option<RateLimit>,
    pub(crate) identity: Option<RateLimit>,
    pub(crate) overrides: Vec<RateLimitOverride>,
}

/// Checks the limits of the policy at `path`; `None` when anything is wrong (reported).
pub(crate) fn rate_limit_parts(
    path: &str,
    total: Option<&LimitSpec>,
    identity_limit: Option<&LimitSpec>,
    overrides: &[OverrideSpec],
    trust_domain: Option<&TrustDomain>,
    errors: &mut Vec<FieldError>,
) -> Option<RateLimitParts> {
    let before = errors.len();
    if total.is_none() && identity_limit.is_none() && overrides.is_empty() {
        errors.push(FieldError::new(
            path,
            "at least one of total, identity and overrides is required",
        ));
    }
    if overrides.len() > MAX_OVERRIDES {
        errors.push(FieldError::new(
            format!("{path}.overrides"),
            format!(
                "{} overrides, more than the {MAX_OVERRIDES} a policy may have",
                overrides.len()
            ),
        ));
    }
    let total = total.and_then(|spec| limit(&format!("{path}.total"), spec, errors));
    let identity_limit =
        identity_limit.and_then(|spec| limit(&format!("{path}.identity"), spec, errors));
    let overrides: Vec<RateLimitOverride> = overrides
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| {
            override_limit(
                &format!("{path}.overrides[{i}]"),
                spec,
                trust_domain,
                errors,
            )
        })
        .collect();
    (errors.len() == before).then_some(RateLimitParts {
        total,
        identity: identity_limit,
        overrides,
    })
}

/// One limit at `path`, its burst defaulted to one second's worth.
fn limit(path: &str, spec: &LimitSpec, errors: &mut Vec<FieldError>) -> Option<RateLimit> {
    let before = errors.len();
    if !(1..=MAX_REQUESTS_PER_SECOND).contains(&spec.requests_per_second) {
        errors.push(FieldError::new(
            format!("{path}.requestsPerSecond"),
            format!(
                "{} is out of range 1 to {MAX_REQUESTS_PER_SECOND}",
                spec.requests_per_second
            ),
        ));
    }
    // A burst defaulted from an invalid rate has that rate's error already.
    let burst = spec.burst.unwrap_or(spec.requests_per_second);
    if spec.burst.is_some() && !(1..=MAX_BURST).contains(&burst) {
        errors.push(FieldError::new(
            format!("{path}.burst"),
            format!("{burst} is out of range 1 to {MAX_BURST}"),
        ));
    }
    (errors.len() == before).then_some(RateLimit {
        requests_per_second: spec.requests_per_second,
        burst,
    })
}

fn override_limit(
    path: &str,
    spec: &OverrideSpec,
    trust_domain: Option<&TrustDomain>,
    errors: &mut Vec<FieldError>,
) -> Option<RateLimitOverride> {
    let before = errors.len();
    let limit = limit(
        path,
        &LimitSpec {
            requests_per_second: spec.requests_per_second,
            burst: spec.burst,
        },
        errors,
    );
    let clients_path = format!("{path}.clients");
    let count = spec.clients.identities.len() + spec.clients.service_accounts.len();
    if count == 0 {
        errors.push(FieldError::new(
            &clients_path,
            "at least one of identities and serviceAccounts is required",
        ));
    } else if count > MAX_OVERRIDES {
        errors.push(FieldError::new(
            &clients_path,
            format!("{count} callers, more than the {MAX_OVERRIDES} an override may name"),
        ));
    }
    let mut clients = Vec::with_capacity(count);
    for (i, value) in spec.clients.identities.iter().enumerate() {
        match identity(value, trust_domain) {
            Ok(id) => clients.push(ClientMatch::Identity(id)),
            Err(message) => errors.push(FieldError::new(
                format!("{clients_path}.identities[{i}]"),
                message,
            )),
        }
    }
    for (i, value) in spec.clients.service_accounts.iter().enumerate() {
        match service_account(value) {
            Ok(sa) => clients.push(ClientMatch::ServiceAccount {
                namespace: sa.namespace,
                name: sa.name,
            }),
            Err(message) => errors.push(FieldError::new(
                format!("{clients_path}.serviceAccounts[{i}]"),
                message,
            )),
        }
    }
    (errors.len() == before).then_some(RateLimitOverride {
        limit: limit?,
        clients,
    })
}
