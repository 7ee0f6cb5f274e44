//! How xDS resources are named: type URLs, and the resource names a gRPC client asks for mapped
//! to the mesh's destinations, clusters and listening addresses.
//!
//! - A client channel to `xds:///greeter.default` asks for the Listener `greeter.default`
//!   (`greeter.default:8080` for another port): a [`DestinationKey`] as Watch spells it.
//! - Its routes are the RouteConfiguration `route|greeter.default`.
//! - A backend service (and port) is the Cluster, and the ClusterLoadAssignment, `greeter.default`
//!   (`greeter.default:8080`): every consumer shares it, since endpoints do not depend on who calls.
//! - An xDS server (gRFC A36) asks for `grpc/server?xds.resource.listening_address=<ip>:<port>`,
//!   the template the bootstrap file names.

use std::net::SocketAddr;

use mesh_core::snapshot::DestinationKey;

/// The Listener type.
pub(crate) const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// The RouteConfiguration type.
pub(crate) const ROUTE_CONFIGURATION: &str =
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// The Cluster type.
pub(crate) const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// The ClusterLoadAssignment type.
pub(crate) const CLUSTER_LOAD_ASSIGNMENT: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The prefix of the Listener names xDS servers ask for: the bootstrap file's
/// `server_listener_resource_name_template` up to the address.
pub(crate) const SERVER_LISTENER_PREFIX: &str = "grpc/server?xds.resource.listening_address=";

/// The prefix of route configuration names.
const ROUTE_PREFIX: &str = "route|";

/// The longest resource name accepted from a client.
pub(crate) const MAX_RESOURCE_NAME_LEN: usize = 512;

/// What a Listener name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenerName {
    /// A client channel's target: calls to a destination.
    Outbound(DestinationKey),
    /// An xDS server's listening address: its inbound side.
    Inbound(SocketAddr),
}

impl ListenerName {
    /// Parses a Listener name a client asked for; the error says why it names nothing.
    pub(crate) fn parse(name: &str) -> Result<Self, String> {
        if let Some(address) = name.strip_prefix(SERVER_LISTENER_PREFIX) {
            return address
                .parse::<SocketAddr>()
                .map(Self::Inbound)
                .map_err(|_| format!("listener {name:?}: the listening address is not ip:port"));
        }
        // `xds:///greeter.default` may also be written with the `.svc` suffixes.
        name.parse::<DestinationKey>()
            .map(Self::Outbound)
            .map_err(|e| format!("listener {name:?}: {}", e.reason))
    }
}

/// The route configuration name of a destination's listener.
pub(crate) fn route_configuration(key: &DestinationKey) -> String {
    format!("{ROUTE_PREFIX}{key}")
}

/// The destination a route configuration name stands for.
pub(crate) fn parse_route_configuration(name: &str) -> Result<DestinationKey, String> {
    let key = name
        .strip_prefix(ROUTE_PREFIX)
        .ok_or_else(|| format!("route configuration {name:?}: not one this service names"))?;
    key.parse()
        .map_err(|e: mesh_core::snapshot::ServiceNameError| {
            format!("route configuration {name:?}: {}", e.reason)
        })
}

/// The cluster (and load assignment) name of a backend service and port.
pub(crate) fn cluster(key: &DestinationKey) -> String {
    key.to_string()
}

/// The backend a cluster name stands for.
pub(crate) fn parse_cluster(name: &str) -> Result<DestinationKey, String> {
    name.parse()
        .map_err(|e: mesh_core::snapshot::ServiceNameError| {
            format!("cluster {name:?}: {}", e.reason)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_listener_names_follow_the_bootstrap_template() {
        assert_eq!(
            crate::xds_bootstrap::SERVER_LISTENER_RESOURCE_NAME_TEMPLATE,
            format!("{SERVER_LISTENER_PREFIX}%s")
        );
    }

    #[test]
    fn listener_names_are_destinations_or_listening_addresses() {
        let key: DestinationKey = "greeter.default".parse().unwrap();
        assert_eq!(
            ListenerName::parse("greeter.default").unwrap(),
            ListenerName::Outbound(key.clone())
        );
        assert_eq!(
            ListenerName::parse("greeter.default.svc.cluster.local").unwrap(),
            ListenerName::Outbound(key.clone())
        );
        assert_eq!(
            ListenerName::parse("grpc/server?xds.resource.listening_address=0.0.0.0:50051")
                .unwrap(),
            ListenerName::Inbound("0.0.0.0:50051".parse().unwrap())
        );
        assert_eq!(
            ListenerName::parse("grpc/server?xds.resource.listening_address=[::]:7").unwrap(),
            ListenerName::Inbound("[::]:7".parse().unwrap())
        );
        let error =
            ListenerName::parse("grpc/server?xds.resource.listening_address=nope").unwrap_err();
        assert!(error.contains("not ip:port"), "{error}");
        assert!(ListenerName::parse("no-namespace").is_err());
    }

    #[test]
    fn route_and_cluster_names_round_trip() {
        let key: DestinationKey = "echo.shop:8080".parse().unwrap();
        assert_eq!(route_configuration(&key), "route|echo.shop:8080");
        assert_eq!(
            parse_route_configuration("route|echo.shop:8080").unwrap(),
            key
        );
        assert!(parse_route_configuration("echo.shop").is_err());
        assert_eq!(parse_cluster(&cluster(&key)).unwrap(), key);
    }
}
