//! Serves the control service's HTTP/2 connections, each in one task that also polls every
//! stream of its connection.
//!
//! hyper spawns a task per stream by default. The control service's streams are small and
//! mostly idle (a Watch stream waits for the next change, a Certify call signs and answers),
//! and a task per stream costs twice over: a config change wakes the stream's task, which
//! wakes the connection's task to write, one scheduler hop more per subscriber; and tokio's
//! LIFO slot runs the connection's task right after each stream that wakes it, so responses
//! that are ready together still leave in one write system call each. Polled inside the
//! connection's task, the streams that are ready run first and their frames leave together in
//! the connection's next write. The price: the streams of one connection share one core at a
//! time (connections still spread over the runtime's workers), and a panicking stream ends its
//! connection rather than itself.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::body::Body;
use tonic::codegen::{Service, http};

use super::routes::ControlRoutes;
use super::tls::TlsConn;

/// Pings an idle connection this often, to find subscribers that vanished without closing it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// A connection whose ping is not answered within this is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection sent away for being idle has to close before it is dropped (at most
/// the idle timeout itself).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Streams one connection may have open at once: a meshed process holds one Watch stream and
/// now and then a Certify call; a few hundred leave room for processes that share a connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// How many rounds of "run the ready streams, then read and write the connection" one poll of
/// a connection's task may take before it yields to other connections.
const ROUNDS_PER_POLL: usize = 16;

/// A stream hyper handed over to be run.
type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// hyper's executor for one connection: streams are queued here and polled by the
/// connection's own task (see [`serve_connection`]).
#[derive(Clone, Default)]
struct StreamQueue(Arc<Mutex<Vec<StreamFuture>>>);

impl<F> hyper::rt::Executor<F> for StreamQueue
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        // Only the connection's task touches the queue: the lock is never contended, and a
        // poisoned one still holds a valid vector.
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(stream));
    }
}

impl StreamQueue {
    /// Moves the streams hyper opened since the last call into `running`; false if none.
    fn drain_into(&self, running: &mut FuturesUnordered<StreamFuture>) -> bool {
        let mut queued = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let any = !queued.is_empty();
        running.extend(queued.drain(..));
        any
    }
}

/// Serves every connection that comes out of `incoming` with `routes` until `shutdown` turns
/// true; then stops taking connections, asks each to finish (HTTP/2 GOAWAY: streams in progress
/// complete) and returns once all have closed, cutting those still open after `grace`.
/// Dropping the returned future (aborting its task) closes every connection at once. A
/// connection with no stream open for `idle` is closed the same way (see
/// [`super::limits`]).
pub(crate) async fn serve(
    routes: ControlRoutes,
    mut incoming: mpsc::Receiver<Result<TlsConn, io::Error>>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    idle: Duration,
) {
    let mut connections = JoinSet::new();
    // Each connection watches for the signal itself.
    let signal = shutdown.clone();
    loop {
        tokio::select! {
            accepted = incoming.recv() => match accepted {
                Some(Ok(conn)) => {
                    connections.spawn(serve_connection(conn, routes.clone(), signal.clone(), idle));
                }
                Some(Err(error)) => tracing::debug!(%error, "a connection failed before serving"),
                None => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, closed).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the grace period; closing them"
        );
        connections.shutdown().await;
    }
}

/// Serves one connection: hyper's HTTP/2 state machine and every stream it opens, in this task;
/// sends a GOAWAY once no stream has been open for `idle`.
async fn serve_connection(
    conn: TlsConn,
    routes: ControlRoutes,
    mut shutdown: watch::Receiver<bool>,
    idle: Duration,
) {
    let peer = conn.info().clone();
    let remote_addr = peer.remote_addr;
    let queue = StreamQueue::default();
    let service = service_fn(move |mut request: http::Request<Incoming>| {
        // What handlers know about the caller (`request.extensions().get::<PeerInfo>()`).
        request.extensions_mut().insert(peer.clone());
        routes.clone().call(request.map(Body::new))
    });
    let mut builder = http2::Builder::new(queue.clone());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(conn), service));
    let mut stop = pin!(shutdown.wait_for(|stop| *stop));
    let mut stopping = false;
    let mut running = FuturesUnordered::new();
    let mut idle_timer = pin!(tokio::time::sleep(idle));
    // Streams opened since the idle timer was last armed.
    let mut opened = false;
    // Sent away for being idle: the timer now bounds the goodbye.
    let mut idle_closing = false;
    let waker = Arc::new(RoundWaker::default());
    let round_waker = Waker::from(waker.clone());
    let result = poll_fn(|cx: &mut Context<'_>| {
        if !stopping && stop.as_mut().poll(cx).is_ready() {
            stopping = true;
            connection.as_mut().graceful_shutdown();
        }
        while idle_timer.as_mut().poll(cx).is_ready() {
            if idle_closing {
                // The GOAWAY was not heeded (a peer that does not answer the ping that
                // completes a graceful shutdown): drop the connection.
                tracing::debug!(peer = %remote_addr, "idle connection dropped");
                return Poll::Ready(Ok(()));
            }
            if stopping {
                // Shutting down: `serve` bounds the rest.
                break;
            }
            let now = tokio::time::Instant::now();
            if running.is_empty() && !opened {
                tracing::debug!(peer = %remote_addr, "idle connection closed");
                stopping = true;
                idle_closing = true;
                connection.as_mut().graceful_shutdown();
                idle_timer.as_mut().reset(now + idle.min(IDLE_CLOSE_GRACE));
            } else {
                // A stream is open, or one came and went: a full period from now.
                opened = false;
                idle_timer.as_mut().reset(now + idle);
            }
        }
        waker.start_polling(cx.waker());
        let mut inner = Context::from_waker(&round_waker);
        for _ in 0..ROUNDS_PER_POLL {
            waker.begin_round();
            // The ready streams first, so that what they send leaves in this round's write.
            run_ready(&mut running, &mut inner);
            if let Poll::Ready(result) = connection.as_mut().poll(&mut inner) {
                waker.stop_polling();
                return Poll::Ready(result);
            }
            // Requests the connection just read become streams to run in the next round.
            if queue.drain_into(&mut running) {
                opened = true;
                continue;
            }
            // Nothing new: done, unless a stream or the connection was woken during this
            // round (a stream's frame wakes the connection; a frame read wakes its stream).
            if !waker.woken_in_round() && waker.stop_polling() {
                return Poll::Pending;
            }
        }
        waker.stop_polling();
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    if let Err(error) = result {
        tracing::debug!(peer = %remote_addr, %error, "connection ended with an error");
    }
}

/// The waker that a connection's streams and hyper's connection get while the connection's
/// task polls them. A wake during the poll only marks the round (the task runs another round
/// instead of being scheduled again to find what the wake was for); a wake at any other time
/// wakes the task.
///
/// Without it, a connection's task ran about five times per subscriber per config change:
/// a stream's frame wakes the connection and a frame read wakes its stream, each a second
/// poll of the task right after the one that caused it.
#[derive(Default)]
struct RoundWaker {
    /// The task's own waker, for wakes outside its polls.
    task: AtomicWaker,
    /// The task is inside its poll: wakes only mark `woken`.
    polling: AtomicBool,
    /// Something was woken since the round began.
    woken: AtomicBool,
}

impl RoundWaker {
    /// The task's poll begins, with `task` as its waker.
    fn start_polling(&self, task: &Waker) {
        self.task.register(task);
        self.polling.store(true, Ordering::SeqCst);
    }

    /// A round of the poll begins: earlier wakes are seen to by it.
    fn begin_round(&self) {
        self.woken.store(false, Ordering::SeqCst);
    }

    /// Whether something was woken since the round began.
    fn woken_in_round(&self) -> bool {
        self.woken.load(Ordering::SeqCst)
    }

    /// The task's poll ends. False if a wake came meanwhile that the poll has not seen: then
    /// the task is still polling and must run another round.
    fn stop_polling(&self) -> bool {
        self.polling.store(false, Ordering::SeqCst);
        if self.woken_in_round() {
            // A wake between the round's last check and now: it found `polling` set and did
            // not wake the task, so this poll must see to it.
            self.polling.store(true, Ordering::SeqCst);
            return false;
        }
        true
    }
}

impl Wake for RoundWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

/// Polls every stream that is ready until none is; finished ones are dropped.
fn run_ready(running: &mut FuturesUnordered<StreamFuture>, cx: &mut Context<'_>) {
    while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
}
