//! Request and response bodies inside the client stack.
//!
//! A retry, a mirror or a resend after a refusal (a draining server's GOAWAY) needs the request
//! body twice; resends happen on any route, so every call's body goes through
//! [`MeshBody::buffer`]. It takes the frames the caller's body can give *right now* without
//! waiting (a unary gRPC body is ready at once, a streaming one is not); if the whole body came,
//! up to a size limit, it is kept as shared chunks that every attempt replays. Otherwise the
//! frames already taken are sent first and the rest of the caller's body follows: that request
//! is sent once (again only if the connection hands it back unsent), never retried, and a
//! streaming call is never held back waiting for its end. Such a body fails, rather than
//! ends, once its call has ended without an answer (see [`super::cut`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::cut::{BodyCut, Cut, CutGuard};
use crate::error::{BoxError, CallError};
use crate::telemetry::CallRecord;
use mesh_core::snapshot::ServiceName;
use std::future::Future;
use std::time::Duration;

/// The largest body kept for replay (retries, mirroring, resends after a refusal).
pub(crate) const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// A request body as the client stack sends it.
pub enum MeshBody<B> {
    /// The caller's body, untouched (the client stack itself buffers every body: see
    /// [`MeshBody::buffer`]).
    Original(B),
    /// A complete body, replayable any number of times.
    Replay(Replay),
    /// Frames already read from the caller's body, then the rest of it.
    Prefixed {
        /// Data frames taken while trying to buffer.
        prefix: VecDeque<Bytes>,
        /// The rest.
        rest: B,
        /// Set when the call ended without an answer: the body then fails.
        cut: Arc<Cut>,
    },
}

impl<B> std::fmt::Debug for MeshBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Original(_) => f.write_str("MeshBody::Original"),
            Self::Replay(r) => write!(f, "MeshBody::Replay({} chunks)", r.chunks.as_slice().len()),
            Self::Prefixed { prefix, .. } => {
                write!(f, "MeshBody::Prefixed({} chunks + rest)", prefix.len())
            }
        }
    }
}

/// A complete body held as shared chunks: cloning it is cheap.
#[derive(Debug, Clone)]
pub struct Replay {
    chunks: Chunks,
    trailers: Option<Arc<HeaderMap>>,
    next: usize,
    trailers_sent: bool,
    /// Whether the caller's body declared its exact size. A replay declares it only then:
    /// an exact size hint makes hyper send `content-length`, which a gRPC caller never sent
    /// and its server would parse on every call.
    sized: bool,
}

/// The data of a complete body. Most bodies (every unary gRPC request) are one chunk, kept
/// without an allocation; several share one `Arc`.
#[derive(Debug, Clone)]
enum Chunks {
    /// None (empty) or one chunk.
    One(Option<Bytes>),
    /// Two or more.
    Many(Arc<[Bytes]>),
}

impl Chunks {
    /// The chunks taken in order: `first`, then `more`.
    fn new(first: Option<Bytes>, more: Vec<Bytes>) -> Self {
        match first {
            Some(first) if !more.is_empty() => {
                Self::Many(std::iter::once(first).chain(more).collect())
            }
            first => Self::One(first),
        }
    }

    fn as_slice(&self) -> &[Bytes] {
        match self {
            Self::One(chunk) => chunk.as_slice(),
            Self::Many(chunks) => chunks,
        }
    }
}

impl Replay {
    /// A complete body of `chunks` and `trailers`, positioned at the start; `sized` when the
    /// caller's body declared its exact size.
    fn new(chunks: Chunks, trailers: Option<HeaderMap>, sized: bool) -> Self {
        Self {
            chunks,
            trailers: trailers.map(Arc::new),
            next: 0,
            trailers_sent: false,
            sized,
        }
    }

    /// A fresh copy, positioned at the start.
    pub(crate) fn rewind(&self) -> Self {
        Self {
            chunks: self.chunks.clone(),
            trailers: self.trailers.clone(),
            next: 0,
            trailers_sent: false,
            sized: self.sized,
        }
    }
}

impl<B> MeshBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Takes what `body` has ready now, without waiting; see the module docs.
    pub(crate) fn buffer(mut body: B) -> Self {
        let sized = body.size_hint().exact().is_some();
        if body.is_end_stream() {
            return Self::Replay(Replay::new(Chunks::One(None), None, sized));
        }
        let mut cx = Context::from_waker(Waker::noop());
        // The first chunk apart, so that a one-chunk body allocates nothing.
        let mut first: Option<Bytes> = None;
        let mut more: Vec<Bytes> = Vec::new();
        let mut size = 0;
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(None) => {
                    return Self::Replay(Replay::new(Chunks::new(first, more), None, sized));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        size += data.len();
                        match first {
                            None => first = Some(data),
                            Some(_) => more.push(data),
                        }
                        if size > MAX_REPLAY_BYTES {
                            break;
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            // Trailers end a body: it is complete.
                            return Self::Replay(Replay::new(
                                Chunks::new(first, more),
                                Some(trailers),
                                sized,
                            ));
                        }
                    }
                },
                // An error or a body that is not ready: send what was taken, then the rest;
                // the error (if any) resurfaces when the rest is polled.
                Poll::Ready(Some(Err(_))) | Poll::Pending => break,
            }
            if body.is_end_stream() {
                return Self::Replay(Replay::new(Chunks::new(first, more), None, sized));
            }
        }
        Self::Prefixed {
            prefix: first.into_iter().chain(more).collect(),
            rest: body,
            cut: Arc::default(),
        }
    }

    /// For a body still streaming, the guard its call holds while sending it (see
    /// [`super::cut`]); `None` for a complete body, which never ends early.
    pub(crate) fn cut_guard(&self) -> Option<CutGuard> {
        match self {
            Self::Prefixed { cut, .. } => Some(CutGuard::new(cut.clone())),
            _ => None,
        }
    }

    /// The replayable copy of this body, if it is complete.
    pub(crate) fn replay(&self) -> Option<&Replay> {
        match self {
            Self::Replay(replay) => Some(replay),
            _ => None,
        }
    }
}

impl<B> Body for MeshBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Original(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Replay(replay) => {
                if let Some(chunk) = replay.chunks.as_slice().get(replay.next) {
                    replay.next += 1;
                    return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
                }
                match &replay.trailers {
                    Some(trailers) if !replay.trailers_sent => {
                        replay.trailers_sent = true;
                        Poll::Ready(Some(Ok(Frame::trailers(HeaderMap::clone(trailers)))))
                    }
                    _ => Poll::Ready(None),
                }
            }
            Self::Prefixed { prefix, rest, cut } => {
                // Before anything the caller's body gives: an end must not get out first.
                if cut.poll_cut(cx).is_ready() {
                    return Poll::Ready(Some(Err(BodyCut.into())));
                }
                match prefix.pop_front() {
                    Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                    None => Pin::new(rest).poll_frame(cx).map_err(Into::into),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Original(body) => body.is_end_stream(),
            Self::Replay(replay) => {
                replay.next >= replay.chunks.as_slice().len()
                    && (replay.trailers.is_none() || replay.trailers_sent)
            }
            Self::Prefixed { prefix, rest, .. } => prefix.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Original(body) => body.size_hint(),
            Self::Replay(replay) => {
                let chunks = replay.chunks.as_slice();
                let left: usize = chunks[replay.next.min(chunks.len())..]
                    .iter()
                    .map(Bytes::len)
                    .sum();
                if replay.sized {
                    SizeHint::with_exact(left as u64)
                } else {
                    let mut hint = SizeHint::new();
                    hint.set_lower(left as u64);
                    hint
                }
            }
            Self::Prefixed { prefix, rest, .. } => {
                let taken: u64 = prefix.iter().map(|c| c.len() as u64).sum();
                let rest = rest.size_hint();
                // Built up from an unbounded hint: raising the lower bound of `rest`'s own
                // hint in place would panic (`set_lower` asserts lower <= upper) whenever it
                // has an upper bound, e.g. a `Full` body already taken whole (exactly 0 left).
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + taken);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + taken);
                }
                hint
            }
        }
    }
}

/// A response body: the endpoint's, or one the mesh wrote itself (a synthesized error). It
/// records the call's metrics and ends its span when it ends (a gRPC status is in the
/// trailers), or when it is dropped.
///
/// When the call has a deadline (the route's `request` timeout, or the caller's
/// `grpc-timeout`), the deadline bounds the body too: a response still streaming when it
/// passes is cut (the stream to the endpoint is reset), and the caller reads the end of a gRPC
/// call with DEADLINE_EXCEEDED in its trailers, or an HTTP body that fails with the timeout.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    record: Option<CallRecord>,
    deadline: Option<Pin<Box<BodyDeadline>>>,
}

pin_project_lite::pin_project! {
    /// When a response body must be over, and how to say it was cut. Boxed: most bodies
    /// have none, and the body stays small.
    #[derive(Debug)]
    struct BodyDeadline {
        #[pin]
        sleep: tokio::time::Sleep,
        grpc: bool,
        destination: ServiceName,
        after: Duration,
    }
}

#[derive(Debug)]
enum Kind {
    /// From the endpoint.
    Incoming(Incoming),
    /// Written by the mesh.
    Full(Option<Bytes>),
}

impl ResponseBody {
    /// An empty body.
    pub fn empty() -> Self {
        Self::full(None)
    }

    /// The endpoint's body.
    pub(crate) fn incoming(body: Incoming) -> Self {
        Self {
            kind: Kind::Incoming(body),
            record: None,
            deadline: None,
        }
    }

    /// Cuts the body at `deadline`, `after` the call to `destination` started (see the
    /// type's docs).
    pub(crate) fn until(
        &mut self,
        deadline: std::time::Instant,
        grpc: bool,
        destination: &ServiceName,
        after: Duration,
    ) {
        if matches!(self.kind, Kind::Incoming(_)) {
            self.deadline = Some(Box::pin(BodyDeadline {
                sleep: tokio::time::sleep_until(deadline.into()),
                grpc,
                destination: destination.clone(),
                after,
            }));
        }
    }

    /// A body the mesh wrote.
    pub(crate) fn full(data: Option<Bytes>) -> Self {
        Self {
            kind: Kind::Full(data),
            record: None,
            deadline: None,
        }
    }

    /// Records `record` when this body ends.
    pub(crate) fn observe(&mut self, record: CallRecord) {
        self.record = Some(record);
    }
}

/// Why a [`ResponseBody`] could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// The connection to the endpoint failed (or the endpoint reset the stream).
    #[error(transparent)]
    Endpoint(#[from] hyper::Error),
    /// The call's deadline passed while the body was still coming (HTTP; a gRPC body ends
    /// with DEADLINE_EXCEEDED in its trailers instead).
    #[error(transparent)]
    Timeout(CallError),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = self.get_mut();
        let mut polled = match &mut this.kind {
            Kind::Incoming(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(ResponseBodyError::from),
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        // The deadline is read only while the body waits: a body that keeps coming costs a
        // branch.
        if polled.is_pending()
            && let Some(deadline) = &mut this.deadline
            && deadline.as_mut().project().sleep.poll(cx).is_ready()
        {
            let cut = deadline.as_mut().project();
            let (grpc, error) = (
                *cut.grpc,
                CallError::Timeout {
                    destination: cut.destination.clone(),
                    after: *cut.after,
                },
            );
            this.deadline = None;
            // Dropping the endpoint's body resets its stream.
            this.kind = Kind::Full(None);
            polled = if grpc {
                let mut trailers = HeaderMap::new();
                crate::refusal::write_grpc_status(
                    &mut trailers,
                    error.grpc_code(),
                    &error.to_string(),
                );
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            } else {
                Poll::Ready(Some(Err(ResponseBodyError::Timeout(error))))
            };
        }
        if let Some(record) = &mut this.record {
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
        match &self.kind {
            Kind::Incoming(body) => body.is_end_stream(),
            Kind::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Incoming(body) => body.size_hint(),
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn a_ready_body_is_replayable_and_replays_whole() {
        let body = MeshBody::buffer(Full::new(Bytes::from_static(b"hello")));
        let replay = body.replay().unwrap().rewind();
        let first = body.collect().await.unwrap().to_bytes();
        let second = MeshBody::<Full<Bytes>>::Replay(replay)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(first, "hello");
        assert_eq!(second, "hello");
    }

    #[tokio::test]
    async fn a_body_that_is_not_ready_is_passed_on_and_not_replayable() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let body = MeshBody::buffer(stream);
        assert!(body.replay().is_none());
        tokio::spawn(async move {
            tx.send(Ok(Frame::data(Bytes::from_static(b"b"))))
                .await
                .unwrap();
        });
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ab");
    }

    #[tokio::test]
    async fn an_oversized_body_is_not_replayable_but_arrives_whole() {
        let big = Bytes::from(vec![7u8; MAX_REPLAY_BYTES + 1]);
        let body = MeshBody::buffer(Full::new(big.clone()));
        assert!(body.replay().is_none());
        // What hyper reads to set content-length; it once panicked here.
        assert_eq!(body.size_hint().exact(), Some(big.len() as u64));
        assert_eq!(body.collect().await.unwrap().to_bytes(), big);
    }

    #[test]
    fn a_replay_declares_an_exact_size_only_when_the_callers_body_did() {
        // A sized body (an HTTP caller's `Full`) keeps its content-length.
        let sized = MeshBody::buffer(Full::new(Bytes::from_static(b"hello")));
        assert_eq!(sized.size_hint().exact(), Some(5));
        // A body of unknown size (tonic's encoder, a stream) gets none added by the mesh.
        let frames = vec![Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"hello")))];
        let unsized_body = MeshBody::buffer(StreamBody::new(tokio_stream::iter(frames)));
        assert!(
            unsized_body.replay().is_some(),
            "a ready stream is kept whole"
        );
        assert_eq!(unsized_body.size_hint().exact(), None);
        assert_eq!(unsized_body.size_hint().lower(), 5);
    }
}
