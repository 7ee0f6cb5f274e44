//! One call's measurement: started with its span, ended when the response body ends (so the
//! gRPC status is read from the trailers) or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tracing::Span;
use tracing::field::Empty;

use super::metrics::{Status, StatusTable};

/// gRPC `CANCELLED`: the body was dropped before the status arrived.
const CANCELLED: i32 = 1;
/// gRPC `UNKNOWN`: the stream ended without a status.
const UNKNOWN: i32 = 2;

/// The span of one call made through the mesh, with OpenTelemetry client attributes. Fields
/// are evaluated only when a subscriber wants the span.
pub(crate) fn client_span<B>(
    request: &Request<B>,
    destination: &impl std::fmt::Display,
    grpc: bool,
) -> Span {
    let path = request.uri().path();
    let name = if grpc {
        path.trim_start_matches('/')
    } else {
        request.method().as_str()
    };
    tracing::info_span!(
        target: "mesh",
        "mesh.client",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = Empty,
        rpc.system = grpc.then_some("grpc"),
        http.request.method = request.method().as_str(),
        server.address = %destination,
        mesh.route = Empty,
        mesh.backend = Empty,
        rpc.grpc.status_code = Empty,
        http.response.status_code = Empty,
    )
}

/// The span of one call served, with OpenTelemetry server attributes.
pub(crate) fn server_span<B>(request: &Request<B>, service: &str, grpc: bool) -> Span {
    let path = request.uri().path();
    let name = if grpc {
        path.trim_start_matches('/')
    } else {
        request.method().as_str()
    };
    tracing::info_span!(
        target: "mesh",
        "mesh.server",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = grpc.then_some("grpc"),
        http.request.method = request.method().as_str(),
        mesh.service = service,
        client.identity = Empty,
        rpc.grpc.status_code = Empty,
        http.response.status_code = Empty,
    )
}

/// A call being measured; records its duration once, at the end of the response body or when
/// dropped.
pub(crate) struct CallRecord {
    table: Arc<StatusTable>,
    start: Instant,
    grpc: bool,
    status: Option<Status>,
    span: Span,
    done: bool,
}

impl std::fmt::Debug for CallRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRecord")
            .field("grpc", &self.grpc)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl CallRecord {
    pub(crate) fn new(table: Arc<StatusTable>, start: Instant, grpc: bool, span: Span) -> Self {
        Self {
            table,
            start,
            grpc,
            status: None,
            span,
            done: false,
        }
    }

    /// The call's span.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Reads the response head: the HTTP status, or a gRPC status sent in the headers
    /// (Trailers-Only, as the mesh's own refusals are).
    pub(crate) fn on_response<B>(&mut self, response: &Response<B>) {
        if self.grpc {
            if let Some(code) = grpc_status(response.headers()) {
                self.status = Some(Status::Grpc(code));
            } else if !response.status().is_success() {
                // A gRPC call answered with an HTTP error never gets a gRPC status: UNKNOWN
                // (gRPC's HTTP-to-status mapping differs by client; the span keeps the HTTP one).
                self.status = Some(Status::Grpc(UNKNOWN));
            }
        } else {
            self.status = Some(Status::Http(response.status()));
        }
        self.span
            .record("http.response.status_code", response.status().as_u16());
    }

    /// Reads the gRPC status from the trailers.
    pub(crate) fn on_trailers(&mut self, trailers: &HeaderMap) {
        if self.grpc
            && let Some(code) = grpc_status(trailers)
        {
            self.status = Some(Status::Grpc(code));
        }
    }

    /// Records the call (once). `ended` says whether the body ended rather than being dropped.
    pub(crate) fn finish(&mut self, ended: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let status = match self.status {
            Some(status) => status,
            None if self.grpc && ended => Status::Grpc(UNKNOWN),
            None if self.grpc => Status::Grpc(CANCELLED),
            // An HTTP call dropped before its response (the caller gave up): there is no
            // status to label it with, and the caller's side counts its timeout.
            None => return,
        };
        self.table.record(status, self.start.elapsed());
        let error = match status {
            Status::Grpc(code) => {
                self.span.record("rpc.grpc.status_code", code);
                code != 0
            }
            Status::Http(status) => status.is_server_error(),
        };
        if error {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish(false);
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pin_project! {
    /// A response body that records its call when it ends: at its trailers (where a gRPC
    /// status is), at its last frame, or when dropped unfinished.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        record: Option<CallRecord>,
    }
}

impl<B> ObservedBody<B> {
    pub(crate) fn new(inner: B, record: Option<CallRecord>) -> Self {
        Self { inner, record }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ObservedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Some(record) = this.record {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        record.on_trailers(trailers);
                        record.finish(true);
                    }
                }
                Poll::Ready(None) => record.finish(true),
                Poll::Ready(Some(Err(_))) => record.finish(false),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
