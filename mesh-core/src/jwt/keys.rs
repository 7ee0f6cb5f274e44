//! An issuer's public keys, compiled from a JWK Set once when the snapshot arrives.
//!
//! Each key is filed under the algorithm family it can verify (RSA, ECDSA P-256, ECDSA P-384,
//! Ed25519), so that a token can never make a key of one family verify a signature of another
//! (the classic algorithm-confusion attack, and a panic in the crypto library). Keys this
//! verifier cannot use (symmetric keys, other curves, unknown types) are skipped rather than
//! failing the whole set, as issuers publish keys for other clients too; a set with no usable
//! key is an error.

use std::fmt;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::{MAX_JWKS_BYTES, MAX_KEYS};

/// The keys of one issuer, ready to verify signatures.
#[derive(Clone)]
pub struct JwtKeys {
    keys: Vec<Key>,
}

/// One usable key.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    family: Family,
    /// The `alg` the set pins the key to, if any.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// What a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// Why a JWK Set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Larger than [`MAX_JWKS_BYTES`].
    #[error("the JWK Set takes {0} bytes, more than the {MAX_JWKS_BYTES} accepted")]
    TooLarge(usize),
    /// Not a JSON object with a `keys` array.
    #[error("not a JWK Set (a JSON object with a \"keys\" array): {0}")]
    NotASet(String),
    /// More than [`MAX_KEYS`] keys.
    #[error("the JWK Set holds {0} keys, more than the {MAX_KEYS} accepted")]
    TooManyKeys(usize),
    /// No key is one this verifier can use.
    #[error(
        "the JWK Set has no usable key (RSA, EC P-256/P-384 or OKP Ed25519 public keys; {0} skipped)"
    )]
    NoUsableKey(usize),
}

// === impl JwtKeys ===

impl JwtKeys {
    /// Compiles a JWK Set document, skipping keys it cannot use.
    pub fn parse(json: &str) -> Result<Self, JwksError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge(json.len()));
        }
        let value: Value =
            serde_json::from_str(json).map_err(|e| JwksError::NotASet(e.to_string()))?;
        let Some(Value::Array(entries)) = value.get("keys") else {
            return Err(JwksError::NotASet("no \"keys\" array".to_owned()));
        };
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys(entries.len()));
        }
        let keys: Vec<Key> = entries.iter().filter_map(Key::parse).collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(entries.len()));
        }
        Ok(Self { keys })
    }

    /// How many keys are usable.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key (never, for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may verify a signature by `alg` for a token naming `kid`: a token with a
    /// `kid` is tried only against keys with that `kid`; one without, against every key of the
    /// family.
    pub(super) fn candidates(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> impl Iterator<Item = &DecodingKey> {
        let family = Family::of(alg);
        self.keys
            .iter()
            .filter(move |k| Some(k.family) == family)
            .filter(move |k| k.alg.is_none_or(|a| a == alg))
            .filter(move |k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .map(|k| &k.key)
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (k.kid.as_deref(), k.family)))
            .finish()
    }
}

// === impl Key ===

impl Key {
    /// The key in one JWK Set entry, when it is a public key this verifier can use.
    fn parse(entry: &Value) -> Option<Self> {
        let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Family::P256,
                EllipticCurve::P384 => Family::P384,
                EllipticCurve::P521 | EllipticCurve::Ed25519 => return None,
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => Family::Ed25519,
                _ => return None,
            },
            // Symmetric keys would let anyone who reads a snapshot mint tokens.
            AlgorithmParameters::OctetKey(_) => return None,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(alg) => {
                let alg = algorithm(alg)?;
                // A key pinned to an algorithm of another family is unusable.
                (Family::of(alg) == Some(family)).then_some(alg)?;
                Some(alg)
            }
        };
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        Some(Self {
            kid: jwk.common.key_id,
            family,
            alg,
            key,
        })
    }
}

/// The signature algorithm a JWK's `alg` names, for the asymmetric ones accepted.
fn algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

// === impl Family ===

impl Family {
    /// The family of keys that verify `alg`; `None` for symmetric algorithms.
    fn of(alg: Algorithm) -> Option<Self> {
        match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Some(Self::Rsa),
            Algorithm::ES256 => Some(Self::P256),
            Algorithm::ES384 => Some(Self::P384),
            Algorithm::EdDSA => Some(Self::Ed25519),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
        }
    }
}
