//! Reading the control service's admin port: a plain HTTP/1.1 GET (the port is plaintext and
//! local to the cluster, like Istio's and Linkerd's debug ports), to every address a name
//! resolves to, so that one DNS name of a headless Service reaches every control replica.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::error::CtlError;

/// How long one replica may take to connect and answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most read of one answer: `/subscribers` of 10,000 subscribers is a few MiB.
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// Every address `target` (`host:port`) resolves to, each once, in resolver order.
pub(super) fn replicas(target: &str) -> Result<Vec<SocketAddr>, CtlError> {
    let resolved = target.to_socket_addrs().map_err(|source| CtlError::Admin {
        target: target.to_owned(),
        message: format!("cannot resolve: {source}"),
    })?;
    let mut seen = Vec::new();
    for addr in resolved {
        if !seen.contains(&addr) {
            seen.push(addr);
        }
    }
    Ok(seen)
}

/// The body of `GET path` from the admin server at `addr`; an error unless it answers 200.
pub(super) fn get(addr: SocketAddr, path: &str) -> Result<String, CtlError> {
    let fail = |message: String| CtlError::Admin {
        target: addr.to_string(),
        message,
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| fail(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| fail(e.to_string()))?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fail(format!("send: {e}")))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_BODY)
        .read_to_end(&mut answer)
        .map_err(|e| fail(format!("read: {e}")))?;
    let answer = String::from_utf8(answer).map_err(|_| fail("the answer is not UTF-8".into()))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("no HTTP answer".into()))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(fail(format!("GET {path}: HTTP {status}: {}", body.trim())));
    }
    // The admin server sends a content-length; `connection: close` ends the body.
    Ok(body.to_owned())
}
