//! The mTLS incoming stream for `Server::serve_with_incoming`, carrying each connection's
//! [`MeshConnectInfo`] (its verified peer identity and inbound policy) into tonic's request
//! extensions, where [`crate::MeshLayer`] reads it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use mesh_tower::{MeshConnectInfo, MeshIncoming, MeshTlsStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

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
        // Called once per connection; a reference count.
        self.0.connect_info().clone()
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
