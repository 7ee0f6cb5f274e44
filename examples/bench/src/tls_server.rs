//! The plain (unmeshed) rustls server side the benchmarks' tonic baselines use: a listener's
//! TLS connections as tonic's incoming stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// An mTLS listener as a stream of connections for tonic's `serve_with_incoming` (handshake
/// failures are dropped).
pub fn incoming(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> impl futures_util::Stream<Item = Result<TlsIo, std::io::Error>> + Send + 'static {
    use futures_util::StreamExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    Box::pin(
        tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |tcp| {
            let acceptor = acceptor.clone();
            async move {
                let tcp = tcp.ok()?;
                let _ = tcp.set_nodelay(true);
                acceptor
                    .accept(tcp)
                    .await
                    .ok()
                    .map(|s| Ok::<_, std::io::Error>(TlsIo(s)))
            }
        }),
    )
}

/// A server-side TLS stream for tonic's `serve_with_incoming`.
pub struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    // As tonic's own TLS does: h2 then hands over a frame's header and payload in one call.
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
