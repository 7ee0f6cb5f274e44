//! Table tests of token verification, with tokens signed by the test keys, and a property test
//! over malformed tokens.

use std::sync::Arc;

use http::HeaderMap;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::testing::jwt::{TestKey, claims, jwks, now};

const ISS: &str = "https://issuer.test";

fn rule(keys: &[&TestKey]) -> JwtRule {
    JwtRule {
        issuer: ISS.into(),
        audiences: vec!["greeter".to_owned()],
        from_headers: vec![TokenLocation::bearer()],
        jwks_uri: None,
        jwks: Some(Arc::from(jwks(keys))),
    }
}

fn verify(verifier: &Verifier, token: &str) -> Result<Principal, JwtError> {
    verifier.verify_token(token, &TokenLocation::bearer(), now())
}

#[test]
fn tokens_are_verified_by_each_algorithm_and_refused_for_each_reason() {
    let (rsa, ec, ed) = (
        TestKey::rs256("rsa"),
        TestKey::es256("ec"),
        TestKey::ed25519("ed"),
    );
    let verifier = Verifier::new(&[rule(&[&rsa, &ec, &ed])]).unwrap();
    let other = TestKey::es256("ec");
    let t = now();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(ISS, "alice", "greeter", t + 300);
        edit(&mut c);
        c
    };
    let cases: Vec<(&str, String, Result<(), JwtError>)> = vec![
        ("RS256", rsa.sign(&with(&|_| ())), Ok(())),
        ("ES256", ec.sign(&with(&|_| ())), Ok(())),
        ("EdDSA", ed.sign(&with(&|_| ())), Ok(())),
        (
            "audience in an array",
            ec.sign(&with(&|c| c["aud"] = json!(["x", "greeter"]))),
            Ok(()),
        ),
        (
            "expired within the skew",
            ec.sign(&with(&|c| c["exp"] = json!(t - 30))),
            Ok(()),
        ),
        (
            "nbf within the skew",
            ec.sign(&with(&|c| c["nbf"] = json!(t + 30))),
            Ok(()),
        ),
        (
            "fractional exp",
            ec.sign(&with(&|c| c["exp"] = json!(t as f64 + 300.5))),
            Ok(()),
        ),
        (
            "expired",
            ec.sign(&with(&|c| c["exp"] = json!(t - 120))),
            Err(JwtError::Expired),
        ),
        (
            "not yet valid",
            ec.sign(&with(&|c| c["nbf"] = json!(t + 120))),
            Err(JwtError::NotYetValid),
        ),
        (
            "no exp",
            ec.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            Err(JwtError::MissingExpiry),
        ),
        (
            "string exp",
            ec.sign(&with(&|c| c["exp"] = json!("soon"))),
            Err(JwtError::MissingExpiry),
        ),
        (
            "wrong audience",
            ec.sign(&with(&|c| c["aud"] = json!("billing"))),
            Err(JwtError::WrongAudience),
        ),
        (
            "no audience",
            ec.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            })),
            Err(JwtError::WrongAudience),
        ),
        (
            "wrong issuer",
            ec.sign(&with(&|c| c["iss"] = json!("https://evil.test"))),
            Err(JwtError::UnknownIssuer),
        ),
        (
            "no issuer",
            ec.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            })),
            Err(JwtError::UnknownIssuer),
        ),
        (
            "another key with the same kid",
            other.sign(&with(&|_| ())),
            Err(JwtError::BadSignature),
        ),
        (
            "unknown kid",
            TestKey::es256("nope").sign(&with(&|_| ())),
            Err(JwtError::NoMatchingKey),
        ),
        (
            "too many claims",
            ec.sign(&with(&|c| {
                for i in 0..MAX_CLAIMS {
                    c[format!("c{i}")] = json!(i);
                }
            })),
            Err(JwtError::TooManyClaims),
        ),
        (
            "HS256",
            hs256(&with(&|_| ())),
            Err(JwtError::UnsupportedAlgorithm),
        ),
        (
            "alg none",
            unsigned(&with(&|_| ())),
            Err(JwtError::UnsupportedAlgorithm),
        ),
        ("two parts", "a.b".to_owned(), Err(JwtError::Malformed)),
        (
            "four parts",
            format!("{}.x", ec.sign(&with(&|_| ()))),
            Err(JwtError::Malformed),
        ),
        (
            "too large",
            "a".repeat(MAX_TOKEN_BYTES + 1),
            Err(JwtError::TooLarge),
        ),
    ];
    for (name, token, want) in cases {
        let got = verify(&verifier, &token);
        assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), want, "{name}");
        if let Ok(principal) = got {
            assert_eq!(&*principal.issuer, ISS, "{name}");
            assert_eq!(principal.subject, "alice", "{name}");
        }
    }
}

#[test]
fn a_token_signed_by_one_family_never_meets_a_key_of_another() {
    // An ES256 token relabelled RS256 is tried only against RSA keys.
    let (rsa, ec) = (TestKey::rs256("k"), TestKey::es256("k"));
    let verifier = Verifier::new(&[rule(&[&rsa, &ec])]).unwrap();
    let token = ec.sign(&claims(ISS, "a", "greeter", now() + 60));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[0] = b64(&json!({"alg": "RS256", "kid": "k"}).to_string());
    assert_eq!(
        verify(&verifier, &parts.join(".")).unwrap_err(),
        JwtError::BadSignature
    );
    // A key pinned to ES256 is not used for EdDSA tokens even under the same kid.
    let ed = TestKey::ed25519("k");
    let token = ed.sign(&claims(ISS, "a", "greeter", now() + 60));
    assert_eq!(
        verify(&verifier, &token).unwrap_err(),
        JwtError::NoMatchingKey
    );
}

#[test]
fn tokens_are_found_where_the_issuer_says_and_nowhere_else() {
    let key = TestKey::es256("k");
    let mut by_header = rule(&[&key]);
    by_header.from_headers = vec![TokenLocation {
        name: "x-jwt".to_owned(),
        prefix: String::new(),
    }];
    let verifier = Verifier::new(&[by_header]).unwrap();
    let token = key.sign(&claims(ISS, "bob", "greeter", now() + 60));

    let mut headers = HeaderMap::new();
    assert_eq!(verifier.verify(&headers, now()), Ok(None), "no token");
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert_eq!(
        verifier.verify(&headers, now()),
        Ok(None),
        "the bearer header is not read for this issuer"
    );
    headers.insert("x-jwt", token.parse().unwrap());
    let principal = verifier.verify(&headers, now()).unwrap().unwrap();
    assert_eq!(principal.request_principal(), "https://issuer.test/bob");
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_other_schemes_carry_no_token() {
    let location = TokenLocation::bearer();
    assert_eq!(location.token("Bearer abc"), Some("abc"));
    assert_eq!(location.token("bearer  abc "), Some("abc"));
    assert_eq!(location.token("Basic abc"), None);
    assert_eq!(location.token("Bearer "), None);
    assert_eq!(location.token("Bear"), None);
}

#[test]
fn an_issuer_without_keys_refuses_its_tokens() {
    let key = TestKey::es256("k");
    let mut no_keys = rule(&[&key]);
    no_keys.jwks = None;
    let verifier = Verifier::new(&[no_keys]).unwrap();
    let token = key.sign(&claims(ISS, "a", "greeter", now() + 60));
    assert_eq!(verify(&verifier, &token).unwrap_err(), JwtError::NoKeys);
    assert!(Verifier::new(&[]).is_none(), "no rules: nothing to do");
}

#[test]
fn jwk_sets_are_bounded_and_skip_keys_they_cannot_use() {
    let key = TestKey::es256("k");
    let cases: Vec<(&str, String, Result<usize, JwksError>)> = vec![
        ("one key", jwks(&[&key]), Ok(1)),
        (
            "symmetric and unknown keys skipped",
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "weird"}, key.jwk()]})
                .to_string(),
            Ok(1),
        ),
        (
            "only a symmetric key",
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).to_string(),
            Err(JwksError::NoUsableKey(1)),
        ),
        (
            "no keys array",
            "{}".to_owned(),
            Err(JwksError::NotASet("no \"keys\" array".to_owned())),
        ),
        (
            "too many keys",
            json!({"keys": vec![key.jwk(); MAX_KEYS + 1]}).to_string(),
            Err(JwksError::TooManyKeys(MAX_KEYS + 1)),
        ),
        (
            "too large",
            format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(MAX_JWKS_BYTES)),
            Err(JwksError::TooLarge(MAX_JWKS_BYTES + 20)),
        ),
    ];
    for (name, json, want) in cases {
        assert_eq!(JwtKeys::parse(&json).map(|k| k.len()), want, "{name}");
    }
    assert!(matches!(
        JwtKeys::parse("not json"),
        Err(JwksError::NotASet(_))
    ));
}

#[test]
fn claims_match_strings_arrays_and_scalars() {
    let principal = Principal {
        issuer: ISS.into(),
        subject: "a".to_owned(),
        claims: json!({"groups": ["dev", "admin"], "role": "ops", "level": 3, "staff": true})
            .as_object()
            .unwrap()
            .clone(),
    };
    let cases = [
        ("groups", "admin", true),
        ("groups", "root", false),
        ("role", "ops", true),
        ("level", "3", true),
        ("staff", "true", true),
        ("missing", "x", false),
    ];
    for (name, value, want) in cases {
        assert_eq!(principal.claim_has(name, value), want, "{name}={value}");
    }
}

proptest! {
    /// Whatever the bytes, verification returns a reason and never panics; nothing but a
    /// token signed by the issuer's key is accepted.
    #[test]
    fn malformed_tokens_are_refused_without_panicking(
        header in "[A-Za-z0-9_=-]{0,40}",
        payload in "[A-Za-z0-9_=-]{0,80}",
        signature in "[A-Za-z0-9_=-]{0,80}",
        dots in 0usize..5,
        junk in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let key = TestKey::es256("k");
        let verifier = Verifier::new(&[rule(&[&key])]).unwrap();
        let mut token = [header, payload, signature][..dots.min(3)].join(".");
        token.push_str(&String::from_utf8_lossy(&junk));
        prop_assert!(verify(&verifier, &token).is_err());
    }

    /// A valid token with any one byte changed is refused.
    #[test]
    fn a_tampered_token_is_refused(at in 0usize..400, to in any::<u8>()) {
        let key = TestKey::es256("k");
        let verifier = Verifier::new(&[rule(&[&key])]).unwrap();
        let token = key.sign(&claims(ISS, "a", "greeter", now() + 60));
        let mut bytes = token.clone().into_bytes();
        let at = at % bytes.len();
        prop_assume!(bytes[at] != to);
        bytes[at] = to;
        let tampered = String::from_utf8_lossy(&bytes).into_owned();
        // Base64 has slack bits: a change in the last character may decode to the same bytes.
        prop_assume!(decoded(&tampered) != decoded(&token));
        prop_assert!(verify(&verifier, &tampered).is_err());
    }
}

fn decoded(token: &str) -> Vec<Option<Vec<u8>>> {
    use base64::Engine;
    token
        .split('.')
        .map(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .collect()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A token signed HS256 with a secret: never accepted, whatever the secret.
fn hs256(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(b"secret");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
}

/// A token with `alg: none` and no signature.
fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none"}).to_string()),
        b64(&claims.to_string())
    )
}
