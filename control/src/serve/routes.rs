//! Routes `mesh.control.v1.Control` calls, serving `Watch` itself, and Envoy's
//! `AggregatedDiscoveryService` (xDS for gRPC libraries) on the same port.
//!
//! The generated server gives every Watch stream tonic's default 8 KiB decode buffer (for the
//! ACKs, a few dozen bytes each) and an encoder that copies each message into a buffer of the
//! stream's own. With one stream per subscriber that is most of a subscriber's cost to the
//! control service, so Watch is served here: its requests are decoded with a buffer sized for
//! an ACK (it still grows for a larger message), and its responses are the shared encodings of
//! [`crate::watch::encoded`], written by [`super::watch_body`]. Watch accepts no compressed
//! requests (the generated server accepts none either). `Certify` goes to the generated
//! server unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use mesh_core::proto::WatchRequest;
use mesh_core::proto::codec::Decoder;
use mesh_core::proto::control_server::{ControlServer, SERVICE_NAME};
use tonic::body::Body;
use tonic::codec::BufferSettings;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::{Request, Status, Streaming};

use super::ads::AdsService;
use super::service::ControlService;
use super::watch_body;

/// The path prefix of ADS calls.
const ADS_PREFIX: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/";

/// The Watch method's path.
const WATCH_PATH: &str = "/mesh.control.v1.Control/Watch";

/// Initial decode buffer of a Watch stream: an ACK or a `subscribe` of a few destinations fits.
const DECODE_BUFFER: usize = 256;

/// tonic's default: how much decoded data a stream buffers before yielding it.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The `Control` service as added to the server.
#[derive(Clone)]
pub(crate) struct ControlRoutes {
    service: Arc<ControlService>,
    generated: ControlServer<ControlService>,
    ads: AggregatedDiscoveryServiceServer<AdsService>,
    max_decoding_message_size: usize,
}

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
        let service = self.service.clone();
        let max_decoding = self.max_decoding_message_size;
        Box::pin(async move {
            if let Some(status) = compressed(request.headers()) {
                return Ok(status.into_http());
            }
            let request = Request::from_http(request.map(|body| {
                Streaming::new_request(watch_decoder(), body, None, Some(max_decoding))
            }));
            Ok(match service.open_watch(request) {
                Ok(stream) => watch_body::response(stream),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// The status refusing a request whose messages are compressed (`grpc-encoding` other than
/// `identity`), as tonic's server answers one.
fn compressed(headers: &http::HeaderMap) -> Option<Status> {
    let encoding = headers.get("grpc-encoding")?;
    if encoding == "identity" {
        return None;
    }
    let mut status = Status::unimplemented(format!(
        "Content is compressed with `{}` which isn't supported",
        String::from_utf8_lossy(encoding.as_bytes())
    ));
    status.metadata_mut().insert(
        "grpc-accept-encoding",
        tonic::metadata::MetadataValue::from_static("identity"),
    );
    Some(status)
}

/// Watch's request decoder, with a buffer sized for an ACK; like the generated server's, it
/// answers a request that does not decode with INVALID_ARGUMENT naming the field.
fn watch_decoder() -> Decoder<WatchRequest> {
    Decoder::with_buffer_settings(BufferSettings::new(DECODE_BUFFER, YIELD_THRESHOLD))
}
