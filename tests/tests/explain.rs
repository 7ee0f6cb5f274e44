//! Per-request explain end to end: a gRPC call with `x-mesh-explain: 1` comes back with the
//! route, rule, backend, endpoint and tries the caller's mesh used, and, from a server that
//! lists the caller in `MESH_EXPLAIN_TO`, the authorization verdict with the policy that
//! decided it; a caller the server does not list gets no verdict, and a call that does not
//! ask gets nothing.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_core::SpiffeId;
use mesh_tests::greeter::GreeterMode;
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tonic::MeshTonicExt;

const HEADERS: [&str; 6] = [
    "x-mesh-route",
    "x-mesh-rule",
    "x-mesh-backend",
    "x-mesh-endpoint",
    "x-mesh-tries",
    "x-mesh-authz",
];

/// Calls SayHello through `mesh`, with `x-mesh-explain: 1` when `explain`; the response's
/// explain headers that are present.
async fn explained(
    mesh: &mesh_tower::Mesh,
    explain: bool,
    canary: bool,
) -> Result<Vec<(String, String)>, tonic::Status> {
    let mut client = GreeterClient::new(mesh.channel("greeter.default").await.unwrap());
    let mut request = tonic::Request::new(HelloRequest { name: "ann".into() });
    if explain {
        request
            .metadata_mut()
            .insert("x-mesh-explain", "1".parse().unwrap());
    }
    if canary {
        request
            .metadata_mut()
            .insert("x-canary", "true".parse().unwrap());
    }
    let response = client.say_hello(request).await?;
    Ok(HEADERS
        .iter()
        .filter_map(|name| {
            let value = response.metadata().get(*name)?.to_str().unwrap();
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect())
}

fn value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_call_that_asks_is_told_its_route_endpoint_tries_and_verdict() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let config = Config::new()
        .service("greeter", &[])
        .routes(
            "greeter",
            r#"
            - name: canary
              kind: grpc
              rules:
                - matches:
                    - headers: [{name: x-canary, value: "true"}]
                  backendRefs: [{name: greeter-v2}]
                - backendRefs: [{name: greeter-v1}]
            "#,
        )
        .service("greeter-v1", &[(a1, "greeter")])
        .service("greeter-v2", &[(a2, "greeter")])
        .top_level(
            r#"
policies:
  - name: client-may-greet
    target: {service: greeter-v1}
    action: ALLOW
    rules:
      - from: {serviceAccounts: [default/client, default/other]}
"#,
        )
        .account("greeter")
        .account("client")
        .account("other");
    let harness = Harness::start(&config).await.unwrap();
    // greeter-v1 tells `client` (only) its verdicts; greeter-v2 tells no one.
    let explain_to = vec![SpiffeId::parse(&spiffe("client")).unwrap()];
    let _v1 = harness
        .greeter_with_settings(
            l1,
            "v1",
            harness
                .settings("greeter", Some("greeter-v1"))
                .with_explain_to(explain_to),
        )
        .await
        .unwrap();
    let _v2 = harness
        .test_greeter(l2, "v2", "greeter", "greeter-v2", GreeterMode::Normal)
        .await
        .unwrap();
    let client = harness.mesh("client").await.unwrap();

    // The fallback rule, to v1, which lists the client: everything.
    let told = explained(&client, true, false).await.unwrap();
    for (name, value) in &told {
        println!("{name}: {value}");
    }
    assert_eq!(value(&told, "x-mesh-route"), Some("canary"), "{told:?}");
    assert_eq!(value(&told, "x-mesh-rule"), Some("1"), "{told:?}");
    assert_eq!(
        value(&told, "x-mesh-backend"),
        Some("greeter-v1.default"),
        "{told:?}"
    );
    assert_eq!(
        value(&told, "x-mesh-endpoint"),
        Some(format!("{a1} {}", spiffe("greeter")).as_str()),
        "{told:?}"
    );
    assert_eq!(value(&told, "x-mesh-tries"), Some("1"), "{told:?}");
    let verdict = value(&told, "x-mesh-authz").unwrap();
    assert!(
        verdict.starts_with("allowed by") && verdict.contains("client-may-greet"),
        "{verdict}"
    );

    // The header match, to v2, which tells no one its verdicts: the caller's facts only.
    let told = explained(&client, true, true).await.unwrap();
    assert_eq!(value(&told, "x-mesh-rule"), Some("0"), "{told:?}");
    assert_eq!(
        value(&told, "x-mesh-backend"),
        Some("greeter-v2.default"),
        "{told:?}"
    );
    assert_eq!(value(&told, "x-mesh-authz"), None, "{told:?}");

    // Another caller, allowed but not listed by v1: no verdict.
    let other = harness.mesh("other").await.unwrap();
    let told = explained(&other, true, false).await.unwrap();
    assert_eq!(
        value(&told, "x-mesh-backend"),
        Some("greeter-v1.default"),
        "{told:?}"
    );
    assert_eq!(value(&told, "x-mesh-authz"), None, "{told:?}");

    // The meshed tonic servers told the control service what they serve (for `meshctl
    // check --admin`).
    let control = harness.control.as_ref().unwrap();
    let reported = mesh_core::testing::eventually(std::time::Duration::from_secs(5), || {
        control.subscribers().iter().any(|s| {
            s.own_service.as_ref().map(ToString::to_string).as_deref() == Some("greeter-v2.default")
                && s.grpc_services == ["helloworld.Greeter"]
        })
    })
    .await;
    assert!(reported, "{:?}", control.subscribers());

    // A call that does not ask: nothing.
    let told = explained(&client, false, false).await.unwrap();
    assert!(told.is_empty(), "{told:?}");
}
