//! Listeners: a client channel's API listener (gRFC A27: an HTTP connection manager whose
//! routes come by RDS), and an xDS server's listener (A36: mTLS required, RBAC from the
//! service's authorization policies, every call handled by the server itself).

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::listener::v3::{
    ApiListener, Filter, FilterChain, Listener, filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    NonForwardingAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use mesh_core::authz::InboundPolicy;
use mesh_core::snapshot::DestinationKey;

use super::clusters::{address_of, ads};
use super::{names, rbac, tls};

/// The HTTP connection manager's name as a network filter.
const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
/// The router filter's name; gRPC requires it last.
const ROUTER: &str = "envoy.filters.http.router";

/// The listener of a client channel to `key`: its routes come from the route configuration of
/// the same name (see [`names::route_configuration`]).
pub(crate) fn outbound(name: &str, key: &DestinationKey) -> Listener {
    let manager = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: names::route_configuration(key),
        })),
        http_filters: vec![router()],
        ..Default::default()
    };
    Listener {
        name: name.to_owned(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(manager)),
        }),
        ..Default::default()
    }
}

/// The listener of an xDS server on `address` serving `policy`'s service, and why its policy
/// was refused if every call is denied instead.
pub(crate) fn inbound(
    name: &str,
    address: SocketAddr,
    policy: &InboundPolicy,
) -> (Listener, Option<String>) {
    let translation = rbac::translate(policy);
    let mut http_filters: Vec<HttpFilter> = translation
        .filters
        .into_iter()
        .map(|(filter_name, config)| http_filter(filter_name, pack_any(config)))
        .collect();
    http_filters.push(router());
    let manager = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: format!("inbound|{}", policy.service),
                virtual_hosts: vec![VirtualHost {
                    name: policy.service.to_string(),
                    domains: vec!["*".to_owned()],
                    routes: vec![Route {
                        name: "inbound".to_owned(),
                        r#match: Some(RouteMatch {
                            path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
                            ..Default::default()
                        }),
                        action: Some(route::Action::NonForwardingAction(NonForwardingAction {})),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters,
        ..Default::default()
    };
    let listener = Listener {
        name: name.to_owned(),
        address: Some(address_of(address)),
        filter_chains: vec![FilterChain {
            name: "mtls".to_owned(),
            filters: vec![Filter {
                name: HTTP_CONNECTION_MANAGER.to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(manager))),
            }],
            transport_socket: Some(tls::downstream()),
            ..Default::default()
        }],
        ..Default::default()
    };
    (listener, translation.refused)
}

fn router() -> HttpFilter {
    http_filter(ROUTER, pack_any(Router::default()))
}

fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}
