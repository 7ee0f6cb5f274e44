//! A fake Kubernetes API server on 127.0.0.1 for kube's real client: JSON lists with
//! `metadata.resourceVersion`, `watch=true` streams of newline-delimited events (replayed from
//! the requested resource version, so nothing falls between a list and its watch), a
//! `410 Gone` that forces a relist, and TokenReview answers. Every request is recorded so
//! tests can check request shapes.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The collections the mesh watches: path, list kind, apiVersion.
pub const SERVICES: &str = "/api/v1/services";
pub const PODS: &str = "/api/v1/pods";
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const HTTP_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
pub const GRPC_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/grpcroutes";
pub const POLICIES: &str = "/apis/policy.mesh.dev/v1alpha1/authorizationpolicies";
pub const FAULTS: &str = "/apis/policy.mesh.dev/v1alpha1/faultinjections";
pub const AUTHNS: &str = "/apis/policy.mesh.dev/v1alpha1/requestauthentications";
pub const RATE_LIMITS: &str = "/apis/policy.mesh.dev/v1alpha1/localratelimitpolicies";
pub const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

const COLLECTIONS: &[(&str, &str, &str)] = &[
    (SERVICES, "ServiceList", "v1"),
    (PODS, "PodList", "v1"),
    (SLICES, "EndpointSliceList", "discovery.k8s.io/v1"),
    (HTTP_ROUTES, "HTTPRouteList", "gateway.networking.k8s.io/v1"),
    (GRPC_ROUTES, "GRPCRouteList", "gateway.networking.k8s.io/v1"),
    (
        POLICIES,
        "AuthorizationPolicyList",
        "policy.mesh.dev/v1alpha1",
    ),
    (FAULTS, "FaultInjectionList", "policy.mesh.dev/v1alpha1"),
    (
        RATE_LIMITS,
        "LocalRateLimitPolicyList",
        "policy.mesh.dev/v1alpha1",
    ),
    (
        AUTHNS,
        "RequestAuthenticationList",
        "policy.mesh.dev/v1alpha1",
    ),
];

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
    pub authorization: Option<String>,
}

/// What TokenReview answers for one token.
#[derive(Debug, Clone)]
pub struct Review {
    pub authenticated: bool,
    pub username: String,
    /// `None`: echo the requested audiences, as the API server does for a token minted for
    /// them.
    pub audiences: Option<Vec<String>>,
}

#[derive(Default)]
struct Collection {
    objects: BTreeMap<(String, String), Value>,
    /// Every event so far with its resource version, for replay to watches that start
    /// behind.
    log: Vec<(u64, String)>,
    /// Watches with a resource version below this get 410 Gone.
    oldest: u64,
    watchers: Vec<mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>>,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    collections: HashMap<String, Collection>,
    reviews: HashMap<String, Review>,
    requests: Vec<Recorded>,
    /// Status code to answer TokenReviews with instead (403: our RBAC is missing).
    review_failure: Option<u16>,
}

/// The server; dropping it stops it.
pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Mutex::new(Inner {
            rv: 100,
            ..Inner::default()
        }));
        let state = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { addr, inner, task }
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let uri = format!("http://{}", self.addr).parse().expect("uri");
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".to_owned();
        config.auth_info.token = Some("control-plane-token".to_owned().into());
        kube::Client::try_from(config).expect("client")
    }

    /// Adds or replaces an object (the collection is taken from `COLLECTIONS` by `path`),
    /// sending ADDED or MODIFIED to the watches.
    pub fn apply(&self, path: &'static str, mut object: Value) {
        let mut inner = self.inner.lock().expect("lock");
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key(&object);
        let collection = inner.collections.entry(path.to_owned()).or_default();
        let kind = if collection.objects.insert(key, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        send(collection, rv, kind, object);
    }

    /// Deletes an object, sending DELETED.
    pub fn delete(&self, path: &'static str, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().expect("lock");
        inner.rv += 1;
        let rv = inner.rv;
        let collection = inner.collections.entry(path.to_owned()).or_default();
        if let Some(mut object) = collection
            .objects
            .remove(&(namespace.to_owned(), name.to_owned()))
        {
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            send(collection, rv, "DELETED", object);
        }
    }

    /// Deletes an object without telling any watch, then expires the collection's watches
    /// with a 410 Gone: only a relist can notice the deletion.
    pub fn delete_unseen_then_expire(&self, path: &'static str, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().expect("lock");
        inner.rv += 1;
        let rv = inner.rv;
        let collection = inner.collections.entry(path.to_owned()).or_default();
        collection
            .objects
            .remove(&(namespace.to_owned(), name.to_owned()));
        collection.oldest = rv + 1;
        collection.log.clear();
        let gone = event_line("ERROR", gone_status());
        for watcher in collection.watchers.drain(..) {
            let _ = watcher.send(Ok(Frame::data(Bytes::from(gone.clone()))));
        }
    }

    /// What TokenReview answers for `token`; unknown tokens are not authenticated.
    pub fn review(&self, token: &str, review: Review) {
        let mut inner = self.inner.lock().expect("lock");
        inner.reviews.insert(token.to_owned(), review);
    }

    /// TokenReviews fail with `code` (e.g. 403 when the control service lacks RBAC).
    pub fn fail_reviews(&self, code: u16) {
        self.inner.lock().expect("lock").review_failure = Some(code);
    }

    /// The object as stored now.
    pub fn object(&self, path: &str, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().expect("lock");
        inner
            .collections
            .get(path)?
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().expect("lock").requests.clone()
    }
}

fn key(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_owned(),
        meta["name"].as_str().unwrap_or_default().to_owned(),
    )
}

fn event_line(kind: &str, object: Value) -> String {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    line
}

fn gone_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "too old resource version", "reason": "Expired", "code": 410})
}

fn send(collection: &mut Collection, rv: u64, kind: &str, object: Value) {
    let line = event_line(kind, object);
    collection.log.push((rv, line.clone()));
    collection
        .watchers
        .retain(|w| w.send(Ok(Frame::data(Bytes::from(line.clone())))).is_ok());
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("response")
}

async fn handle(state: &Mutex<Inner>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut inner = state.lock().expect("lock");
    inner.requests.push(Recorded {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
        authorization,
    });

    if method == "POST" && path == TOKEN_REVIEWS {
        if let Some(code) = inner.review_failure {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
            return json_response(
                status,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": "forbidden", "reason": "Forbidden",
                        "code": code}),
            );
        }
        let token = body["spec"]["token"].as_str().unwrap_or_default();
        let requested: Vec<String> =
            serde_json::from_value(body["spec"]["audiences"].clone()).unwrap_or_default();
        let status = match inner.reviews.get(token) {
            Some(review) => json!({
                "authenticated": review.authenticated,
                "user": {"username": review.username},
                "audiences": review.audiences.clone().unwrap_or(requested),
            }),
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        let mut reply = body.clone();
        reply["status"] = status;
        return json_response(StatusCode::CREATED, &reply);
    }

    if let Some(response) = single_object(&mut inner, &method, &path, &body) {
        return response;
    }
    let Some(&(collection_path, list_kind, api_version)) =
        COLLECTIONS.iter().find(|(p, _, _)| *p == path)
    else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": "NotFound", "code": 404}),
        );
    };
    let rv = inner.rv;
    let params: HashMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let collection = inner
        .collections
        .entry(collection_path.to_owned())
        .or_default();
    if params.get("watch") == Some(&"true") {
        let from: u64 = params
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(rv);
        let (tx, rx) = mpsc::unbounded_channel();
        if from < collection.oldest {
            let _ = tx.send(Ok(Frame::data(Bytes::from(event_line(
                "ERROR",
                gone_status(),
            )))));
            drop(tx);
        } else {
            for (event_rv, line) in &collection.log {
                if *event_rv > from {
                    let _ = tx.send(Ok(Frame::data(Bytes::from(line.clone()))));
                }
            }
            collection.watchers.push(tx);
        }
        let stream = UnboundedReceiverStream::new(rx).map(|frame| frame);
        return Response::builder()
            .header("content-type", "application/json")
            .body(StreamBody::new(stream).boxed())
            .expect("response");
    }
    let items: Vec<Value> = collection.objects.values().cloned().collect();
    json_response(
        StatusCode::OK,
        &json!({"apiVersion": api_version, "kind": list_kind,
                "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    )
}

/// Requests on one namespaced object (`.../namespaces/<ns>/<plural>/<name>[/status]`) or a
/// create in a namespace: GET, POST, PUT and PATCH (JSON merge patch of `status`), each
/// checking `metadata.resourceVersion` when the request carries one, as the API server does.
fn single_object(
    inner: &mut Inner,
    method: &str,
    path: &str,
    body: &Value,
) -> Option<Response<Body>> {
    let (prefix, rest) = path.split_once("/namespaces/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (namespace, plural) = (*parts.first()?, *parts.get(1)?);
    let name = parts.get(2).copied();
    let collection_path = format!("{prefix}/{plural}");
    inner.rv += 1;
    let rv = inner.rv;
    let collection = inner.collections.entry(collection_path).or_default();
    let status = |code: u16, reason: &str| {
        json_response(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": reason, "message": reason, "code": code}),
        )
    };
    let rv_conflict = |stored: &Value, sent: &Value| {
        let sent = &sent["metadata"]["resourceVersion"];
        !sent.is_null() && *sent != stored["metadata"]["resourceVersion"]
    };
    Some(match (method, name) {
        ("POST", None) => {
            let mut object = body.clone();
            object["metadata"]["namespace"] = json!(namespace);
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let key = key(&object);
            if collection.objects.contains_key(&key) {
                return Some(status(409, "AlreadyExists"));
            }
            collection.objects.insert(key, object.clone());
            send(collection, rv, "ADDED", object.clone());
            json_response(StatusCode::CREATED, &object)
        }
        (_, Some(name)) => {
            let key = (namespace.to_owned(), name.to_owned());
            let Some(stored) = collection.objects.get(&key).cloned() else {
                return Some(status(404, "NotFound"));
            };
            match method {
                "GET" => json_response(StatusCode::OK, &stored),
                "PUT" | "PATCH" => {
                    if rv_conflict(&stored, body) {
                        return Some(status(409, "Conflict"));
                    }
                    let mut object = if method == "PUT" {
                        body.clone()
                    } else {
                        let mut object = stored;
                        object["status"] = body["status"].clone();
                        object
                    };
                    object["metadata"]["resourceVersion"] = json!(rv.to_string());
                    collection.objects.insert(key, object.clone());
                    send(collection, rv, "MODIFIED", object.clone());
                    json_response(StatusCode::OK, &object)
                }
                _ => status(405, "MethodNotAllowed"),
            }
        }
        _ => return None,
    })
}

// === objects ===

pub fn service(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
           "spec": {"ports": [{"name": "grpc", "port": 80, "targetPort": 50051}]}})
}

pub fn pod(ns: &str, name: &str, sa: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
           "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app"}]}})
}

/// A slice of `service` with ready endpoints `(ip, pod)` on `port`.
pub fn slice(ns: &str, name: &str, service: &str, port: u16, endpoints: &[(&str, &str)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, pod)| {
            json!({"addresses": [ip], "conditions": {"ready": true, "serving": true},
                   "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": ns,
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
           "endpoints": endpoints})
}

pub fn http_route(ns: &str, name: &str, parent: &str, backends: &[(&str, i32)]) -> Value {
    let refs: Vec<Value> = backends
        .iter()
        .map(|(n, w)| json!({"name": n, "port": 80, "weight": w}))
        .collect();
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": name, "namespace": ns, "generation": 1},
           "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": parent}],
                    "rules": [{"backendRefs": refs}]}})
}
