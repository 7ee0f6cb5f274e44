//! The `Watch` RPC: a response stream per subscriber that projects the config in force onto
//! the destinations the subscriber asked for (and, when it names its own service, that
//! service's inbound policy), and yields a snapshot whenever its projection changes.
//!
//! The stream is the whole session: the connection's task polls it (see
//! [`crate::serve::conn`]), and while it waits for the next change it reads the subscriber's
//! ACKs. No task or channel of its own stands between a config change and the subscriber's
//! connection: a change wakes the connection's task once per subscriber, and a subscriber costs
//! the control service its stream's state and nothing more.
//!
//! A config change wakes every stream through the `watch` channel; each asks the shared
//! [`ProjectionCache`] for its subscription's projection, which is computed and converted once
//! per distinct subscription and version, and yields it if it differs from what it last sent
//! (told apart by pointer, see [`crate::watch::projection`]).
//!
//! What one identity may hold is bounded ([`crate::watch::limits`]): a stream over a limit is
//! refused with `RESOURCE_EXHAUSTED`, and everything a stream holds (its share of the limits,
//! its registry entry, its projection, its edge reports) goes when it ends.
//!
//! A subscriber that announces increments (`Subscribe.incremental`) is sent a full snapshot
//! first and after that only what changed, the increment its projection shares with every
//! subscriber on the same base ([`Projection::increment_from`]), stamped with the version this
//! subscriber was last sent as its base. A subscriber that cannot apply one (it lost a
//! message) answers with `Ack.resync` and is sent a full snapshot; that is counted, not
//! recorded as a refusal of the config. A subscriber that does not announce increments (one
//! that predates them) is only ever sent full snapshots.
//!
//! ACKs are recorded in the subscriber's atomic version record ([`Registration::acked`]): no
//! lock and no allocation per ACK; `/subscribers` reads the record as it stands.
//!
//! Every snapshot asks the subscriber to send an `EdgeReport` every
//! `edge_report_interval_ms`; reports go to the live view ([`crate::view`]). A message of a
//! kind this service does not know (from a newer client) is ignored, not an error: clients may
//! add kinds without breaking older control services.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{Stream, StreamExt};
use mesh_core::SpiffeId;
use mesh_core::proto::{self, WatchRequest, watch_request::Kind};
use mesh_core::snapshot::{DestinationKey, ServiceName};
use tokio::sync::watch;
use tonic::Status;

use super::encoded::WatchMessage;
use super::limits::{Lease, Usage, WatchLimits};
use super::own_service;
use super::projection::{Projection, ProjectionCache, ProjectionKey};
use super::registry::{
    MAX_NACK_DETAILS, Nack, NackDetail, Registration, Registry, SubscriberStatus,
};
use super::skew::WireTransform;
use crate::admin::metrics;
use crate::state::State;
use crate::view::edges::{EdgeReporter, EdgeStore};

/// How long a new stream may take to send `subscribe`.
pub(crate) const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most destinations one subscription may name: the protocol's ceiling, above
/// [`WatchLimits::max_destinations_per_stream`].
pub(crate) const MAX_DESTINATIONS: usize = 4096;

/// The longest `node` accepted.
pub(super) const MAX_NODE_LEN: usize = 253;

/// The longest NACK error kept in the registry.
pub(super) const MAX_NACK_LEN: usize = 1024;
/// The most gRPC service names a subscriber may report.
const MAX_GRPC_SERVICES: usize = 256;
/// The longest gRPC service name a subscriber may report.
const MAX_GRPC_SERVICE_LEN: usize = 256;
/// The longest field path kept of a NACK's detail.
const MAX_NACK_FIELD_LEN: usize = 256;
/// The longest problem code kept of a NACK's detail.
const MAX_NACK_CODE_LEN: usize = 64;

/// The response stream of one Watch call: each message encoded once for every subscriber it
/// goes to ([`WatchMessage`]), served by [`crate::serve::watch_body`].
pub(crate) type WatchStream =
    Pin<Box<dyn Stream<Item = Result<WatchMessage, Status>> + Send + 'static>>;

/// Opens Watch streams against the config in force.
#[derive(Debug, Clone)]
pub(crate) struct WatchHub {
    state: watch::Receiver<Arc<State>>,
    shutdown: watch::Receiver<bool>,
    registry: Arc<Registry>,
    projections: Arc<ProjectionCache>,
    usage: Arc<Usage>,
    edges: Arc<EdgeStore>,
}

/// A validated `subscribe` message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    node: String,
    /// The gRPC services it says it serves (for operators' checks; nothing trusts them).
    grpc_services: Vec<String>,
    /// It takes increments.
    incremental: bool,
    /// What the subscriber's projection depends on; shared with the cache.
    key: Arc<ProjectionKey>,
}

/// Who is on the other end of a stream.
#[derive(Debug, Clone)]
struct Peer {
    identity: SpiffeId,
    remote_addr: SocketAddr,
    certificate_expires: Option<SystemTime>,
    certificate_issuer: Option<String>,
}

/// A subscribed stream: what it watches and what it last sent.
struct Subscribed {
    subscription: Subscription,
    registration: Registration,
    /// Its share of its identity's limits.
    lease: Lease,
    /// The projection last sent (its content and wire form), to send only when this
    /// subscriber's projection changes, and as the base of the next increment. `None` before
    /// the first and after a resync request: the next message is a full snapshot.
    last: Option<Arc<Projection>>,
    last_sent: u64,
    /// The projection may have changed since it was last looked at.
    dirty: bool,
    /// Its edge reports, from the first one on.
    reports: Option<EdgeReporter>,
}

/// One Watch stream's state, from the `subscribe` message to its end.
struct Session<S> {
    state: watch::Receiver<Arc<State>>,
    /// Resolves at the next config version, and is made again after each. It stays registered
    /// with the channel between the stream's wake-ups: a `changed()` made in each turn of the
    /// loop registered with the channel (a lock shared by every stream) and left it again at
    /// every wake-up, and an ACK wakes a stream as often as a change does.
    changes: NextChange,
    /// Resolves when the control service shuts down; registered once, as `changes` is.
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    registry: Arc<Registry>,
    projections: Arc<ProjectionCache>,
    usage: Arc<Usage>,
    edges: Arc<EdgeStore>,
    peer: Peer,
    inbound: S,
    /// `None` until the `subscribe` message is read.
    subscribed: Option<Subscribed>,
    /// Set once the stream has yielded its last item; with why it ended.
    ended: Option<&'static str>,
}

// === impl WatchHub ===

impl WatchHub {
    /// Streams `state` to subscribers until `shutdown` turns true (or its sender goes away),
    /// every snapshot sent through `transform` (the identity but in version-skew tests); edge
    /// reports go to `edges`.
    pub(crate) fn new(
        state: watch::Receiver<Arc<State>>,
        shutdown: watch::Receiver<bool>,
        registry: Arc<Registry>,
        transform: WireTransform,
        limits: WatchLimits,
        edges: Arc<EdgeStore>,
    ) -> Self {
        Self {
            state,
            shutdown,
            registry,
            projections: Arc::new(
                ProjectionCache::new(transform).with_report_interval(edges.interval_ms()),
            ),
            usage: Arc::new(Usage::new(limits)),
            edges,
        }
    }

    /// What these streams share, for other kinds of subscribers (xDS): the config, the
    /// shutdown signal, the registry and the per-identity limits.
    pub(crate) fn shared(
        &self,
    ) -> (
        watch::Receiver<Arc<State>>,
        watch::Receiver<bool>,
        Arc<Registry>,
        Arc<Usage>,
    ) {
        (
            self.state.clone(),
            self.shutdown.clone(),
            self.registry.clone(),
            self.usage.clone(),
        )
    }

    /// Serves one stream from a caller that presented `identity`. The first message is read
    /// as the response stream is first polled, so a client may wait for the response headers
    /// before it sends `subscribe`.
    pub(crate) fn open<S>(
        &self,
        identity: SpiffeId,
        remote_addr: SocketAddr,
        certificate_expires: Option<SystemTime>,
        certificate_issuer: Option<String>,
        inbound: S,
    ) -> WatchStream
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    {
        let mut shutdown_rx = self.shutdown.clone();
        let session = Session {
            state: self.state.clone(),
            changes: next_change(self.state.clone()),
            shutdown: Box::pin(async move { shutdown(&mut shutdown_rx).await }),
            registry: self.registry.clone(),
            projections: self.projections.clone(),
            usage: self.usage.clone(),
            edges: self.edges.clone(),
            peer: Peer {
                identity,
                remote_addr,
                certificate_expires,
                certificate_issuer,
            },
            inbound,
            subscribed: None,
            ended: None,
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
    S: Stream<Item = Result<WatchRequest, Status>> + Unpin,
{
    /// The next item of the response stream: a snapshot, or the status that ends the stream
    /// (after which it ends); `None` once it has ended.
    async fn next(&mut self) -> Option<Result<WatchMessage, Status>> {
        if self.ended.is_some() {
            return None;
        }
        if self.subscribed.is_none() {
            let subscription = match self.subscribe().await {
                Ok(subscription) => subscription,
                Err(status) => return status.map(Err),
            };
            let lease = match self
                .usage
                .acquire(&self.peer.identity, subscription.key.destinations.len())
            {
                Ok(lease) => lease,
                Err(status) => {
                    tracing::warn!(
                        identity = %self.peer.identity,
                        peer = %self.peer.remote_addr,
                        error = status.message(),
                        "watch refused: over a limit"
                    );
                    return self.end("over a limit", status);
                }
            };
            self.subscribed = Some(self.register(subscription, lease));
        }
        loop {
            if let Some(snapshot) = self.changed_projection() {
                return Some(Ok(snapshot));
            }
            let subscribed = self.subscribed.as_mut()?;
            // The subscriber's own messages first: most wake-ups are its ACKs, and then the
            // config and shutdown futures are not polled at all (polling one takes the lock
            // of a channel every stream shares). A client that keeps messages coming still
            // yields to them once what it has sent is read: its stream's flow-control window
            // bounds that, and the stream then reads as pending and the others are polled.
            tokio::select! {
                biased;
                message = self.inbound.next() => match message {
                    Some(Ok(WatchRequest { kind: Some(Kind::Ack(ack)) })) => {
                        ack_or_nack(&self.peer, subscribed, &self.registry, ack);
                    }
                    Some(Ok(WatchRequest { kind: Some(Kind::Subscribe(update)) })) => {
                        // A later `subscribe` replaces the destinations (a client that starts
                        // a new channel), and the subscriber gets a snapshot of the new set.
                        let update = self
                            .usage
                            .limits()
                            .check_destinations(update.destinations.len())
                            .and_then(|()| checked(update, &self.peer, &self.state))
                            .and_then(|update| {
                                subscribed.lease.resize(update.key.destinations.len())?;
                                Ok(update)
                            });
                        match update {
                            Ok(update) => {
                                tracing::debug!(
                                    id = subscribed.registration.id(),
                                    destinations = update.key.destinations.len(),
                                    "subscription updated"
                                );
                                subscribed.registration.update(|s| {
                                    s.destinations = update.key.destinations.clone();
                                    s.own_service = update.key.own_service.clone();
                                    s.grpc_services = update.grpc_services.clone();
                                    s.incremental = update.incremental;
                                });
                                let old = std::mem::replace(&mut subscribed.subscription, update);
                                self.projections.release(old.key);
                                subscribed.dirty = true;
                            }
                            Err(status) => return self.end("invalid subscription update", status),
                        }
                    }
                    Some(Ok(WatchRequest { kind: Some(Kind::EdgeReport(report)) })) => {
                        record_report(&self.peer, subscribed, &self.edges, report);
                    }
                    Some(Ok(WatchRequest { kind: None })) => {
                        // A kind this service does not know (prost leaves it unset), or none.
                        tracing::debug!(
                            id = subscribed.registration.id(),
                            "ignored a message of an unknown kind"
                        );
                    }
                    // A message that does not decode is told why (the decoder names the field).
                    Some(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                        return self.end("undecodable message", status);
                    }
                    Some(Err(_)) => {
                        self.ended = Some("stream error");
                        return None;
                    }
                    None => {
                        self.ended = Some("client closed the stream");
                        return None;
                    }
                },
                () = &mut self.shutdown => {
                    return self.end("shutdown", Status::unavailable("the control service is shutting down"));
                }
                (open, receiver) = &mut self.changes => {
                    self.changes = next_change(receiver);
                    if !open {
                        return self.end(
                            "config source closed",
                            Status::unavailable("the control service is shutting down"),
                        );
                    }
                    subscribed.dirty = true;
                }
            }
        }
    }

    /// Reads and validates the first message. On failure, the status to end the stream with,
    /// or `None` when the client left and nobody is there to tell.
    async fn subscribe(&mut self) -> Result<Subscription, Option<Status>> {
        let first = tokio::select! {
            () = &mut self.shutdown => {
                self.ended = Some("shutdown");
                return Err(Some(Status::unavailable("the control service is shutting down")));
            }
            first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, self.inbound.next()) => first,
        };
        let result = match first {
            Err(_) => Err(Status::invalid_argument(format!(
                "no subscribe message within {}s",
                SUBSCRIBE_TIMEOUT.as_secs()
            ))),
            // A first message that does not decode: the decoder's status names the field.
            Ok(Some(Err(status))) if status.code() == tonic::Code::InvalidArgument => Err(status),
            // The client left or broke the stream: nobody to tell.
            Ok(None | Some(Err(_))) => {
                self.ended = Some("client left before subscribing");
                return Err(None);
            }
            Ok(Some(Ok(WatchRequest {
                kind: Some(Kind::Subscribe(subscribe)),
            }))) => self
                .usage
                .limits()
                .check_destinations(subscribe.destinations.len())
                .and_then(|()| checked(subscribe, &self.peer, &self.state)),
            Ok(Some(Ok(_))) => Err(Status::invalid_argument(
                "the first message must be `subscribe`",
            )),
        };
        result.map_err(|status| {
            tracing::warn!(
                identity = %self.peer.identity,
                peer = %self.peer.remote_addr,
                error = status.message(),
                "watch refused"
            );
            self.ended = Some("refused");
            Some(status)
        })
    }

    /// Lists the subscriber in the registry.
    fn register(&self, subscription: Subscription, lease: Lease) -> Subscribed {
        let registration = self.registry.register(SubscriberStatus {
            id: 0,
            node: subscription.node.clone(),
            remote_addr: self.peer.remote_addr,
            identity: self.peer.identity.clone(),
            own_service: subscription.key.own_service.clone(),
            destinations: subscription.key.destinations.clone(),
            connected_at: SystemTime::now(),
            last_sent_version: 0,
            last_acked_version: None,
            last_nack: None,
            certificate_expires: self.peer.certificate_expires,
            certificate_issuer: self.peer.certificate_issuer.clone(),
            grpc_services: subscription.grpc_services.clone(),
            incremental: subscription.incremental,
            full_snapshots_sent: 0,
            increments_sent: 0,
            resyncs: 0,
        });
        tracing::info!(
            id = registration.id(),
            node = %subscription.node,
            identity = %self.peer.identity,
            peer = %self.peer.remote_addr,
            destinations = subscription.key.destinations.len(),
            "subscriber connected"
        );
        Subscribed {
            subscription,
            registration,
            lease,
            last: None,
            last_sent: 0,
            dirty: true,
            reports: None,
        }
    }

    /// The snapshot to send if the subscriber's projection may have changed and did; records
    /// it as sent.
    fn changed_projection(&mut self) -> Option<WatchMessage> {
        let subscribed = self.subscribed.as_mut()?;
        if !std::mem::take(&mut subscribed.dirty) {
            return None;
        }
        let current = self.state.borrow_and_update().clone();
        // The subscriber's zone, by its instance name in its verified namespace: a claim that
        // only steers its own calls, so it needs no proof.
        let subscription = &mut subscribed.subscription;
        let zone = subscription
            .key
            .consumer
            .as_deref()
            .map_or("", |namespace| {
                current.config.zone_of(namespace, &subscription.node)
            });
        if zone != subscription.key.zone {
            let mut key = ProjectionKey::clone(&subscription.key);
            key.zone = zone.to_owned();
            let old = std::mem::replace(&mut subscription.key, Arc::new(key));
            self.projections.release(old);
        }
        let projection = self
            .projections
            .project(&current, &subscribed.subscription.key);
        if !projection.changed_since(subscribed.last.as_ref().map(|last| &last.content)) {
            return None;
        }
        let version = projection.version;
        let transform = self.projections.transform();
        let increment = match &subscribed.last {
            Some(last) if subscribed.subscription.incremental && transform.increments() => {
                projection.increment_from(last)
            }
            _ => None,
        };
        let is_increment = increment.is_some();
        // The shared encoding, with the version this subscriber holds as an increment's base.
        let message = match &increment {
            Some(increment) => increment.for_subscriber(subscribed.last_sent),
            None => projection.full_message(),
        };
        let lost = transform.drops(|| message.decode());
        subscribed.last_sent = version;
        subscribed.last = Some(projection);
        self.registry.propagation.sent(version);
        subscribed.registration.sent(version, is_increment);
        metrics::watch_message(is_increment);
        tracing::debug!(
            id = subscribed.registration.id(),
            version,
            increment = is_increment,
            "sent snapshot"
        );
        if lost {
            tracing::debug!(
                id = subscribed.registration.id(),
                version,
                "lost (test hook)"
            );
            return None;
        }
        Some(message)
    }

    /// Ends the stream with `status` (its last item) for `reason`.
    fn end(
        &mut self,
        reason: &'static str,
        status: Status,
    ) -> Option<Result<WatchMessage, Status>> {
        self.ended = Some(reason);
        Some(Err(status))
    }
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        let Some(subscribed) = self.subscribed.take() else {
            return;
        };
        // A subscriber that leaves without acknowledging its last version no longer holds up
        // the propagation measurement of that version.
        let (sent, acked) = subscribed.registration.versions();
        if acked < Some(sent) {
            self.registry.propagation.settled(sent);
        }
        tracing::info!(
            id = subscribed.registration.id(),
            node = %subscribed.subscription.node,
            identity = %self.peer.identity,
            // Dropped before it ended: hyper let go of the stream because the client reset it
            // or its connection closed.
            reason = self.ended.unwrap_or("client went away"),
            "subscriber disconnected"
        );
        // Its projection goes with it unless another stream holds the same key: the cache
        // must not keep what a stream named (any destinations at all) after it ends.
        let key = subscribed.subscription.key.clone();
        drop(subscribed);
        self.projections.release(key);
    }
}

/// Records an ACK (or a NACK, with its reason) from the subscriber; a resync request makes
/// the next message a full snapshot.
fn ack_or_nack(peer: &Peer, subscribed: &mut Subscribed, registry: &Registry, ack: proto::Ack) {
    let last_sent = subscribed.last_sent;
    let node = &subscribed.subscription.node;
    if ack.version == 0 || ack.version > last_sent {
        tracing::warn!(
            %node,
            identity = %peer.identity,
            version = ack.version,
            last_sent,
            "ignored an ack for a version never sent"
        );
        return;
    }
    if ack.resync {
        let mut error = ack.error;
        truncate(&mut error, MAX_NACK_LEN);
        tracing::info!(%node, version = ack.version, %error, "subscriber asked for a resync");
        metrics::resynced();
        subscribed.registration.resynced();
        // A full snapshot of the current projection goes out next.
        subscribed.last = None;
        subscribed.dirty = true;
    } else if ack.error.is_empty() {
        tracing::debug!(%node, version = ack.version, "ack");
        metrics::acked();
        registry.propagation.settled(ack.version);
        subscribed.registration.acked(ack.version);
    } else {
        let mut error = ack.error;
        truncate(&mut error, MAX_NACK_LEN);
        let details = ack
            .details
            .into_iter()
            .take(MAX_NACK_DETAILS)
            .map(|mut detail| {
                truncate(&mut detail.field, MAX_NACK_FIELD_LEN);
                truncate(&mut detail.message, MAX_NACK_LEN);
                truncate(&mut detail.code, MAX_NACK_CODE_LEN);
                NackDetail {
                    field: detail.field,
                    message: detail.message,
                    code: detail.code,
                }
            })
            .collect();
        tracing::warn!(
            %node,
            identity = %peer.identity,
            version = ack.version,
            %error,
            "subscriber rejected a snapshot"
        );
        metrics::nacked();
        subscribed.registration.update(|s| {
            s.last_nack = Some(Nack {
                version: ack.version,
                error,
                details,
            });
        });
    }
}

/// Adds an edge report from the subscriber to the live view, as calls made by its own service
/// (or by its identity when it names none).
fn record_report(
    peer: &Peer,
    subscribed: &mut Subscribed,
    edges: &Arc<EdgeStore>,
    report: proto::EdgeReport,
) {
    let caller = match &subscribed.subscription.key.own_service {
        Some(service) => service.to_string(),
        None => peer.identity.to_string(),
    };
    let now = Instant::now();
    let id = subscribed.registration.id();
    let reporter = subscribed
        .reports
        .get_or_insert_with(|| edges.register(id, caller.clone(), now));
    let recorded = reporter.record(&caller, report, now);
    if recorded.over_limit > 0 || recorded.invalid > 0 {
        tracing::debug!(
            id,
            node = %subscribed.subscription.node,
            kept = recorded.kept,
            over_limit = recorded.over_limit,
            invalid = recorded.invalid,
            first_error = recorded.first_error.as_ref().map(tracing::field::display),
            "edge report partly ignored"
        );
    }
}

/// The next config version after those `receiver` has seen: whether the channel is still open,
/// and the receiver back, to wait for the one after.
type NextChange = Pin<Box<dyn Future<Output = (bool, watch::Receiver<Arc<State>>)> + Send>>;

/// Waits on `receiver` for the next config version (see [`NextChange`]).
fn next_change(mut receiver: watch::Receiver<Arc<State>>) -> NextChange {
    Box::pin(async move {
        let open = receiver.changed().await.is_ok();
        (open, receiver)
    })
}

/// Resolves when the control service shuts down (or was dropped without a shutdown).
async fn shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Checks a `subscribe` message from `peer`: its fields ([`validate`]), then that the peer
/// serves the service it names as its own ([`own_service::check`]) in the config in force.
fn checked(
    subscribe: proto::Subscribe,
    peer: &Peer,
    state: &watch::Receiver<Arc<State>>,
) -> Result<Subscription, Status> {
    let subscription = validate(subscribe, peer.identity.namespace())?;
    if let Some(own) = &subscription.key.own_service {
        own_service::check(&state.borrow().config, own, &peer.identity)?;
    }
    Ok(subscription)
}

/// Checks a `subscribe` message from a subscriber in namespace `consumer`; errors name the field
/// (`destinations[2]: ...`).
fn validate(subscribe: proto::Subscribe, consumer: Option<&str>) -> Result<Subscription, Status> {
    if subscribe.node.len() > MAX_NODE_LEN {
        return Err(Status::invalid_argument(format!(
            "node: longer than {MAX_NODE_LEN} bytes"
        )));
    }
    let own_service = subscribe
        .own_service
        .as_ref()
        // An empty reference is how a client that serves nothing may fill the field.
        .filter(|r| !(r.name.is_empty() && r.namespace.is_empty()))
        .map(ServiceName::try_from)
        .transpose()
        .map_err(|e| Status::invalid_argument(format!("own_service: {e}")))?;
    if subscribe.destinations.len() > MAX_DESTINATIONS {
        return Err(Status::invalid_argument(format!(
            "destinations: {} given, at most {MAX_DESTINATIONS} allowed",
            subscribe.destinations.len()
        )));
    }
    let mut seen = HashSet::with_capacity(subscribe.destinations.len());
    let mut destinations = Vec::with_capacity(subscribe.destinations.len());
    for (i, wire) in subscribe.destinations.iter().enumerate() {
        let name = DestinationKey::try_from(wire)
            .map_err(|e| Status::invalid_argument(format!("destinations[{i}]: {e}")))?;
        if seen.insert(name.clone()) {
            destinations.push(name);
        }
    }
    if subscribe.grpc_services.len() > MAX_GRPC_SERVICES {
        return Err(Status::invalid_argument(format!(
            "grpc_services: {} given, at most {MAX_GRPC_SERVICES} allowed",
            subscribe.grpc_services.len()
        )));
    }
    for (i, name) in subscribe.grpc_services.iter().enumerate() {
        let valid = !name.is_empty()
            && name.len() <= MAX_GRPC_SERVICE_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
        if !valid {
            return Err(Status::invalid_argument(format!(
                "grpc_services[{i}]: not a gRPC service name (package.Service, at most \
                 {MAX_GRPC_SERVICE_LEN} bytes)"
            )));
        }
    }
    Ok(Subscription {
        node: subscribe.node,
        grpc_services: subscribe.grpc_services,
        incremental: subscribe.incremental,
        key: Arc::new(ProjectionKey {
            destinations,
            // A subscriber sees the consumer routes of its own namespace (GAMMA), so the
            // namespace comes from its verified identity, never from what it claims.
            consumer: consumer.map(str::to_owned),
            own_service,
            // Set from the config when a projection is made (the config may learn it later).
            zone: String::new(),
        }),
    })
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(super) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str) -> proto::ServiceRef {
        proto::ServiceRef {
            namespace: namespace.into(),
            name: name.into(),
            port: 0,
        }
    }

    #[test]
    fn validate_names_the_bad_destination() {
        let err = validate(
            proto::Subscribe {
                node: "n".into(),
                own_service: None,
                destinations: vec![service("default", "a"), service("default", "Bad")],
                grpc_services: Vec::new(),
                incremental: false,
            },
            None,
        )
        .expect_err("invalid");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with("destinations[1]: "),
            "{}",
            err.message()
        );

        let err = validate(
            proto::Subscribe {
                node: "n".into(),
                own_service: Some(service("", "x")),
                destinations: vec![],
                grpc_services: Vec::new(),
                incremental: false,
            },
            None,
        )
        .expect_err("invalid");
        assert!(
            err.message().starts_with("own_service: "),
            "{}",
            err.message()
        );
    }

    #[test]
    fn validate_keeps_order_and_drops_duplicates() {
        let sub = validate(
            proto::Subscribe {
                node: "n".into(),
                own_service: Some(service("", "")),
                destinations: vec![
                    service("default", "b"),
                    service("default", "a"),
                    service("default", "b"),
                ],
                grpc_services: Vec::new(),
                incremental: false,
            },
            None,
        )
        .expect("valid");
        assert_eq!(sub.key.own_service, None);
        let names: Vec<String> = sub
            .key
            .destinations
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["b.default", "a.default"]);
    }

    #[test]
    fn validate_limits_sizes() {
        let err = validate(
            proto::Subscribe {
                node: "x".repeat(MAX_NODE_LEN + 1),
                own_service: None,
                destinations: vec![],
                grpc_services: Vec::new(),
                incremental: false,
            },
            None,
        )
        .expect_err("too long");
        assert!(err.message().starts_with("node: "));
        let err = validate(
            proto::Subscribe {
                node: String::new(),
                own_service: None,
                destinations: vec![service("default", "a"); MAX_DESTINATIONS + 1],
                grpc_services: Vec::new(),
                incremental: false,
            },
            None,
        )
        .expect_err("too many");
        assert!(err.message().starts_with("destinations: "));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let mut s = "ééé".to_owned();
        truncate(&mut s, 3);
        assert_eq!(s, "é");
        let mut s = "abc".to_owned();
        truncate(&mut s, 10);
        assert_eq!(s, "abc");
    }
}
