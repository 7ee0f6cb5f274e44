//! Verifying a request's token against the issuers a service accepts: a pure function of the
//! headers, the keys and the time.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::JwtKeys;
use super::model::{JwtRule, Principal, TokenLocation};
use super::{CLOCK_SKEW_SECS, MAX_CLAIMS, MAX_TOKEN_BYTES};

/// A service's issuers, compiled once per snapshot.
#[derive(Debug, Clone)]
pub struct Verifier {
    issuers: Vec<Issuer>,
    /// Every location any issuer reads, in config order, without repeats.
    locations: Vec<TokenLocation>,
}

/// One accepted issuer.
#[derive(Debug, Clone)]
struct Issuer {
    issuer: Arc<str>,
    audiences: Vec<String>,
    from_headers: Vec<TokenLocation>,
    /// `None` while no usable key is known (not fetched yet, or the set was unusable).
    keys: Option<JwtKeys>,
}

/// Why a token was refused. The messages name the reason and never the token or its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Not three base64url parts of JSON objects.
    #[error("the token is malformed")]
    Malformed,
    /// An algorithm outside [`super::ALGORITHMS`].
    #[error("the token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// More than [`MAX_CLAIMS`] claims.
    #[error("the token has more than {MAX_CLAIMS} claims")]
    TooManyClaims,
    /// No `iss`, or one the service does not accept (from the header the token came in).
    #[error("the token's issuer is not accepted")]
    UnknownIssuer,
    /// The issuer's keys are not known yet.
    #[error("no keys are known for the token's issuer")]
    NoKeys,
    /// No key of the issuer matches the token's `kid` and algorithm.
    #[error("no key of the issuer matches the token's kid and algorithm")]
    NoMatchingKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// No numeric `exp`.
    #[error("the token has no expiry (exp)")]
    MissingExpiry,
    /// Past `exp` (with the leeway).
    #[error("the token has expired")]
    Expired,
    /// Before `nbf` (with the leeway).
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// No audience in common with the issuer's.
    #[error("the token's audience is not accepted")]
    WrongAudience,
}

/// The JOSE header fields looked at.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

// === impl Verifier ===

impl Verifier {
    /// Compiles `rules`; `None` when there are none (the request path then skips
    /// authentication with one branch). Keys that cannot be used leave their issuer without
    /// keys: its tokens are refused with [`JwtError::NoKeys`].
    pub fn new(rules: &[JwtRule]) -> Option<Self> {
        if rules.is_empty() {
            return None;
        }
        let issuers: Vec<Issuer> = rules
            .iter()
            .map(|rule| Issuer {
                issuer: rule.issuer.clone(),
                audiences: rule.audiences.clone(),
                from_headers: rule.from_headers.clone(),
                keys: rule.jwks.as_deref().and_then(|j| JwtKeys::parse(j).ok()),
            })
            .collect();
        let mut locations: Vec<TokenLocation> = Vec::new();
        for location in issuers.iter().flat_map(|i| &i.from_headers) {
            if !locations.contains(location) {
                locations.push(location.clone());
            }
        }
        Some(Self { issuers, locations })
    }

    /// The principal of the request with `headers` at `now` (Unix seconds): `Ok(None)` when it
    /// carries no token (in none of the locations any issuer reads), the verified principal,
    /// or why its token is refused. The first location that carries a token decides.
    pub fn verify(&self, headers: &HeaderMap, now: u64) -> Result<Option<Principal>, JwtError> {
        for location in &self.locations {
            for value in headers.get_all(location.name.as_str()) {
                let Ok(value) = value.to_str() else {
                    continue;
                };
                if let Some(token) = location.token(value) {
                    return self.verify_token(token, location, now).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// Verifies `token`, found at `location`, at `now` (Unix seconds).
    pub fn verify_token(
        &self,
        token: &str,
        location: &TokenLocation,
        now: u64,
    ) -> Result<Principal, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Header = decode_json(header)?;
        let alg = algorithm(&header.alg).ok_or(JwtError::UnsupportedAlgorithm)?;
        let claims: Map<String, Value> = decode_json(payload)?;
        if claims.len() > MAX_CLAIMS {
            return Err(JwtError::TooManyClaims);
        }
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .and_then(|iss| self.issuers.iter().find(|i| &*i.issuer == iss))
            .filter(|i| i.from_headers.contains(location))
            .ok_or(JwtError::UnknownIssuer)?;
        let keys = issuer.keys.as_ref().ok_or(JwtError::NoKeys)?;
        // The signed message is the first two parts as they were sent.
        let message = &token[..header_and_payload_len(token)];
        let mut candidates = keys.candidates(alg, header.kid.as_deref()).peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::NoMatchingKey);
        }
        let verified = candidates.any(|key| {
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg).unwrap_or(false)
        });
        if !verified {
            return Err(JwtError::BadSignature);
        }
        check_times(&claims, now)?;
        if !issuer.audiences.is_empty() && !audience_accepted(&claims, &issuer.audiences) {
            return Err(JwtError::WrongAudience);
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(Principal {
            issuer: issuer.issuer.clone(),
            subject,
            claims,
        })
    }
}

/// `exp` is required and must not be past; `nbf`, when present, must be past; both with
/// [`CLOCK_SKEW_SECS`] of leeway.
fn check_times(claims: &Map<String, Value>, now: u64) -> Result<(), JwtError> {
    let exp = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or(JwtError::MissingExpiry)?;
    if now > exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err(JwtError::Expired);
    }
    match claims.get("nbf") {
        None => Ok(()),
        Some(nbf) => {
            let nbf = numeric_date(nbf).ok_or(JwtError::Malformed)?;
            if now.saturating_add(CLOCK_SKEW_SECS) < nbf {
                Err(JwtError::NotYetValid)
            } else {
                Ok(())
            }
        }
    }
}

/// A NumericDate (seconds, possibly fractional; negative ones are the epoch).
fn numeric_date(value: &Value) -> Option<u64> {
    let n = value.as_number()?;
    n.as_u64().or_else(|| {
        // Fractional or negative: whole seconds suffice for a 60-second leeway.
        n.as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.max(0.0).min(u64::MAX as f64) as u64)
    })
}

/// Whether `aud` (a string or an array of strings) names one of `accepted`.
fn audience_accepted(claims: &Map<String, Value>, accepted: &[String]) -> bool {
    let hit = |v: &Value| v.as_str().is_some_and(|a| accepted.iter().any(|x| x == a));
    match claims.get("aud") {
        Some(Value::Array(items)) => items.iter().any(hit),
        Some(v) => hit(v),
        None => false,
    }
}

/// The length of `header.payload` in a token already split into three parts.
fn header_and_payload_len(token: &str) -> usize {
    // Invariant: the caller split `token` into exactly three parts, so there is a last `.`.
    token.rfind('.').unwrap_or(token.len())
}

/// A base64url part holding a JSON value of type `T`.
fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// The accepted algorithm `alg` names.
fn algorithm(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

// === impl JwtError ===

impl JwtError {
    /// A short label for metrics and for the `error_description` of the refusal:
    /// `malformed`, `expired`, `bad-signature`...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too-large",
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm => "unsupported-algorithm",
            Self::TooManyClaims => "too-many-claims",
            Self::UnknownIssuer => "unknown-issuer",
            Self::NoKeys => "no-keys",
            Self::NoMatchingKey => "no-matching-key",
            Self::BadSignature => "bad-signature",
            Self::MissingExpiry => "missing-exp",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::WrongAudience => "wrong-audience",
        }
    }
}
