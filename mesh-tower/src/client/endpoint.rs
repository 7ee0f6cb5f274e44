//! One replica: its address, the identity it must present, its weight, its load, whether it is
//! ejected, and a small pool of HTTP/2 connections over mTLS that background tasks keep open.
//!
//! The request path only reads: the pool's connections (one `ArcSwap` each), the load
//! (atomics), the ejection deadline (an atomic). Connecting, and reconnecting with backoff when
//! a connection drops, happen in one task per connection, never in a call; the connections of
//! a pool come and go independently.
//!
//! Why a pool: one HTTP/2 connection is served by one task on each side, so a busy caller with
//! many calls in flight to one replica is bound by what one connection task can frame and
//! encrypt. Calls are spread over the connections by the task that makes them: each task has
//! its connection (its id hashed), the next one up when that one is down. Spreading call by
//! call instead (round robin) was measured to cost about 30 % more CPU per call on both sides
//! at 64 calls in flight over 4 connections (16 against 12.5 µs): every connection then sees
//! every caller, and their reads and writes batch worse. A task that makes many calls at once
//! (`join_all`) keeps them on one connection; calls made from their own tasks (a server's
//! handlers, spawned workers) spread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::SendRequest;
use mesh_core::SpiffeId;
use mesh_core::backoff::Backoff;
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
    /// The pool: each slot holds its connection while it is up (at least one slot).
    connections: Box<[ArcSwapOption<SendRequest<B>>]>,
    /// Round-robin position, for calls made outside a task.
    next: AtomicUsize,
    /// Nanoseconds since `epoch` until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    tasks: std::sync::OnceLock<Box<[AbortHandle]>>,
}

impl<B> std::fmt::Debug for Endpoint<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.key.addr)
            .field("identity", &self.key.identity)
            .field("weight", &self.weight())
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl<B> Drop for Endpoint<B> {
    fn drop(&mut self) {
        if let Some(tasks) = self.tasks.get() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

impl<B> Endpoint<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// An endpoint with `connections` connections (at least one), whose tasks start
    /// connecting at once; `ready` is notified whenever one comes up.
    pub(crate) fn spawn(
        key: EndpointKey,
        weight: u32,
        connections: usize,
        tls: Arc<ClientConfig>,
        ready: Arc<Notify>,
        epoch: Instant,
    ) -> Arc<Self> {
        let slots = connections.max(1);
        let endpoint = Arc::new(Self {
            key,
            weight: AtomicU32::new(weight.max(1)),
            load: PeakEwma::new(epoch),
            epoch,
            connections: (0..slots).map(|_| ArcSwapOption::empty()).collect(),
            next: AtomicUsize::new(0),
            ejected_until: AtomicU64::new(0),
            tasks: std::sync::OnceLock::new(),
        });
        let tasks = (0..slots)
            .map(|slot| {
                let task =
                    keep_connected(Arc::downgrade(&endpoint), slot, tls.clone(), ready.clone());
                tokio::spawn(task).abort_handle()
            })
            .collect();
        // Set once, right after creation; nothing else sets it.
        let _ = endpoint.tasks.set(tasks);
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

    /// A sender on a live connection of the pool, if one is up: the calling task's own
    /// connection (see the module docs), else the next one up after it.
    pub(crate) fn sender(&self) -> Option<SendRequest<B>> {
        let n = self.connections.len();
        let start = match n {
            1 => 0,
            _ => match tokio::task::try_id() {
                Some(task) => slot_of(&task, n),
                None => self.next.fetch_add(1, Ordering::Relaxed) % n,
            },
        };
        (0..n).find_map(|i| {
            let guard = self.connections[(start + i) % n].load();
            let sender = guard.as_ref().filter(|s| !s.is_closed())?;
            Some(SendRequest::clone(sender))
        })
    }

    /// Whether a call could be sent here now: some connection up and not ejected.
    pub(crate) fn is_available(&self, now: Instant) -> bool {
        !self.is_ejected(now)
            && self
                .connections
                .iter()
                .any(|slot| slot.load().as_ref().is_some_and(|s| !s.is_closed()))
    }

    /// Whether the endpoint can carry its share of load now: available, and not asking to be
    /// spared (see [`super::load::PeakEwma::shedding`]). Zones spill over by this.
    pub(crate) fn is_healthy(&self, now: Instant) -> bool {
        !self.load.is_shedding(now) && self.is_available(now)
    }

    /// Whether the endpoint is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && self.nanos(now) < until
    }

    /// How much longer the endpoint stays ejected at `now`; `None` when it is not ejected.
    pub(crate) fn ejected_for(&self, now: Instant) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = self.nanos(now);
        (until != 0 && now < until).then(|| Duration::from_nanos(until - now))
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

/// Keeps the pool's connection in `slot` open for as long as the endpoint exists.
async fn keep_connected<B>(
    endpoint: Weak<Endpoint<B>>,
    slot: usize,
    tls: Arc<ClientConfig>,
    ready: Arc<Notify>,
) where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let Some(addr) = endpoint.upgrade().map(|e| e.key.addr) else {
        return;
    };
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        match connect_http2::<B>(addr, tls.clone()).await {
            Ok((sender, connection)) => {
                let Some(live) = endpoint.upgrade() else {
                    return;
                };
                tracing::debug!(endpoint = %addr, slot, "connected");
                if let Some(cell) = live.connections.get(slot) {
                    cell.store(Some(Arc::new(sender)));
                }
                drop(live);
                ready.notify_waiters();
                let since = Instant::now();
                connection.await;
                let Some(live) = endpoint.upgrade() else {
                    return;
                };
                if let Some(cell) = live.connections.get(slot) {
                    cell.store(None);
                }
                tracing::debug!(endpoint = %addr, slot, "connection closed; reconnecting");
                if since.elapsed() >= HEALTHY_CONNECTION {
                    backoff.reset();
                    continue;
                }
            }
            // One warning per endpoint, not one per connection of its pool.
            Err(error) if slot == 0 => {
                tracing::warn!(endpoint = %addr, %error, "endpoint unreachable")
            }
            Err(error) => tracing::debug!(endpoint = %addr, slot, %error, "endpoint unreachable"),
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// The pool slot (of `n`) for a task: its id, Fibonacci-hashed so that consecutive ids
/// (tasks spawned together) land on different slots.
fn slot_of(task: &tokio::task::Id, n: usize) -> usize {
    let mut hasher = Fibonacci(0);
    std::hash::Hash::hash(task, &mut hasher);
    let high = hasher.0 >> 32;
    // `high * n >> 32` maps the hash's high bits onto 0..n without a division (`high` is
    // below 2^32, so the result is below `n`).
    usize::try_from((high * n as u64) >> 32).unwrap_or(0)
}

/// A hasher for one integer: multiplication by 2^64 / φ.
struct Fibonacci(u64);

impl std::hash::Hasher for Fibonacci {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(FIBONACCI);
    }
}

const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_spawned_together_spread_over_the_pool() {
        let mut per_slot = [0u32; 4];
        for _ in 0..64 {
            let slot = tokio::spawn(async { tokio::task::try_id().map(|id| slot_of(&id, 4)) })
                .await
                .unwrap()
                .unwrap();
            per_slot[slot] += 1;
        }
        // Consecutive ids, Fibonacci-hashed, split evenly (within one or two).
        assert!(
            per_slot.iter().all(|n| (14..=18).contains(n)),
            "{per_slot:?}"
        );
        // And one task always gets the same slot.
        let id = tokio::spawn(async { tokio::task::try_id() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(slot_of(&id, 4), slot_of(&id, 4));
    }
}
