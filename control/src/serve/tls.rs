//! Serving gRPC over TLS: the control service's own certificate (re-issued before it expires),
//! the accept loop with handshakes off the accept path, and the peer identity each connection
//! carries into request extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use mesh_core::SpiffeId;
use mesh_core::tls::{
    SpiffeClientVerifier, TrustStore, crypto_provider, not_after_of, spiffe_id_of,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::limits::{Admission, ConnectionLimits, Handshakes};
use crate::ca::{Ca, SignError};

/// The own certificate is re-issued at this fraction of its lifetime.
const RENEW_AT: f64 = 0.7;

/// How long to wait before retrying a failed re-issue.
const RENEW_RETRY: Duration = Duration::from_secs(10);

/// What a handler knows about the connection a request came on: read it with
/// `request.extensions().get::<PeerInfo>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The SPIFFE ID of the client's verified certificate; `None` when it presented none
    /// (allowed for `Certify`, whose callers have no certificate yet).
    pub identity: Option<SpiffeId>,
    /// When the client's certificate expires (`None` without one).
    pub certificate_expires: Option<SystemTime>,
    /// The key identifier (hex) of the CA that signed the client's certificate, as the
    /// certificate names it (`None` without one).
    pub certificate_issuer: Option<String>,
}

impl PeerInfo {
    /// The peer a request came from, with the identity of its verified certificate; a caller
    /// without one is refused with `UNAUTHENTICATED` (logged), saying that `call` needs a
    /// certificate and where to get one (`hint`).
    pub(crate) fn require_identity(
        extensions: &http::Extensions,
        call: &str,
        hint: &str,
    ) -> Result<(Self, SpiffeId), tonic::Status> {
        let peer = extensions.get::<Self>();
        match peer.and_then(|p| p.identity.clone().map(|id| (p.clone(), id))) {
            Some(verified) => Ok(verified),
            None => {
                tracing::warn!(
                    peer = ?peer.map(|p| p.remote_addr),
                    "{call} refused: no client certificate"
                );
                Err(tonic::Status::unauthenticated(format!(
                    "{call} requires a client certificate ({hint})"
                )))
            }
        }
    }
}

/// An accepted TLS connection with its peer's address and identity.
#[derive(Debug)]
pub(crate) struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
    /// Its connection slot ([`ConnectionLimits::max_connections`]), freed when it is dropped.
    _slot: OwnedSemaphorePermit,
}

/// Why the own certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum ServerCertError {
    /// The CA refused or failed.
    #[error("issuing the control service's certificate: {0}")]
    Sign(#[from] SignError),
    /// rustls refused the key.
    #[error("loading the control service's key: {0}")]
    Key(#[from] rustls::Error),
}

/// Serves the control service's current certificate; swapped when it is re-issued, without
/// touching established connections.
#[derive(Debug)]
pub(crate) struct SvidResolver {
    current: ArcSwap<CertifiedKey>,
    /// DNS names and IP addresses the certificate carries besides the SPIFFE ID.
    names: Vec<String>,
}

// === impl TlsConn ===

impl TlsConn {
    /// Who is on the other end.
    pub(crate) fn info(&self) -> &PeerInfo {
        &self.info
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// === impl SvidResolver ===

impl SvidResolver {
    /// Issues the first certificate for `id`; returns the resolver and the certificate's
    /// expiry.
    pub(crate) fn issue(
        ca: &Ca,
        id: &SpiffeId,
        names: Vec<String>,
        lifetime: Duration,
    ) -> Result<(Self, SystemTime), ServerCertError> {
        let (key, not_after) = issue_certified_key(ca, id, &names, lifetime)?;
        Ok((
            Self {
                current: ArcSwap::from_pointee(key),
                names,
            },
            not_after,
        ))
    }

    /// Re-issues the certificate now, from `ca` (a root rotation's new issuer); the renewal
    /// schedule carries on as it was.
    pub(crate) fn reissue(
        &self,
        ca: &Ca,
        id: &SpiffeId,
        lifetime: Duration,
    ) -> Result<(), ServerCertError> {
        let (key, _) = issue_certified_key(ca, id, &self.names, lifetime)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// Re-issues at about 70 % of each certificate's lifetime, forever.
    pub(crate) fn spawn_renewal(
        self: Arc<Self>,
        ca: crate::ca::CaHandle,
        id: SpiffeId,
        lifetime: Duration,
        first_not_after: SystemTime,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut wait = renew_after(first_not_after);
            loop {
                tokio::time::sleep(wait).await;
                match issue_certified_key(&ca.load(), &id, &self.names, lifetime) {
                    Ok((key, not_after)) => {
                        self.current.store(Arc::new(key));
                        tracing::info!(identity = %id, ?not_after, "re-issued the control service's certificate");
                        wait = renew_after(not_after);
                    }
                    Err(error) => {
                        tracing::warn!(identity = %id, %error, "re-issuing the control service's certificate failed; retrying");
                        wait = RENEW_RETRY;
                    }
                }
            }
        })
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The same certificate as a client's, when a replica asks its peers for their subscribers
/// (it carries both the server and the client usage).
impl rustls::client::ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How long to wait before re-issuing a certificate that was just issued and expires at
/// `not_after`: 70 % of its actual validity from now (which the CA may have cut short to its
/// own expiry), and never less than a second.
fn renew_after(not_after: SystemTime) -> Duration {
    not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .mul_f64(RENEW_AT)
        .max(Duration::from_secs(1))
}

fn issue_certified_key(
    ca: &Ca,
    id: &SpiffeId,
    names: &[String],
    lifetime: Duration,
) -> Result<(CertifiedKey, SystemTime), ServerCertError> {
    let (issued, key) = ca.issue_own_with_names(id, names, lifetime)?;
    let certified = CertifiedKey::from_der(issued.chain_der, key, &crypto_provider())?;
    Ok((certified, issued.not_after))
}

/// The rustls config of the control service: its own certificate from `resolver`, client
/// certificates optional but verified when presented, ALPN `h2`.
pub(crate) fn tls_config(
    store: TrustStore,
    resolver: Arc<SvidResolver>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(store, false)))
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts TCP connections on `listener` and completes TLS handshakes in their own tasks, so
/// a slow client never holds up the next accept, within `limits` (see [`super::limits`]):
/// a connection over `max_connections`, or from a source with its share of handshakes in
/// progress, is closed as soon as it is accepted; a full handshake budget abandons its oldest
/// handshake; a handshake over `handshake_timeout` is abandoned.
/// Established connections come out of the returned receiver, for
/// [`crate::serve::conn::serve`]. Aborting the returned task aborts pending handshakes too.
pub(crate) fn spawn_accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
) -> (JoinHandle<()>, mpsc::Receiver<Result<TlsConn, io::Error>>) {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let task = tokio::spawn(async move {
        let mut handshakes = Handshakes::new(limits);
        loop {
            handshakes.reap();
            let (tcp, remote_addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            // Accepted and dropped at once rather than left in the listen queue: the client
            // learns right away, and the queue stays free for the next one.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                handshakes.refused_at_capacity(remote_addr.ip());
                continue;
            };
            if handshakes.admit(remote_addr.ip()) == Admission::SourceFull {
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let handshake = handshake(
                acceptor.clone(),
                tcp,
                remote_addr,
                slot,
                limits.handshake_timeout,
                tx.clone(),
            );
            handshakes.spawn(remote_addr.ip(), handshake);
        }
    });
    (task, rx)
}

/// Completes one TLS handshake (within `timeout`) and hands the connection, holding `slot`,
/// to `tx`.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    slot: OwnedSemaphorePermit,
    timeout: Duration,
    tx: mpsc::Sender<Result<TlsConn, io::Error>>,
) {
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(peer = %remote_addr, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %remote_addr, "TLS handshake timed out");
            return;
        }
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    let certificate_expires = leaf.and_then(|leaf| not_after_of(leaf).ok());
    let certificate_issuer = leaf.and_then(crate::ca::key_id::authority_key_id);
    let identity = leaf
        .and_then(|leaf| match spiffe_id_of(leaf) {
            Ok(id) => Some(id),
            Err(error) => {
                // The verifier accepted it, so this should not happen; without
                // an identity the connection can still call Certify.
                tracing::warn!(peer = %remote_addr, %error, "no SPIFFE ID in a verified client certificate");
                None
            }
        });
    let conn = TlsConn {
        inner: tls,
        info: PeerInfo {
            remote_addr,
            identity,
            certificate_expires,
            certificate_issuer,
        },
        _slot: slot,
    };
    let _ = tx.send(Ok(conn)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_seventy_percent_of_what_is_left() {
        let wait = renew_after(SystemTime::now() + Duration::from_secs(100));
        assert!(
            (Duration::from_secs(69)..=Duration::from_secs(70)).contains(&wait),
            "{wait:?}"
        );
        assert_eq!(
            renew_after(SystemTime::now() - Duration::from_secs(5)),
            Duration::from_secs(1)
        );
    }
}
