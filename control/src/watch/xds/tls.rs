//! The TLS contexts of xDS clusters and server listeners (gRFC A29): certificates from the
//! bootstrap file's certificate provider, and the peer's SPIFFE ID checked by SAN matchers.
//!
//! Keys never cross the wire: a TLS context only names the provider instance
//! ([`CERTIFICATE_PROVIDER_INSTANCE`], the bootstrap file's) that reads the workload's own files.

use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, UpstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use mesh_core::SpiffeId;

use super::matchers::exact;
use crate::xds_bootstrap::CERTIFICATE_PROVIDER_INSTANCE;

/// The transport socket's name gRPC looks for.
const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// A SAN no certificate carries: a cluster with no endpoints accepts no peer rather than any.
const NO_PEER: &str = "spiffe://invalid/no-endpoints";

/// The client side of a cluster: our certificate, the mesh's roots, and a server that presents
/// one of `identities` (any of the cluster's endpoints' SPIFFE IDs).
pub(crate) fn upstream<'a>(identities: impl IntoIterator<Item = &'a SpiffeId>) -> TransportSocket {
    // Each identity once, in a stable order: equal endpoint sets give equal resources.
    let ids: std::collections::BTreeSet<&str> =
        identities.into_iter().map(SpiffeId::as_str).collect();
    let mut sans: Vec<StringMatcher> = ids.into_iter().map(exact).collect();
    if sans.is_empty() {
        sans.push(exact(NO_PEER));
    }
    let context = UpstreamTlsContext {
        common_tls_context: Some(common(sans)),
        ..Default::default()
    };
    socket(pack_any(context))
}

/// The server side of a listener: our certificate, and a client certificate required and
/// checked against the mesh's roots (who may call is the RBAC filter's business).
pub(crate) fn downstream() -> TransportSocket {
    let context = DownstreamTlsContext {
        common_tls_context: Some(common(Vec::new())),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    socket(pack_any(context))
}

// `match_subject_alt_names` is deprecated in Envoy for the typed form, but it is the field gRPC
// libraries read (A29).
#[allow(deprecated)]
fn common(match_subject_alt_names: Vec<StringMatcher>) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_provider_instance: Some(provider()),
        validation_context_type: Some(
            common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    ca_certificate_provider_instance: Some(provider()),
                    match_subject_alt_names,
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

fn provider() -> CertificateProviderPluginInstance {
    CertificateProviderPluginInstance {
        instance_name: CERTIFICATE_PROVIDER_INSTANCE.to_owned(),
        certificate_name: String::new(),
    }
}

fn socket(config: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
    }
}
