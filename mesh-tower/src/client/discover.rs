//! Discovery for one destination: turns each new snapshot into the endpoint insertions and
//! removals the balancer needs, so replicas come and go without a restart.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use http::uri::Authority;
use mesh_core::SpiffeId;
use mesh_core::snapshot::{ServiceName, Snapshot};
use tokio_stream::wrappers::WatchStream;
use tower::discover::Change;

use super::endpoint::Endpoint;
use crate::identity::Identity;
use crate::tls::client_config;

/// An endpoint's key: the same address with another identity is another endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct EndpointKey {
    pub(crate) addr: SocketAddr,
    pub(crate) identity: SpiffeId,
}

/// A stream of endpoint changes for one destination (tower's `Discover`).
pub(crate) struct EndpointDiscover<B> {
    destination: ServiceName,
    authority: Authority,
    identity: Identity,
    snapshots: WatchStream<Arc<Snapshot>>,
    current: HashSet<EndpointKey>,
    pending: VecDeque<Change<EndpointKey, Endpoint<B>>>,
}

impl<B> EndpointDiscover<B> {
    pub(crate) fn new(
        destination: ServiceName,
        authority: Authority,
        identity: Identity,
        snapshots: WatchStream<Arc<Snapshot>>,
    ) -> Self {
        Self {
            destination,
            authority,
            identity,
            snapshots,
            current: HashSet::new(),
            pending: VecDeque::new(),
        }
    }

    /// Queues the changes from the current set to the endpoints in `snapshot`.
    fn update(&mut self, snapshot: &Snapshot) {
        let Some(destination) = snapshot.destination(&self.destination) else {
            // Not in this snapshot: the subscription for it has not been answered yet.
            return;
        };
        let wanted: HashSet<EndpointKey> = destination
            .endpoints
            .iter()
            .map(|e| EndpointKey {
                addr: e.address,
                identity: e.identity.clone(),
            })
            .collect();
        for gone in self.current.difference(&wanted) {
            tracing::debug!(destination = %self.destination, endpoint = %gone.addr, "endpoint removed");
            self.pending.push_back(Change::Remove(gone.clone()));
        }
        for new in wanted.difference(&self.current) {
            tracing::debug!(destination = %self.destination, endpoint = %new.addr, "endpoint added");
            let tls = client_config(
                self.identity.trust(),
                new.identity.clone(),
                Some(&self.identity),
            );
            let endpoint = Endpoint::new(new.addr, tls, self.authority.clone());
            self.pending
                .push_back(Change::Insert(new.clone(), endpoint));
        }
        self.current = wanted;
    }
}

impl<B> Stream for EndpointDiscover<B> {
    type Item = Result<Change<EndpointKey, Endpoint<B>>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match Pin::new(&mut self.snapshots).poll_next(cx) {
                Poll::Ready(Some(snapshot)) => self.update(&snapshot),
                // The mesh is gone: no more changes will come, keep what we have.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<B> Unpin for EndpointDiscover<B> {}
