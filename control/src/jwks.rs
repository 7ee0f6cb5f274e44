//! JWK Sets of the issuers services accept: fetched by the control service, cached, refreshed,
//! and sent to workloads in their snapshots, so that a workload never calls an issuer.
//!
//! For every `jwksUri` of the config (`https://`, `http://` or `file://`), a worker
//! ([`spawn`]) fetches the document (at most [`mesh_core::jwt::MAX_JWKS_BYTES`], within
//! [`JwksOptions::timeout`]), keeps it only when it is a usable JWK Set, and publishes the
//! sets as the next state version when they changed, so that exactly the subscribers whose
//! issuers' keys changed are sent a new snapshot. Each set is fetched again after
//! [`JwksOptions::refresh`] (with ±10% jitter, so that many control replicas do not call an
//! issuer in step), or after [`JwksOptions::retry`] when a fetch fails; a failed fetch keeps
//! the last good set. A URI that was never fetched has no keys: its issuer's tokens are
//! refused until a fetch succeeds. The worker also fetches at once whenever the config
//! changes, for URIs it has not fetched yet.

mod fetch;
mod refresh;

use std::time::Duration;

use mesh_core::authz::InboundPolicy;

use crate::state::Jwks;

pub(crate) use refresh::spawn;

/// How JWK Sets are refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksOptions {
    /// How long a fetched set is used before it is fetched again: 5 minutes by default; at
    /// least 1 second.
    pub refresh: Duration,
    /// How long after a failed fetch to try again: 15 seconds by default; at least 100 ms.
    pub retry: Duration,
    /// How long one fetch may take: 10 seconds by default; at least 100 ms.
    pub timeout: Duration,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(300),
            retry: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        }
    }
}

impl JwksOptions {
    /// Checks the bounds; the message names the option.
    pub fn check(&self) -> Result<(), String> {
        if self.refresh < Duration::from_secs(1) {
            return Err("jwks refresh: at least 1 second".to_owned());
        }
        if self.retry < Duration::from_millis(100) || self.timeout < Duration::from_millis(100) {
            return Err("jwks retry and timeout: at least 100 ms".to_owned());
        }
        Ok(())
    }
}

/// Puts the last fetched keys of each `jwksUri` issuer of `inbound` in place.
pub(crate) fn fill(inbound: &mut InboundPolicy, jwks: &Jwks) {
    for rule in &mut inbound.jwt_rules {
        if let Some(uri) = &rule.jwks_uri {
            rule.jwks = jwks.get(uri).cloned();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mesh_core::authz::{DefaultPolicy, InboundPolicy};
    use mesh_core::jwt::{JwtRule, TokenLocation};

    use super::*;

    #[test]
    fn fetched_keys_fill_uri_issuers_and_inline_keys_stay() {
        let rule = |uri: Option<&str>, jwks: Option<&str>| JwtRule {
            issuer: "https://i.test".into(),
            audiences: Vec::new(),
            from_headers: vec![TokenLocation::bearer()],
            jwks_uri: uri.map(str::to_owned),
            jwks: jwks.map(Arc::from),
        };
        let mut inbound =
            InboundPolicy::defaults("web.default".parse().unwrap(), DefaultPolicy::Deny);
        inbound.jwt_rules = vec![
            rule(Some("https://a/jwks"), None),
            rule(Some("https://b/jwks"), Some("stale")),
            rule(None, Some("inline")),
        ];
        let fetched: Jwks = [("https://a/jwks".to_owned(), Arc::from("fresh"))].into();
        fill(&mut inbound, &fetched);
        let keys: Vec<Option<&str>> = inbound
            .jwt_rules
            .iter()
            .map(|r| r.jwks.as_deref())
            .collect();
        assert_eq!(keys, [Some("fresh"), None, Some("inline")]);
    }

    #[test]
    fn options_are_bounded() {
        assert_eq!(JwksOptions::default().check(), Ok(()));
        let cases = [
            JwksOptions {
                refresh: Duration::from_millis(999),
                ..JwksOptions::default()
            },
            JwksOptions {
                retry: Duration::from_millis(99),
                ..JwksOptions::default()
            },
            JwksOptions {
                timeout: Duration::ZERO,
                ..JwksOptions::default()
            },
        ];
        for options in cases {
            assert!(options.check().is_err(), "{options:?}");
        }
    }
}
