//! The edges of the measured window, as functions callgrind can be told about: each side's
//! thread calls its `start` marker after the warm-up and its `end` marker after the last
//! measured call, and `profile_call instructions` runs callgrind with
//! `--zero-before=*profile_window_start_*` and `--dump-before=*profile_window_end_*`.
//! Callgrind zeroes and dumps only the thread that enters the function, so each side's dump
//! holds exactly its own thread's instructions over the measured calls, and the marker in it
//! (`..._server` or `..._client`) says which side it is.
//!
//! Outside callgrind the markers cost a call each, twice per run.

use std::hint::black_box;

/// Which edge of the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    Start,
    End,
}

/// Marks `edge` on the server's thread.
pub(crate) fn server(edge: Edge) {
    match edge {
        Edge::Start => profile_window_start_server(),
        Edge::End => profile_window_end_server(),
    }
}

/// Marks `edge` on the caller's thread.
pub(crate) fn client(edge: Edge) {
    match edge {
        Edge::Start => profile_window_start_client(),
        Edge::End => profile_window_end_client(),
    }
}

// Each marker is a function of its own that is never inlined, with a body of its own (a
// distinct constant), so that the compiler neither inlines nor merges them: callgrind finds
// them by name.

#[inline(never)]
fn profile_window_start_server() {
    black_box(0x5e_0001_u32);
}

#[inline(never)]
fn profile_window_end_server() {
    black_box(0x5e_0002_u32);
}

#[inline(never)]
fn profile_window_start_client() {
    black_box(0xc1_0001_u32);
}

#[inline(never)]
fn profile_window_end_client() {
    black_box(0xc1_0002_u32);
}

/// The names callgrind's function patterns match, and that mark each side's dump.
pub(crate) const ZERO_BEFORE: &str = "*profile_window_start_*";
/// See [`ZERO_BEFORE`].
pub(crate) const DUMP_BEFORE: &str = "*profile_window_end_*";
/// The marker found in the server's window dump.
pub(crate) const SERVER_MARK: &str = "profile_window_start_server";
/// The marker found in the client's window dump.
pub(crate) const CLIENT_MARK: &str = "profile_window_start_client";
