//! The `Watch` RPC: one task per subscriber that projects the config in force onto the
//! destinations the subscriber asked for (and, when it names its own service, that service's
//! inbound policy), and sends a snapshot whenever its projection changes.
//!
//! A config change wakes every task through the `watch` channel; each asks the shared
//! [`ProjectionCache`] for its subscription's projection, which is computed and converted once
//! per distinct subscription and version, and sends it if it differs from what it last sent
//! (told apart by pointer, see [`crate::projection`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::stream::Map;
use futures_util::{Stream, StreamExt};
use mesh_core::SpiffeId;
use mesh_core::proto::{self, WatchRequest, watch_request::Kind};
use mesh_core::snapshot::{DestinationKey, ServiceName};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::projection::{Projection, ProjectionCache, ProjectionKey};
use crate::registry::{Registration, Registry, SubscriberStatus};
use crate::state::State;

/// How long a new stream may take to send `subscribe`.
pub(crate) const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most destinations one subscription may name.
pub(crate) const MAX_DESTINATIONS: usize = 4096;

/// The longest `node` accepted.
const MAX_NODE_LEN: usize = 253;

/// The longest NACK error kept in the registry.
const MAX_NACK_LEN: usize = 1024;

/// What a stream task hands to its response stream: the shared projection to send, or the
/// error that ends the stream. An `Arc` keeps the channel's slots small (they are allocated in
/// blocks of 32 per channel, and a wire snapshot is about 200 bytes).
type Outgoing = Result<Arc<Projection>, Status>;

/// The response stream of one Watch call: each projection's wire message is cloned as the
/// stream is polled.
pub(crate) type WatchStream =
    Map<ReceiverStream<Outgoing>, fn(Outgoing) -> Result<proto::Snapshot, Status>>;

/// Opens Watch streams against the config in force.
#[derive(Debug, Clone)]
pub(crate) struct WatchHub {
    state: watch::Receiver<Arc<State>>,
    shutdown: watch::Receiver<bool>,
    registry: Arc<Registry>,
    projections: Arc<ProjectionCache>,
}

/// A validated `subscribe` message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    node: String,
    /// What the subscriber's projection depends on; shared with the cache.
    key: Arc<ProjectionKey>,
}

/// Who is on the other end of a stream.
#[derive(Debug, Clone)]
struct Peer {
    identity: SpiffeId,
    remote_addr: SocketAddr,
}

// === impl WatchHub ===

impl WatchHub {
    /// Streams `state` to subscribers until `shutdown` turns true (or its sender goes away),
    /// every snapshot sent through `transform` (the identity but in version-skew tests).
    pub(crate) fn new(
        state: watch::Receiver<Arc<State>>,
        shutdown: watch::Receiver<bool>,
        registry: Arc<Registry>,
        transform: crate::skew::WireTransform,
    ) -> Self {
        Self {
            state,
            shutdown,
            registry,
            projections: Arc::new(ProjectionCache::new(transform)),
        }
    }

    /// Starts serving one stream from a caller that presented `identity`. The first message is
    /// read by the stream's task, so a client may wait for the response headers before it
    /// sends `subscribe`.
    pub(crate) fn open<S>(
        &self,
        identity: SpiffeId,
        remote_addr: SocketAddr,
        inbound: S,
    ) -> WatchStream
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    {
        // Two slots: a snapshot in flight and the error that ends the stream.
        let (tx, rx) = mpsc::channel(2);
        let task = StreamTask {
            state: self.state.clone(),
            shutdown: self.shutdown.clone(),
            registry: self.registry.clone(),
            projections: self.projections.clone(),
            peer: Peer {
                identity,
                remote_addr,
            },
            tx,
        };
        tokio::spawn(task.run(inbound));
        ReceiverStream::new(rx).map(|outgoing| outgoing.map(|projection| projection.wire.clone()))
    }
}

/// The task behind one Watch stream.
struct StreamTask {
    state: watch::Receiver<Arc<State>>,
    shutdown: watch::Receiver<bool>,
    registry: Arc<Registry>,
    projections: Arc<ProjectionCache>,
    peer: Peer,
    tx: mpsc::Sender<Outgoing>,
}

impl StreamTask {
    async fn run<S>(mut self, mut inbound: S)
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    {
        let Some(mut subscription) = self.subscribe(&mut inbound).await else {
            return;
        };
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
        });
        tracing::info!(
            id = registration.id(),
            node = %subscription.node,
            identity = %self.peer.identity,
            peer = %self.peer.remote_addr,
            destinations = subscription.key.destinations.len(),
            "subscriber connected"
        );
        let reason = self
            .stream(&mut subscription, &registration, &mut inbound)
            .await;
        // A subscriber that leaves without acknowledging its last version no longer holds up
        // the propagation measurement of that version.
        registration.update(|s| {
            if s.last_acked_version < Some(s.last_sent_version) {
                self.registry.propagation.settled(s.last_sent_version);
            }
        });
        tracing::info!(
            id = registration.id(),
            node = %subscription.node,
            identity = %self.peer.identity,
            reason,
            "subscriber disconnected"
        );
    }

    /// Reads and validates the first message; on failure tells the client why (if it is
    /// still there) and returns `None`.
    async fn subscribe<S>(&mut self, inbound: &mut S) -> Option<Subscription>
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Unpin,
    {
        let first = tokio::select! {
            () = shutdown(&mut self.shutdown) => {
                self.end(Status::unavailable("the control service is shutting down"));
                return None;
            }
            first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, inbound.next()) => first,
        };
        let result = match first {
            Err(_) => Err(Status::invalid_argument(format!(
                "no subscribe message within {}s",
                SUBSCRIBE_TIMEOUT.as_secs()
            ))),
            // The client left or broke the stream: nobody to tell.
            Ok(None | Some(Err(_))) => return None,
            Ok(Some(Ok(WatchRequest {
                kind: Some(Kind::Subscribe(subscribe)),
            }))) => validate(subscribe, self.peer.identity.namespace()),
            Ok(Some(Ok(_))) => Err(Status::invalid_argument(
                "the first message must be `subscribe`",
            )),
        };
        match result {
            Ok(subscription) => Some(subscription),
            Err(status) => {
                tracing::warn!(
                    identity = %self.peer.identity,
                    peer = %self.peer.remote_addr,
                    error = status.message(),
                    "watch refused"
                );
                self.end(status);
                None
            }
        }
    }

    /// Sends snapshots and records ACKs until the stream ends; returns why it ended. A later
    /// `subscribe` replaces the destinations (a client that starts a new channel), and the
    /// subscriber gets a snapshot of the new set at once.
    async fn stream<S>(
        &mut self,
        subscription: &mut Subscription,
        registration: &Registration,
        inbound: &mut S,
    ) -> &'static str
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Unpin,
    {
        // The content last sent, to send only when this subscriber's projection changes.
        let mut last = None;
        let mut last_sent = 0;
        let mut dirty = true;
        loop {
            if dirty {
                dirty = false;
                let current = self.state.borrow_and_update().clone();
                let projection = self.projections.project(&current, &subscription.key);
                if projection.changed_since(last.as_ref()) {
                    tokio::select! {
                        sent = self.tx.send(Ok(projection.clone())) => if sent.is_err() {
                            return "client went away";
                        },
                        () = shutdown(&mut self.shutdown) => {
                            self.end(Status::unavailable("the control service is shutting down"));
                            return "shutdown";
                        }
                    }
                    last_sent = projection.version;
                    self.registry.propagation.sent(last_sent);
                    registration.update(|s| s.last_sent_version = last_sent);
                    tracing::debug!(id = registration.id(), version = last_sent, "sent snapshot");
                    last = Some(projection.content.clone());
                }
            }
            tokio::select! {
                biased;
                () = shutdown(&mut self.shutdown) => {
                    self.end(Status::unavailable("the control service is shutting down"));
                    return "shutdown";
                }
                changed = self.state.changed() => {
                    if changed.is_err() {
                        self.end(Status::unavailable("the control service is shutting down"));
                        return "config source closed";
                    }
                    dirty = true;
                }
                () = self.tx.closed() => return "client went away",
                message = inbound.next() => match message {
                    Some(Ok(WatchRequest { kind: Some(Kind::Ack(ack)) })) => {
                        self.ack(subscription, registration, last_sent, ack);
                    }
                    Some(Ok(WatchRequest { kind: Some(Kind::Subscribe(update)) })) => {
                        match validate(update, self.peer.identity.namespace()) {
                            Ok(update) => {
                                tracing::debug!(
                                    id = registration.id(),
                                    destinations = update.key.destinations.len(),
                                    "subscription updated"
                                );
                                registration.update(|s| {
                                    s.destinations = update.key.destinations.clone();
                                    s.own_service = update.key.own_service.clone();
                                });
                                *subscription = update;
                                dirty = true;
                            }
                            Err(status) => {
                                self.end(status);
                                return "invalid subscription update";
                            }
                        }
                    }
                    Some(Ok(WatchRequest { kind: None })) => {
                        self.end(Status::invalid_argument("kind: empty message"));
                        return "empty message";
                    }
                    Some(Err(_)) => return "stream error",
                    None => return "client closed the stream",
                },
            }
        }
    }

    fn ack(
        &self,
        subscription: &Subscription,
        registration: &Registration,
        last_sent: u64,
        ack: proto::Ack,
    ) {
        if ack.version == 0 || ack.version > last_sent {
            tracing::warn!(
                node = %subscription.node,
                identity = %self.peer.identity,
                version = ack.version,
                last_sent,
                "ignored an ack for a version never sent"
            );
            return;
        }
        if ack.error.is_empty() {
            tracing::debug!(node = %subscription.node, version = ack.version, "ack");
            crate::metrics::acked(&self.registry, ack.version);
            registration.update(|s| {
                s.last_acked_version = Some(s.last_acked_version.unwrap_or(0).max(ack.version));
            });
        } else {
            let mut error = ack.error;
            truncate(&mut error, MAX_NACK_LEN);
            tracing::warn!(
                node = %subscription.node,
                identity = %self.peer.identity,
                version = ack.version,
                %error,
                "subscriber rejected a snapshot"
            );
            crate::metrics::nacked();
            registration.update(|s| s.last_nack = Some((ack.version, error)));
        }
    }

    /// Ends the stream with `status`, without waiting on a client that does not read.
    fn end(&self, status: Status) {
        let _ = self.tx.try_send(Err(status));
    }
}

/// Resolves when the control service shuts down (or was dropped without a shutdown).
async fn shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
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
    Ok(Subscription {
        node: subscribe.node,
        key: Arc::new(ProjectionKey {
            destinations,
            // A subscriber sees the consumer routes of its own namespace (GAMMA), so the
            // namespace comes from its verified identity, never from what it claims.
            consumer: consumer.map(str::to_owned),
            own_service,
        }),
    })
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(s: &mut String, max: usize) {
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
