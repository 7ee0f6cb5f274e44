//! One replica as a tower service: an HTTP/2 connection over mTLS that reconnects by itself.
//!
//! `poll_ready` never fails. A balancer drops services whose readiness fails, but a replica
//! that is down now may be back in a second and discovery will not insert it again; so a broken
//! connection makes the endpoint *pending* (not chosen) while it reconnects with backoff.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use rustls::ClientConfig;
use tokio::time::Sleep;

use crate::connect::{connect_http2, set_origin};
use crate::error::{BoxError, CallError, ConnectError};

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

type Connecting<B> =
    Pin<Box<dyn Future<Output = Result<SendRequest<B>, ConnectError>> + Send + 'static>>;

enum State<B> {
    Idle,
    Connecting(Connecting<B>),
    Connected(SendRequest<B>),
    Backoff(Pin<Box<Sleep>>),
}

/// A replica of a destination: address, the TLS config that accepts only its identity, and the
/// connection state.
pub(crate) struct Endpoint<B> {
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    authority: Authority,
    state: State<B>,
    backoff: Duration,
}

impl<B> Endpoint<B> {
    pub(crate) fn new(addr: SocketAddr, tls: Arc<ClientConfig>, authority: Authority) -> Self {
        Self {
            addr,
            tls,
            authority,
            state: State::Idle,
            backoff: BACKOFF_MIN,
        }
    }
}

impl<B> tower::Service<Request<B>> for Endpoint<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            match &mut self.state {
                State::Idle => {
                    let connecting = connect_http2::<B>(self.addr, self.tls.clone());
                    self.state = State::Connecting(Box::pin(connecting));
                }
                State::Connecting(connecting) => match ready!(connecting.as_mut().poll(cx)) {
                    Ok(sender) => {
                        tracing::debug!(endpoint = %self.addr, "connected");
                        self.backoff = BACKOFF_MIN;
                        self.state = State::Connected(sender);
                    }
                    Err(error) => {
                        tracing::warn!(endpoint = %self.addr, %error, "endpoint unreachable");
                        let delay = jittered(self.backoff);
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                        self.state = State::Backoff(Box::pin(tokio::time::sleep(delay)));
                    }
                },
                State::Connected(sender) => match sender.poll_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                    Poll::Ready(Err(_closed)) => {
                        tracing::debug!(endpoint = %self.addr, "connection closed; reconnecting");
                        self.state = State::Idle;
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Backoff(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.state = State::Idle;
                }
            }
        }
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let State::Connected(sender) = &mut self.state else {
            // tower's contract: `call` only after `poll_ready` returned Ready, which happens
            // only in the Connected state.
            let addr = self.addr;
            return Box::pin(async move {
                Err(format!("endpoint {addr} called before it was ready").into())
            });
        };
        set_origin(&mut request, &self.authority);
        let endpoint = self.addr;
        let response = sender.send_request(request);
        Box::pin(async move {
            response
                .await
                .map_err(|source| CallError::Endpoint { endpoint, source }.into())
        })
    }
}

/// `base` ± 25 %, so replicas that failed together do not retry together.
pub(crate) fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}
