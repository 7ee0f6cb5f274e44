//! Routes `mesh.control.v1.Control` calls, serving `Watch` with small codec buffers, and
//! Envoy's `AggregatedDiscoveryService` (xDS for gRPC libraries) on the same port.
//!
//! The generated server gives every Watch stream tonic's default 8 KiB decode buffer (for the
//! ACKs, a few dozen bytes each) and 8 KiB encode buffer (for snapshots that are usually well
//! under 1 KiB), allocated for the life of the stream. With one stream per subscriber that is
//! most of a subscriber's cost to the control service, so Watch is served here with buffers
//! sized for the usual message; they still grow for larger ones. `Certify` goes to the
//! generated server unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use mesh_core::proto::control_server::{Control, ControlServer, SERVICE_NAME};
use mesh_core::proto::{Snapshot, WatchRequest};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{Service, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use super::ads::AdsService;
use super::service::ControlService;

/// The path prefix of ADS calls.
const ADS_PREFIX: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/";

/// The Watch method's path.
const WATCH_PATH: &str = "/mesh.control.v1.Control/Watch";

/// Initial encode buffer of a Watch stream: a snapshot of a few destinations fits.
const ENCODE_BUFFER: usize = 1024;

/// Initial decode buffer of a Watch stream: an ACK or a `subscribe` of a few destinations fits.
const DECODE_BUFFER: usize = 256;

/// tonic's default: how much encoded data a stream buffers before yielding it.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The `Control` service as added to the server.
#[derive(Clone)]
pub(crate) struct ControlRoutes {
    service: Arc<ControlService>,
    generated: ControlServer<ControlService>,
    ads: AggregatedDiscoveryServiceServer<AdsService>,
    max_decoding_message_size: usize,
}

/// The prost codec of Watch with small initial buffers.
#[derive(Debug, Clone, Copy, Default)]
struct WatchCodec;

/// Hands a Watch call to the service.
struct WatchSvc(Arc<ControlService>);

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

// === impl ControlRoutes ===

impl ControlRoutes {
    /// Serves `service`, refusing incoming messages over `max_decoding_message_size` bytes.
    pub(crate) fn new(service: ControlService, max_decoding_message_size: usize) -> Self {
        let ads = AggregatedDiscoveryServiceServer::new(AdsService::new(service.xds_hub()))
            .max_decoding_message_size(max_decoding_message_size)
            .max_encoding_message_size(usize::MAX);
        let service = Arc::new(service);
        Self {
            ads,
            generated: ControlServer::from_arc(service.clone())
                .max_decoding_message_size(max_decoding_message_size)
                .max_encoding_message_size(usize::MAX),
            service,
            max_decoding_message_size,
        }
    }
}

impl NamedService for ControlRoutes {
    const NAME: &'static str = SERVICE_NAME;
}

impl Service<http::Request<Body>> for ControlRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path().starts_with(ADS_PREFIX) {
            return self.ads.call(request);
        }
        if request.uri().path() != WATCH_PATH {
            return self.generated.call(request);
        }
        let method = WatchSvc(self.service.clone());
        let max_decoding = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(WatchCodec)
                .apply_max_message_size_config(Some(max_decoding), Some(usize::MAX));
            Ok(grpc.streaming(method, request).await)
        })
    }
}

// === impl WatchCodec ===

impl Codec for WatchCodec {
    type Encode = Snapshot;
    type Decode = WatchRequest;
    type Encoder = ProstEncoder<Snapshot>;
    type Decoder = ProstDecoder<WatchRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<Snapshot, WatchRequest>::raw_encoder(BufferSettings::new(
            ENCODE_BUFFER,
            YIELD_THRESHOLD,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<Snapshot, WatchRequest>::raw_decoder(BufferSettings::new(
            DECODE_BUFFER,
            YIELD_THRESHOLD,
        ))
    }
}

// === impl WatchSvc ===

impl StreamingService<WatchRequest> for WatchSvc {
    type Response = Snapshot;
    type ResponseStream = <ControlService as Control>::WatchStream;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<WatchRequest>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.watch(request).await })
    }
}
