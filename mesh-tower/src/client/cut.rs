//! Cutting a streamed request body when its call ends without an answer, so the server sees
//! the upload reset rather than ended.
//!
//! A request body that is still streaming when its call is given up (a per-try or request
//! timeout, a connection failure, or the caller dropping the call) stays with the connection's
//! writer. If the caller's body then ends, as a stream whose producer stopped does, the writer
//! would send END_STREAM and the server's handler would read a clean end of a shorter body,
//! and could succeed on it. hyper resets the stream when the response future is dropped, but
//! only when its connection task next runs, which races with the body's end (1 upload in 20
//! looked complete in `tests/tests/upload_cut.rs` before this). The call holds a [`CutGuard`];
//! when it drops still armed, the body fails at once on its next poll, before any end it
//! would give, and hyper answers a failing body with RST_STREAM, which the server's handler
//! reads as an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Shared between a streamed request body ([`super::MeshBody::Prefixed`]) and the call that
/// sends it: once cut, the body fails. Opaque; the client stack sets it.
#[derive(Debug, Default)]
pub struct Cut {
    cut: AtomicBool,
    /// The task polling the body, woken when it is cut so the reset goes out at once.
    waker: AtomicWaker,
}

/// The error a cut body fails with.
#[derive(Debug, thiserror::Error)]
#[error("the call ended before its request body did; the upload is reset")]
pub(crate) struct BodyCut;

impl Cut {
    /// `Ready` once cut; otherwise registers `cx` to be woken when it is.
    pub(crate) fn poll_cut(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.cut.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Checked again: a cut between the first check and the registration woke nobody.
        if self.cut.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Held by a call while its streamed body is being sent: dropped armed, it cuts the body.
#[derive(Debug)]
pub(crate) struct CutGuard(Option<Arc<Cut>>);

impl CutGuard {
    /// A guard of `cut`, armed.
    pub(crate) fn new(cut: Arc<Cut>) -> Self {
        Self(Some(cut))
    }

    /// The server answered: the rest of the body is between the caller and the server.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CutGuard {
    fn drop(&mut self) {
        if let Some(cut) = self.0.take() {
            cut.cut();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn a_guard_dropped_armed_cuts_and_wakes_a_disarmed_one_does_not() {
        let cut = Arc::new(Cut::default());
        let mut cx = Context::from_waker(Waker::noop());
        let mut disarmed = CutGuard::new(cut.clone());
        disarmed.disarm();
        drop(disarmed);
        assert!(cut.poll_cut(&mut cx).is_pending());
        drop(CutGuard::new(cut.clone()));
        assert!(cut.poll_cut(&mut cx).is_ready());
    }
}
