//! Route filters end to end: request header edits seen by the backend, response header edits
//! seen by the caller, and mirrored copies reaching the mirror while the caller gets the
//! primary's answer.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use mesh_tests::web::{WebMode, send};
use mesh_tests::{Config, Harness, eventually, listener};

#[tokio::test]
async fn header_modifiers_edit_the_request_and_the_response() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .routes(
            "web",
            r#"
            - name: edited
              rules:
                - backendRefs: [{name: web}]
                  filters:
                    - type: RequestHeaderModifier
                      requestHeaderModifier:
                        set: [{name: x-route, value: edited}]
                        add: [{name: x-trace, value: mesh}]
                        remove: [x-internal]
                    - type: ResponseHeaderModifier
                      responseHeaderModifier:
                        set: [{name: x-served-by, value: mesh}]
                        add: [{name: x-note, value: added}]
                        remove: [x-secret]
            "#,
        )
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness
        .web(l, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh.client::<Body>("web").await.unwrap();

    // The backend answers with `x-served-by`, `x-note` and `x-secret` of its own.
    let request = http::Request::get(
        "/edit?header=x-served-by:backend&header=x-note:backend&header=x-secret:s3cr3t",
    )
    .header("x-route", "caller")
    .header("x-trace", "caller")
    .header("x-internal", "do-not-forward")
    .header("x-untouched", "kept")
    .body(Body::empty())
    .unwrap();
    let reply = send(&client, request).await;
    assert_eq!(reply.status, http::StatusCode::OK);

    let echo = reply.echo();
    assert_eq!(echo.header("x-route"), ["edited"], "set replaces");
    assert_eq!(echo.header("x-trace"), ["caller", "mesh"], "add appends");
    assert!(echo.header("x-internal").is_empty(), "remove deletes");
    assert_eq!(echo.header("x-untouched"), ["kept"]);
    let seen = &replica.log.entries()[0].headers;
    assert!(!seen.contains_key("x-internal"));

    let values = |name: &str| -> Vec<&str> {
        reply
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(values("x-served-by"), ["mesh"], "set replaces");
    assert_eq!(values("x-note"), ["backend", "added"], "add appends");
    assert!(values("x-secret").is_empty(), "remove deletes");
    assert_eq!(values("x-backend"), ["w1"]);
}

#[tokio::test]
async fn a_mirror_receives_a_copy_and_the_caller_gets_the_primarys_answer() {
    let (lp, lm) = (listener().await.unwrap(), listener().await.unwrap());
    let config = Config::new()
        .service("web", &[(lp.local_addr().unwrap(), "web")])
        .routes(
            "web",
            r#"
            - name: mirrored
              rules:
                - backendRefs: [{name: web}]
                  filters:
                    - type: RequestMirror
                      requestMirror: {backendRef: {name: web-shadow}, percent: 100}
            "#,
        )
        .service("web-shadow", &[(lm.local_addr().unwrap(), "web")])
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let primary = harness.web(lp, "primary", "web", "web", WebMode::Normal);
    // The mirror fails every request: its answer must not reach the caller.
    let shadow_mode = WebMode::Fail(http::StatusCode::INTERNAL_SERVER_ERROR);
    let shadow = harness.web(lm, "shadow", "web", "web-shadow", shadow_mode);
    let (primary, shadow) = tokio::try_join!(primary, shadow).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh.client::<Body>("web").await.unwrap();

    for i in 0..10 {
        let request = http::Request::post(format!("/orders/{i}"))
            .header("x-request", i.to_string())
            .body(Body::from(format!("order {i}")))
            .unwrap();
        let reply = send(&client, request).await;
        assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
        let echo = reply.echo();
        assert_eq!(echo.backend, "primary");
        assert_eq!(echo.body_len, format!("order {i}").len());
    }
    assert_eq!(primary.log.count(), 10);
    assert!(
        eventually(Duration::from_secs(5), || shadow.log.count() == 10).await,
        "the mirror received {} of 10 copies",
        shadow.log.count()
    );
    let mut copies = shadow.log.entries();
    copies.sort_by(|a, b| a.path.cmp(&b.path));
    for (i, copy) in copies.iter().enumerate() {
        assert_eq!(copy.method, http::Method::POST);
        assert_eq!(copy.path, format!("/orders/{i}"));
        assert_eq!(copy.headers["x-request"], i.to_string().as_str());
    }
}
