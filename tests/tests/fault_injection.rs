//! Fault injection end to end, over real mTLS: a route's `FaultInjection` filter aborts and
//! delays 0 %, 50 % and 100 % of calls, counted over a few hundred calls each.
//!
//! Nothing is timed. An abort is the mesh's own answer, told apart by `x-mesh-error` /
//! `grpc-message` naming the fault, and the backend's own count shows it was never sent (nor
//! retried, though the rule retries 503). A delay is counted through the call's timeout: the
//! rule delays by far more than its request timeout, so each delayed call ends as that
//! timeout (504) and never reaches the backend, and each other call is answered.
//!
//! The 50 % counts must lie within four standard deviations of half: for 300 calls that is
//! 150 ± 35, which a fair coin leaves about once in 16 000 runs.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use http::StatusCode;
use mesh_tests::greeter::GreeterMode;
use mesh_tests::web::{WebMode, get, send};
use mesh_tests::{Config, Harness, concurrently, listener};
use mesh_tonic::MeshTonicExt;

/// Calls per percentage.
const CALLS: usize = 300;
/// Calls in flight at once.
const IN_FLIGHT: usize = 32;

/// Whether `count` of `CALLS` is within four standard deviations of `percent` %.
fn plausible(count: usize, percent: f64) -> bool {
    let n = CALLS as f64;
    let p = percent / 100.0;
    let sigma = (n * p * (1.0 - p)).sqrt();
    (count as f64 - n * p).abs() <= 4.0 * sigma
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_aborts_and_delays_hit_their_share_of_calls() {
    let lw = listener().await.unwrap();
    let fault = |path: &str, filter: &str| {
        format!(
            "{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], \
              backendRefs: [{{name: web}}], timeouts: {{request: 300ms}}, \
              retry: {{codes: [503], attempts: 2}}, \
              filters: [{{type: FaultInjection, faultInjection: {filter}}}]}}"
        )
    };
    let abort = |percent: u32| format!("{{abort: {{httpStatus: 503, percent: {percent}}}}}");
    let delay = |percent: u32| format!("{{delay: {{fixedDelay: 1m, percent: {percent}}}}}");
    let rules = [
        fault("/abort0", &abort(0)),
        fault("/abort50", &abort(50)),
        fault("/abort100", &abort(100)),
        fault("/delay0", &delay(0)),
        fault("/delay50", &delay(50)),
        fault("/delay100", &delay(100)),
    ];
    let config = Config::new()
        .service("web", &[(lw.local_addr().unwrap(), "web")])
        .routes(
            "web",
            &format!("- {{name: chaos, rules: [{}]}}", rules.join(", ")),
        )
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let web = harness
        .web(lw, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let mesh = harness.mesh("client").await.unwrap();
    let client = mesh.client::<Body>("web").await.unwrap();

    // (path, percent, the mesh's answer to a faulted call, what its message names)
    let cases = [
        ("/abort0", 0.0, StatusCode::SERVICE_UNAVAILABLE, "abort"),
        ("/abort50", 50.0, StatusCode::SERVICE_UNAVAILABLE, "abort"),
        ("/abort100", 100.0, StatusCode::SERVICE_UNAVAILABLE, "abort"),
        (
            "/delay0",
            0.0,
            StatusCode::GATEWAY_TIMEOUT,
            "did not answer",
        ),
        (
            "/delay50",
            50.0,
            StatusCode::GATEWAY_TIMEOUT,
            "did not answer",
        ),
        (
            "/delay100",
            100.0,
            StatusCode::GATEWAY_TIMEOUT,
            "did not answer",
        ),
    ];
    for (path, percent, faulted_status, named) in cases {
        let replies = concurrently(CALLS, IN_FLIGHT, {
            let client = client.clone();
            move |_| {
                let client = client.clone();
                async move { get(&client, path).await }
            }
        })
        .await;
        let answered = replies
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        let faulted = replies
            .iter()
            .filter(|r| {
                r.status == faulted_status
                    && r.mesh_error().is_some_and(|e| e.contains(named))
                    && r.backend().is_none()
            })
            .count();
        let reached = web.log.count_path(path);
        eprintln!("{path}: {faulted} faulted, {answered} answered, {reached} reached the backend");
        assert_eq!(
            answered + faulted,
            CALLS,
            "{path}: every call is one or the other"
        );
        // Each faulted call was never sent, and none was retried.
        assert_eq!(reached, answered, "{path}");
        assert!(
            plausible(faulted, percent),
            "{path}: {faulted} of {CALLS} faulted"
        );
        if percent == 50.0 {
            assert!(answered > 0 && faulted > 0, "{path}");
        }
    }

    // An abort names the filter's route and rule; explain names the fault.
    let request = http::Request::get("/abort100")
        .header("x-mesh-explain", "1")
        .body(Body::empty())
        .unwrap();
    let reply = send(&client, request).await;
    let error = reply.mesh_error().unwrap();
    assert!(
        error.contains("fault injected by route \"chaos\" rule 2") && error.contains("HTTP 503"),
        "{error}"
    );
    assert_eq!(reply.headers["x-mesh-fault"], "abort HTTP 503");
    assert_eq!(reply.headers["x-mesh-route"], "chaos");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_aborts_answer_their_status_for_their_share_of_calls() {
    let lg = listener().await.unwrap();
    let rule = |method: &str, percent: u32| {
        format!(
            "{{matches: [{{method: {{service: helloworld.Greeter, method: {method}}}}}], \
              backendRefs: [{{name: greeter}}], \
              retry: {{statuses: [UNAVAILABLE], attempts: 2}}, \
              filters: [{{type: FaultInjection, faultInjection: \
                {{abort: {{grpcStatus: UNAVAILABLE, percent: {percent}}}}}}}]}}"
        )
    };
    // One method, so one rule at a time: the route is swapped between percentages.
    let addr = lg.local_addr().unwrap();
    let config = |percent: u32| {
        Config::new()
            .service("greeter", &[(addr, "greeter")])
            .routes(
                "greeter",
                &format!(
                    "- {{name: chaos, kind: grpc, rules: [{}]}}",
                    rule("SayHello", percent)
                ),
            )
            .account("greeter")
            .account("client")
    };

    let harness = Harness::start(&config(100)).await.unwrap();
    let greeter = harness
        .test_greeter(lg, "g1", "greeter", "greeter", GreeterMode::Normal)
        .await
        .unwrap();
    let mesh = harness.mesh("client").await.unwrap();
    let channel = mesh.channel("greeter").await.unwrap();
    // The first config (100 %) is in force before the versions are counted from it.
    let first = GreeterClient::new(channel.clone())
        .say_hello(HelloRequest {
            name: "fault".into(),
        })
        .await
        .unwrap_err();
    assert!(first.message().contains("fault injected"), "{first:?}");

    for percent in [0, 50, 100] {
        harness.reconfigure(&mesh, &config(percent)).await.unwrap();
        // A client made now starts from the snapshot just received (one made before applies
        // it a moment later, so its first calls could still see the previous percentage).
        let channel = mesh.channel("greeter").await.unwrap();
        let before = greeter.greeter.received();
        let results = concurrently(CALLS, IN_FLIGHT, {
            let channel = channel.clone();
            move |_| {
                let mut client = GreeterClient::new(channel.clone());
                async move {
                    client
                        .say_hello(HelloRequest {
                            name: "fault".into(),
                        })
                        .await
                }
            }
        })
        .await;
        let answered = results.iter().filter(|r| r.is_ok()).count();
        let aborted = results
            .iter()
            .filter(|r| {
                r.as_ref().err().is_some_and(|s| {
                    s.code() == tonic::Code::Unavailable && s.message().contains("fault injected")
                })
            })
            .count();
        let reached = (greeter.greeter.received() - before) as usize;
        eprintln!("gRPC {percent} %: {aborted} aborted, {answered} answered, {reached} reached");
        assert_eq!(answered + aborted, CALLS, "{percent} %");
        assert_eq!(
            reached, answered,
            "{percent} %: aborted calls are never sent nor retried"
        );
        assert!(
            plausible(aborted, f64::from(percent)),
            "{percent} %: {aborted}"
        );
    }
}

/// The fake Kubernetes API server the control crate's tests use.
#[path = "../../control/tests/k8s_support/mod.rs"]
mod k8s_support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_injection_resource_named_by_an_extension_ref_applies_through_kubernetes() {
    use k8s_support::{
        FAULTS, FakeApi, HTTP_ROUTES, PODS, Review, SERVICES, SLICES, pod, service, slice,
    };
    use mesh_control::ConfigSource;
    use mesh_control::k8s::KubernetesSource;
    use serde_json::json;

    let lw = listener().await.unwrap();
    let api = FakeApi::start().await;
    api.apply(SERVICES, service("default", "web"));
    api.apply(PODS, pod("default", "web-1", "web"));
    api.apply(
        SLICES,
        slice(
            "default",
            "web-abc",
            "web",
            lw.local_addr().unwrap().port(),
            &[("127.0.0.1", "web-1")],
        ),
    );
    for account in ["web", "client"] {
        api.review(
            &mesh_tests::token_for(account),
            Review {
                authenticated: true,
                username: format!("system:serviceaccount:default:{account}"),
                audiences: None,
            },
        );
    }
    let fault = |percent: u32| {
        json!({"apiVersion": "policy.mesh.dev/v1alpha1", "kind": "FaultInjection",
               "metadata": {"name": "web-abort", "namespace": "default"},
               "spec": {"abort": {"httpStatus": 503, "percent": percent}}})
    };
    api.apply(FAULTS, fault(50));
    api.apply(
        HTTP_ROUTES,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": "web-chaos", "namespace": "default", "generation": 1},
               "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
                        "rules": [{"filters": [{"type": "ExtensionRef",
                                                "extensionRef": {"group": "policy.mesh.dev",
                                                                 "kind": "FaultInjection",
                                                                 "name": "web-abort"}}],
                                   "backendRefs": [{"name": "web", "port": 80}]}]}}),
    );

    let harness = Harness::start_with(&Config::new(), |options| {
        let mut source = KubernetesSource::new(api.client());
        source.sync_timeout = std::time::Duration::from_secs(10);
        options.config = ConfigSource::Kubernetes(source);
    })
    .await
    .unwrap();
    let web = harness
        .web(lw, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let mesh = harness.mesh("client").await.unwrap();
    let client = mesh.client::<Body>("web").await.unwrap();

    // Half the calls are aborted by the mesh, never sent; the rest are answered.
    let replies = concurrently(CALLS, IN_FLIGHT, {
        let client = client.clone();
        move |_| {
            let client = client.clone();
            async move { get(&client, "/k8s").await }
        }
    })
    .await;
    let answered = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let aborted = replies
        .iter()
        .filter(|r| {
            r.status == StatusCode::SERVICE_UNAVAILABLE
                && r.mesh_error().is_some_and(|e| e.contains("fault injected"))
        })
        .count();
    let reached = web.log.count_path("/k8s");
    eprintln!("kubernetes 50 %: {aborted} aborted, {answered} answered, {reached} reached");
    assert_eq!(answered + aborted, CALLS);
    assert_eq!(reached, answered);
    assert!(plausible(aborted, 50.0), "{aborted} of {CALLS} aborted");

    // The resource gone, the filter is not skipped: the rule answers 500, and nothing is sent.
    api.delete(FAULTS, "default", "web-abort");
    let mut gone = None;
    for _ in 0..100 {
        // (Probes on a path of their own: the first may still pass at 50 %.)
        let reply = get(&client, "/k8s-probe").await;
        if reply.status == StatusCode::INTERNAL_SERVER_ERROR {
            gone = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let gone = gone.expect("the rule answers 500 once its FaultInjection is deleted");
    assert!(gone.backend().is_none(), "{gone:?}");
    let replies = concurrently(50, 8, {
        let client = client.clone();
        move |_| {
            let client = client.clone();
            async move { get(&client, "/k8s-gone").await.status }
        }
    })
    .await;
    assert!(
        replies
            .iter()
            .all(|s| *s == StatusCode::INTERNAL_SERVER_ERROR),
        "{replies:?}"
    );
    assert_eq!(web.log.count_path("/k8s-gone"), 0);
    // And the route's status says which reference did not resolve.
    let resolved_refs = || {
        api.object(HTTP_ROUTES, "default", "web-chaos")
            .and_then(|r| r["status"]["parents"].get(0).cloned())
            .and_then(|p| {
                p["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "ResolvedRefs")
                    .cloned()
            })
    };
    let mut condition = None;
    for _ in 0..100 {
        condition = resolved_refs().filter(|c| c["status"] == "False");
        if condition.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let condition = condition.expect("ResolvedRefs is written false");
    assert_eq!(condition["reason"], "FilterNotFound", "{condition}");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("default/web-abort"),
        "{condition}"
    );

    // Back at 100 %: every call is aborted.
    api.apply(FAULTS, fault(100));
    let mut back = false;
    for _ in 0..100 {
        let reply = get(&client, "/k8s-probe").await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "the FaultInjection applies again once it is back");
    let replies = concurrently(50, 8, {
        let client = client.clone();
        move |_| {
            let client = client.clone();
            async move { get(&client, "/k8s-back").await.status }
        }
    })
    .await;
    assert!(
        replies
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{replies:?}"
    );
    assert_eq!(web.log.count_path("/k8s-back"), 0);
}
