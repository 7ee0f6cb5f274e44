//! What end-user authentication costs a request: verifying one token per algorithm (RS256,
//! ES256, EdDSA), and the check a service without issuers pays, timed over many rounds in one
//! run. Run with `cargo run --release -p mesh-core --features testing --example jwt_verify`.

use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use mesh_core::jwt::{JwtRule, TokenLocation, Verifier};
use mesh_core::testing::jwt::{TestKey, claims, jwks, now};

const ROUNDS: u32 = 20_000;

fn main() {
    let keys = [
        TestKey::rs256("rsa"),
        TestKey::es256("ec"),
        TestKey::ed25519("ed"),
    ];
    let rule = JwtRule {
        issuer: "https://issuer.test".into(),
        audiences: vec!["web".to_owned()],
        from_headers: vec![TokenLocation::bearer()],
        jwks_uri: None,
        jwks: Some(Arc::from(jwks(&keys.iter().collect::<Vec<_>>()))),
    };
    let verifier = Verifier::new(&[rule]).expect("one issuer");
    let t = now();
    for key in &keys {
        let mut headers = HeaderMap::new();
        let token = key.sign(&claims("https://issuer.test", "alice", "web", t + 3600));
        headers.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let start = Instant::now();
        for _ in 0..ROUNDS {
            let principal = verifier.verify(&headers, t).expect("valid");
            std::hint::black_box(principal);
        }
        let per = start.elapsed() / ROUNDS;
        println!(
            "{:?}: {per:?} per verified token ({} bytes)",
            key.alg,
            token.len()
        );
    }
    // A service with no issuers: the server's stage is `Verifier::new` returning `None` once
    // per snapshot, then one `Option` test per request.
    let none: Option<Verifier> = Verifier::new(&[]);
    let start = Instant::now();
    let mut skipped = 0u64;
    for _ in 0..ROUNDS * 100 {
        if std::hint::black_box(&none).is_none() {
            skipped += 1;
        }
    }
    let per = start.elapsed() / (ROUNDS * 100);
    println!("no issuers: {per:?} per request ({skipped} skipped)");
}
