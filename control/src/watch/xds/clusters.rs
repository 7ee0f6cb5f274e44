//! A backend service (and port) as an xDS Cluster of type EDS and its ClusterLoadAssignment:
//! mTLS to endpoints that must present one of the service's SPIFFE IDs (A29), outlier
//! detection (A50), and endpoints grouped by zone with their weights.
//!
//! Decided here (gRPC clients have no P2C over peak-EWMA, and an xDS cluster has one policy for
//! every caller):
//! - balancing is `ROUND_ROBIN` within a zone; zones (localities) are weighted by the sum of
//!   their endpoints' weights, which is how A27 clients honour weights. All zones share one
//!   priority: a gRPC client's own zone is not preferred (its priority failover waits 10 s
//!   for a dead priority, slower than the Rust mesh's spill-over).
//! - outlier detection by failure percentage: checked every 10 s, an endpoint that failed over
//!   50 % of at least 10 calls is ejected for 30 s (growing to 300 s), at most 50 % of the
//!   endpoints at once (the Rust mesh's `MESH_OUTLIER_MAX_EJECTION_PERCENT` default), with at
//!   least 2 endpoints in the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, OutlierDetection, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus, Locality,
    SocketAddress, address, config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use mesh_core::snapshot::{DestinationKey, Endpoint};

use super::names;
use super::routes::duration;
use super::tls;

/// The cluster of `key`, whose endpoints (as the load assignment lists them) are `endpoints`.
pub(crate) fn cluster(key: &DestinationKey, endpoints: &[Endpoint]) -> Cluster {
    let name = names::cluster(key);
    Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name,
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        transport_socket: Some(tls::upstream(endpoints.iter().map(|e| &e.identity))),
        outlier_detection: Some(outlier_detection()),
        ..Default::default()
    }
}

/// Where gRPC clients fetch what a resource refers to: this same ADS stream.
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn outlier_detection() -> OutlierDetection {
    let value = |value| Some(UInt32Value { value });
    OutlierDetection {
        interval: Some(duration(Duration::from_secs(10))),
        base_ejection_time: Some(duration(Duration::from_secs(30))),
        max_ejection_time: Some(duration(Duration::from_secs(300))),
        max_ejection_percent: value(50),
        // Success-rate ejection needs many endpoints to mean anything; off.
        enforcing_success_rate: value(0),
        failure_percentage_threshold: value(50),
        enforcing_failure_percentage: value(100),
        failure_percentage_minimum_hosts: value(2),
        failure_percentage_request_volume: value(10),
        ..Default::default()
    }
}

/// The endpoints of `key`, one locality per zone (the empty zone for endpoints without one).
pub(crate) fn load_assignment(
    key: &DestinationKey,
    endpoints: &[Endpoint],
) -> ClusterLoadAssignment {
    let mut zones: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
    for endpoint in endpoints {
        zones
            .entry(endpoint.zone.as_str())
            .or_default()
            .push(endpoint);
    }
    ClusterLoadAssignment {
        cluster_name: names::cluster(key),
        endpoints: zones
            .into_iter()
            .map(|(zone, endpoints)| LocalityLbEndpoints {
                locality: Some(Locality {
                    zone: zone.to_owned(),
                    ..Default::default()
                }),
                load_balancing_weight: Some(UInt32Value {
                    value: endpoints
                        .iter()
                        .fold(0u32, |sum, e| sum.saturating_add(e.weight.max(1))),
                }),
                lb_endpoints: endpoints.into_iter().map(lb_endpoint).collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn lb_endpoint(endpoint: &Endpoint) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(address_of(endpoint.address)),
            ..Default::default()
        })),
        health_status: HealthStatus::Healthy as i32,
        load_balancing_weight: Some(UInt32Value {
            value: endpoint.weight.max(1),
        }),
        ..Default::default()
    }
}

/// A socket address as xDS writes it.
pub(crate) fn address_of(addr: std::net::SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}
