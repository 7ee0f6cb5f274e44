//! The gRPC `AggregatedDiscoveryService`: reads the peer from the connection and hands each
//! state-of-the-world stream to [`crate::watch::xds::stream`]. Incremental (delta) xDS is
//! refused with `UNIMPLEMENTED`: gRPC libraries speak state of the world.

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest,
};
use futures_util::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::tls::PeerInfo;
use crate::watch::xds::stream::{XdsHub, XdsPeer, XdsStream};

/// Implements `envoy.service.discovery.v3.AggregatedDiscoveryService`.
pub(crate) struct AdsService {
    hub: XdsHub,
}

impl AdsService {
    pub(crate) fn new(hub: XdsHub) -> Self {
        Self { hub }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = XdsStream;
    type DeltaAggregatedResourcesStream =
        BoxStream<'static, Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (peer, identity) = PeerInfo::require_identity(
            request.extensions(),
            "xDS",
            "get one with meshctl certify",
        )?;
        let peer = XdsPeer {
            identity,
            remote_addr: peer.remote_addr,
            certificate_expires: peer.certificate_expires,
            certificate_issuer: peer.certificate_issuer,
        };
        Ok(Response::new(self.hub.open(peer, request.into_inner())))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "incremental xDS is not served; use state-of-the-world ADS",
        ))
    }
}
