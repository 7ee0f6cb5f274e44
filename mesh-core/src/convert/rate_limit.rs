//! Conversions of rate-limit policies between the model ([`crate::rate`]) and the wire.
//!
//! Wire to model turns each policy into the config's shapes and checks it with the same code
//! as the config (`check::rate_limit`), so both refuse the same things with the same
//! messages. A burst of 0 on the wire is the default (one second's worth).

use super::non_empty;
use crate::check::{self, FirstSeen};
use crate::config::{ClientsSpec, LimitSpec, OverrideSpec};
use crate::error::FieldError;
use crate::proto;
use crate::rate::{ClientMatch, RateLimit, RateLimitPolicy};

// === model to wire ===

impl From<&RateLimitPolicy> for proto::RateLimitPolicy {
    fn from(policy: &RateLimitPolicy) -> Self {
        Self {
            name: policy.name.to_string(),
            route: policy.route.as_deref().unwrap_or_default().to_owned(),
            total: policy.total.as_ref().map(Into::into),
            identity: policy.identity.as_ref().map(Into::into),
            overrides: policy
                .overrides
                .iter()
                .map(|o| {
                    let mut wire = proto::RateLimitOverride {
                        limit: Some((&o.limit).into()),
                        ..Default::default()
                    };
                    for client in &o.clients {
                        match client {
                            ClientMatch::Identity(id) => wire.identities.push(id.to_string()),
                            ClientMatch::ServiceAccount { .. } => {
                                wire.service_accounts.push(client.to_string());
                            }
                        }
                    }
                    wire
                })
                .collect(),
        }
    }
}

impl From<&RateLimit> for proto::RateLimit {
    fn from(limit: &RateLimit) -> Self {
        Self {
            requests_per_second: limit.requests_per_second,
            burst: limit.burst,
        }
    }
}

// === wire to model ===

/// The rate-limit policies at `path` (`inbound.rateLimits`); errors are reported and the
/// policies with errors left out (the caller refuses the whole snapshot then).
pub(super) fn rate_limits(
    path: &str,
    wire: &[proto::RateLimitPolicy],
    errors: &mut Vec<FieldError>,
) -> Vec<RateLimitPolicy> {
    let mut names = FirstSeen::new();
    let mut out = Vec::with_capacity(wire.len());
    for (i, policy) in wire.iter().enumerate() {
        let policy_path = format!("{path}[{i}]");
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
        let overrides: Vec<OverrideSpec> = policy
            .overrides
            .iter()
            .map(|o| {
                let limit = o.limit.as_ref().map(limit_spec).unwrap_or(LimitSpec {
                    requests_per_second: 0,
                    burst: None,
                });
                OverrideSpec {
                    requests_per_second: limit.requests_per_second,
                    burst: limit.burst,
                    clients: ClientsSpec {
                        identities: o.identities.clone(),
                        service_accounts: o.service_accounts.clone(),
                    },
                }
            })
            .collect();
        if let Some(parts) = check::rate_limit::rate_limit_parts(
            &policy_path,
            policy.total.as_ref().map(limit_spec).as_ref(),
            policy.identity.as_ref().map(limit_spec).as_ref(),
            &overrides,
            None,
            errors,
        ) {
            out.push(RateLimitPolicy {
                name: policy.name.as_str().into(),
                route: route.map(Into::into),
                total: parts.total,
                identity: parts.identity,
                overrides: parts.overrides,
            });
        }
    }
    out
}

fn limit_spec(wire: &proto::RateLimit) -> LimitSpec {
    LimitSpec {
        requests_per_second: wire.requests_per_second,
        burst: (wire.burst != 0).then_some(wire.burst),
    }
}
