//! The deadline for a connection's first request: a client that finishes its handshake must
//! start a request within [`ServerLimits::header_timeout`](super::ServerLimits), or it is
//! cut off. Bytes alone do not count: an HTTP/2 client that sends only the connection preface
//! and SETTINGS (or PINGs) holds a connection slot as surely as a silent one.
//!
//! The watcher reads the connection's first bytes as the server receives them (after TLS):
//! the HTTP/2 preface, then frame headers, skipping payloads, until a HEADERS frame. Anything
//! that is not the HTTP/2 preface is HTTP/1.1, whose request head hyper's own header timeout
//! bounds. Once a request has started the watcher is dropped, so later reads cost one check.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 frame header: 24-bit length, type, flags, stream ID.
const FRAME_HEADER_LEN: usize = 9;
/// The frame type that opens a request.
const HEADERS: u8 = 0x1;

/// Watches a connection for its first request until a deadline.
#[derive(Debug)]
pub(crate) struct FirstRequest {
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Bytes of the preface seen so far.
    preface: usize,
    /// The frame header being read.
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
}

impl FirstRequest {
    /// A watcher whose deadline is `within` from now.
    pub(crate) fn new(within: Duration) -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep(within)),
            preface: 0,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            skip: 0,
        }
    }

    /// Reads `bytes`, the next the client sent; true once a request has started (an HTTP/2
    /// HEADERS frame, or anything that is not HTTP/2).
    pub(crate) fn observe(&mut self, mut bytes: &[u8]) -> bool {
        while let Some((&byte, rest)) = bytes.split_first() {
            if self.preface < PREFACE.len() {
                if byte != PREFACE[self.preface] {
                    // HTTP/1.1: hyper bounds the time to a full request head itself.
                    return true;
                }
                self.preface += 1;
                bytes = rest;
            } else if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
            } else {
                self.header[self.header_len] = byte;
                self.header_len += 1;
                bytes = rest;
                if self.header_len == FRAME_HEADER_LEN {
                    self.header_len = 0;
                    if self.header[3] == HEADERS {
                        return true;
                    }
                    let [a, b, c, ..] = self.header;
                    self.skip = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                }
            }
        }
        false
    }

    /// Whether the deadline has passed; registers `cx` to be woken when it does.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn the_preface_settings_and_pings_are_not_a_request_but_headers_are() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, &[0; 12])); // SETTINGS
        bytes.extend(frame(0x6, &[1; 8])); // PING
        // A SETTINGS payload holding the HEADERS type byte must not fool it.
        bytes.extend(frame(0x4, &[0, 0, 0, 0, 0, HEADERS]));
        // Byte by byte as well as at once.
        let mut whole = FirstRequest::new(Duration::from_secs(1));
        assert!(!whole.observe(&bytes));
        let mut split = FirstRequest::new(Duration::from_secs(1));
        assert!(
            bytes
                .iter()
                .all(|b| !split.observe(std::slice::from_ref(b)))
        );
        let headers = frame(HEADERS, &[0x82]);
        assert!(whole.observe(&headers));
        assert!(!split.observe(&headers[..5]));
        assert!(split.observe(&headers[5..]));
    }

    #[tokio::test]
    async fn http1_counts_at_once() {
        assert!(!FirstRequest::new(Duration::from_secs(1)).observe(b""));
        assert!(FirstRequest::new(Duration::from_secs(1)).observe(b"POST / HTTP/1.1\r\n"));
        assert!(FirstRequest::new(Duration::from_secs(1)).observe(b"GET"));
    }
}
