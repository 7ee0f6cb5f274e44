//! Accepting connections: mTLS handshakes (and plaintext detection on a permissive server),
//! the handshake budget and connection slots of a listener, and the peer's verified SPIFFE ID.
//!
//! Handshakes run in their own tasks with a time limit, so a slow or hostile client never
//! blocks the accept loop. A connection handshakes on a budget of its own (in total, and per
//! source IP address), and takes one of the listener's connection slots only once it is
//! authenticated: connections that never finish their handshake cannot fill the slots. A
//! refused handshake is answered with rustls' TLS alert before the socket closes. What was
//! learned about each connection travels with it as a [`MeshConnectInfo`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use mesh_core::tls::spiffe_id_of;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::authz::Authorizer;
use super::connect_info::MeshConnectInfo;
use super::first_request::FirstRequest;
use super::idle::IdleTimer;
use super::limits::ServerLimits;
use crate::activity::Activity;
use crate::identity::PeerIdentity;

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Accepted connections waiting for the server to take them.
const ACCEPT_BACKLOG: usize = 128;
/// After a refused handshake, how long the server keeps reading (and discarding) what the
/// client still sends, so that its alert is read before the socket closes: closing with unread
/// bytes makes the kernel reset the connection, and a reset can destroy the alert in flight.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// The most a refused client's bytes are read for during [`REFUSAL_LINGER`].
const REFUSAL_LINGER_BYTES: usize = 64 * 1024;

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
    info: MeshConnectInfo,
    /// Until the client has started its first request: the deadline for it.
    first: Option<Box<FirstRequest>>,
    /// Closes the connection once no call has been in flight for the idle timeout (`None`:
    /// no idle limit).
    idle: Option<Box<IdleTimer>>,
    /// The listener's connection slot, given back when the connection is dropped.
    _slot: OwnedSemaphorePermit,
}

impl MeshTlsStream {
    /// An accepted connection that holds `slot`, its first-request and idle timers started.
    fn new(
        inner: Conn,
        remote_addr: SocketAddr,
        peer: Option<PeerIdentity>,
        authorizer: Option<Authorizer>,
        limits: &ServerLimits,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let activity = Arc::new(Activity::default());
        let key_exchange = match &inner {
            Conn::Tls(tls) => tls
                .get_ref()
                .1
                .negotiated_key_exchange_group()
                .map(|g| g.name()),
            Conn::Plain(_) => None,
        };
        let idle = limits
            .idle_timeout
            .map(|after| Box::new(IdleTimer::new(activity.clone(), after)));
        Self {
            inner,
            info: MeshConnectInfo::new(remote_addr, peer, authorizer, activity, key_exchange),
            first: Some(Box::new(FirstRequest::new(limits.header_timeout))),
            idle,
            _slot: slot,
        }
    }

    /// The peer's socket address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.info.remote_addr()
    }

    /// The peer's verified identity; `None` for a plaintext caller of a permissive server.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.info.peer()
    }

    /// The inbound policy that requests on this connection are judged by.
    pub fn authorizer(&self) -> Option<&Authorizer> {
        self.info.authorizer()
    }

    /// Everything above, for the connection's requests' extensions (a cheap clone).
    pub fn connect_info(&self) -> &MeshConnectInfo {
        &self.info
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
        let before = buf.filled().len();
        let polled = match &mut self.inner {
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Conn::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
        };
        // Per connection: gone once the first request has started.
        if let Some(first) = self.first.as_mut() {
            if first.observe(&buf.filled()[before..]) {
                self.first = None;
            } else if first.expired(cx) {
                tracing::info!(peer = %self.info.remote_addr(), "no request in time, connection closed");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header timeout",
                )));
            }
        } else if polled.is_pending()
            && let Some(idle) = self.idle.as_mut()
            && idle.expired(cx)
        {
            // Nothing to read and no call for the whole period: end of stream, so the server
            // closes the connection as if the client had (with its TLS close_notify).
            tracing::debug!(peer = %self.info.remote_addr(), "idle connection closed");
            self.idle = None;
            return Poll::Ready(Ok(()));
        }
        polled
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

/// A stream of accepted mTLS connections, for [`super::serve`] or (through `mesh-tonic`) tonic's
/// `serve_with_incoming`.
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
    /// here, the HTTP limits in [`super::serve`].
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

/// The connections of one listener that are handshaking, in total and per source address.
#[derive(Debug)]
struct HandshakeBudget {
    total: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

/// One connection's turn to handshake; given back when dropped.
#[derive(Debug)]
struct HandshakeTurn {
    budget: Arc<HandshakeBudget>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl HandshakeBudget {
    fn new(limits: &ServerLimits) -> Arc<Self> {
        // A listener never handshakes more connections than it may hold.
        let total = limits.max_handshakes.min(limits.max_connections).max(1);
        Arc::new(Self {
            total: Arc::new(Semaphore::new(total)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: limits.max_handshakes_per_ip.max(1),
        })
    }

    /// A turn for a connection from `ip`, or `None` when its address or the listener is at
    /// its limit.
    fn try_begin(self: &Arc<Self>, ip: IpAddr) -> Option<HandshakeTurn> {
        // An IPv4 client on a dual-stack socket is one source, however it is written.
        let ip = ip.to_canonical();
        let permit = self.total.clone().try_acquire_owned().ok()?;
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        Some(HandshakeTurn {
            budget: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

impl Drop for HandshakeTurn {
    fn drop(&mut self) {
        let mut per_ip = self.budget.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        // The map holds only addresses with handshakes in progress (at most the total budget).
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// After a refused handshake (whose alert, if rustls made one, tokio-rustls has written):
/// closes the sending side and reads what the client still sends for a moment, so that the
/// socket is not closed with unread bytes (which resets it, and can destroy the alert).
async fn close_after_refusal(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut read = 0;
        while read < REFUSAL_LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    authorizer: Option<Authorizer>,
    tx: mpsc::Sender<MeshTlsStream>,
    limits: ServerLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let handshakes = HandshakeBudget::new(&limits);
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
        let Some(turn) = handshakes.try_begin(remote_addr.ip()) else {
            // Over the handshake budget: close at once. Debug, not warn: a flood would
            // otherwise write one line per connection.
            tracing::debug!(peer = %remote_addr, "handshake budget reached, connection refused");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let authorizer = authorizer.clone();
        let tx = tx.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            // A slot for the authenticated connection, or `None` (closed) when the listener
            // is full. Taken once the handshake is done, and the handshake turn given back.
            let take_slot = |turn: HandshakeTurn| {
                drop(turn);
                let slot = slots.try_acquire_owned().ok();
                if slot.is_none() {
                    // Full: close at once (the caller sees EOF and can try another replica).
                    tracing::warn!(
                        peer = %remote_addr,
                        max = limits.max_connections,
                        "connection limit reached, connection refused"
                    );
                }
                slot
            };
            let permissive = authorizer.as_ref().is_some_and(Authorizer::is_permissive);
            if permissive {
                // The same port takes mTLS and plaintext: a TLS connection opens with a
                // handshake record (0x16); anything else is served in plaintext, without an
                // identity, and passes only policies that allow unauthenticated callers.
                let mut first = [0u8; 1];
                match tokio::time::timeout(handshake_timeout, tcp.peek(&mut first)).await {
                    Ok(Ok(1)) if first[0] != TLS_HANDSHAKE_RECORD => {
                        let Some(slot) = take_slot(turn) else { return };
                        let authorizer = authorizer.map(|a| a.for_connection(None));
                        let stream = MeshTlsStream::new(
                            Conn::Plain(tcp),
                            remote_addr,
                            None,
                            authorizer,
                            &limits,
                            slot,
                        );
                        let _ = tx.send(stream).await;
                        return;
                    }
                    Ok(Ok(_)) => {}
                    _ => return,
                }
            }
            let handshake =
                tokio::time::timeout(handshake_timeout, acceptor.accept(tcp).into_fallible()).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err((error, tcp))) => {
                    tracing::info!(peer = %remote_addr, %error, "mTLS handshake refused");
                    // Still on the handshake budget: a refused client cannot hold more.
                    close_after_refusal(tcp).await;
                    return;
                }
                Err(_) => {
                    tracing::info!(peer = %remote_addr, "mTLS handshake timed out");
                    return;
                }
            };
            let Some(slot) = take_slot(turn) else { return };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|leaf| spiffe_id_of(leaf).ok())
                .map(PeerIdentity::new);
            let authorizer = authorizer.map(|a| a.for_connection(peer.as_ref()));
            let stream = MeshTlsStream::new(
                Conn::Tls(Box::new(stream)),
                remote_addr,
                peer,
                authorizer,
                &limits,
                slot,
            );
            let _ = tx.send(stream).await;
        });
    }
}
