//! Tracing end to end: a client calls `front` (axum) through the mesh, whose handler calls
//! `greeter` (tonic) through the mesh; the spans an in-memory OpenTelemetry exporter records
//! form one trace, each parented on the one before across the process boundaries that W3C
//! `traceparent` headers carry.
//!
//! Alone in its file: it installs the process's global `tracing` subscriber.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::test]
async fn one_trace_crosses_two_meshed_services() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("test"))
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("mesh", tracing::Level::DEBUG),
                ),
        )
        .init();

    // front (axum) -> greeter (tonic), called once by `client`.
    let _hops = mesh_tests::telemetry::two_hops().await;

    // The server spans end when their response bodies have been sent.
    let mut spans: Vec<SpanData> = Vec::new();
    for _ in 0..50 {
        spans = exporter.get_finished_spans().unwrap();
        if spans.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let find = |kind: SpanKind, name: &str| -> &SpanData {
        let found: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.span_kind == kind && s.name == name)
            .collect();
        assert_eq!(found.len(), 1, "one {kind:?} span {name:?} in {spans:#?}");
        found[0]
    };
    let call_front = find(SpanKind::Client, "GET");
    let serve_front = find(SpanKind::Server, "GET");
    let call_greeter = find(SpanKind::Client, "helloworld.Greeter/SayHello");
    let serve_greeter = find(SpanKind::Server, "helloworld.Greeter/SayHello");

    let trace = call_front.span_context.trace_id();
    for span in [serve_front, call_greeter, serve_greeter] {
        assert_eq!(span.span_context.trace_id(), trace, "one trace: {span:#?}");
    }
    assert_eq!(
        call_front.parent_span_id,
        SpanId::INVALID,
        "the client's span is the root"
    );
    assert_eq!(
        serve_front.parent_span_id,
        call_front.span_context.span_id()
    );
    assert!(
        serve_front.parent_span_is_remote,
        "parented through traceparent"
    );
    assert_eq!(
        call_greeter.parent_span_id,
        serve_front.span_context.span_id()
    );
    assert!(
        !call_greeter.parent_span_is_remote,
        "the handler ran inside the server span"
    );
    assert_eq!(
        serve_greeter.parent_span_id,
        call_greeter.span_context.span_id()
    );
    assert!(serve_greeter.parent_span_is_remote);

    // What `x-mesh-explain` tells, as span events: the try's endpoint on the client side,
    // the authorization verdict on the server side.
    let events = |span: &SpanData| -> Vec<String> {
        span.events.iter().map(|e| e.name.to_string()).collect()
    };
    assert!(
        events(call_greeter).contains(&"try answered".to_owned()),
        "{:?}",
        events(call_greeter)
    );
    assert!(
        events(serve_greeter).contains(&"authorized".to_owned()),
        "{:?}",
        events(serve_greeter)
    );

    // OpenTelemetry attributes.
    let attribute = |span: &SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(
        attribute(serve_greeter, "rpc.system.name").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        attribute(serve_greeter, "rpc.method").as_deref(),
        Some("helloworld.Greeter/SayHello")
    );
    assert_eq!(
        attribute(serve_greeter, "rpc.status_code").as_deref(),
        Some("OK")
    );
    assert_eq!(attribute(serve_greeter, "error.type"), None);
    assert_eq!(
        attribute(call_front, "server.address").as_deref(),
        Some("front.default")
    );
    assert_eq!(
        attribute(call_front, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(serve_greeter, "mesh.peer_identity").as_deref(),
        Some(mesh_tests::spiffe("front").as_str())
    );
}
