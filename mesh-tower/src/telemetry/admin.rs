//! The mesh's admin HTTP server (`MESH_ADMIN_ADDR`, HTTP/1.1, plaintext, off when unset).
//!
//! - `GET /metrics`: Prometheus text, when the mesh's recorder is the process's (an
//!   application that installed its own recorder exports the mesh's metrics itself; then 404).
//! - `GET /live`: 200 while the process runs.
//! - `GET /ready`: 200 once the workload has a certificate and its first snapshot, else 503
//!   with what is missing.
//! - `GET /debug/config`: the snapshot in use as JSON, with the control connection's state.
//! - `GET /debug/endpoints`: per backend of this workload's clients, each endpoint's address,
//!   identity, weight, state (`available`, `connecting`, `ejected`), peak-EWMA latency
//!   estimate, calls in flight and how long it stays ejected.
//! - `GET /debug/routes`: per destination, the compiled route table this workload's clients
//!   check, in precedence order (gRPC routes, then HTTP routes), each match with its
//!   conditions and its rule's backends, timeouts and retry policy.
//!
//! The `/debug/*` endpoints can be switched off (`MESH_ADMIN_DEBUG=false`): they show the
//! mesh's view of the config and the peers' identities to whoever reaches the port.
//!
//! The server starts before the mesh asks for its certificate, so probes see "not ready"
//! rather than "connection refused" while it waits for the control service.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use mesh_core::snapshot::Snapshot;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::MeshTelemetry;
use crate::discovery::{ControlStatus, Discovery};
use crate::identity::Identity;

/// What the admin endpoints report on; filled in once the mesh has a certificate.
#[derive(Debug)]
pub(crate) struct AdminState {
    parts: OnceLock<Parts>,
    /// Whether `/debug/*` is served.
    debug: bool,
}

#[derive(Debug)]
struct Parts {
    identity: Identity,
    discovery: Weak<Discovery>,
    telemetry: Weak<MeshTelemetry>,
}

impl AdminState {
    /// Admin state before the mesh has its certificate; `debug`: serve `/debug/*`.
    pub(crate) fn new(debug: bool) -> Self {
        Self {
            parts: OnceLock::new(),
            debug,
        }
    }

    /// The mesh has its certificate: from now on the endpoints report on it.
    pub(crate) fn started(
        &self,
        identity: Identity,
        discovery: &Arc<Discovery>,
        telemetry: &Arc<MeshTelemetry>,
    ) {
        // Set once, by the one `Mesh::start` that owns this state.
        let _ = self.parts.set(Parts {
            identity,
            discovery: Arc::downgrade(discovery),
            telemetry: Arc::downgrade(telemetry),
        });
    }
}

/// Serves the admin endpoints on `listener` until the returned task is aborted (which also
/// aborts its open connections).
pub(crate) fn spawn(listener: TcpListener, state: Arc<AdminState>) -> JoinHandle<()> {
    mesh_process::admin_http::spawn(listener, move |request| respond(&state, request))
}

fn respond(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    let parts = state.parts.get();
    let discovery = parts.and_then(|p| p.discovery.upgrade());
    match request.uri().path() {
        "/live" => text(StatusCode::OK, "live\n".into()),
        "/ready" => match (parts, &discovery) {
            (None, _) => text(StatusCode::SERVICE_UNAVAILABLE, "no certificate yet\n".into()),
            (Some(parts), _) if parts.identity.svid().not_after <= SystemTime::now() => {
                text(StatusCode::SERVICE_UNAVAILABLE, "certificate expired\n".into())
            }
            (Some(_), Some(d)) if d.status().version > 0 => text(StatusCode::OK, "ready\n".into()),
            (Some(_), _) => text(StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet\n".into()),
        },
        "/metrics" => match mesh_process::prometheus::handle() {
            Some(handle) => {
                if let (Some(parts), Some(discovery)) = (parts, &discovery)
                    && let Some(telemetry) = parts.telemetry.upgrade()
                {
                    telemetry.refresh(&parts.identity, discovery);
                }
                let mut response = text(StatusCode::OK, handle.render());
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            None => text(
                StatusCode::NOT_FOUND,
                "the application installed its own metrics recorder; it exports the mesh's metrics\n"
                    .into(),
            ),
        },
        path if path.starts_with("/debug/") && !state.debug => {
            text(StatusCode::NOT_FOUND, "debug endpoints are off\n".into())
        }
        "/debug/endpoints" => match parts.and_then(|p| p.telemetry.upgrade()) {
            Some(telemetry) => json_response(&json!({ "backends": telemetry.debug_views() })),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "not started yet\n".into()),
        },
        "/debug/routes" => match &discovery {
            Some(discovery) => json_response(&routes_json(&discovery.snapshot())),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "not started yet\n".into()),
        },
        "/debug/config" => match &discovery {
            Some(discovery) => json_response(&config_json(&discovery.snapshot(), &discovery.status())),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "not started yet\n".into()),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// The snapshot in use as JSON. Hand-written rather than derived so the model crate needs no
/// `Serialize` and this view can add what an operator wants beside it (staleness).
fn config_json(snapshot: &Snapshot, status: &ControlStatus) -> Value {
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let endpoints = |endpoints: &[mesh_core::snapshot::Endpoint]| -> Vec<Value> {
        endpoints
            .iter()
            .map(|e| {
                json!({
                    "address": e.address.to_string(),
                    "weight": e.weight,
                    "zone": e.zone,
                    "labels": e.labels,
                    "identity": e.identity.to_string(),
                })
            })
            .collect()
    };
    let destinations: Vec<Value> = snapshot
        .destinations
        .iter()
        .map(|d| {
            json!({
                "service": d.service.to_string(),
                "found": d.found,
                "endpoints": endpoints(&d.endpoints),
                "routes": d.routes.iter().map(|r| json!({
                    "name": r.name,
                    "kind": format!("{:?}", r.kind),
                    "rules": r.rules.iter().map(|rule| json!({
                        "name": rule.name,
                        "matches": rule.matches.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>(),
                        "filters": rule.filters.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>(),
                        "backendRefs": rule.backend_refs.iter().map(|b| json!({
                            "service": b.service.to_string(),
                            "port": b.port,
                            "weight": b.weight,
                        })).collect::<Vec<_>>(),
                        "timeouts": {
                            "requestSeconds": rule.timeouts.request.map(|t| t.as_secs_f64()),
                            "backendRequestSeconds": rule.timeouts.backend_request.map(|t| t.as_secs_f64()),
                        },
                        "retry": rule.retry.as_ref().map(|p| format!("{p:?}")),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "backends": d.backends.iter().map(|b| json!({
                    "service": b.service.to_string(),
                    "found": b.found,
                    "endpoints": endpoints(&b.endpoints),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "version": snapshot.version,
        "control": {
            "connected": status.connected,
            "updatedAtUnix": status.updated_at.map(unix),
            "ageSeconds": status.staleness().map(|d| d.as_secs_f64()),
            "lastError": status.last_error,
            "lastNack": status.last_nack.as_ref().map(|(v, e)| json!({"version": v, "error": e})),
        },
        "destinations": destinations,
        "inbound": snapshot.inbound.as_ref().map(|p| format!("{p:?}")),
        "trustBundleRoots": snapshot.trust_bundle.len(),
    })
}

/// Each destination's route table, compiled as the clients compile it, in precedence order.
fn routes_json(snapshot: &Snapshot) -> Value {
    use mesh_core::route::CompiledRoutes;
    use mesh_core::snapshot::RouteKind;
    let destinations: Vec<Value> = snapshot
        .destinations
        .iter()
        .map(|destination| {
            let compiled = CompiledRoutes::new(destination);
            let table = |kind: RouteKind| -> Vec<Value> {
                compiled
                    .ranked(kind)
                    .iter()
                    .map(|ranked| {
                        let rule = &ranked.rule;
                        json!({
                            "route": rule.route_name(),
                            "rule": rule.rule_index(),
                            "ruleName": rule.rule_name(),
                            "match": ranked.match_index,
                            "conditions": ranked.conditions,
                            "backends": rule.backends().iter().map(|b| json!({
                                "service": b.backend_ref.service.to_string(),
                                "port": b.backend_ref.port,
                                "weight": b.backend_ref.weight,
                                "found": b.found,
                            })).collect::<Vec<_>>(),
                            "timeouts": {
                                "requestSeconds": rule.timeouts().request.map(|t| t.as_secs_f64()),
                                "backendRequestSeconds": rule.timeouts().backend_request.map(|t| t.as_secs_f64()),
                            },
                            "retry": rule.retry().map(|p| format!("{p:?}")),
                        })
                    })
                    .collect()
            };
            json!({
                "service": destination.service.to_string(),
                "grpc": table(RouteKind::Grpc),
                "http": table(RouteKind::Http),
            })
        })
        .collect();
    json!({ "version": snapshot.version, "destinations": destinations })
}

fn json_response(body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
