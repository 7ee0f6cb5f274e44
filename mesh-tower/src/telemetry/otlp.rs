//! OTLP span export (cargo feature `otlp`, off by default), configured by the standard
//! OpenTelemetry environment variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, ...
//!
//! ```no_run
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::util::SubscriberInitExt as _;
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = mesh_tower::telemetry::otlp::tracer_provider()?;
//! tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-service")))
//!     .init();
//! // ... run; on the way out, flush what is batched:
//! provider.shutdown()?;
//! # Ok(()) }
//! ```

use opentelemetry_sdk::trace::SdkTracerProvider;

/// Why the exporter could not be built.
pub type OtlpError = opentelemetry_otlp::ExporterBuildError;

/// A tracer provider that batches spans to an OTLP/gRPC collector, installed as the global
/// provider, with W3C trace context as the propagator (unless the application set another).
/// Hand its tracer to `tracing_opentelemetry::layer()` in the application's subscriber.
pub fn tracer_provider() -> Result<SdkTracerProvider, OtlpError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    Ok(install(exporter))
}

/// [`tracer_provider`] exporting to `endpoint` (`http://collector:4317`) whatever
/// `OTEL_EXPORTER_OTLP_ENDPOINT` says: for an application that takes the collector's address
/// from its own configuration.
pub fn tracer_provider_for(endpoint: &str) -> Result<SdkTracerProvider, OtlpError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    Ok(install(exporter))
}

fn install(exporter: opentelemetry_otlp::SpanExporter) -> SdkTracerProvider {
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    super::install_propagator();
    provider
}
