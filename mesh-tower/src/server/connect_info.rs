//! [`MeshConnectInfo`]: what the mesh learned about one accepted connection (the caller's
//! address and verified identity, the inbound policy that judges its requests), carried into
//! every request's extensions for [`super::MeshLayer`].

use std::net::SocketAddr;
use std::sync::Arc;

use super::authz::Authorizer;
use crate::activity::Activity;
use crate::identity::PeerIdentity;

/// One accepted connection's details, in each of its requests' extensions
/// (`request.extensions().get::<MeshConnectInfo>()`). tonic puts it there as its connection
/// info ([`crate::server::MeshTlsStream::connect_info`]); [`crate::server::serve`] does the
/// same for any tower service. [`super::MeshLayer`] refuses a request without it: such a
/// request did not come through the mesh's listener.
///
/// One shared allocation per connection, so a copy per request costs a reference count.
#[derive(Debug, Clone)]
pub struct MeshConnectInfo(Arc<ConnectionInfo>);

#[derive(Debug)]
struct ConnectionInfo {
    remote_addr: SocketAddr,
    peer: Option<PeerIdentity>,
    authorizer: Option<Authorizer>,
    /// The calls in flight, for the connection's idle timer.
    activity: Arc<Activity>,
    key_exchange: Option<rustls::NamedGroup>,
}

impl MeshConnectInfo {
    pub(crate) fn new(
        remote_addr: SocketAddr,
        peer: Option<PeerIdentity>,
        authorizer: Option<Authorizer>,
        activity: Arc<Activity>,
        key_exchange: Option<rustls::NamedGroup>,
    ) -> Self {
        Self(Arc::new(ConnectionInfo {
            remote_addr,
            peer,
            authorizer,
            activity,
            key_exchange,
        }))
    }

    /// The connection's calls in flight.
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.0.activity
    }

    /// The caller's socket address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.0.remote_addr
    }

    /// The caller's verified identity (`None` for a plaintext caller of a permissive server).
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.0.peer.as_ref()
    }

    /// The TLS key exchange the connection was set up with: `X25519MLKEM768` (post-quantum
    /// hybrid) between meshed workloads, a classical group with a peer that lacks it; `None`
    /// in plaintext.
    pub fn key_exchange(&self) -> Option<rustls::NamedGroup> {
        self.0.key_exchange
    }

    /// The inbound policy that judges the connection's requests (`None` when the mesh has no
    /// policy source, as in tests that build the listener by hand).
    pub fn authorizer(&self) -> Option<&Authorizer> {
        self.0.authorizer.as_ref()
    }
}
