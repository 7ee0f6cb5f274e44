//! An upload cut short never looks complete to the server's handler: when a per-try timeout
//! (`backendRequest`) fires, or the caller gives up, while the request body is still
//! streaming, the server's handler reads an error, never a clean end of a shorter body.
//!
//! Each upload sends three chunks at once and holds the fourth back; the call ends first (the
//! per-try timeout, or the caller dropping the call), and only then does the caller's body
//! end, cleanly, as a stream a caller stops feeding does. Counted, not timed: of N cut
//! uploads, the handler must see a complete body 0 times (and an error every time).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::StatusCode;
use mesh_tests::web::{WebMode, send};
use mesh_tests::{Config, Harness, eventually, listener};
use tokio::sync::mpsc;

/// Uploads cut per case.
const UPLOADS: usize = 100;

/// A streamed request to `path` whose body is what `rx` gives, until its sender is dropped.
fn upload(path: &str, rx: mpsc::Receiver<Bytes>) -> http::Request<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    http::Request::post(path)
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn three_chunks(tx: &mpsc::Sender<Bytes>) {
    for _ in 0..3 {
        tx.send(Bytes::from_static(b"part\n")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_by_a_timeout_or_a_cancel_fails_in_the_handler() {
    let lw = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(lw.local_addr().unwrap(), "web")])
        .routes(
            "web",
            "- {name: bounded, rules: [{backendRefs: [{name: web}], \
               timeouts: {request: 10s, backendRequest: 300ms}}]}",
        )
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let web = harness
        .web(lw, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let mesh = harness.mesh("client").await.unwrap();
    let client = mesh.client::<Body>("web").await.unwrap();

    // Cut by the per-try timeout: the caller gets 504, then its body ends.
    let calls = (0..UPLOADS).map(|_| {
        let client = client.clone();
        async move {
            let (tx, rx) = mpsc::channel(4);
            three_chunks(&tx).await;
            let reply = send(&client, upload("/upload/timeout", rx)).await;
            drop(tx);
            reply.status
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::GATEWAY_TIMEOUT),
        "{statuses:?}"
    );

    // Cut by the caller: it drops the call mid-upload, then its body ends.
    let calls = (0..UPLOADS).map(|_| {
        let client = client.clone();
        async move {
            let (tx, rx) = mpsc::channel(4);
            three_chunks(&tx).await;
            let call = send(&client, upload("/upload/cancel", rx));
            // Given up on before the server could answer (it waits for the whole body).
            let given_up = tokio::time::timeout(Duration::from_millis(200), call).await;
            assert!(given_up.is_err(), "the call cannot have finished");
            drop(tx);
        }
    });
    futures_util::future::join_all(calls).await;

    for path in ["/upload/timeout", "/upload/cancel"] {
        // Every handler has finished reading (with an error, or cleanly).
        let all_read = eventually(Duration::from_secs(10), || {
            let (clean, failed) = web.bodies.outcomes(path);
            clean + failed == UPLOADS
        })
        .await;
        let (clean, failed) = web.bodies.outcomes(path);
        eprintln!(
            "{path}: {UPLOADS} cut uploads, handler saw complete input {clean} times, an error {failed} times"
        );
        assert!(
            all_read,
            "{path}: {clean} + {failed} of {UPLOADS} bodies read"
        );
        assert_eq!(
            clean, 0,
            "{path}: a cut upload looked complete to the handler"
        );
    }
}
