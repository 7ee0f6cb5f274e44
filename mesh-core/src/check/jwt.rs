//! End-user authentication checks shared by config validation and wire conversion: JWT rules
//! (issuers, audiences, key sources, token locations) and the principal conditions of
//! authorization rules, each bounded, with errors that name the field.

use std::sync::Arc;

use crate::authz::{ClaimCondition, PrincipalCondition, RequestPrincipalMatch};
use crate::config::{JwtHeaderSpec, JwtRuleSpec, PolicyPrincipalSpec};
use crate::error::FieldError;
use crate::jwt::{JwtKeys, JwtRule, TokenLocation};

/// The most issuers one service accepts, over all its request authentications: 4 (each
/// issuer's keys may take up to 64 KiB of the service's inbound policy).
pub const MAX_JWT_RULES: usize = 4;
/// The longest issuer: 1024 bytes.
pub const MAX_ISSUER_BYTES: usize = 1024;
/// The most audiences per issuer: 16.
pub const MAX_AUDIENCES: usize = 16;
/// The longest audience, claim name or claim value: 256 bytes.
pub const MAX_VALUE_BYTES: usize = 256;
/// The longest `jwksUri` or request principal pattern: 2048 bytes.
pub const MAX_URI_BYTES: usize = 2048;
/// The most token headers per issuer: 4.
pub const MAX_FROM_HEADERS: usize = 4;
/// The longest token prefix: 64 bytes.
pub const MAX_PREFIX_BYTES: usize = 64;
/// The most request principal patterns per rule: 16.
pub const MAX_REQUEST_PRINCIPALS: usize = 16;
/// The most claim conditions per rule: 8.
pub const MAX_CLAIM_CONDITIONS: usize = 8;
/// The most values per claim condition: 16.
pub const MAX_CLAIM_VALUES: usize = 16;

/// One JWT rule at `path` (`requestAuthentications[0].jwtRules[1]`). `fetched`: the keys of a
/// `jwksUri` rule as the control service last fetched them (the wire carries them in `jwks`
/// beside the URI); in the config, a rule has exactly one of the two.
pub(crate) fn jwt_rule(
    path: &str,
    spec: &JwtRuleSpec,
    fetched: bool,
    errors: &mut Vec<FieldError>,
) -> Option<JwtRule> {
    let before = errors.len();
    if spec.issuer.is_empty() || spec.issuer.len() > MAX_ISSUER_BYTES {
        errors.push(FieldError::new(
            format!("{path}.issuer"),
            format!("required, at most {MAX_ISSUER_BYTES} bytes"),
        ));
    }
    if spec.audiences.len() > MAX_AUDIENCES {
        errors.push(FieldError::new(
            format!("{path}.audiences"),
            format!("at most {MAX_AUDIENCES} audiences"),
        ));
    }
    for (i, audience) in spec.audiences.iter().enumerate() {
        bounded(
            &format!("{path}.audiences[{i}]"),
            audience,
            MAX_VALUE_BYTES,
            errors,
        );
    }
    match (&spec.jwks_uri, &spec.jwks) {
        (None, None) => errors.push(FieldError::new(path, "one of jwksUri and jwks is required")),
        (Some(_), Some(_)) if !fetched => errors.push(FieldError::new(
            path,
            "jwksUri and jwks are exclusive: give one",
        )),
        _ => {}
    }
    if let Some(uri) = &spec.jwks_uri {
        jwks_uri(&format!("{path}.jwksUri"), uri, errors);
    }
    if let Some(jwks) = &spec.jwks
        && let Err(e) = JwtKeys::parse(jwks)
    {
        errors.push(FieldError::new(format!("{path}.jwks"), e.to_string()));
    }
    if spec.from_headers.len() > MAX_FROM_HEADERS {
        errors.push(FieldError::new(
            format!("{path}.fromHeaders"),
            format!("at most {MAX_FROM_HEADERS} headers"),
        ));
    }
    let mut from_headers: Vec<TokenLocation> = spec
        .from_headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| location(&format!("{path}.fromHeaders[{i}]"), h, errors))
        .collect();
    if from_headers.is_empty() {
        from_headers.push(TokenLocation::bearer());
    }
    (errors.len() == before).then(|| JwtRule {
        issuer: Arc::from(spec.issuer.as_str()),
        audiences: spec.audiences.clone(),
        from_headers,
        jwks_uri: spec.jwks_uri.clone(),
        jwks: spec.jwks.as_deref().map(Arc::from),
    })
}

/// A `jwksUri`: `https://`, `http://` (tests, or inside a cluster) or `file://`.
fn jwks_uri(path: &str, uri: &str, errors: &mut Vec<FieldError>) {
    if uri.len() > MAX_URI_BYTES {
        errors.push(FieldError::new(
            path,
            format!("longer than {MAX_URI_BYTES} bytes"),
        ));
        return;
    }
    let ok = if let Some(file) = uri.strip_prefix("file://") {
        file.starts_with('/')
    } else {
        uri.parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
    };
    if !ok {
        errors.push(FieldError::new(
            path,
            format!("{uri:?} is not an https://, http:// or file:/// URI"),
        ));
    }
}

/// A token header: a valid header name (stored lower case) and a bounded prefix.
fn location(
    path: &str,
    spec: &JwtHeaderSpec,
    errors: &mut Vec<FieldError>,
) -> Option<TokenLocation> {
    let name = http::HeaderName::from_bytes(spec.name.as_bytes())
        .map_err(|_| {
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!("invalid header name {:?}", spec.name),
            ));
        })
        .ok()?;
    let prefix = spec.prefix.clone().unwrap_or_default();
    if prefix.len() > MAX_PREFIX_BYTES {
        errors.push(FieldError::new(
            format!("{path}.prefix"),
            format!("longer than {MAX_PREFIX_BYTES} bytes"),
        ));
        return None;
    }
    Some(TokenLocation {
        name: name.as_str().to_owned(),
        prefix,
    })
}

/// A rule's principal conditions at `path` (`policies[0].rules[1].principal`).
pub(crate) fn principal(
    path: &str,
    spec: &PolicyPrincipalSpec,
    errors: &mut Vec<FieldError>,
) -> Option<PrincipalCondition> {
    let before = errors.len();
    if spec.request_principals.len() > MAX_REQUEST_PRINCIPALS {
        errors.push(FieldError::new(
            format!("{path}.requestPrincipals"),
            format!("at most {MAX_REQUEST_PRINCIPALS} patterns"),
        ));
    }
    let request_principals = spec
        .request_principals
        .iter()
        .enumerate()
        .filter_map(|(i, value)| {
            request_principal(value)
                .map_err(|m| {
                    errors.push(FieldError::new(format!("{path}.requestPrincipals[{i}]"), m));
                })
                .ok()
        })
        .collect();
    if spec.claims.len() > MAX_CLAIM_CONDITIONS {
        errors.push(FieldError::new(
            format!("{path}.claims"),
            format!("at most {MAX_CLAIM_CONDITIONS} conditions"),
        ));
    }
    let mut claims = Vec::with_capacity(spec.claims.len());
    for (i, claim) in spec.claims.iter().enumerate() {
        let claim_path = format!("{path}.claims[{i}]");
        bounded(
            &format!("{claim_path}.name"),
            &claim.name,
            MAX_VALUE_BYTES,
            errors,
        );
        if claim.values.is_empty() || claim.values.len() > MAX_CLAIM_VALUES {
            errors.push(FieldError::new(
                format!("{claim_path}.values"),
                format!("1 to {MAX_CLAIM_VALUES} values"),
            ));
        }
        for (j, value) in claim.values.iter().enumerate() {
            bounded(
                &format!("{claim_path}.values[{j}]"),
                value,
                MAX_VALUE_BYTES,
                errors,
            );
        }
        claims.push(ClaimCondition {
            name: claim.name.clone(),
            values: claim.values.clone(),
        });
    }
    (errors.len() == before).then_some(PrincipalCondition {
        request_principals,
        claims,
    })
}

/// `*`, an exact `<iss>/<sub>`, or a prefix with a trailing `*`.
fn request_principal(value: &str) -> Result<RequestPrincipalMatch, String> {
    if value.is_empty() || value.len() > MAX_URI_BYTES {
        return Err(format!("1 to {MAX_URI_BYTES} bytes"));
    }
    if value == "*" {
        return Ok(RequestPrincipalMatch::Any);
    }
    let (body, prefix) = match value.strip_suffix('*') {
        Some(body) => (body, true),
        None => (value, false),
    };
    if body.contains('*') {
        return Err(format!(
            "invalid request principal {value:?}: `*` only alone or at the end"
        ));
    }
    if !prefix && !body.contains('/') {
        return Err(format!(
            "invalid request principal {value:?}: expected <issuer>/<subject>"
        ));
    }
    Ok(if prefix {
        RequestPrincipalMatch::Prefix(body.to_owned())
    } else {
        RequestPrincipalMatch::Exact(body.to_owned())
    })
}

/// A required string of at most `max` bytes.
fn bounded(path: &str, value: &str, max: usize, errors: &mut Vec<FieldError>) {
    if value.is_empty() || value.len() > max {
        errors.push(FieldError::new(path, format!("1 to {max} bytes")));
    }
}
