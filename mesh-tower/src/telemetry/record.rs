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

use super::metrics::{
    CallKind, Direction, GRPC_CODE_NAMES, Status, StatusTable, grpc_index, grpc_is_error,
    http_is_error,
};
use crate::activity::Busy;

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
        rpc.system.name = grpc.then_some("grpc"),
        rpc.method = grpc.then_some(name),
        http.request.method = (!grpc).then(|| request.method().as_str()),
        server.address = %destination,
        mesh.route = Empty,
        mesh.backend = Empty,
        rpc.status_code = Empty,
        http.response.status_code = Empty,
        "error.type" = Empty,
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
        rpc.system.name = grpc.then_some("grpc"),
        rpc.method = grpc.then_some(name),
        http.request.method = (!grpc).then(|| request.method().as_str()),
        mesh.service = service,
        mesh.peer_identity = Empty,
        rpc.status_code = Empty,
        http.response.status_code = Empty,
        "error.type" = Empty,
    )
}

/// A call being measured; records its duration once, at the end of the response body or when
/// dropped.
pub(crate) struct CallRecord {
    table: Arc<StatusTable>,
    direction: Direction,
    kind: CallKind,
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
    pub(crate) fn new(
        table: Arc<StatusTable>,
        direction: Direction,
        kind: CallKind,
        start: Instant,
        span: Span,
    ) -> Self {
        Self {
            table,
            direction,
            grpc: kind.is_grpc(),
            kind,
            start,
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
        // Recording into a disabled span still looks its field up by name: skipped when no
        // subscriber wants the span.
        if !self.span.is_disabled() {
            self.span
                .record("http.response.status_code", response.status().as_u16());
        }
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
        self.table.record(&self.kind, status, self.start.elapsed());
        if self.span.is_disabled() {
            return;
        }
        let error = match status {
            Status::Grpc(code) => {
                let code = grpc_index(code);
                self.span.record("rpc.status_code", GRPC_CODE_NAMES[code]);
                let error = grpc_is_error(self.direction, code);
                if error {
                    self.span.record("error.type", GRPC_CODE_NAMES[code]);
                }
                error
            }
            Status::Http(status) => {
                let error = http_is_error(self.direction, status);
                if error {
                    self.span.record("error.type", status.as_str());
                }
                error
            }
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

/// `grpc-status`, as a ready header name: looking up a `&str` parses and hashes it each time.
pub(crate) static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The gRPC status code in `headers`, if there is a valid one: one to nine ASCII digits
/// (surrounding whitespace ignored). A sign or anything else is no status.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    // The digits read straight from the bytes: a status is one or two digits, for which
    // `from_utf8` and `str::parse` cost about 100 instructions a call.
    let digits = mesh_core::headers::first(headers, &GRPC_STATUS)?
        .as_bytes()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    let mut code = 0i32;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        // Nine digits at most: no overflow.
        code = code * 10 + i32::from(digit - b'0');
    }
    Some(code)
}

pin_project! {
    /// A response body that records its call when it ends: at its trailers (where a gRPC
    /// status is), at its last frame, or when dropped unfinished. Until it is dropped, the
    /// call counts as in flight on its connection.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        record: Option<CallRecord>,
        busy: Option<Busy>,
    }
}

impl<B> ObservedBody<B> {
    pub(crate) fn new(inner: B, record: Option<CallRecord>, busy: Option<Busy>) -> Self {
        Self {
            inner,
            record,
            busy,
        }
    }

    /// `inner` with nothing to record (a response the mesh wrote before measuring began).
    pub fn unobserved(inner: B) -> Self {
        Self::new(inner, None, None)
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::HeaderValue;
    use http_body_util::{BodyExt, StreamBody};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    /// The `rpc.status_code` labels recorded, with their sample counts.
    fn recorded(recorder: &DebuggingRecorder) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| {
                let code = key
                    .key()
                    .labels()
                    .find(|l| l.key() == "rpc.status_code")?
                    .value()
                    .to_owned();
                match value {
                    DebugValue::Histogram(samples) => Some((code, samples.len())),
                    _ => None,
                }
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_grpc_status_is_one_to_nine_digits() {
        let status = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(&GRPC_STATUS, http::HeaderValue::from_str(value).unwrap());
            grpc_status(&headers)
        };
        assert_eq!(status("0"), Some(0));
        assert_eq!(status("14"), Some(14));
        assert_eq!(status(" 7 "), Some(7));
        assert_eq!(status("999999999"), Some(999_999_999));
        for refused in ["", "-1", "+1", "1a", "0x1", "1234567890", "1 2"] {
            assert_eq!(status(refused), None, "{refused:?}");
        }
        assert_eq!(grpc_status(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn the_grpc_status_is_read_from_the_trailers_at_the_end_of_the_body() {
        let recorder = DebuggingRecorder::new();
        // A current-thread test runtime: the thread's recorder is this test's alone.
        let _local = metrics::set_default_local_recorder(&recorder);
        let table = Arc::new(StatusTable::new(Direction::Inbound, vec![]));
        let kind = table.kind(true, "/helloworld.Greeter/SayHello", &http::Method::POST);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("5"));
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ];
        let mut record = CallRecord::new(
            table.clone(),
            Direction::Inbound,
            kind.clone(),
            Instant::now(),
            Span::none(),
        );
        record.on_response(&Response::new(()));
        let body = ObservedBody::new(
            StreamBody::new(tokio_stream::iter(frames)),
            Some(record),
            None,
        );
        let collected = body.collect().await.unwrap();
        assert!(collected.trailers().is_some());
        assert_eq!(recorded(&recorder), [("NOT_FOUND".to_owned(), 1)]);

        // Dropped before its trailers: CANCELLED. (A snapshot drains the samples it shows.)
        let record = CallRecord::new(
            table,
            Direction::Inbound,
            kind,
            Instant::now(),
            Span::none(),
        );
        drop(ObservedBody::new(
            http_body_util::Empty::<Bytes>::new(),
            Some(record),
            None,
        ));
        assert_eq!(
            recorded(&recorder),
            [("CANCELLED".to_owned(), 1), ("NOT_FOUND".to_owned(), 0)]
        );
    }
}
