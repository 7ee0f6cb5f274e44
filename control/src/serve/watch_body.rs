//! The response of a Watch call, written without tonic's encoder: each message's shared
//! encoding goes out as it is (see [`crate::watch::encoded`]), then the trailers with the
//! status the stream ended with.
//!
//! tonic's server encoder would copy every message into a per-stream buffer that grows to the
//! largest message the stream ever sent and is kept for the stream's life (tens of kilobytes
//! per subscriber of a large service, written through a page at a time as later messages
//! move along it). Here a message costs its gRPC prefix and, for a small one, a copy of its
//! bytes; nothing is kept between messages.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::StreamExt as _;
use hyper::body::Frame;
use tonic::Status;
use tonic::codegen::http::{self, HeaderMap, HeaderValue, header};

use crate::watch::stream::WatchStream;

/// Watch's response body: the stream's messages, then trailers.
pub(crate) struct WatchBody {
    stream: WatchStream,
    /// The second chunk of a large message, sent before the next message is asked for.
    pending: Option<Bytes>,
    /// The trailers were sent.
    ended: bool,
}

/// The response to a Watch call answered with `stream`.
pub(crate) fn response(stream: WatchStream) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(WatchBody {
        stream,
        pending: None,
        ended: false,
    }));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The trailers that end a stream with `status`.
fn trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        // Only a status whose details cannot be a header value fails: say so, without them.
        trailers.clear();
        let _ =
            Status::internal("the stream's status could not be encoded").add_header(&mut trailers);
    }
    trailers
}

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(rest) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(rest))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let status = match ready!(this.stream.poll_next_unpin(cx)) {
            Some(Ok(message)) => {
                let (first, rest) = message.into_chunks();
                this.pending = rest;
                return Poll::Ready(Some(Ok(Frame::data(first))));
            }
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        this.ended = true;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_none()
    }
}
