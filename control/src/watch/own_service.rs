//! Who may name a service as its own in `subscribe`: only one of its replicas.
//!
//! Naming a service as one's own gets its inbound policy (its settings, the policies that
//! target it, with the identities and rules they name) and lists the subscriber as serving it
//! on `/subscribers`. So the service must be one that the caller's verified identity serves:
//! one of the service's endpoints, on any port, carries that identity, or the service lists it
//! in `identities`. In the control file that is an endpoint's `identity` (or an entry of the
//! service's `identities`); from Kubernetes, the service account of a pod in the Service's
//! endpoint slices, ready or still starting (`spiffe://<td>/ns/<ns>/sa/<sa>`): a pod subscribes
//! before it is ready, and the mesh's `/ready` waits for that subscription.
//!
//! The check runs against the config in force when the `subscribe` message (or a later one
//! that replaces it) arrives; a subscriber whose identity later leaves the service keeps its
//! stream until it reconnects or subscribes again.

use mesh_core::SpiffeId;
use mesh_core::config::ValidConfig;
use mesh_core::snapshot::ServiceName;
use tonic::Status;

/// Why a subscriber may not name a service as its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OwnServiceError {
    /// The config has no such service, so nobody serves it.
    #[error("own_service {service}: no such service, so {identity} does not serve it")]
    Unknown {
        /// The service named.
        service: ServiceName,
        /// The caller's verified identity.
        identity: SpiffeId,
    },
    /// The service exists but none of its endpoints runs as the caller.
    #[error("own_service {service}: {identity} is not the identity of any of its endpoints")]
    NotServedBy {
        /// The service named.
        service: ServiceName,
        /// The caller's verified identity.
        identity: SpiffeId,
    },
}

impl From<OwnServiceError> for Status {
    fn from(error: OwnServiceError) -> Self {
        Status::permission_denied(error.to_string())
    }
}

/// Checks that `identity` serves `service` in `config` (see the module docs).
pub(crate) fn check(
    config: &ValidConfig,
    service: &ServiceName,
    identity: &SpiffeId,
) -> Result<(), OwnServiceError> {
    if config.is_served_by(service, identity) {
        return Ok(());
    }
    let (service, identity) = (service.clone(), identity.clone());
    Err(if config.contains(&service) {
        OwnServiceError::NotServedBy { service, identity }
    } else {
        OwnServiceError::Unknown { service, identity }
    })
}

#[cfg(test)]
mod tests {
    use mesh_core::testing::trust_domain;

    use super::*;

    const YAML: &str = "
services:
  - name: greeter
    namespace: default
    endpoints:
      - address: 127.0.0.1:5000
        identity: spiffe://mesh.local/ns/default/sa/greeter
      - address: 127.0.0.1:5001
        identity: spiffe://mesh.local/ns/default/sa/greeter-canary
  - name: multi
    namespace: shop
    port: 80
    endpoints:
      - address: 127.0.0.1:6000
        identity: spiffe://mesh.local/ns/shop/sa/front
    ports:
      - port: 9090
        endpoints:
          - address: 127.0.0.1:6001
            identity: spiffe://mesh.local/ns/shop/sa/metrics
  - name: empty
    namespace: default
    endpoints: []
";

    fn id(namespace: &str, account: &str) -> SpiffeId {
        SpiffeId::from_service_account(&trust_domain(), namespace, account).expect("valid id")
    }

    #[test]
    fn only_an_identity_of_the_services_endpoints_may_name_it() {
        let config = crate::source::file::parse(YAML, &trust_domain())
            .expect("valid")
            .mesh;
        enum Want {
            Ok,
            Unknown,
            NotServed,
        }
        let table = [
            ("greeter.default", id("default", "greeter"), Want::Ok),
            ("greeter.default", id("default", "greeter-canary"), Want::Ok),
            // Another service's replica, the same account in another namespace, a stranger.
            ("greeter.default", id("shop", "front"), Want::NotServed),
            ("greeter.default", id("web", "greeter"), Want::NotServed),
            ("greeter.default", id("default", "client"), Want::NotServed),
            // Every port's endpoints count.
            ("multi.shop", id("shop", "front"), Want::Ok),
            ("multi.shop", id("shop", "metrics"), Want::Ok),
            ("multi.shop", id("default", "greeter"), Want::NotServed),
            // A service with no endpoints is served by nobody; an unknown one neither.
            ("empty.default", id("default", "empty"), Want::NotServed),
            ("new.default", id("default", "new"), Want::Unknown),
            ("greeter.web", id("web", "greeter"), Want::Unknown),
        ];
        for (service, identity, want) in table {
            let name: ServiceName = service.parse().expect("name");
            let got = check(&config, &name, &identity);
            let case = format!("{service} as {identity}: {got:?}");
            match want {
                Want::Ok => assert_eq!(got, Ok(()), "{case}"),
                Want::Unknown => {
                    assert!(
                        matches!(got, Err(OwnServiceError::Unknown { .. })),
                        "{case}"
                    );
                }
                Want::NotServed => {
                    assert!(
                        matches!(got, Err(OwnServiceError::NotServedBy { .. })),
                        "{case}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_refusal_is_permission_denied_and_names_the_service_and_identity() {
        let config = crate::source::file::parse(YAML, &trust_domain())
            .expect("valid")
            .mesh;
        let identity = id("default", "client");
        let name: ServiceName = "greeter.default".parse().expect("name");
        let status = Status::from(check(&config, &name, &identity).expect_err("refused"));
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status.message().contains("greeter.default")
                && status.message().contains(identity.as_str()),
            "{}",
            status.message()
        );
    }
}
