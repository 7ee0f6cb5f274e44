//! The JWT model carried in a service's inbound policy: the issuers it accepts and where their
//! tokens are, and the principal a verified token yields.

use std::sync::Arc;

use serde_json::{Map, Value};

/// One issuer a service accepts (one `jwtRules` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtRule {
    /// The `iss` tokens must carry.
    pub issuer: Arc<str>,
    /// Accepted `aud` values; a token must name one of them. Empty: any audience.
    pub audiences: Vec<String>,
    /// Where the token is, in order; never empty (`Authorization: Bearer` when not configured).
    pub from_headers: Vec<TokenLocation>,
    /// Where the control service fetches the keys from (`https://`, `http://` or `file://`);
    /// `None` when they were given inline.
    pub jwks_uri: Option<String>,
    /// The keys, as a JWK Set document: inline in the config, or as last fetched from
    /// `jwks_uri`. `None` until a first fetch succeeds (tokens of this issuer are refused then).
    pub jwks: Option<Arc<str>>,
}

/// A header that carries a token, after an optional prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenLocation {
    /// The header's name, lower case.
    pub name: String,
    /// What precedes the token (`Bearer `); a value without it carries no token.
    pub prefix: String,
}

/// The verified end user of a request: a typed request extension for handlers, and what
/// authorization rules on principals look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The token's `iss`.
    pub issuer: Arc<str>,
    /// The token's `sub` (empty when it has none).
    pub subject: String,
    /// Every claim of the token, as verified.
    pub claims: Map<String, Value>,
}

// === impl TokenLocation ===

impl TokenLocation {
    /// `Authorization: Bearer <token>`, the default.
    pub fn bearer() -> Self {
        Self {
            name: "authorization".to_owned(),
            prefix: "Bearer ".to_owned(),
        }
    }

    /// The token in `value`, when it starts with the prefix (case-insensitively, as HTTP
    /// authentication schemes are).
    pub fn token<'a>(&self, value: &'a str) -> Option<&'a str> {
        let head = value.get(..self.prefix.len())?;
        head.eq_ignore_ascii_case(&self.prefix)
            .then(|| value[self.prefix.len()..].trim())
            .filter(|token| !token.is_empty())
    }
}

// === impl Principal ===

impl Principal {
    /// The request principal as Istio spells it: `<iss>/<sub>`.
    pub fn request_principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }

    /// Whether the claim `name` holds `value`: a string equal to it, an array with a string
    /// equal to it, or a number or boolean that prints as it. Nested claims are not looked
    /// into: `name` is one top-level claim.
    pub fn claim_has(&self, name: &str, value: &str) -> bool {
        fn scalar(v: &Value, value: &str) -> bool {
            match v {
                Value::String(s) => s == value,
                Value::Bool(b) => value == if *b { "true" } else { "false" },
                Value::Number(n) => n.to_string() == value,
                _ => false,
            }
        }
        match self.claims.get(name) {
            Some(Value::Array(items)) => items.iter().any(|v| scalar(v, value)),
            Some(v) => scalar(v, value),
            None => false,
        }
    }
}
