//! Authorization on the server side: every request is judged against the inbound policy the
//! control service sent for this service, before it reaches the application.
//!
//! The policy is read through an `ArcSwap` (no lock on the request path) and evaluated by the
//! pure [`mesh_core::authz::InboundPolicy::evaluate`]; a denied call is answered by the mesh,
//! 403 or PERMISSION_DENIED, with a message that names the policy.
//!
//! # Decisions in the extensions
//!
//! The [`Decision`] goes into the request's extensions when it tells the handler something:
//! an audit-allowed call (one that enforcement would deny: the handler may want to log or
//! flag it) and any allowed call from a caller without a certificate (a permissive server's
//! plaintext caller, which has no [`PeerIdentity`] to show). A verified caller's plain allow
//! is not put there: that the handler runs says it was allowed, and which policy and rule
//! allowed it is in the call's span event (`authorized`), in the authorization metrics and,
//! for callers allowed to ask, in `x-mesh-explain`. Each extension is a boxed entry in the
//! request's map, and a fourth entry (tonic's router adds one after the mesh) grows the map's
//! table: leaving the plain allow out saves about 750 instructions a call, a quarter of what
//! the whole server side adds (measured by `profile_call instructions`).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::{Request, Response, StatusCode};
use mesh_core::SpiffeId;
use mesh_core::authz::{AuthzRequest, Decision, MtlsMode, Verdict};
use mesh_core::route::{RequestSummary, RouteOutcome};

use super::authn::{RequestPrincipal, authenticate, unauthenticated};
use super::telemetry::InboundTelemetry;
use crate::discovery::Inbound;
use crate::identity::PeerIdentity;
use crate::telemetry::StatusTable;

/// The inbound policy in force for one server, cheap to clone.
#[derive(Debug, Clone)]
pub struct Authorizer {
    policy: Arc<ArcSwapOption<Inbound>>,
    /// Callers told the authorization verdict when they ask (see [`crate::explain`]).
    explain_to: Arc<[SpiffeId]>,
    /// Whether this connection's caller is one of them.
    explains: bool,
    local_port: Option<u16>,
    /// The service's metric handles; decisions are counted here and requests measured by
    /// the [`super::MeshLayer`].
    telemetry: Option<Arc<InboundTelemetry>>,
    /// The duration table of one connection's caller, looked up once when the connection is
    /// accepted instead of on every request.
    connection: Option<Arc<ConnectionTable>>,
}

/// A caller and its duration table.
#[derive(Debug)]
struct ConnectionTable {
    peer: Option<PeerIdentity>,
    table: Arc<StatusTable>,
}

impl Authorizer {
    pub(crate) fn new(
        policy: Arc<ArcSwapOption<Inbound>>,
        telemetry: Option<Arc<InboundTelemetry>>,
    ) -> Self {
        Self {
            policy,
            explain_to: Arc::from([]),
            explains: false,
            local_port: None,
            telemetry,
            connection: None,
        }
    }

    /// Tells callers with these verified identities the verdict on their requests, when they
    /// ask (see [`crate::explain`]).
    pub(crate) fn with_explain_to(mut self, identities: &[SpiffeId]) -> Self {
        self.explain_to = Arc::from(identities);
        self
    }

    /// Whether this connection's caller may be told the verdict on its requests.
    pub(crate) fn explains(&self) -> bool {
        self.explains
    }

    /// What measures calls from `peer`: the service's telemetry and the caller's duration
    /// table (the connection's own, looked up when it was accepted, when this authorizer is a
    /// connection's: see [`Authorizer::for_connection`]). `None` without telemetry.
    pub(crate) fn measure(
        &self,
        peer: Option<&PeerIdentity>,
    ) -> Option<(&InboundTelemetry, Arc<StatusTable>)> {
        let telemetry = self.telemetry.as_deref()?;
        let table = match &self.connection {
            // Compares pointers: the connection's identity is the one its requests carry.
            Some(connection) if connection.peer.as_ref() == peer => connection.table.clone(),
            _ => telemetry.table(peer),
        };
        Some((telemetry, table))
    }

    /// The same policy, for a listener on `port` (policies may name ports).
    pub(crate) fn for_port(&self, port: u16) -> Self {
        Self {
            local_port: Some(port),
            ..self.clone()
        }
    }

    /// The same policy, for one connection from `peer`: its duration table is looked up now.
    pub(crate) fn for_connection(&self, peer: Option<&PeerIdentity>) -> Self {
        let connection = self.telemetry.as_ref().map(|telemetry| {
            Arc::new(ConnectionTable {
                peer: peer.cloned(),
                table: telemetry.table(peer),
            })
        });
        let explains = peer.is_some_and(|peer| self.explain_to.contains(peer.id()));
        Self {
            connection,
            explains,
            ..self.clone()
        }
    }

    /// Whether the service accepts plaintext callers too (mTLS mode `permissive`).
    pub fn is_permissive(&self) -> bool {
        self.policy
            .load()
            .as_ref()
            .is_some_and(|inbound| inbound.policy.mtls == MtlsMode::Permissive)
    }

    /// Judges `request` from `peer`. `None` while the service has no inbound policy (it named
    /// no `MESH_SERVICE`, or none has arrived yet): then mTLS alone guards it, as
    /// `all-authenticated` would.
    /// The request's end user is its [`RequestPrincipal`] extension, if any.
    pub fn decide<B>(&self, request: &Request<B>, peer: Option<&PeerIdentity>) -> Option<Decision> {
        let inbound = self.policy.load();
        let principal = request.extensions().get::<RequestPrincipal>();
        self.decide_summary(
            inbound.as_deref()?,
            &RequestSummary::from_request(request),
            peer,
            principal,
        )
    }

    /// [`Authorizer::decide`] for a request already summarized.
    fn decide_summary(
        &self,
        inbound: &Inbound,
        summary: &RequestSummary<'_>,
        peer: Option<&PeerIdentity>,
        principal: Option<&RequestPrincipal>,
    ) -> Option<Decision> {
        let mut authz = AuthzRequest::new(summary, peer.map(PeerIdentity::id));
        if let Some(principal) = principal {
            authz = authz.with_principal(principal);
        }
        if let Some(port) = self.local_port {
            authz = authz.with_port(port);
        }
        // Policies may target one of the service's routes: find the route the request matches,
        // when one does (matching costs more than looking at a few policies).
        let matched = inbound
            .routes
            .as_ref()
            .filter(|_| inbound.policy.policies.iter().any(|p| p.route.is_some()))
            .and_then(|routes| match routes.route(summary) {
                RouteOutcome::Matched(matched) => Some(matched.rule),
                RouteOutcome::NoRoutes | RouteOutcome::NotFound => None,
            });
        if let Some(rule) = &matched {
            authz = authz.with_route(rule.route_name());
        }
        Some(inbound.policy.evaluate(&authz))
    }

    /// Authenticates and judges `request`: returns it with the verified [`RequestPrincipal`]
    /// (when it carries a valid token) and, as the module docs say, the decision in its
    /// extensions, or the mesh's
    /// refusal: 401 / UNAUTHENTICATED for an invalid token (naming the reason, never the
    /// token), 403 / PERMISSION_DENIED for a denied call. A caller without an identity (permissive mode)
    /// with no policy in force is refused: mTLS is the only guard then.
    pub fn authorize<B, R: Default>(
        &self,
        mut request: Request<B>,
        peer: Option<&PeerIdentity>,
    ) -> Result<Request<B>, Response<R>> {
        let grpc = mesh_core::route::is_grpc(request.headers());
        self.authorize_with_grpc(&mut request, peer, grpc)?;
        Ok(request)
    }

    /// [`Authorizer::authorize`] for a request already known to be gRPC or not (the server
    /// layer reads its `content-type` once), by reference: the request is not moved in and
    /// out. Returns the decision of an allowed call that is not put in the extensions, for
    /// `explain`.
    pub(crate) fn authorize_with_grpc<B, R: Default>(
        &self,
        request: &mut Request<B>,
        peer: Option<&PeerIdentity>,
        grpc: bool,
    ) -> Result<Option<Decision>, Response<R>> {
        let inbound = self.policy.load();
        // Rate limits first (after the caller's identity, before its token): one load of the
        // inbound policy serves both stages.
        if let Some(inbound) = inbound.as_deref() {
            super::rate_limit::check(inbound, self.telemetry.as_deref(), request, peer)?;
        }
        // One branch when the service accepts no issuer.
        let principal = match inbound.as_deref().and_then(|i| i.verifier.as_ref()) {
            None => None,
            Some(verifier) => match authenticate(verifier, request.headers()) {
                Ok(principal) => principal,
                Err(error) => {
                    tracing::debug!(
                        target: "mesh",
                        peer = peer.map_or("unauthenticated".to_owned(), |p| p.to_string()),
                        path = request.uri().path(),
                        reason = error.as_str(),
                        "invalid token"
                    );
                    if let Some(telemetry) = &self.telemetry {
                        telemetry.token_refused(error);
                    }
                    return Err(unauthenticated(error, grpc));
                }
            },
        };
        let decision = {
            let summary = RequestSummary::from_request_with_grpc(request, grpc);
            inbound
                .as_deref()
                .and_then(|i| self.decide_summary(i, &summary, peer, principal.as_ref()))
        };
        if let Some(principal) = principal {
            request.extensions_mut().insert(principal);
        }
        match decision {
            None if peer.is_some() => Ok(None),
            None => Err(denied(
                "no inbound policy allows callers without a client certificate",
                grpc,
            )),
            Some(decision) => {
                if let Some(telemetry) = &self.telemetry {
                    telemetry.decided(&decision);
                }
                match decision.verdict {
                    Verdict::Allow => {
                        // A span event (with `RUST_LOG=mesh=debug`): what `explain` tells.
                        tracing::debug!(target: "mesh", %decision, "authorized");
                        if peer.is_some() {
                            // A verified caller's plain allow stays out of the extensions:
                            // see the type's docs.
                            Ok(Some(decision))
                        } else {
                            request.extensions_mut().insert(decision);
                            Ok(None)
                        }
                    }
                    Verdict::AuditAllow => {
                        tracing::info!(
                            peer = peer.map_or("unauthenticated".to_owned(), |p| p.to_string()),
                            path = request.uri().path(),
                            decision = %decision,
                            "audit: allowed a call that enforcement would deny"
                        );
                        request.extensions_mut().insert(decision);
                        Ok(None)
                    }
                    Verdict::Deny => {
                        tracing::debug!(
                            peer = peer.map_or("unauthenticated".to_owned(), |p| p.to_string()),
                            path = request.uri().path(),
                            decision = %decision,
                            "call denied"
                        );
                        Err(denied(&decision.to_string(), grpc))
                    }
                }
            }
        }
    }
}

/// The mesh's refusal: PERMISSION_DENIED (Trailers-Only) for gRPC, 403 otherwise, with the
/// reason in `grpc-message` or `x-mesh-error`.
fn denied<R: Default>(message: &str, grpc: bool) -> Response<R> {
    crate::refusal::refusal(
        grpc,
        tonic::Code::PermissionDenied,
        StatusCode::FORBIDDEN,
        message,
    )
}
