//! A scriptable HTTP test backend: an axum service served over mTLS by [`Mesh::serve`], whose
//! answer the request's path chooses, and which logs every request it receives.
//!
//! | path                      | answer                                                         |
//! |---------------------------|----------------------------------------------------------------|
//! | `/fail/{code}/{n}`        | `code` the first `n` times this replica sees this path + query, then 200 |
//! | `/fail/{code}/always`     | always `code`                                                  |
//! | `/sleep/{ms}`             | 200 after `ms` milliseconds                                    |
//! | anything else             | 200                                                            |
//!
//! Every answer carries `x-backend: <replica name>` and, as JSON, an [`Echo`] of what the replica
//! received (headers included). `?header=name:value` (repeatable) adds response headers. A
//! replica's [`WebMode`] can make it fail or lag on every request, whatever the path.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use mesh_tower::{Mesh, MeshClient};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::Harness;

/// How a replica behaves whatever the path asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebMode {
    /// As the path says.
    #[default]
    Normal,
    /// Answers every request with this status.
    Fail(StatusCode),
    /// Waits this long before handling every request.
    Delay(Duration),
    /// Answers every `n`th request it receives (counted over all paths) with this status.
    FailOneIn(usize, StatusCode),
}

/// What a replica saw of one request (recorded on arrival, before its body is read).
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// The request headers as they arrived.
    pub headers: HeaderMap,
}

/// Every request a replica received, in order; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<Seen>>>);

impl RequestLog {
    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// How many requests arrived for exactly this path and query.
    pub fn count_path(&self, path: &str) -> usize {
        self.lock().iter().filter(|s| s.path == path).count()
    }

    /// A copy of the log.
    pub fn entries(&self) -> Vec<Seen> {
        self.lock().clone()
    }

    fn push(&self, seen: Seen) {
        self.lock().push(seen);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
        // A test that panicked while holding the lock has failed already.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How each request body a replica read ended, by path and query: its length when it ended
/// cleanly, `None` when reading it failed (the stream was reset). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BodyLog(Arc<Mutex<Vec<BodyRead>>>);

/// One body read: the request's path and query, and the body's length when it ended cleanly.
type BodyRead = (String, Option<usize>);

impl BodyLog {
    /// `(ended cleanly, failed)` for the bodies of requests to exactly this path and query.
    pub fn outcomes(&self, path: &str) -> (usize, usize) {
        let bodies = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mine = bodies.iter().filter(|(p, _)| p == path);
        let clean = mine.clone().filter(|(_, len)| len.is_some()).count();
        (clean, mine.count() - clean)
    }

    fn push(&self, path: String, len: Option<usize>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path, len));
    }
}

/// What a replica answers in its body: who answered and what it received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    /// The replica's name.
    pub backend: String,
    /// The request's method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Request headers (lowercase names), every value in order.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The request body's length.
    pub body_len: usize,
}

impl Echo {
    /// The values the request carried for header `name`.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// A running web replica; stops when dropped.
pub struct WebReplica {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name (in `x-backend` and [`Echo::backend`]).
    pub name: String,
    /// What it received.
    pub log: RequestLog,
    /// How the request bodies it read ended.
    pub bodies: BodyLog,
    task: JoinHandle<()>,
}

impl Drop for WebReplica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Replica {
    name: String,
    mode: WebMode,
    log: RequestLog,
    bodies: BodyLog,
    /// Requests seen per path + query, for `/fail/{code}/{n}`.
    seen_per_path: Mutex<HashMap<String, u32>>,
}

impl Harness {
    /// Starts web replica `name` of `service` on `listener`, running as `account`.
    pub async fn web(
        &self,
        listener: TcpListener,
        name: &str,
        account: &str,
        service: &str,
        mode: WebMode,
    ) -> anyhow::Result<WebReplica> {
        let mesh = Mesh::start(self.settings(account, Some(service))).await?;
        let addr = listener.local_addr()?;
        let log = RequestLog::default();
        let bodies = BodyLog::default();
        let state = Arc::new(Replica {
            name: name.to_owned(),
            mode,
            log: log.clone(),
            bodies: bodies.clone(),
            seen_per_path: Mutex::default(),
        });
        let router = axum::Router::new().fallback(handle).with_state(state);
        let task = tokio::spawn(async move {
            let _ = mesh.serve(listener, router).await;
        });
        Ok(WebReplica {
            addr,
            name: name.to_owned(),
            log,
            bodies,
            task,
        })
    }
}

async fn handle(State(replica): State<Arc<Replica>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    replica.log.push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        headers: parts.headers.clone(),
    });
    let times_seen = {
        let mut seen = replica
            .seen_per_path
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let count = seen.entry(path.clone()).or_default();
        *count += 1;
        *count
    };
    if let WebMode::Delay(delay) = replica.mode {
        tokio::time::sleep(delay).await;
    }
    let body_len = match body.collect().await {
        Ok(body) => body.to_bytes().len(),
        Err(_) => {
            replica.bodies.push(path, None);
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    replica.bodies.push(path.clone(), Some(body_len));

    let segments: Vec<&str> = parts.uri.path().split('/').skip(1).collect();
    // `/drip/<chunks>/<ms>`: a body streamed one chunk every `ms` milliseconds.
    if let ["drip", chunks, ms] = segments.as_slice()
        && let (Ok(chunks), Ok(ms)) = (chunks.parse::<u32>(), ms.parse::<u64>())
    {
        let stream = futures_util::stream::unfold(0u32, move |sent| async move {
            if sent == chunks {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Some((
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"chunk\n")),
                sent + 1,
            ))
        });
        return axum::body::Body::from_stream(stream).into_response();
    }
    let mut status = match segments.as_slice() {
        ["fail", code, times] => {
            let code = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
            let fails = *times == "always" || times.parse::<u32>().is_ok_and(|n| times_seen <= n);
            match code {
                Some(code) if fails => code,
                Some(_) => StatusCode::OK,
                None => StatusCode::BAD_REQUEST,
            }
        }
        ["sleep", ms] => match ms.parse() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                StatusCode::OK
            }
            Err(_) => StatusCode::BAD_REQUEST,
        },
        _ => StatusCode::OK,
    };
    match replica.mode {
        WebMode::Fail(code) => status = code,
        WebMode::FailOneIn(n, code) if replica.log.count() % n.max(1) == 0 => status = code,
        _ => {}
    }

    let mut headers = BTreeMap::<String, Vec<String>>::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let echo = Echo {
        backend: replica.name.clone(),
        method: parts.method.to_string(),
        path,
        headers,
        body_len,
    };
    let mut response = (status, axum::Json(echo)).into_response();
    let extra = parts.uri.query().unwrap_or_default().split('&');
    for pair in extra.filter_map(|p| p.strip_prefix("header=")) {
        if let Some((name, value)) = pair.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name),
                HeaderValue::try_from(value.to_owned()),
            )
        {
            response.headers_mut().append(name, value);
        }
    }
    if let Ok(name) = HeaderValue::try_from(replica.name.clone()) {
        response.headers_mut().insert("x-backend", name);
    }
    response
}

/// A response as a test reads it.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as an [`Echo`]; panics (failing the test) when it is not one.
    pub fn echo(&self) -> Echo {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an echo ({e}): {} {:?} {}",
                self.status,
                self.headers,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The replica that answered (`x-backend`), if one did.
    pub fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }

    /// The mesh's own error message (`x-mesh-error`), if the mesh answered.
    pub fn mesh_error(&self) -> Option<&str> {
        self.headers
            .get(mesh_tower::MESH_ERROR_HEADER)
            .and_then(|v| v.to_str().ok())
    }
}

/// Sends `request` through `client` and reads the whole reply.
pub async fn send(client: &MeshClient<Body>, request: http::Request<Body>) -> Reply {
    let response = client
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| panic!("the mesh client failed: {e}"));
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("reading the response body failed: {e}"))
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET path` through `client`.
pub async fn get(client: &MeshClient<Body>, path: &str) -> Reply {
    send(client, get_request(path)).await
}

/// A `GET path` request with an empty body.
pub fn get_request(path: &str) -> http::Request<Body> {
    http::Request::get(path)
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("bad test request {path}: {e}"))
}
