//! W3C trace context (`traceparent`, `tracestate`) in and out of HTTP headers, through the
//! OpenTelemetry propagator API and `tracing-opentelemetry`.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::{Context, global};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes W3C trace context the global propagator, unless the application set one (the
/// default global propagator is a no-op that names no header: that is how it is told apart).
pub fn install_propagator() {
    let unset = global::get_text_map_propagator(|p| p.fields().next().is_none());
    if unset {
        global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    }
}

/// The trace context a caller sent in `headers` (empty when none).
pub fn extract_context(headers: &HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes `span`'s trace context into `headers`, so the callee's spans join its trace. Does
/// nothing for a span no subscriber records.
pub fn inject_context(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
}

/// Parents `span` on the trace context in `headers`, if any.
pub(crate) fn set_remote_parent(span: &Span, headers: &HeaderMap) {
    static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    if span.is_disabled() || !headers.contains_key(&TRACEPARENT) {
        return;
    }
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to link.
    let _ = span.set_parent(extract_context(headers));
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
