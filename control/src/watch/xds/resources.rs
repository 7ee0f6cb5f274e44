//! What an xDS client is sent for one resource type and the names it asked for, at one
//! state of the config: the translation's entry point, with no I/O.

use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use mesh_core::snapshot::ServiceName;

use super::names::{self, ListenerName};
use super::{clusters, listeners, routes};
use crate::state::State;

/// What the resources of a client depend on besides the config.
#[derive(Debug, Clone)]
pub(crate) struct ClientView {
    /// The namespace of the client's verified identity: it sees that namespace's consumer
    /// routes.
    pub(crate) consumer: Option<String>,
    /// The service it serves (checked against its identity), for an xDS server's listener.
    pub(crate) own_service: Option<ServiceName>,
}

/// The resources of `type_url` named `names` that exist at `state`, packed, in the order
/// asked; names that stand for nothing are left out (the client reads that as "does not
/// exist"). Also says why a server listener's policy was refused, when it was.
pub(crate) fn resources(
    state: &State,
    view: &ClientView,
    type_url: &str,
    resource_names: &[String],
) -> (Vec<Any>, Vec<String>) {
    let consumer = view.consumer.as_deref();
    let mut refused = Vec::new();
    let mut out = Vec::with_capacity(resource_names.len());
    for name in resource_names {
        let resource = match type_url {
            names::LISTENER => match ListenerName::parse(name) {
                Ok(ListenerName::Outbound(key)) => state
                    .config
                    .destination_for(&key, consumer)
                    .found
                    .then(|| pack_any(listeners::outbound(name, &key))),
                Ok(ListenerName::Inbound(address)) => view.own_service.as_ref().map(|own| {
                    let policy = state.config.inbound(own);
                    let (listener, why) = listeners::inbound(name, address, &policy);
                    refused.extend(why);
                    pack_any(listener)
                }),
                Err(_) => None,
            },
            names::ROUTE_CONFIGURATION => names::parse_route_configuration(name)
                .ok()
                .map(|key| (state.config.destination_for(&key, consumer), key))
                .filter(|(destination, _)| destination.found)
                .map(|(destination, key)| {
                    pack_any(routes::route_configuration(&key, &destination))
                }),
            names::CLUSTER => names::parse_cluster(name)
                .ok()
                .map(|key| (state.config.destination_for(&key, None), key))
                .filter(|(destination, _)| destination.found)
                .map(|(destination, key)| {
                    pack_any(clusters::cluster(&key, &destination.endpoints))
                }),
            names::CLUSTER_LOAD_ASSIGNMENT => names::parse_cluster(name)
                .ok()
                .map(|key| (state.config.destination_for(&key, None), key))
                .filter(|(destination, _)| destination.found)
                .map(|(destination, key)| {
                    pack_any(clusters::load_assignment(&key, &destination.endpoints))
                }),
            _ => None,
        };
        out.extend(resource);
    }
    (out, refused)
}
