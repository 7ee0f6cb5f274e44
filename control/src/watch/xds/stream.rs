//! One ADS stream (state of the world, gRFC A27): what an xDS client subscribed to per
//! resource type, what it was last sent, and its ACKs and NACKs.
//!
//! As with Watch, the stream is the whole session, polled by its connection's task: a config
//! change wakes it, it recomputes the resources of every type the client subscribed to, and
//! sends a type again only when its resources changed. A request that carries the nonce of the
//! type's last response ACKs it (or NACKs it, with the client's error detail, recorded in the
//! registry as Watch NACKs are); a request with an older nonce is stale and ignored, as the
//! protocol says. The first request must carry the client's node; its metadata may name the
//! service the client serves (`mesh.service`), checked against its verified identity.
//!
//! Bounds: at most [`MAX_DESTINATIONS`] names per request, [`MAX_RESOURCE_NAME_LEN`] bytes
//! per name, the node id at most 253 bytes; an identity's streams and listener names count
//! against the same limits as its Watch streams ([`crate::WatchLimits`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{Any, value};
use futures_util::{Stream, StreamExt};
use mesh_core::SpiffeId;
use mesh_core::snapshot::{DestinationKey, ServiceName};
use tokio::sync::watch;
use tonic::Status;

use super::names::{self, ListenerName, MAX_RESOURCE_NAME_LEN};
use super::resources::{ClientView, resources};
use crate::admin::metrics;
use crate::state::State;
use crate::watch::limits::{Lease, Usage};
use crate::watch::own_service;
use crate::watch::registry::{Nack, NackDetail, Registration, Registry, SubscriberStatus};
use crate::watch::stream::{
    MAX_DESTINATIONS, MAX_NACK_LEN, MAX_NODE_LEN, SUBSCRIBE_TIMEOUT, WatchHub, truncate,
};
use crate::xds_bootstrap::NODE_METADATA_SERVICE as SERVICE_METADATA;

/// The response stream of one ADS call.
pub(crate) type XdsStream =
    Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send + 'static>>;

/// Opens ADS streams against the config in force; shares the registry and limits of Watch.
#[derive(Debug, Clone)]
pub(crate) struct XdsHub {
    state: watch::Receiver<Arc<State>>,
    shutdown: watch::Receiver<bool>,
    registry: Arc<Registry>,
    usage: Arc<Usage>,
}

/// Who is on the other end of a stream.
#[derive(Debug, Clone)]
pub(crate) struct XdsPeer {
    /// The SPIFFE ID of its client certificate.
    pub(crate) identity: SpiffeId,
    /// Where it connected from.
    pub(crate) remote_addr: SocketAddr,
    /// When that certificate expires.
    pub(crate) certificate_expires: Option<SystemTime>,
    /// The key identifier of the CA that signed it.
    pub(crate) certificate_issuer: Option<String>,
}

/// One resource type's subscription and what was last sent for it.
#[derive(Debug, Default)]
struct TypeState {
    names: Vec<String>,
    /// The nonce of the last response; a request carrying it answers that response.
    nonce: String,
    /// The config version of the last response.
    version: u64,
    sent: Vec<Any>,
}

/// A stream whose node has been read.
struct Registered {
    node: String,
    view: ClientView,
    registration: Registration,
    lease: Lease,
}

/// What woke a stream.
enum Event {
    Shutdown,
    /// The config changed (`false`: its source is gone).
    Changed(bool),
    Message(Option<Result<Box<DiscoveryRequest>, Status>>),
    NoFirstRequest,
}

struct Session<S> {
    hub: XdsHub,
    /// When the stream opened: the first request is due within [`SUBSCRIBE_TIMEOUT`].
    started: Instant,
    peer: XdsPeer,
    inbound: S,
    registered: Option<Registered>,
    types: HashMap<&'static str, TypeState>,
    pending: VecDeque<DiscoveryResponse>,
    next_nonce: u64,
    ended: bool,
}

// === impl XdsHub ===

impl XdsHub {
    /// A hub over the same config, registry and per-identity limits as `watch`'s streams:
    /// xDS clients are subscribers like any other.
    pub(crate) fn new(watch: &WatchHub) -> Self {
        let (state, shutdown, registry, usage) = watch.shared();
        Self {
            state,
            shutdown,
            registry,
            usage,
        }
    }

    /// Serves one ADS stream from a caller that presented `peer`'s identity.
    pub(crate) fn open<S>(&self, peer: XdsPeer, inbound: S) -> XdsStream
    where
        S: Stream<Item = Result<DiscoveryRequest, Status>> + Send + Unpin + 'static,
    {
        let session = Session {
            hub: self.clone(),
            started: Instant::now(),
            peer,
            inbound,
            registered: None,
            types: HashMap::new(),
            pending: VecDeque::new(),
            next_nonce: 0,
            ended: false,
        };
        Box::pin(futures_util::stream::unfold(
            session,
            |mut session| async move {
                let item = session.next().await?;
                Some((item, session))
            },
        ))
    }
}

// === impl Session ===

impl<S> Session<S>
where
    S: Stream<Item = Result<DiscoveryRequest, Status>> + Unpin,
{
    async fn next(&mut self) -> Option<Result<DiscoveryResponse, Status>> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(response) = self.pending.pop_front() {
                return Some(Ok(response));
            }
            let first = self.registered.is_none();
            let deadline = self.started + SUBSCRIBE_TIMEOUT;
            let event = tokio::select! {
                biased;
                () = shutdown(&mut self.hub.shutdown) => Event::Shutdown,
                changed = self.hub.state.changed(), if !first => Event::Changed(changed.is_ok()),
                message = self.inbound.next() => Event::Message(message.map(|m| m.map(Box::new))),
                () = tokio::time::sleep_until(deadline), if first => Event::NoFirstRequest,
            };
            match event {
                Event::Shutdown | Event::Changed(false) => {
                    return self.end(Status::unavailable("the control service is shutting down"));
                }
                Event::Changed(true) => self.refresh(),
                Event::NoFirstRequest => {
                    return self.end(Status::invalid_argument(format!(
                        "no discovery request within {}s",
                        SUBSCRIBE_TIMEOUT.as_secs()
                    )));
                }
                Event::Message(Some(Ok(request))) => {
                    if let Err(status) = self.handle(*request) {
                        return self.end(status);
                    }
                }
                Event::Message(Some(Err(_)) | None) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    fn end(&mut self, status: Status) -> Option<Result<DiscoveryResponse, Status>> {
        tracing::info!(
            identity = %self.peer.identity,
            peer = %self.peer.remote_addr,
            error = status.message(),
            "xds stream ended"
        );
        self.ended = true;
        Some(Err(status))
    }

    /// Takes one request: the node (first), an ACK or NACK, a new subscription.
    fn handle(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        if self.registered.is_none() {
            self.register(request.node.as_ref())?;
        }
        let Some(type_url) = known_type(&request.type_url) else {
            tracing::debug!(type_url = %request.type_url, "ignored a request for an unserved type");
            return Ok(());
        };
        let names = checked_names(&request)?;
        let state = self.types.entry(type_url).or_default();
        if !request.response_nonce.is_empty() {
            if request.response_nonce != state.nonce {
                // Answers an older response; a request with the latest nonce follows.
                return Ok(());
            }
            let version = state.version;
            match &request.error_detail {
                Some(error) => self.record_nack(type_url, version, &error.message),
                None => self.record_ack(version),
            }
        }
        let state = self.types.entry(type_url).or_default();
        if request.response_nonce.is_empty() || names != state.names {
            state.names = names;
            self.resubscribed()?;
            self.respond(type_url, true);
        }
        Ok(())
    }

    /// Reads the node of the first request: its id, and the service it says it serves, which
    /// its identity must serve.
    fn register(&mut self, node: Option<&Node>) -> Result<(), Status> {
        let node = node.ok_or_else(|| {
            Status::invalid_argument("node: the first discovery request must carry the node")
        })?;
        if node.id.len() > MAX_NODE_LEN {
            return Err(Status::invalid_argument(format!(
                "node.id: longer than {MAX_NODE_LEN} bytes"
            )));
        }
        let own_service = own_service_of(node)?;
        if let Some(own) = &own_service {
            own_service::check(&self.hub.state.borrow().config, own, &self.peer.identity)?;
        }
        let lease = self.hub.usage.acquire(&self.peer.identity, 0)?;
        let registration = self.hub.registry.register(SubscriberStatus {
            id: 0,
            node: node.id.clone(),
            remote_addr: self.peer.remote_addr,
            identity: self.peer.identity.clone(),
            own_service: own_service.clone(),
            destinations: Vec::new(),
            connected_at: SystemTime::now(),
            last_sent_version: 0,
            last_acked_version: None,
            last_nack: None,
            certificate_expires: self.peer.certificate_expires,
            certificate_issuer: self.peer.certificate_issuer.clone(),
            grpc_services: Vec::new(),
            // Every xDS response is the whole of a resource type (state of the world).
            incremental: false,
            full_snapshots_sent: 0,
            increments_sent: 0,
            resyncs: 0,
        });
        tracing::info!(
            id = registration.id(),
            node = %node.id,
            identity = %self.peer.identity,
            peer = %self.peer.remote_addr,
            "xds client connected"
        );
        self.registered = Some(Registered {
            node: node.id.clone(),
            view: ClientView {
                consumer: self.peer.identity.namespace().map(str::to_owned),
                own_service,
            },
            registration,
            lease,
        });
        Ok(())
    }

    /// The client's listeners changed: they are its destinations (and count against its
    /// identity's limits).
    fn resubscribed(&mut self) -> Result<(), Status> {
        let destinations: Vec<DestinationKey> = self
            .types
            .get(names::LISTENER)
            .map(|t| {
                t.names
                    .iter()
                    .filter_map(|n| match ListenerName::parse(n) {
                        Ok(ListenerName::Outbound(key)) => Some(key),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(registered) = self.registered.as_mut() else {
            return Ok(());
        };
        registered.lease.resize(destinations.len())?;
        registered
            .registration
            .update(|s| s.destinations = destinations);
        Ok(())
    }

    /// A config change: every type whose resources changed is sent again.
    fn refresh(&mut self) {
        let mut types: Vec<&'static str> = self.types.keys().copied().collect();
        // Listeners and clusters before what they refer to, as a management server should.
        types.sort_by_key(|t| order(t));
        for type_url in types {
            self.respond(type_url, false);
        }
    }

    /// Queues the resources of `type_url` if they changed since last sent (or `always`).
    fn respond(&mut self, type_url: &'static str, always: bool) {
        let Some(registered) = self.registered.as_ref() else {
            return;
        };
        let current = self.hub.state.borrow_and_update().clone();
        let Some(state) = self.types.get_mut(type_url) else {
            return;
        };
        let (resources, refused) = resources(&current, &registered.view, type_url, &state.names);
        if !always && resources == state.sent {
            return;
        }
        for reason in refused {
            tracing::warn!(node = %registered.node, %reason, "authorization policy not translated to RBAC");
        }
        self.next_nonce += 1;
        state.nonce = self.next_nonce.to_string();
        state.version = current.version;
        state.sent = resources.clone();
        let version = current.version;
        if version > registered.registration.versions().0 {
            registered.registration.sent(version, false);
        }
        self.pending.push_back(DiscoveryResponse {
            version_info: version.to_string(),
            resources,
            type_url: type_url.to_owned(),
            nonce: state.nonce.clone(),
            ..Default::default()
        });
    }

    fn record_ack(&self, version: u64) {
        let Some(registered) = &self.registered else {
            return;
        };
        metrics::acked();
        registered.registration.acked(version);
    }

    fn record_nack(&self, type_url: &str, version: u64, message: &str) {
        let Some(registered) = &self.registered else {
            return;
        };
        let mut error = message.to_owned();
        truncate(&mut error, MAX_NACK_LEN);
        let kind = type_url.rsplit('.').next().unwrap_or(type_url).to_owned();
        tracing::warn!(
            node = %registered.node,
            identity = %self.peer.identity,
            version,
            resource_type = %kind,
            %error,
            "xds client rejected a response"
        );
        metrics::nacked();
        registered.registration.update(|s| {
            s.last_nack = Some(Nack {
                version,
                error: error.clone(),
                details: vec![NackDetail {
                    field: kind,
                    message: error,
                    code: "xds_nack".to_owned(),
                }],
            });
        });
    }
}

async fn shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The served type `type_url` names, as the constant.
fn known_type(type_url: &str) -> Option<&'static str> {
    [
        names::LISTENER,
        names::ROUTE_CONFIGURATION,
        names::CLUSTER,
        names::CLUSTER_LOAD_ASSIGNMENT,
    ]
    .into_iter()
    .find(|t| *t == type_url)
}

fn order(type_url: &str) -> u8 {
    match type_url {
        names::LISTENER => 0,
        names::ROUTE_CONFIGURATION => 1,
        names::CLUSTER => 2,
        _ => 3,
    }
}

/// The request's resource names, bounded, without duplicates, in order.
fn checked_names(request: &DiscoveryRequest) -> Result<Vec<String>, Status> {
    if request.resource_names.len() > MAX_DESTINATIONS {
        return Err(Status::invalid_argument(format!(
            "resource_names: {} given, at most {MAX_DESTINATIONS} allowed",
            request.resource_names.len()
        )));
    }
    let mut seen = HashSet::with_capacity(request.resource_names.len());
    let mut names: Vec<String> = Vec::with_capacity(request.resource_names.len());
    for (i, name) in request.resource_names.iter().enumerate() {
        if name.len() > MAX_RESOURCE_NAME_LEN {
            return Err(Status::invalid_argument(format!(
                "resource_names[{i}]: longer than {MAX_RESOURCE_NAME_LEN} bytes"
            )));
        }
        if seen.insert(name.as_str()) {
            names.push(name.clone());
        }
    }
    Ok(names)
}

/// The service the node's metadata names as its own, if any.
fn own_service_of(node: &Node) -> Result<Option<ServiceName>, Status> {
    let Some(value) = node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(SERVICE_METADATA))
    else {
        return Ok(None);
    };
    match &value.kind {
        Some(value::Kind::StringValue(name)) if !name.is_empty() => {
            name.parse::<ServiceName>().map(Some).map_err(|e| {
                Status::invalid_argument(format!("node.metadata.{SERVICE_METADATA}: {e}"))
            })
        }
        _ => Err(Status::invalid_argument(format!(
            "node.metadata.{SERVICE_METADATA}: must be a service name (name.namespace)"
        ))),
    }
}
