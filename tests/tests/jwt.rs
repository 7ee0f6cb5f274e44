//! End-user authentication end to end: the control service fetches the issuers' JWK Sets from
//! a local JWKS server and sends the keys in snapshots; the meshed server verifies each
//! request's token, refuses a bad one with 401 / UNAUTHENTICATED naming the reason (never the
//! token), hands the claims to the handler, and authorizes on principals and claims. The
//! JWKS server going down keeps the last good keys; a rotated set is picked up on refresh.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use http::StatusCode;
use http_body_util::BodyExt;
use mesh_core::testing::jwt::{TestKey, claims, jwks, now};
use mesh_tests::jwks::{JwksAnswer, JwksServer};
use mesh_tests::{Config, Harness, eventually, listener};
use mesh_tonic::MeshTonicExt;
use mesh_tower::{Mesh, MeshClient, RequestPrincipal};
use serde_json::{Value, json};
use tower::ServiceExt;

const ISS: &str = "https://issuer.test";

/// The service `web` accepts tokens of `ISS` for audience `web`; `/me` needs any principal of
/// the issuer, `/admin/*` one in group `admin`, `/public` none. The greeter accepts the same
/// issuer and lets any meshed caller in.
fn config(web: std::net::SocketAddr, greeter: std::net::SocketAddr, jwks_uri: &str) -> Config {
    Config::new()
        .service("web", &[(web, "web")])
        .service("greeter", &[(greeter, "greeter")])
        .top_level(&format!(
            r#"
requestAuthentications:
  - name: users
    target: {{service: web}}
    jwtRules:
      - issuer: {ISS}
        audiences: [web]
        jwksUri: {jwks_uri}
  - name: greeter-users
    target: {{service: greeter}}
    jwtRules:
      - {{issuer: {ISS}, jwksUri: "{jwks_uri}"}}
policies:
  - name: users
    target: {{service: web}}
    action: ALLOW
    rules:
      - from: {{identities: ["*"]}}
        principal: {{requestPrincipals: ["{ISS}/*"]}}
        to: {{paths: [/me]}}
      - from: {{identities: ["*"]}}
        principal:
          claims: [{{name: groups, values: [admin]}}]
        to: {{paths: [/admin/*]}}
      - from: {{identities: ["*"]}}
        to: {{paths: [/public]}}
"#
        ))
        .account("web")
        .account("greeter")
        .account("client")
}

/// The handler: what the mesh told it about the end user.
fn router() -> Router {
    async fn whoami(request: Request) -> axum::Json<Value> {
        let user = request.extensions().get::<RequestPrincipal>();
        axum::Json(json!({
            "sub": user.map(|u| u.subject.clone()),
            "iss": user.map(|u| u.issuer.to_string()),
            "groups": user.and_then(|u| u.claims.get("groups").cloned()),
        }))
    }
    Router::new()
        .route("/me", get(whoami))
        .route("/admin/panel", get(whoami))
        .route("/public", get(whoami))
}

/// A call to `path` with `token` as a bearer token: the status, the body as JSON (when it is),
/// and every header of the answer as text.
async fn call(
    client: &MeshClient<Body>,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value, String) {
    let mut request = http::Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = format!("{:?}", response.headers());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
    )
}

async fn start_web(harness: &Harness, l: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    let server = Mesh::start(harness.settings("web", Some("web")))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = server.serve(l, router()).await;
    })
}

/// Waits until `token` is accepted on `/me` (the control service has fetched the keys and the
/// server has them).
async fn accepted_eventually(client: &MeshClient<Body>, token: &str) -> bool {
    for _ in 0..100 {
        if call(client, "/me", Some(token)).await.0 == StatusCode::OK {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn tokens_are_verified_refused_by_reason_and_authorized_on_claims() {
    let (rsa, ec, ed) = (
        TestKey::rs256("rsa-1"),
        TestKey::es256("ec-1"),
        TestKey::ed25519("ed-1"),
    );
    let jwks_server = JwksServer::start(jwks(&[&rsa, &ec, &ed])).await.unwrap();
    let (lw, lg) = (listener().await.unwrap(), listener().await.unwrap());
    let config = config(
        lw.local_addr().unwrap(),
        lg.local_addr().unwrap(),
        &jwks_server.uri(),
    );
    let harness = Harness::start(&config).await.unwrap();
    let serving = start_web(&harness, lw).await;
    let greeter = harness.greeter(lg, "g1", "greeter").await.unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let web = client_mesh.client::<Body>("web.default").await.unwrap();

    let t = now();
    let good = |key: &TestKey, sub: &str, groups: &[&str]| {
        let mut c = claims(ISS, sub, "web", t + 600);
        c["groups"] = json!(groups);
        key.sign(&c)
    };
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(ISS, "mallory", "web", t + 600);
        edit(&mut c);
        ec.sign(&c)
    };
    assert!(
        accepted_eventually(&web, &good(&ec, "first", &[])).await,
        "the keys never reached the server"
    );

    // (name, path, token, status, what the refusal must say)
    let cases: Vec<(&str, &str, Option<String>, StatusCode, &str)> = vec![
        (
            "RS256",
            "/me",
            Some(good(&rsa, "alice", &["dev"])),
            StatusCode::OK,
            "",
        ),
        (
            "ES256",
            "/me",
            Some(good(&ec, "bob", &[])),
            StatusCode::OK,
            "",
        ),
        (
            "EdDSA",
            "/me",
            Some(good(&ed, "carol", &[])),
            StatusCode::OK,
            "",
        ),
        (
            "admin",
            "/admin/panel",
            Some(good(&ed, "dana", &["admin"])),
            StatusCode::OK,
            "",
        ),
        (
            "not admin",
            "/admin/panel",
            Some(good(&ed, "erin", &["dev"])),
            StatusCode::FORBIDDEN,
            "no ALLOW policy",
        ),
        (
            "no token",
            "/me",
            None,
            StatusCode::FORBIDDEN,
            "no ALLOW policy",
        ),
        ("no token, public", "/public", None, StatusCode::OK, ""),
        (
            "expired",
            "/me",
            Some(edited(&|c| c["exp"] = json!(t - 3600))),
            StatusCode::UNAUTHORIZED,
            "expired",
        ),
        (
            "not yet valid",
            "/me",
            Some(edited(&|c| c["nbf"] = json!(t + 3600))),
            StatusCode::UNAUTHORIZED,
            "not valid yet",
        ),
        (
            "wrong audience",
            "/me",
            Some(edited(&|c| c["aud"] = json!("billing"))),
            StatusCode::UNAUTHORIZED,
            "audience",
        ),
        (
            "wrong issuer",
            "/me",
            Some(edited(&|c| c["iss"] = json!("https://evil.test"))),
            StatusCode::UNAUTHORIZED,
            "issuer",
        ),
        (
            "bad signature",
            "/me",
            Some(TestKey::es256("ec-1").sign(&claims(ISS, "x", "web", t + 600))),
            StatusCode::UNAUTHORIZED,
            "signature",
        ),
        (
            "garbage",
            "/public",
            Some("not.a.jwt".to_owned()),
            StatusCode::UNAUTHORIZED,
            "malformed",
        ),
    ];
    let mut outcomes: BTreeMap<u16, usize> = BTreeMap::new();
    for (name, path, token, want, why) in &cases {
        let (status, body, headers) = call(&web, path, token.as_deref()).await;
        *outcomes.entry(status.as_u16()).or_default() += 1;
        assert_eq!(status, *want, "{name}: {headers}");
        assert!(
            headers.contains(why),
            "{name}: the answer names {why:?}: {headers}"
        );
        if let Some(token) = token {
            assert!(
                !headers.contains(&token[..token.len().min(24)]),
                "{name}: the token leaked into the answer: {headers}"
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                headers.contains("Bearer error=\\\"invalid_token\\\""),
                "{name}: an RFC 6750 challenge: {headers}"
            );
        }
        if status == StatusCode::OK && *path != "/public" {
            assert_eq!(body["iss"], ISS, "{name}: the handler sees the principal");
            assert!(body["sub"].is_string(), "{name}: {body}");
        }
    }
    assert_eq!(
        outcomes,
        BTreeMap::from([(200, 5), (401, 6), (403, 2)]),
        "calls per status"
    );
    let (_, body, _) = call(&web, "/admin/panel", Some(&good(&ed, "dana", &["admin"]))).await;
    assert_eq!(
        body["groups"],
        json!(["admin"]),
        "the handler sees the claims"
    );

    // gRPC: UNAUTHENTICATED naming the reason; a valid token passes.
    let channel = client_mesh.channel("greeter.default").await.unwrap();
    let hello = |token: String| {
        let mut client = GreeterClient::new(channel.clone());
        async move {
            let mut request = tonic::Request::new(HelloRequest { name: "ann".into() });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            client.say_hello(request).await
        }
    };
    let expired = ec.sign(&claims(ISS, "x", "greeter", t - 3600));
    let status = hello(expired.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
    assert!(!status.message().contains(&expired[..24]), "{status:?}");
    hello(ed.sign(&claims(ISS, "x", "greeter", t + 600)))
        .await
        .unwrap();
    assert_eq!(
        greeter.greeter.served(),
        1,
        "refused calls never reach the handler"
    );
    serving.abort();
}

#[tokio::test]
async fn last_good_keys_survive_an_outage_and_a_rotation_is_picked_up_on_refresh() {
    let (old, new) = (TestKey::es256("2024"), TestKey::ed25519("2025"));
    let jwks_server = JwksServer::start(jwks(&[&old])).await.unwrap();
    let (lw, lg) = (listener().await.unwrap(), listener().await.unwrap());
    let config = config(
        lw.local_addr().unwrap(),
        lg.local_addr().unwrap(),
        &jwks_server.uri(),
    );
    let harness = Harness::start_with(&config, |options| {
        options.jwks.refresh = Duration::from_secs(1);
        options.jwks.retry = Duration::from_millis(100);
    })
    .await
    .unwrap();
    let serving = start_web(&harness, lw).await;
    let client_mesh = harness.mesh("client").await.unwrap();
    let web = client_mesh.client::<Body>("web.default").await.unwrap();
    let token = |key: &TestKey| key.sign(&claims(ISS, "alice", "web", now() + 600));
    assert!(accepted_eventually(&web, &token(&old)).await);

    // The issuer fails (an error status, then a document that is no JWK Set): several fetches
    // fail, and the last good keys keep working.
    let version = harness.config_version();
    for answer in [
        JwksAnswer::Status(StatusCode::SERVICE_UNAVAILABLE),
        JwksAnswer::Document("{\"keys\": \"nope\"}".to_owned()),
    ] {
        jwks_server.set(answer);
        let before = jwks_server.fetches();
        assert!(
            eventually(Duration::from_secs(10), || jwks_server.fetches()
                >= before + 3)
            .await,
            "the control service kept trying"
        );
        assert_eq!(
            call(&web, "/me", Some(&token(&old))).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        harness.config_version(),
        version,
        "failed fetches publish nothing"
    );

    // The issuer rotates: the new key is accepted after a refresh, and the old one refused.
    jwks_server.set(JwksAnswer::Document(jwks(&[&new])));
    assert!(
        accepted_eventually(&web, &token(&new)).await,
        "the rotated key"
    );
    let (status, _, headers) = call(&web, "/me", Some(&token(&old))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers}");
    assert!(headers.contains("no key"), "{headers}");
    assert!(
        harness.config_version() > version,
        "new keys are a new version"
    );
    serving.abort();
}
