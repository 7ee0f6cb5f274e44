//! The server side: accepting mTLS connections, extracting the peer's verified SPIFFE ID, and
//! serving any tower HTTP service (an axum `Router`, tonic's routes) over them.
//!
//! Handshakes run in their own tasks with a time limit, so a slow or hostile client never
//! blocks the accept loop. The verified identity reaches handlers as a [`PeerIdentity`]
//! request extension.
//!
//! Every server is bounded by [`ServerLimits`] (connections per listener, handshake and header
//! time, HTTP/2 streams per connection, header and body size); see [`crate::limits`] for the
//! defaults and what a caller over each limit sees.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use futures_util::future::{Either, Ready, ready};
use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_core::SpiffeId;
use mesh_core::tls::spiffe_id_of;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::authz::Authorizer;
use crate::error::BoxError;
pub use crate::limits::ServerLimits;
use crate::limits::{BodyLimit, LimitedBody};
use crate::telemetry::Inbound;

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Accepted connections waiting for the server to take them.
const ACCEPT_BACKLOG: usize = 128;

/// The verified SPIFFE ID of the caller, put in every request's extensions by the mesh.
/// Cloning it (once per request) only bumps a reference count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity(Arc<SpiffeId>);

impl PeerIdentity {
    /// The identity of a caller whose certificate was verified.
    pub fn new(id: SpiffeId) -> Self {
        Self(Arc::new(id))
    }

    /// The caller's SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        &self.0
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// The bytes of an accepted connection: mTLS, or plaintext on a permissive server.
#[derive(Debug)]
enum Conn {
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
}

/// An accepted connection (handshaken mTLS, or plaintext where the service's mTLS mode is
/// `permissive`) and what was verified about its peer.
#[derive(Debug)]
pub struct MeshTlsStream {
    inner: Conn,
    remote_addr: SocketAddr,
    peer: Option<PeerIdentity>,
    authorizer: Option<Authorizer>,
    /// The listener's connection slot, given back when the connection is dropped.
    _slot: OwnedSemaphorePermit,
}

impl MeshTlsStream {
    /// The peer's socket address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The peer's verified identity; `None` for a plaintext caller of a permissive server.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.peer.as_ref()
    }

    /// The inbound policy that requests on this connection are judged by.
    pub fn authorizer(&self) -> Option<&Authorizer> {
        self.authorizer.as_ref()
    }

    /// The ALPN protocol agreed on (`None` in plaintext).
    pub fn alpn(&self) -> Option<&[u8]> {
        match &self.inner {
            Conn::Tls(tls) => tls.get_ref().1.alpn_protocol(),
            Conn::Plain(_) => None,
        }
    }

    /// Whether the connection is plaintext (a permissive server's unauthenticated caller).
    pub fn is_plaintext(&self) -> bool {
        matches!(self.inner, Conn::Plain(_))
    }
}

impl AsyncRead for MeshTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Conn::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MeshTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Conn::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Conn::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Conn::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
            Conn::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Conn::Tls(tls) => tls.is_write_vectored(),
            Conn::Plain(tcp) => tcp.is_write_vectored(),
        }
    }
}

/// A stream of accepted mTLS connections, for `tonic`'s `serve_with_incoming` or [`serve`].
/// Connections whose handshake fails (no certificate, an unknown CA, plaintext) are dropped and
/// logged; they never reach the application.
#[derive(Debug)]
pub struct MeshIncoming {
    accepted: mpsc::Receiver<MeshTlsStream>,
    local_addr: SocketAddr,
    limits: ServerLimits,
    accept_task: tokio::task::AbortHandle,
}

impl MeshIncoming {
    /// Accepts on `listener` with `tls` (from [`crate::tls::server_config`]); requests on the
    /// connections are judged by `authorizer` when one is given. The default
    /// [`ServerLimits`] apply.
    pub fn new(
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        authorizer: Option<Authorizer>,
    ) -> io::Result<Self> {
        Self::with_limits(listener, tls, authorizer, ServerLimits::default())
    }

    /// [`MeshIncoming::new`] with `limits`: the connection count and handshake time apply
    /// here, the HTTP limits in [`serve`].
    pub fn with_limits(
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        authorizer: Option<Authorizer>,
        limits: ServerLimits,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPT_BACKLOG);
        let acceptor = TlsAcceptor::from(tls);
        let authorizer = authorizer.map(|a| a.for_port(local_addr.port()));
        let accept_task =
            tokio::spawn(accept_loop(listener, acceptor, authorizer, tx, limits)).abort_handle();
        Ok(Self {
            accepted,
            local_addr,
            limits,
            accept_task,
        })
    }

    /// The limits this server applies.
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// The address being listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MeshIncoming {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl Stream for MeshIncoming {
    type Item = io::Result<MeshTlsStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted.poll_recv(cx).map(|s| s.map(Ok))
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    authorizer: Option<Authorizer>,
    tx: mpsc::Sender<MeshTlsStream>,
    limits: ServerLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let handshake_timeout = limits.handshake_timeout;
    loop {
        let (tcp, remote_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: close at once (the caller sees a reset or EOF and can try another
            // replica) rather than leave it waiting in the kernel's backlog.
            tracing::warn!(
                peer = %remote_addr,
                max = limits.max_connections,
                "connection limit reached, connection refused"
            );
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let authorizer = authorizer.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let permissive = authorizer.as_ref().is_some_and(Authorizer::is_permissive);
            if permissive {
                // The same port takes mTLS and plaintext: a TLS connection opens with a
                // handshake record (0x16); anything else is served in plaintext, without an
                // identity, and passes only policies that allow unauthenticated callers.
                let mut first = [0u8; 1];
                match tokio::time::timeout(handshake_timeout, tcp.peek(&mut first)).await {
                    Ok(Ok(1)) if first[0] != TLS_HANDSHAKE_RECORD => {
                        let _ = tx
                            .send(MeshTlsStream {
                                inner: Conn::Plain(tcp),
                                remote_addr,
                                peer: None,
                                authorizer: authorizer.map(|a| a.for_connection(None)),
                                _slot: slot,
                            })
                            .await;
                        return;
                    }
                    Ok(Ok(_)) => {}
                    _ => return,
                }
            }
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::info!(peer = %remote_addr, %error, "mTLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(peer = %remote_addr, "mTLS handshake timed out");
                    return;
                }
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|leaf| spiffe_id_of(leaf).ok())
                .map(PeerIdentity::new);
            let authorizer = authorizer.map(|a| a.for_connection(peer.as_ref()));
            let _ = tx
                .send(MeshTlsStream {
                    inner: Conn::Tls(Box::new(stream)),
                    remote_addr,
                    peer,
                    authorizer,
                    _slot: slot,
                })
                .await;
        });
    }
}

/// The mesh's server side for one connection: puts the caller's [`PeerIdentity`] in every
/// request's extensions and judges the request by the inbound policy before the application
/// sees it (a denied call is answered by the mesh).
#[derive(Debug, Clone)]
pub struct WithPeerIdentity<S> {
    inner: S,
    peer: Option<PeerIdentity>,
    authorizer: Option<Authorizer>,
}

impl<S> WithPeerIdentity<S> {
    /// Wraps `inner` for a connection from `peer`, judged by `authorizer`.
    pub fn new(inner: S, peer: Option<PeerIdentity>, authorizer: Option<Authorizer>) -> Self {
        Self {
            inner,
            peer,
            authorizer,
        }
    }
}

impl<S, B, R> tower::Service<Request<B>> for WithPeerIdentity<S>
where
    S: tower::Service<Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(peer) = &self.peer {
            request.extensions_mut().insert(peer.clone());
        }
        match &self.authorizer {
            Some(authorizer) => match authorizer.authorize(request, self.peer.as_ref()) {
                Ok(request) => Either::Left(self.inner.call(request)),
                Err(refusal) => Either::Right(ready(Ok(refusal))),
            },
            None => Either::Left(self.inner.call(request)),
        }
    }
}

/// Serves `service` (an axum `Router` or any tower HTTP service) on every connection of
/// `incoming`, over HTTP/2 or HTTP/1.1 as ALPN chose, with the peer's identity in each
/// request's extensions. Runs until `incoming` ends.
pub async fn serve<S, ResBody>(incoming: MeshIncoming, service: S)
where
    S: tower::Service<Request<LimitedBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send,
    ResBody: http_body::Body + Default + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    serve_with_shutdown(incoming, service, std::future::pending(), Duration::ZERO).await;
}

/// Like [`serve`], until `shutdown` completes; then drains: stops accepting (the listener
/// closes), tells every connection's peer to go elsewhere (HTTP/2 GOAWAY, or
/// `connection: close` after the current HTTP/1.1 request), lets calls in flight finish for up
/// to `grace`, and closes what is left.
pub async fn serve_with_shutdown<S, ResBody>(
    mut incoming: MeshIncoming,
    service: S,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) where
    S: tower::Service<Request<LimitedBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send,
    ResBody: http_body::Body + Default + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    use futures_util::StreamExt;
    let limits = *incoming.limits();
    let builder = http_builder(&limits);
    let draining = tokio::sync::watch::Sender::new(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(stream)) => stream,
                _ => break,
            },
            () = &mut shutdown => break,
        };
        // Finished connections are reaped as new ones come, so the set stays small.
        while connections.try_join_next().is_some() {}
        let remote = stream.remote_addr();
        let service = WithPeerIdentity::new(
            BodyLimit::new(service.clone(), limits.max_body_size),
            stream.peer_identity().cloned(),
            stream.authorizer().cloned(),
        );
        let service = Inbound::new(
            service,
            stream.peer_identity().cloned(),
            stream.authorizer(),
        );
        let stream = FirstRead::new(stream);
        let spoke = stream.spoke.clone();
        let builder = builder.clone();
        let mut drain = draining.subscribe();
        connections.spawn(async move {
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(connection);
            // A client that sends nothing after its handshake (not even the HTTP/2 preface)
            // holds a connection slot for nothing, and hyper waits for it forever: cut it off.
            // An HTTP/1.1 request head is bounded by hyper's header read timeout, a silent
            // HTTP/2 peer by keep-alive pings.
            let quiet_until = tokio::time::sleep(limits.header_timeout);
            tokio::pin!(quiet_until);
            let mut checked_quiet = false;
            let result = loop {
                tokio::select! {
                    result = &mut connection => break result,
                    // The guard `wait_for` returns must not live across the await below.
                    () = async { drop(drain.wait_for(|draining| *draining).await) } => {
                        connection.as_mut().graceful_shutdown();
                        break connection.await;
                    }
                    () = &mut quiet_until, if !checked_quiet => {
                        if !spoke.load(Ordering::Relaxed) {
                            tracing::info!(peer = %remote, "nothing sent in time, connection closed");
                            return;
                        }
                        checked_quiet = true;
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(peer = %remote, %error, "connection ended with an error");
            }
        });
    }
    // Stop accepting first: the listener closes with `incoming`.
    drop(incoming);
    draining.send_replace(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "connections still open after the drain grace period; closing them"
        );
    }
}

/// How long an HTTP/2 connection may go without traffic before the server pings the client.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long the server waits for the answer to a keep-alive ping before closing.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The connection builder with `limits` applied.
fn http_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.http1_buf_size());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    builder
}

/// A connection's bytes, noting whether the client has sent anything yet.
#[derive(Debug)]
struct FirstRead<I> {
    inner: I,
    spoke: Arc<AtomicBool>,
}

impl<I> FirstRead<I> {
    fn new(inner: I) -> Self {
        Self {
            inner,
            spoke: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstRead<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.spoke.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstRead<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
