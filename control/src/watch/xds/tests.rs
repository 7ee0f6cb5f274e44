//! The translation end to end, from a control file's YAML to decoded xDS resources.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::rbac::v3::rbac;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, header_matcher, route, route_action,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, UpstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use envoy_types::pb::google::protobuf::Any;
use mesh_core::config::MeshConfig;
use mesh_core::testing::trust_domain;
use prost::Message;

use super::names;
use super::resources::{ClientView, resources};
use crate::state::State;

const YAML: &str = r#"
services:
  - name: greeter
    namespace: default
    endpoints: []
    routes:
      - name: canary
        kind: grpc
        rules:
          - matches: [{headers: [{name: x-version, value: v2}]}]
            backendRefs: [{name: greeter-v2}]
            timeouts: {request: 2s}
          - backendRefs:
              - {name: greeter-v1, weight: 70}
              - {name: greeter-v2, weight: 30}
            retry: {statuses: [UNAVAILABLE], attempts: 2}
  - name: greeter-v1
    namespace: default
    endpoints:
      - {address: 127.0.0.1:5001, identity: spiffe://mesh.local/ns/default/sa/greeter, zone: a}
      - {address: 127.0.0.1:5002, identity: spiffe://mesh.local/ns/default/sa/greeter, zone: b}
  - name: greeter-v2
    namespace: default
    endpoints:
      - {address: 127.0.0.1:5003, identity: spiffe://mesh.local/ns/default/sa/greeter-v2}
  - name: py
    namespace: default
    defaultPolicy: deny
    endpoints:
      - {address: 127.0.0.1:6000, identity: spiffe://mesh.local/ns/default/sa/py}
policies:
  - name: client-may-greet
    target: {service: py}
    action: ALLOW
    rules:
      - from: {identities: ["spiffe://mesh.local/ns/default/sa/client"]}
        to: {grpc: [{service: helloworld.Greeter}]}
  - name: no-intruder
    target: {service: py}
    action: DENY
    rules:
      - from: {serviceAccounts: [default/intruder]}
  - name: only-audited
    target: {service: py}
    action: DENY
    mode: audit
    rules:
      - from: {identities: ["*"]}
"#;

fn state(yaml: &str) -> State {
    let config: MeshConfig = serde_yaml::from_str(yaml).expect("valid YAML");
    State {
        version: 7,
        config: config.validate(&trust_domain()).expect("valid config"),
        trust_bundle: Arc::default(),
        jwks: Arc::default(),
    }
}

fn view(own: Option<&str>) -> ClientView {
    ClientView {
        consumer: Some("default".to_owned()),
        own_service: own.map(|s| s.parse().unwrap()),
    }
}

fn one<T: Message + Default>(state: &State, view: &ClientView, type_url: &str, name: &str) -> T {
    let (found, _) = resources(state, view, type_url, &[name.to_owned()]);
    assert_eq!(found.len(), 1, "{type_url} {name}");
    decode(&found[0])
}

fn decode<T: Message + Default>(any: &Any) -> T {
    T::decode(any.value.as_slice()).expect("decodes")
}

#[test]
fn a_client_listener_takes_its_routes_by_rds_and_ends_with_the_router() {
    let state = state(YAML);
    let listener: Listener = one(&state, &view(None), names::LISTENER, "greeter.default");
    assert_eq!(listener.name, "greeter.default");
    let manager: HttpConnectionManager = decode(
        listener
            .api_listener
            .unwrap()
            .api_listener
            .as_ref()
            .unwrap(),
    );
    let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = manager.route_specifier else {
        panic!("routes by RDS");
    };
    assert_eq!(rds.route_config_name, "route|greeter.default");
    assert_eq!(
        manager.http_filters.last().unwrap().name,
        "envoy.filters.http.router"
    );

    // A destination the config does not have is not sent: the client reads "does not exist".
    let (missing, _) = resources(
        &state,
        &view(None),
        names::LISTENER,
        &["nope.default".into()],
    );
    assert!(missing.is_empty());
}

#[test]
fn routes_keep_precedence_header_matches_splits_timeouts_and_retries() {
    let state = state(YAML);
    let config: RouteConfiguration = one(
        &state,
        &view(None),
        names::ROUTE_CONFIGURATION,
        "route|greeter.default",
    );
    let routes = &config.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 2, "{routes:#?}");

    // The header match outranks the catch-all.
    let first = &routes[0];
    let header = &first.r#match.as_ref().unwrap().headers[0];
    assert_eq!(header.name, "x-version");
    let Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)) = &header.header_match_specifier
    else {
        panic!("a string match");
    };
    assert_eq!(
        m.match_pattern,
        Some(string_matcher::MatchPattern::Exact("v2".into()))
    );
    let Some(route::Action::Route(action)) = &first.action else {
        panic!("a route action");
    };
    assert_eq!(
        action.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(
            "greeter-v2.default".into()
        ))
    );
    let max = action.max_stream_duration.as_ref().unwrap();
    assert_eq!(max.max_stream_duration.as_ref().unwrap().seconds, 2);

    let Some(route::Action::Route(split)) = &routes[1].action else {
        panic!("a route action");
    };
    let Some(route_action::ClusterSpecifier::WeightedClusters(weighted)) = &split.cluster_specifier
    else {
        panic!("weighted clusters");
    };
    let weights: Vec<(&str, u32)> = weighted
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.unwrap().value))
        .collect();
    assert_eq!(
        weights,
        [("greeter-v1.default", 70), ("greeter-v2.default", 30)]
    );
    let retry = split.retry_policy.as_ref().unwrap();
    assert_eq!(retry.retry_on, "unavailable");
    assert_eq!(retry.num_retries.unwrap().value, 2);
}

#[test]
#[allow(deprecated)]
fn clusters_check_the_endpoints_spiffe_ids_and_endpoints_are_grouped_by_zone() {
    let state = state(YAML);
    let cluster: Cluster = one(&state, &view(None), names::CLUSTER, "greeter-v1.default");
    let eds = cluster.eds_cluster_config.as_ref().unwrap();
    assert_eq!(eds.service_name, "greeter-v1.default");
    let socket = cluster.transport_socket.as_ref().unwrap();
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &socket.config_type
    else {
        panic!("a typed TLS context");
    };
    let tls: UpstreamTlsContext = decode(any);
    let common = tls.common_tls_context.unwrap();
    assert_eq!(
        common
            .tls_certificate_provider_instance
            .unwrap()
            .instance_name,
        crate::xds_bootstrap::CERTIFICATE_PROVIDER_INSTANCE
    );
    let Some(common_tls_context::ValidationContextType::ValidationContext(validation)) =
        common.validation_context_type
    else {
        panic!("a validation context");
    };
    let sans: Vec<_> = validation
        .match_subject_alt_names
        .iter()
        .map(|m| m.match_pattern.clone())
        .collect();
    assert_eq!(
        sans,
        [Some(string_matcher::MatchPattern::Exact(
            "spiffe://mesh.local/ns/default/sa/greeter".into()
        ))]
    );
    assert!(cluster.outlier_detection.is_some());

    let assignment: ClusterLoadAssignment = one(
        &state,
        &view(None),
        names::CLUSTER_LOAD_ASSIGNMENT,
        "greeter-v1.default",
    );
    let zones: Vec<(&str, usize, u32)> = assignment
        .endpoints
        .iter()
        .map(|l| {
            (
                l.locality.as_ref().unwrap().zone.as_str(),
                l.lb_endpoints.len(),
                l.load_balancing_weight.unwrap().value,
            )
        })
        .collect();
    assert_eq!(zones, [("a", 1, 1), ("b", 1, 1)]);
    let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) =
        &assignment.endpoints[0].lb_endpoints[0].host_identifier
    else {
        panic!("an endpoint");
    };
    assert!(format!("{endpoint:?}").contains("5001"));
}

/// The RBAC filters of the server listener `state` gives `own`, by name.
fn server_rbac(state: &State, own: &str) -> (Listener, Vec<(String, Rbac)>, Vec<String>) {
    let name = "grpc/server?xds.resource.listening_address=0.0.0.0:6000";
    let (found, refused) = resources(state, &view(Some(own)), names::LISTENER, &[name.into()]);
    let listener: Listener = decode(&found[0]);
    let chain = &listener.filter_chains[0];
    let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
        panic!("an HTTP connection manager");
    };
    let manager: HttpConnectionManager = decode(any);
    let filters = manager
        .http_filters
        .iter()
        .filter(|f| f.name.starts_with("mesh.rbac"))
        .map(|f| {
            let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("a typed filter");
            };
            (f.name.clone(), decode::<Rbac>(any))
        })
        .collect();
    (listener, filters, refused)
}

#[test]
fn a_server_listener_requires_client_certificates_and_carries_the_policies_as_rbac() {
    let state = state(YAML);
    let (listener, filters, refused) = server_rbac(&state, "py.default");
    assert!(refused.is_empty());
    assert!(format!("{:?}", listener.address).contains("6000"));
    let chain = &listener.filter_chains[0];
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &chain.transport_socket.as_ref().unwrap().config_type
    else {
        panic!("a TLS context");
    };
    let tls: DownstreamTlsContext = decode(any);
    assert!(tls.require_client_certificate.unwrap().value);

    let names: Vec<(&str, i32, Vec<&str>)> = filters
        .iter()
        .map(|(name, rbac)| {
            let rules = rbac.rules.as_ref().unwrap();
            let mut policies: Vec<&str> = rules.policies.keys().map(String::as_str).collect();
            policies.sort_unstable();
            (name.as_str(), rules.action, policies)
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                "mesh.rbac.deny",
                rbac::Action::Deny as i32,
                vec!["no-intruder[0]"]
            ),
            (
                "mesh.rbac.allow",
                rbac::Action::Allow as i32,
                vec!["client-may-greet[0]"]
            ),
        ],
        "the audit-mode policy decides nothing and is left out"
    );
}

#[test]
fn a_policy_rbac_cannot_express_denies_every_call_and_says_why() {
    let yaml = YAML
        .replace(
            "    target: {service: py}\n    action: ALLOW",
            "    target: {service: py, route: some-route}\n    action: ALLOW",
        )
        .replace(
            "    defaultPolicy: deny\n",
            "    defaultPolicy: deny\n    routes:\n      - name: some-route\n        rules:\n          - backendRefs: [{name: py}]\n",
        );
    let state = state(&yaml);
    let (_, filters, refused) = server_rbac(&state, "py.default");
    assert_eq!(refused.len(), 1);
    assert!(refused[0].contains("client-may-greet"), "{refused:?}");
    assert_eq!(filters.len(), 1);
    let rules = filters[0].1.rules.as_ref().unwrap();
    assert_eq!(rules.action, rbac::Action::Allow as i32);
    assert!(
        rules.policies.is_empty(),
        "an empty ALLOW list denies every call"
    );
}
