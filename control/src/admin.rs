//! The admin HTTP server (HTTP/1.1, its own port): liveness, readiness, and who is subscribed.
//!
//! - `GET /healthz`: 200 `ok` while the process runs.
//! - `GET /readyz`: 200 `ready` once the first config is loaded and the gRPC listener is bound,
//!   503 before (and while shutting down).
//! - `GET /subscribers`: JSON, the config version and every subscriber with the version it was
//!   sent, acked and rejected, so an operator can see who is stale; with the key identifier of
//!   the CA that signed the certificate it connected with, and, while the CA rotates its own
//!   root, the rotation (`rootRotation`: phase, roots, history) and whether each subscriber
//!   ACKed the two-root bundle (`bundleAcked`). With peer replicas, their subscribers too,
//!   each row marked with its `replica`, and `complete`, `replicas` and `unreachable` saying
//!   who answered ([`crate::replicas`]); `GET /subscribers?local` lists this replica's only.
//! - `GET /metrics`: Prometheus text ([`metrics`]).
//! - `GET /config`: the config in force as JSON, in the control file's shape (`services`,
//!   `policies`, `defaultPolicy`), whatever its source (a file, or Kubernetes objects);
//!   `meshctl check --admin` lints it.
//! - `GET /trust-bundle`: the roots in force, PEM (public: what workloads verify peers with).
//!
//! `meshctl status` and `meshctl certs` read `/subscribers` and `/trust-bundle`.
//! - `GET /ui` and `GET /ui/graph.json`: the live view of the mesh ([`crate::view`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use mesh_core::snapshot::ServiceName;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca::rotation::{RotationStatus, RotationView};
use crate::replicas::local::LocalReplica;
use crate::replicas::peers::Peers;
use crate::replicas::view;
use crate::state::State;
use crate::view::edges::EdgeStore;
use crate::view::{self as live_view, page};
use crate::watch::registry::Registry;

pub(crate) mod metrics;

/// What the admin endpoints report on.
#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) state: watch::Receiver<Arc<State>>,
    /// Destinations that have had subscribers, so that a gauge can drop to 0.
    pub(crate) seen: Arc<Mutex<BTreeSet<ServiceName>>>,
    /// What subscribers report of their calls, for the live view.
    pub(crate) edges: Arc<EdgeStore>,
    /// The root rotation, when the CA rotates its own root.
    pub(crate) rotation: Option<Arc<RotationStatus>>,
    /// This replica, as `/subscribers` lists it.
    pub(crate) local: Arc<LocalReplica>,
    /// The other replicas, when there are any.
    pub(crate) peers: Option<Arc<Peers>>,
}

/// Serves the admin endpoints on `listener` until the returned task is aborted (which also
/// aborts its open connections).
pub(crate) fn spawn(listener: TcpListener, admin: AdminState) -> JoinHandle<()> {
    let admin = Arc::new(admin);
    mesh_process::admin_http::spawn_async(listener, move |request| {
        let admin = admin.clone();
        async move {
            if request.uri().path() == "/subscribers" && request.method() == Method::GET {
                // The only answer that waits (on the peers, each within its timeout).
                let local_only = request.uri().query().is_some_and(|q| {
                    q.split('&')
                        .any(|kv| kv == "local" || kv.starts_with("local="))
                });
                return subscribers(&admin, local_only).await;
            }
            respond(&admin, &request)
        }
    })
}

fn respond(admin: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if admin.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        // HEAD: the headers only, without asking the peers.
        "/subscribers" => json(Vec::new()),
        "/metrics" => metrics(admin),
        "/config" => {
            let state = admin.state.borrow().clone();
            match serde_json::to_vec(&state.config.spec()) {
                Ok(body) => {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    response
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot encode the config for /config");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot encode the config\n",
                    )
                }
            }
        }
        "/trust-bundle" => {
            let state = admin.state.borrow().clone();
            let pem = mesh_core::pem::certificates(state.trust_bundle.iter().map(|c| c.as_ref()));
            let mut response = Response::new(Full::new(Bytes::from(pem)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/x-pem-file"),
            );
            response
        }
        "/ui" | "/ui/" => ui_page(),
        "/ui/graph.json" => ui_graph(admin),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn subscribers(admin: &AdminState, local_only: bool) -> Response<Full<Bytes>> {
    let version = admin.state.borrow().version;
    let rotation = admin.rotation.as_ref().map(|r| r.view());
    let peers = if local_only {
        None
    } else {
        admin.peers.as_deref()
    };
    let mut body = view::merged(&admin.local, peers).await;
    if let Some(object) = body.as_object_mut() {
        object.insert("configVersion".into(), version.into());
        object.insert(
            "rootRotation".into(),
            rotation
                .as_ref()
                .map_or(serde_json::Value::Null, rotation_json),
        );
    }
    json(body.to_string().into_bytes())
}

/// A JSON answer.
fn json(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The root rotation as `/subscribers` shows it.
fn rotation_json(view: &RotationView) -> serde_json::Value {
    let unix = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    serde_json::json!({
        "phase": view.phase,
        "rootKeyId": view.root_key_id,
        "nextRootKeyId": view.next_root_key_id,
        "issuerKeyId": view.issuer_key_id,
        "rootExpiresAtUnix": unix(view.root_expires),
        "overlapVersion": view.overlap_version,
        "history": view.history.iter().map(|t| serde_json::json!({
            "phase": t.phase,
            "reason": t.reason,
            "atUnix": unix(t.at),
        })).collect::<Vec<_>>(),
    })
}

fn ui_page() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(page::PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        hyper::header::HeaderValue::from_static(page::CONTENT_SECURITY_POLICY),
    );
    response
}

fn ui_graph(admin: &AdminState) -> Response<Full<Bytes>> {
    let graph = live_view::graph(&admin.registry.list(), &admin.edges, Instant::now());
    let body = match serde_json::to_vec(&graph) {
        Ok(body) => body,
        Err(error) => {
            // Only non-finite floats could fail, and the view computes none.
            tracing::warn!(%error, "cannot encode the graph");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the graph\n",
            );
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

fn metrics(admin: &AdminState) -> Response<Full<Bytes>> {
    let Some(handle) = mesh_process::prometheus::handle() else {
        return text(
            StatusCode::NOT_FOUND,
            "another metrics recorder is installed in this process\n",
        );
    };
    let version = admin.state.borrow().version;
    metrics::refresh(version, subscriber_counts(&admin.registry), &admin.seen);
    let mut response = Response::new(Full::new(Bytes::from(handle.render())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// How many subscribers watch each destination service.
fn subscriber_counts(registry: &Registry) -> BTreeMap<ServiceName, u32> {
    let mut counts = BTreeMap::<ServiceName, u32>::new();
    for subscriber in registry.list() {
        for destination in subscriber.destinations {
            *counts.entry(destination.service).or_default() += 1;
        }
    }
    counts
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
