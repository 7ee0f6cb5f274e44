//! The idle bound of a connection: once no call has been in flight on it for
//! [`ServerLimits::idle_timeout`](super::ServerLimits), the server closes it. Bytes alone do not
//! count: an HTTP/2 client that only answers keep-alive pings (or sends its own) holds a
//! connection slot as surely as a silent one.
//!
//! The calls in flight are counted by [`super::MeshLayer`] (see [`crate::activity`]); the
//! timer is read by the connection's stream when it has nothing to read, so it costs nothing
//! on a busy connection's reads beyond one branch, and one atomic load each time it fires.
//! Between firings a read with nothing to read costs two loads: the timer is polled again only
//! when it has fired or the task that reads is another (a fresh poll of tokio's `Sleep` took
//! about 350 instructions, once per call at one call in flight).
//! A connection is closed between one and two idle periods after its last call ended: the
//! timer re-arms for a full period whenever it sees that calls came or went.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::activity::{Activity, Seen};

/// Watches one connection's calls and says when it has been idle too long.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    activity: Arc<Activity>,
    after: Duration,
    deadline: Pin<Box<Sleep>>,
    /// The activity when the timer was last armed.
    seen: Seen,
    /// The waker the timer last registered: it wakes that task when it fires.
    registered: Option<Waker>,
}

impl IdleTimer {
    /// A timer that closes a connection idle for `after`, reading `activity`.
    pub(crate) fn new(activity: Arc<Activity>, after: Duration) -> Self {
        let seen = activity.seen();
        Self {
            activity,
            after,
            deadline: Box::pin(tokio::time::sleep(after)),
            seen,
            registered: None,
        }
    }

    /// Whether the connection has been idle for the whole period; registers `cx` to be woken
    /// when the timer next fires.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        // Not fired yet, and it will wake this task when it does: nothing to do.
        if !self.deadline.is_elapsed()
            && self
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return false;
        }
        while self.deadline.as_mut().poll(cx).is_ready() {
            let now = self.activity.seen();
            if !now.busy() && now == self.seen {
                return true;
            }
            // Calls came, went or are still running: a full period from now.
            self.seen = now;
            self.deadline.as_mut().reset(Instant::now() + self.after);
        }
        // Polled pending: `cx`'s task is the one the timer wakes.
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.registered = Some(cx.waker().clone());
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    /// Real time (the crate's tests do not pause tokio's clock), so the test asserts only what
    /// holds however late it is scheduled.
    #[tokio::test]
    async fn it_fires_after_a_quiet_period_and_never_while_a_call_runs() {
        const PERIOD: Duration = Duration::from_millis(40);
        let activity = Arc::new(Activity::default());
        let mut timer = IdleTimer::new(activity.clone(), PERIOD);
        let mut cx = Context::from_waker(Waker::noop());

        // A call runs across several periods: never idle.
        let call = activity.begin();
        for _ in 0..4 {
            tokio::time::sleep(PERIOD).await;
            assert!(!timer.expired(&mut cx));
        }
        drop(call);
        let ended = Instant::now();
        // Idle at last, but only a full period after the call ended.
        let mut waited = 0;
        while !timer.expired(&mut cx) {
            waited += 1;
            assert!(waited < 50, "still not idle after {waited} half periods");
            tokio::time::sleep(PERIOD / 2).await;
        }
        assert!(ended.elapsed() >= PERIOD);
    }
}
