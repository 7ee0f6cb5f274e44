//! The small HTTP/1.1 server behind the admin ports (health, readiness, metrics, debug
//! endpoints) of both the mesh runtime and the control service: plain text on a local port,
//! one task per connection, answers computed by a synchronous function ([`spawn`]) or, for an
//! answer that needs other servers (the control service's view across its replicas), an
//! asynchronous one ([`spawn_async`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Serves `respond` on `listener` until the returned task is aborted (which also aborts its
/// open connections). A failed accept (out of file descriptors, say) is logged and retried.
pub fn spawn<F>(listener: TcpListener, respond: F) -> JoinHandle<()>
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    spawn_async(listener, move |request| {
        let response = respond(&request);
        async move { response }
    })
}

/// As [`spawn`], with answers computed by an asynchronous function (which bounds its own time).
pub fn spawn_async<F, Fut>(listener: TcpListener, respond: F) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let respond = respond.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await
                {
                    tracing::debug!(%peer, %error, "admin connection failed");
                }
            });
        }
    })
}
