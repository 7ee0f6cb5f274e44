//! One replica: its address, the identity it must present, its weight, its load, whether it is
//! ejected, and an HTTP/2 connection over mTLS that a background task keeps open.
//!
//! The request path only reads: the current connection (an `ArcSwap`), the load (atomics), the
//! ejection deadline (an atomic). Connecting, and reconnecting with backoff when the connection
//! drops, happen in the endpoint's own task, never in a call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::SendRequest;
use mesh_core::SpiffeId;
use rustls::ClientConfig;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::load::PeakEwma;
use crate::connect::connect_http2;
use crate::error::BoxError;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that lived this long was healthy: reconnect at once when it closes.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(1);

/// What identifies an endpoint: the same address with another identity is another endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct EndpointKey {
    pub(crate) addr: SocketAddr,
    pub(crate) identity: SpiffeId,
}

/// One replica of a backend.
pub(crate) struct Endpoint<B> {
    pub(crate) key: EndpointKey,
    /// Relative weight (at least 1); discovery may change it in place.
    weight: AtomicU32,
    pub(crate) load: PeakEwma,
    epoch: Instant,
    connection: ArcSwapOption<SendRequest<B>>,
    /// Nanoseconds since `epoch` until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    task: std::sync::OnceLock<AbortHandle>,
}

impl<B> std::fmt::Debug for Endpoint<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.key.addr)
            .field("identity", &self.key.identity)
            .field("weight", &self.weight())
            .finish_non_exhaustive()
    }
}

impl<B> Drop for Endpoint<B> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl<B> Endpoint<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// An endpoint whose task starts connecting at once; `ready` is notified whenever a
    /// connection comes up.
    pub(crate) fn spawn(
        key: EndpointKey,
        weight: u32,
        tls: Arc<ClientConfig>,
        ready: Arc<Notify>,
        epoch: Instant,
    ) -> Arc<Self> {
        let endpoint = Arc::new(Self {
            key,
            weight: AtomicU32::new(weight.max(1)),
            load: PeakEwma::new(epoch),
            epoch,
            connection: ArcSwapOption::empty(),
            ejected_until: AtomicU64::new(0),
            task: std::sync::OnceLock::new(),
        });
        let task = tokio::spawn(keep_connected(Arc::downgrade(&endpoint), tls, ready));
        // Set once, right after creation; nothing else sets it.
        let _ = endpoint.task.set(task.abort_handle());
        endpoint
    }
}

impl<B> Endpoint<B> {
    /// The endpoint's weight.
    pub(crate) fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Changes the endpoint's weight.
    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Ordering::Relaxed);
    }

    /// The cost P2C compares (see [`PeakEwma::cost`]).
    pub(crate) fn cost(&self, now: Instant) -> f64 {
        self.load.cost(self.weight(), now)
    }

    /// A sender on the live connection, if there is one.
    pub(crate) fn sender(&self) -> Option<SendRequest<B>> {
        let guard = self.connection.load();
        let sender = guard.as_ref()?;
        if sender.is_closed() {
            return None;
        }
        Some(SendRequest::clone(sender))
    }

    /// Whether a call could be sent here now: connected and not ejected.
    pub(crate) fn is_available(&self, now: Instant) -> bool {
        !self.is_ejected(now)
            && self
                .connection
                .load()
                .as_ref()
                .is_some_and(|s| !s.is_closed())
    }

    /// Whether the endpoint is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && self.nanos(now) < until
    }

    /// Ejects the endpoint until `until`.
    pub(crate) fn eject_until(&self, until: Instant) {
        self.ejected_until
            .store(self.nanos(until).max(1), Ordering::Relaxed);
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Keeps a connection open for as long as the endpoint exists.
async fn keep_connected<B>(endpoint: Weak<Endpoint<B>>, tls: Arc<ClientConfig>, ready: Arc<Notify>)
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let Some(addr) = endpoint.upgrade().map(|e| e.key.addr) else {
        return;
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect_http2::<B>(addr, tls.clone()).await {
            Ok((sender, connection)) => {
                let Some(live) = endpoint.upgrade() else {
                    return;
                };
                tracing::debug!(endpoint = %addr, "connected");
                live.connection.store(Some(Arc::new(sender)));
                drop(live);
                ready.notify_waiters();
                let since = Instant::now();
                connection.await;
                let Some(live) = endpoint.upgrade() else {
                    return;
                };
                live.connection.store(None);
                tracing::debug!(endpoint = %addr, "connection closed; reconnecting");
                if since.elapsed() >= HEALTHY_CONNECTION {
                    backoff = BACKOFF_MIN;
                    continue;
                }
            }
            Err(error) => tracing::warn!(endpoint = %addr, %error, "endpoint unreachable"),
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// `base` ± 25 %, so replicas that failed together do not retry together.
pub(crate) fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}
