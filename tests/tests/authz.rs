//! Authorization end to end: policies from the control file, enforced by the meshed server on
//! every call, with refusals that name the policy.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::web::{WebMode, get};
use mesh_tests::{Config, Harness, listener};
use mesh_tonic::MeshTonicExt;

const POLICIES: &str = r#"
policies:
  - name: client-may-greet
    target: {service: greeter}
    action: ALLOW
    rules:
      - from: {identities: ["spiffe://mesh.local/ns/default/sa/client"]}
        to: {grpc: [{service: helloworld.Greeter, method: SayHello}]}
  - name: no-intruder
    target: {service: greeter}
    action: DENY
    rules:
      - from: {serviceAccounts: [default/intruder]}
  - name: watch-client
    target: {service: greeter}
    action: DENY
    mode: audit
    rules:
      - from: {identities: ["spiffe://mesh.local/ns/default/sa/client"]}
"#;

async fn hello(mesh: &mesh_tower::Mesh) -> Result<String, tonic::Status> {
    let mut client = GreeterClient::new(mesh.channel("greeter.default").await.unwrap());
    client
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .map(|r| r.into_inner().message)
}

#[tokio::test]
async fn grpc_calls_are_allowed_denied_and_audited_by_policy() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .service_keys("greeter", "defaultPolicy: deny")
        .top_level(POLICIES)
        .account("greeter")
        .account("client")
        .account("stranger")
        .account("intruder");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness.greeter(l, "g1", "greeter").await.unwrap();

    // Allowed by `client-may-greet`; the audit-mode DENY only records.
    let client = harness.mesh("client").await.unwrap();
    assert!(hello(&client).await.is_ok());

    // No ALLOW policy matches a stranger.
    let stranger = harness.mesh("stranger").await.unwrap();
    let status = hello(&stranger).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // The DENY policy names itself.
    let intruder = harness.mesh("intruder").await.unwrap();
    let status = hello(&intruder).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("no-intruder"),
        "the refusal names the policy: {status:?}"
    );
    assert_eq!(
        replica.greeter.served(),
        1,
        "denied calls never reach the handler"
    );
}

#[tokio::test]
async fn http_default_deny_with_an_exempt_probe_path() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .service_keys("web", "defaultPolicy: deny\nexemptPaths: [/healthz]")
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let web = harness
        .web(l, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh
        .client::<axum::body::Body>("web.default")
        .await
        .unwrap();

    let denied = get(&client, "/orders").await;
    assert_eq!(denied.status, http::StatusCode::FORBIDDEN);
    assert!(
        denied.mesh_error().unwrap().contains("deny"),
        "the refusal says why: {:?}",
        denied.mesh_error()
    );
    let probe = get(&client, "/healthz").await;
    assert_eq!(probe.status, http::StatusCode::OK);
    assert_eq!(
        web.log.count(),
        1,
        "only the exempt path reached the handler"
    );
    assert_eq!(web.log.count_path("/healthz"), 1);
}

#[tokio::test]
async fn a_policy_on_one_route_applies_to_that_route_only() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .routes(
            "web",
            r#"
            - name: admin
              rules:
                - matches: [{path: {type: PathPrefix, value: /admin}}]
                  backendRefs: [{name: web}]
            - name: everything
              rules:
                - backendRefs: [{name: web}]
            "#,
        )
        .top_level(
            r#"
            policies:
              - name: no-admin-for-clients
                target: {service: web, route: admin}
                action: DENY
                rules:
                  - from: {serviceAccounts: [default/client]}
            "#,
        )
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let web = harness
        .web(l, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh
        .client::<axum::body::Body>("web.default")
        .await
        .unwrap();

    let denied = get(&client, "/admin/users").await;
    assert_eq!(denied.status, http::StatusCode::FORBIDDEN);
    assert!(
        denied
            .mesh_error()
            .unwrap()
            .contains("no-admin-for-clients"),
        "{:?}",
        denied.mesh_error()
    );
    let allowed = get(&client, "/orders").await;
    assert_eq!(allowed.status, http::StatusCode::OK);
    assert_eq!(
        web.log.count(),
        1,
        "only the allowed call reached the handler"
    );
}
