//! Test issuers of end-user JWTs: signing keys (RS256, ES256, EdDSA), their JWK Sets, and
//! tokens signed with them, so that tests sign their own tokens.
//!
//! ```
//! use mesh_core::testing::jwt::{TestKey, claims, jwks, now};
//!
//! let key = TestKey::es256("k1");
//! let token = key.sign(&claims("https://issuer.test", "alice", "greeter", now() + 60));
//! assert_eq!(token.split('.').count(), 3);
//! assert!(jwks(&[&key]).contains("\"kid\":\"k1\""));
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};
use serde_json::{Value, json};

/// A 2048-bit RSA key made by `openssl genrsa` (ring cannot generate RSA keys), PKCS#1 DER.
const RSA_PKCS1_DER: &[u8] = include_bytes!("jwt-rsa2048.pkcs1.der");
/// Its modulus, base64url.
const RSA_MODULUS: &str = include_str!("jwt-rsa2048.n.txt");

/// A signing key and its public JWK.
pub struct TestKey {
    /// The `kid` tokens and the JWK carry.
    pub kid: String,
    /// The algorithm it signs with.
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    /// The fixed RSA key, signing RS256.
    pub fn rs256(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(RSA_PKCS1_DER),
            jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                        "n": RSA_MODULUS.trim(), "e": "AQAB"}),
        }
    }

    /// A fresh P-256 key, signing ES256.
    pub fn es256(kid: &str) -> Self {
        let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let raw = pair.public_key_raw();
        // Uncompressed point: 0x04, x, y.
        let (x, y) = raw[1..].split_at(32);
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({"kty": "EC", "kid": kid, "alg": "ES256", "crv": "P-256",
                        "x": b64(x), "y": b64(y)}),
        }
    }

    /// A fresh Ed25519 key, signing EdDSA.
    pub fn ed25519(kid: &str) -> Self {
        let pair = KeyPair::generate_for(&PKCS_ED25519).expect("Ed25519 key");
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
            jwk: json!({"kty": "OKP", "kid": kid, "alg": "EdDSA", "crv": "Ed25519",
                        "x": b64(pair.public_key_raw())}),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// A token of `claims`, signed, with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signed")
    }
}

/// A JWK Set of `keys`.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Claims: `iss`, `sub`, `aud` and `exp`, issued now.
pub fn claims(iss: &str, sub: &str, aud: &str, exp: u64) -> Value {
    json!({"iss": iss, "sub": sub, "aud": aud, "exp": exp, "iat": now()})
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
