//! OTLP export end to end: `mesh_tower::telemetry::otlp` (the `otlp` feature) sends the spans
//! of a client -> front (axum) -> greeter (tonic) call over OTLP/gRPC to a receiver this test
//! serves (`opentelemetry.proto.collector.trace.v1.TraceService`), and what arrives is one
//! trace whose server spans are parented, through W3C `traceparent`, on the callers' client
//! spans, with the conventions' attributes.
//!
//! Alone in its file: it installs the process's global `tracing` subscriber.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_tests::listener;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The receiver: keeps every span exported to it.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?;
    match value.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_as_one_trace() {
    let started = std::time::Instant::now();
    // The receiver, plaintext OTLP/gRPC on loopback.
    let receiver = Receiver::default();
    let otlp_listener = listener().await.unwrap();
    let otlp_addr = otlp_listener.local_addr().unwrap();
    let receiving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                otlp_listener,
            )),
    );

    let provider =
        mesh_tower::telemetry::otlp::tracer_provider_for(&format!("http://{otlp_addr}")).unwrap();
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("otlp-test"))
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("mesh", tracing::Level::INFO),
                ),
        )
        .init();

    // front (axum) -> greeter (tonic), called once by `client`.
    let _hops = mesh_tests::telemetry::two_hops().await;

    // The server spans end when their response bodies have been sent; then the batch goes
    // out on a flush.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let flushing = provider.clone();
    tokio::task::spawn_blocking(move || flushing.force_flush())
        .await
        .unwrap()
        .unwrap();
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = receiver.spans.lock().unwrap().clone();
        if spans.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let find = |kind: SpanKind, name: &str| -> Span {
        let found: Vec<&Span> = spans
            .iter()
            .filter(|s| s.kind == kind as i32 && s.name == name)
            .collect();
        assert_eq!(found.len(), 1, "one {kind:?} span {name:?} in {spans:#?}");
        found[0].clone()
    };
    let call_front = find(SpanKind::Client, "GET");
    let serve_front = find(SpanKind::Server, "GET");
    let call_greeter = find(SpanKind::Client, "helloworld.Greeter/SayHello");
    let serve_greeter = find(SpanKind::Server, "helloworld.Greeter/SayHello");

    // One trace across the services, each server span parented on its caller's client span.
    let trace = &call_front.trace_id;
    assert_eq!(trace.len(), 16);
    for span in [&serve_front, &call_greeter, &serve_greeter] {
        assert_eq!(&span.trace_id, trace, "one trace: {span:#?}");
    }
    assert!(call_front.parent_span_id.is_empty(), "the root");
    assert_eq!(serve_front.parent_span_id, call_front.span_id);
    assert_eq!(call_greeter.parent_span_id, serve_front.span_id);
    assert_eq!(serve_greeter.parent_span_id, call_greeter.span_id);
    // OTLP's flags say the server spans' parents are remote (bit 9 set, bit 8 known).
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    for span in [&serve_front, &serve_greeter] {
        assert_eq!(
            span.flags & (HAS_IS_REMOTE | IS_REMOTE),
            HAS_IS_REMOTE | IS_REMOTE,
            "{span:#?}"
        );
    }

    // The conventions' attributes, as exported.
    assert_eq!(
        attribute(&serve_greeter, "rpc.system.name").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        attribute(&serve_greeter, "rpc.method").as_deref(),
        Some("helloworld.Greeter/SayHello")
    );
    assert_eq!(
        attribute(&call_greeter, "rpc.status_code").as_deref(),
        Some("OK")
    );
    assert_eq!(
        attribute(&call_front, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(&call_greeter, "server.address").as_deref(),
        Some("greeter.default")
    );

    provider.shutdown().ok();
    receiving.abort();
    println!("otlp test took {:?}", started.elapsed());
}
