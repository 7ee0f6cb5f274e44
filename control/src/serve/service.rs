//! The gRPC `Control` service: reads the peer from the connection and hands each call to
//! [`crate::ca::certify`], [`crate::watch::stream`] or, for peer replicas only,
//! [`crate::replicas`].

use std::sync::Arc;

use mesh_core::proto::control_server::Control;
use mesh_core::proto::{
    CertifyRequest, CertifyResponse, ReplicaSubscribersRequest, ReplicaSubscribersResponse,
    Snapshot, WatchRequest,
};
use tonic::{Request, Response, Status, Streaming};

use super::tls::PeerInfo;
use crate::ca::certify::Certifier;
use crate::replicas::local::LocalReplica;
use crate::watch::stream::{WatchHub, WatchStream};

/// Implements `mesh.control.v1.Control`.
pub(crate) struct ControlService {
    certifier: Certifier,
    watch: WatchHub,
    local: Arc<LocalReplica>,
}

impl ControlService {
    pub(crate) fn new(certifier: Certifier, watch: WatchHub, local: Arc<LocalReplica>) -> Self {
        Self {
            certifier,
            watch,
            local,
        }
    }

    /// Opens a Watch stream for a caller with a verified identity (the call is routed here by
    /// [`super::routes`], which writes the stream's shared encodings itself).
    pub(crate) fn open_watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<WatchStream, Status> {
        let (peer, identity) =
            PeerInfo::require_identity(request.extensions(), "watch", "get one with Certify")?;
        Ok(self.watch.open(
            identity,
            peer.remote_addr,
            peer.certificate_expires,
            peer.certificate_issuer,
            request.into_inner(),
        ))
    }

    /// The ADS hub over the same config, registry and limits as Watch.
    pub(crate) fn xds_hub(&self) -> crate::watch::xds::stream::XdsHub {
        crate::watch::xds::stream::XdsHub::new(&self.watch)
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    type WatchStream = futures_util::stream::Empty<Result<Snapshot, Status>>;

    /// Never called: [`super::routes`] serves Watch itself (see [`Self::open_watch`]), so
    /// that its messages are encoded once for every subscriber rather than by tonic per stream.
    async fn watch(
        &self,
        _request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::internal(
            "Watch is served by the control service's own route",
        ))
    }

    async fn replica_subscribers(
        &self,
        request: Request<ReplicaSubscribersRequest>,
    ) -> Result<Response<ReplicaSubscribersResponse>, Status> {
        let (peer, identity) = PeerInfo::require_identity(
            request.extensions(),
            "ReplicaSubscribers",
            "only the control service's replicas may call it",
        )?;
        // Workloads' certificates are as valid as a replica's: only the control service's own
        // identity may read who is subscribed.
        if identity != self.local.identity {
            tracing::warn!(peer = %peer.remote_addr, %identity, "ReplicaSubscribers refused");
            return Err(Status::permission_denied(format!(
                "ReplicaSubscribers: {identity} is not the control service ({})",
                self.local.identity
            )));
        }
        Ok(Response::new(self.local.answer()))
    }

    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.remote_addr);
        self.certifier
            .certify(request.into_inner(), peer)
            .await
            .map(Response::new)
    }
}
