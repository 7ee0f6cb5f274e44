//! The mTLS incoming stream for `Server::serve_with_incoming`, carrying each connection's
//! verified peer identity into tonic's request extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use mesh_tower::{Authorizer, MeshIncoming, MeshTlsStream, PeerIdentity};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// What tonic records about each connection (`request.extensions().get::<MeshConnectInfo>()`);
/// [`crate::MeshLayer`] turns it into a [`PeerIdentity`] extension.
///
/// tonic puts a copy into every request: it is one shared allocation per connection, so a
/// copy costs one reference count.
#[derive(Debug, Clone)]
pub struct MeshConnectInfo(Arc<ConnectionInfo>);

#[derive(Debug)]
struct ConnectionInfo {
    remote_addr: SocketAddr,
    peer: Option<PeerIdentity>,
    authorizer: Option<Authorizer>,
}

impl MeshConnectInfo {
    /// The caller's socket address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.0.remote_addr
    }

    /// The caller's verified identity (`None` for a plaintext caller of a permissive server).
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.0.peer.as_ref()
    }

    /// The inbound policy of the mesh that accepted the connection.
    pub fn authorizer(&self) -> Option<&Authorizer> {
        self.0.authorizer.as_ref()
    }
}

/// Accepted mTLS connections, for `tonic::transport::Server::serve_with_incoming`.
#[derive(Debug)]
pub struct TonicIncoming {
    inner: MeshIncoming,
}

impl TonicIncoming {
    /// Wraps the mesh's accept stream.
    pub fn new(inner: MeshIncoming) -> Self {
        Self { inner }
    }

    /// The address being listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
}

impl Stream for TonicIncoming {
    type Item = io::Result<TonicTlsStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map(TonicTlsStream)))
    }
}

/// One accepted mTLS connection, as tonic sees it.
#[derive(Debug)]
pub struct TonicTlsStream(MeshTlsStream);

impl Connected for TonicTlsStream {
    type ConnectInfo = MeshConnectInfo;

    fn connect_info(&self) -> MeshConnectInfo {
        // Called once per connection.
        MeshConnectInfo(Arc::new(ConnectionInfo {
            remote_addr: self.0.remote_addr(),
            peer: self.0.peer_identity().cloned(),
            authorizer: self.0.authorizer().cloned(),
        }))
    }
}

impl AsyncRead for TonicTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TonicTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
