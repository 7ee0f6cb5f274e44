//! `meshctl explain`: what the mesh would do with one request, without sending it.
//!
//! Every decision is mesh-core's, on what the control service would send:
//!
//! - routing: the caller's view of the destination
//!   ([`ValidConfig::destination_for`](mesh_core::config::ValidConfig::destination_for), as
//!   the caller's namespace sees it), compiled ([`CompiledRoutes`]) and asked
//!   ([`CompiledRoutes::explain`], [`CompiledRoutes::attempts`]) as the client asks it;
//! - authorization: the request, as the server receives it (after the rule's request header
//!   filters), judged by [`InboundPolicy::evaluate`](mesh_core::authz::InboundPolicy::evaluate)
//!   on the inbound policy of each service that may serve it, with the route of that
//!   service's own routes it matches and the port its endpoints listen on, as the server's
//!   authorizer does; with `--jwt-issuer` (and `--jwt-subject`, `--jwt-claims`), as carrying
//!   a valid token of that end user, for rules on principals and claims.

use std::collections::BTreeSet;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use mesh_core::SpiffeId;
use mesh_core::authz::{AuthzRequest, Reason};
use mesh_core::config::ValidConfig;
use mesh_core::jwt::Principal;
use mesh_core::route::{CompiledRoutes, RequestSummary, RouteOutcome};
use mesh_core::snapshot::{DestinationKey, RouteFilter, ServiceName};
use serde::Serialize;

use super::error::CtlError;
use super::load::Valid;
use super::routes::{EndpointView, RuleView, endpoints};

/// A request to explain.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where it goes.
    pub destination: DestinationKey,
    /// Its method.
    pub method: Method,
    /// Its path and query.
    pub uri: Uri,
    /// Its headers (with `content-type: application/grpc` for a gRPC call).
    pub headers: HeaderMap,
    /// The end user of a valid token it carries, if any (see [`Request::with_principal`]).
    pub principal: Option<Principal>,
}

impl Request {
    /// `METHOD URL` with `-H 'name: value'` headers; the URL's host is the destination
    /// (`http://greeter.default:7070/path?query`).
    pub fn http(method: &str, url: &str, headers: &[String]) -> Result<Self, CtlError> {
        let bad = |reason: &str| CtlError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let authority = parsed
            .authority()
            .ok_or_else(|| bad("expected http://name.namespace[:port]/path"))?;
        let destination: DestinationKey = authority.as_str().parse()?;
        let uri: Uri = parsed
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let method: Method = method
            .parse()
            .map_err(|_| CtlError::Method(method.to_owned()))?;
        Ok(Self {
            destination,
            method,
            uri,
            headers: header_map(headers)?,
            principal: None,
        })
    }

    /// The same request, carrying a valid token of `issuer` for `subject` with `claims` (a
    /// JSON object): what a rule on principals sees. The token's signature and times are the
    /// server's to check, not explain's.
    pub fn with_principal(
        mut self,
        issuer: &str,
        subject: &str,
        claims: Option<&str>,
    ) -> Result<Self, CtlError> {
        let claims = match claims {
            None => serde_json::Map::new(),
            Some(json) => {
                serde_json::from_str(json).map_err(|e| CtlError::Claims(e.to_string()))?
            }
        };
        self.principal = Some(Principal {
            issuer: issuer.into(),
            subject: subject.to_owned(),
            claims,
        });
        Ok(self)
    }

    /// A gRPC call of `service/Method` to `destination`: a `POST` with the gRPC content type.
    pub fn grpc(call: &str, destination: &str, headers: &[String]) -> Result<Self, CtlError> {
        let path = format!("/{}", call.trim_start_matches('/'));
        if mesh_core::route::GrpcPath::parse(&path).is_none() {
            return Err(CtlError::GrpcMethod(call.to_owned()));
        }
        let uri: Uri = path
            .parse()
            .map_err(|_| CtlError::GrpcMethod(call.to_owned()))?;
        let mut headers = header_map(headers)?;
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        Ok(Self {
            destination: destination.parse()?,
            method: Method::POST,
            uri,
            headers,
            principal: None,
        })
    }

    fn line(&self) -> String {
        let summary = RequestSummary::new(&self.method, &self.uri, &self.headers);
        match summary.grpc() {
            Some(g) => format!("gRPC /{}/{}", g.service, g.method),
            None => format!("{} {}", self.method, self.uri),
        }
    }
}

fn header_map(headers: &[String]) -> Result<HeaderMap, CtlError> {
    let mut map = HeaderMap::new();
    for h in headers {
        let bad = || CtlError::Header(h.clone());
        let (name, value) = h.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        map.append(name, value);
    }
    Ok(map)
}

/// What the mesh would do with a request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// `GET /path?query` or `gRPC /service/Method`.
    pub request: String,
    /// `name.namespace[:port]`.
    pub destination: String,
    /// The caller's SPIFFE ID.
    pub caller: String,
    /// The namespace whose view of the destination the caller gets.
    pub from_namespace: Option<String>,
    /// `matched`, `not-found` (HTTP 404, gRPC UNIMPLEMENTED) or `no-routes` (the
    /// destination's own endpoints).
    pub outcome: &'static str,
    /// mesh-core's explanation of the routing decision.
    pub summary: String,
    /// Each match checked, in precedence order, up to the one that matched.
    pub checked: Vec<Checked>,
    /// The rule applied, when one matched.
    pub rule: Option<RuleView>,
    /// With no routes attached: the destination's own replicas.
    pub endpoints: Vec<EndpointView>,
    /// The server side's verdict, for each service that may serve the request.
    pub authorization: Vec<Authorization>,
    /// Why the request fails before any server sees it, when it does.
    pub failure: Option<String>,
}

/// One match checked.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    /// The route.
    pub route: String,
    /// The rule's index in it.
    pub rule: usize,
    /// The rule's name, if any.
    pub rule_name: Option<String>,
    /// The match's index in the rule; `None` for a rule without matches.
    pub match_index: Option<usize>,
    /// The match's conditions.
    pub conditions: String,
    /// The first condition the request failed; `None` for the match that won.
    pub failed: Option<String>,
}

/// A server's authorization verdict.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// The service whose replicas serve the request.
    pub server: String,
    /// The port its replicas listen on, when they agree on one.
    pub port: Option<u16>,
    /// The route of the server's own routes the request matched, when any.
    pub route: Option<String>,
    /// `allow`, `deny` or `audit` (allowed, but denied were audit-mode policies enforced).
    pub verdict: &'static str,
    /// What decided: the policy's name, `default:<policy>`, `exempt` or `no-allow-matched`.
    pub decided_by: String,
    /// The index of the policy rule that decided, when a policy did.
    pub policy_rule: Option<usize>,
    /// The decision, for people (what a denied caller is told).
    pub message: String,
}

/// Explains `request` from `caller`, routed as namespace `from_namespace` sees the
/// destination.
pub fn explain(
    valid: &Valid,
    request: &Request,
    caller: &SpiffeId,
    from_namespace: Option<&str>,
) -> Result<Explanation, CtlError> {
    let config = &valid.config.mesh;
    let destination = config.destination_for(&request.destination, from_namespace);
    if !destination.found {
        return Err(CtlError::UnknownDestination(request.destination.clone()));
    }
    let routes = CompiledRoutes::new(&destination);
    let summary = RequestSummary::new(&request.method, &request.uri, &request.headers);
    let explained = routes.explain(&summary);
    let checked = routes
        .attempts(&summary)
        .into_iter()
        .map(|a| Checked {
            route: a.candidate.rule.route_name().to_owned(),
            rule: a.candidate.rule.rule_index(),
            rule_name: Some(a.candidate.rule.rule_name())
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            match_index: a.candidate.match_index,
            conditions: a.candidate.conditions,
            failed: a.failed,
        })
        .collect();
    let mut server_headers = request.headers.clone();
    let (outcome, rule, own_endpoints, servers) = match &explained.outcome {
        RouteOutcome::NoRoutes => (
            "no-routes",
            None,
            endpoints(&destination.endpoints),
            vec![request.destination.clone()],
        ),
        RouteOutcome::NotFound => ("not-found", None, Vec::new(), Vec::new()),
        RouteOutcome::Matched(matched) => {
            for f in matched.rule.filters() {
                if let RouteFilter::RequestHeaderModifier(m) = f {
                    m.apply(&mut server_headers);
                }
            }
            let mut servers: Vec<DestinationKey> = Vec::new();
            for target in matched.rule.backends() {
                let b = &target.backend_ref;
                let key = DestinationKey {
                    service: b.service.clone(),
                    port: b.port,
                };
                if b.weight > 0 && target.found && !servers.contains(&key) {
                    servers.push(key);
                }
            }
            (
                "matched",
                Some(RuleView::of(&matched.rule, &destination)),
                Vec::new(),
                servers,
            )
        }
    };
    let served = ServerRequest {
        method: &request.method,
        uri: &request.uri,
        headers: &server_headers,
        caller,
        principal: request.principal.as_ref(),
    };
    let authorization = servers
        .iter()
        .map(|key| authorize(config, key, &served))
        .collect();
    let failure = match &explained.outcome {
        RouteOutcome::NotFound => {
            Some("no rule matches: the client answers HTTP 404 / gRPC UNIMPLEMENTED".to_owned())
        }
        RouteOutcome::Matched(matched) if matched.rule.total_weight() == 0 => Some(
            "the rule has no backend of weight above 0: HTTP 500 / gRPC UNAVAILABLE".to_owned(),
        ),
        RouteOutcome::Matched(_) if servers.is_empty() => {
            Some("no backend of the rule exists: HTTP 500 / gRPC UNAVAILABLE".to_owned())
        }
        _ => None,
    };
    Ok(Explanation {
        request: request.line(),
        destination: request.destination.to_string(),
        caller: caller.to_string(),
        from_namespace: from_namespace.map(str::to_owned),
        outcome,
        summary: explained.to_string(),
        checked,
        rule,
        endpoints: own_endpoints,
        authorization,
        failure,
    })
}

/// The request as a server receives it.
struct ServerRequest<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    caller: &'a SpiffeId,
    principal: Option<&'a Principal>,
}

/// The verdict of the replicas of `key` on `request`, as their authorizer reaches it.
fn authorize(
    config: &ValidConfig,
    key: &DestinationKey,
    request: &ServerRequest<'_>,
) -> Authorization {
    let service: &ServiceName = &key.service;
    let summary = RequestSummary::new(request.method, request.uri, request.headers);
    let mut authz = AuthzRequest::new(&summary, Some(request.caller));
    if let Some(principal) = request.principal {
        authz = authz.with_principal(principal);
    }
    // A server listens on its endpoint's port, and policies' ports are that one.
    let ports: BTreeSet<u16> = config
        .destination_for(key, None)
        .endpoints
        .iter()
        .map(|e| e.address.port())
        .collect();
    let port = match (ports.len(), ports.first()) {
        (1, Some(port)) => Some(*port),
        _ => None,
    };
    if let Some(port) = port {
        authz = authz.with_port(port);
    }
    // The server's own routes (its producer view of itself) name the route it matched.
    let own = CompiledRoutes::new(&config.destination(service));
    let route = match own.route(&summary) {
        RouteOutcome::Matched(matched) => Some(matched.rule.route_name().to_owned()),
        RouteOutcome::NoRoutes | RouteOutcome::NotFound => None,
    };
    if let Some(route) = &route {
        authz = authz.with_route(route);
    }
    let decision = config.inbound(service).evaluate(&authz);
    let policy_rule = match &decision.reason {
        Reason::Policy { rule, .. } => Some(*rule),
        _ => None,
    };
    Authorization {
        server: service.to_string(),
        port,
        route,
        verdict: decision.verdict.as_str(),
        decided_by: decision.reason.policy().to_owned(),
        policy_rule,
        message: decision.to_string(),
    }
}
