//! End-user authentication with JWTs: the issuers a service accepts, their keys, and the pure
//! verification of a token.
//!
//! A service lists the issuers it accepts ([`JwtRule`]: the issuer, the audiences, where the
//! token is, and the issuer's keys as a JWK Set), as Istio's `RequestAuthentication` does. The
//! control service fetches each issuer's JWKS and sends the keys in the service's snapshot, so
//! a workload never calls out; the server compiles them once into a [`Verifier`] and checks
//! each request's token with [`Verifier::verify`], a pure function of the headers, the keys
//! and the time.
//!
//! # What is checked
//!
//! A token is refused ([`JwtError`], 401 / UNAUTHENTICATED naming the reason, never the token)
//! when it is longer than [`MAX_TOKEN_BYTES`], is not three base64url parts of JSON, names an
//! algorithm outside [`ALGORITHMS`] (symmetric `HS*` and `none` are never accepted), has no
//! `iss` among the service's issuers, has no key for its `kid` and algorithm, has a bad
//! signature, has no `exp` or is past it, is before its `nbf`, has more than [`MAX_CLAIMS`]
//! claims, or has no audience in common with the issuer's `audiences` (when any are listed).
//! `exp` and `nbf` are compared with [`CLOCK_SKEW_SECS`] of leeway.
//!
//! # No token
//!
//! A request without a token passes authentication (as in Istio) and carries no principal:
//! authorization decides, and a rule that requires a principal does not match it. To require
//! a token, write an ALLOW policy whose rules require a principal.

mod keys;
mod model;
mod verify;

pub use keys::{JwksError, JwtKeys};
pub use model::{JwtRule, Principal, TokenLocation};
pub use verify::{JwtError, Verifier};

pub use crate::check::jwt::{
    MAX_AUDIENCES, MAX_CLAIM_CONDITIONS, MAX_CLAIM_VALUES, MAX_FROM_HEADERS, MAX_ISSUER_BYTES,
    MAX_JWT_RULES, MAX_PREFIX_BYTES, MAX_REQUEST_PRINCIPALS, MAX_URI_BYTES, MAX_VALUE_BYTES,
};

/// The longest token accepted: 8 KiB (larger is refused before any parsing).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The largest JWK Set accepted, inline in the config or fetched: 64 KiB.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// The most keys one issuer's JWK Set may hold: 32.
pub const MAX_KEYS: usize = 32;

/// The most top-level claims a token may carry: 64.
pub const MAX_CLAIMS: usize = 64;

/// The leeway on `exp` and `nbf`: 60 seconds.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// The signature algorithms accepted: RSA (PKCS#1 v1.5 and PSS), ECDSA on P-256 and P-384, and
/// Ed25519. Symmetric algorithms are refused: the keys travel in snapshots.
pub const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;
