//! The xDS bootstrap file that gRPC libraries read (`GRPC_XDS_BOOTSTRAP`), as serde types: what
//! `meshctl certify` writes for a workload in another language, and the names the control
//! service's xDS translation must agree with.
//!
//! The shape follows gRPC's bootstrap format (gRFC A27), with the `tls` channel credentials of
//! gRFC A65 (mTLS to the xDS server with the files the certify command keeps fresh), the
//! `certificate_providers` of gRFC A29 (one `file_watcher` instance, [`CERTIFICATE_PROVIDER_INSTANCE`],
//! that the clusters' and listeners' TLS contexts name), and the server listener template of
//! gRFC A36 ([`SERVER_LISTENER_RESOURCE_NAME_TEMPLATE`]):
//!
//! ```json
//! {
//!   "xds_servers": [{
//!     "server_uri": "mesh-control.mesh-system.svc:7400",
//!     "channel_creds": [{"type": "tls", "config": {
//!       "ca_certificate_file": "/var/run/mesh/ca.pem",
//!       "certificate_file": "/var/run/mesh/cert.pem",
//!       "private_key_file": "/var/run/mesh/key.pem",
//!       "refresh_interval": "600s"}}],
//!     "server_features": ["xds_v3"]
//!   }],
//!   "node": {
//!     "id": "greeter.default~greeter-7d9c",
//!     "cluster": "greeter.default",
//!     "locality": {"zone": "zone-a"},
//!     "metadata": {"mesh.service": "greeter.default"}
//!   },
//!   "certificate_providers": {"mesh": {"plugin_name": "file_watcher", "config": {
//!     "certificate_file": "/var/run/mesh/cert.pem",
//!     "private_key_file": "/var/run/mesh/key.pem",
//!     "ca_certificate_file": "/var/run/mesh/ca.pem",
//!     "refresh_interval": "600s"}}},
//!   "server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%s"
//! }
//! ```
//!
//! The xDS server reads `node.metadata["mesh.service"]` ([`NODE_METADATA_SERVICE`]) as the
//! service the workload serves, checked against the identity of its client certificate as a
//! Watch subscriber's own service is; the node id is only a name for operators.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The name of the certificate provider instance in the bootstrap file: the xDS translation's
/// `CommonTlsContext` names it (`tls_certificate_provider_instance` and the validation
/// context's `ca_certificate_provider_instance`), so both sides use this constant.
pub const CERTIFICATE_PROVIDER_INSTANCE: &str = "mesh";

/// The Listener name an xDS-enabled gRPC server asks for (`%s` is its listening `ip:port`).
pub const SERVER_LISTENER_RESOURCE_NAME_TEMPLATE: &str =
    "grpc/server?xds.resource.listening_address=%s";

/// The node metadata key that names the workload's own service (`name.namespace`).
pub const NODE_METADATA_SERVICE: &str = "mesh.service";

/// How often gRPC re-reads the certificate files unless told otherwise: gRPC's own default
/// (10 minutes), well inside half of a 24 h certificate's life, when it is renewed.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);

/// A gRPC xDS bootstrap file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// The xDS servers, tried in order (gRFC A71); the certify command writes one.
    pub xds_servers: Vec<XdsServer>,
    /// Who this client is.
    pub node: Node,
    /// Certificate provider instances by name: one `file_watcher`,
    /// [`CERTIFICATE_PROVIDER_INSTANCE`].
    pub certificate_providers: BTreeMap<String, CertificateProvider>,
    /// The Listener name template of an xDS-enabled server
    /// ([`SERVER_LISTENER_RESOURCE_NAME_TEMPLATE`]).
    pub server_listener_resource_name_template: String,
}

/// One xDS server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdsServer {
    /// A gRPC target: `host:port` (the host must be a name in the control service's
    /// certificate, as gRPC checks it).
    pub server_uri: String,
    /// Credentials, the first a client supports is used: `tls` (gRFC A65).
    pub channel_creds: Vec<ChannelCreds>,
    /// `xds_v3`.
    pub server_features: Vec<String>,
}

/// Channel credentials to the xDS server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCreds {
    /// The credentials' type: `tls`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The files: the same as the `file_watcher` provider's.
    pub config: FileWatcherConfig,
}

/// The files of a `file_watcher` certificate provider, or of `tls` channel credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWatcherConfig {
    /// The certificate chain (PEM), leaf first.
    pub certificate_file: PathBuf,
    /// The private key (PEM).
    pub private_key_file: PathBuf,
    /// The trust bundle (PEM).
    pub ca_certificate_file: PathBuf,
    /// How often the files are re-read, a protobuf JSON duration (`"600s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
}

/// The client's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// A name for operators, unique per workload instance (`<service>~<hostname>`).
    pub id: String,
    /// The cluster the node belongs to: its service, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Where it runs, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// String metadata: [`NODE_METADATA_SERVICE`] when the workload serves a service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A node's locality.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locality {
    /// The zone.
    pub zone: String,
}

/// A certificate provider instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateProvider {
    /// The plugin: `file_watcher`.
    pub plugin_name: String,
    /// Its files.
    pub config: FileWatcherConfig,
}

/// What a bootstrap file is made from.
#[derive(Debug, Clone)]
pub struct BootstrapParams {
    /// The control service as a gRPC target (`host:port`).
    pub server_uri: String,
    /// The node id.
    pub node_id: String,
    /// The workload's own service (`name.namespace`), if it serves one.
    pub service: Option<String>,
    /// Its zone, if known.
    pub zone: Option<String>,
    /// The certificate chain file.
    pub certificate_file: PathBuf,
    /// The private key file.
    pub private_key_file: PathBuf,
    /// The trust bundle file.
    pub ca_certificate_file: PathBuf,
    /// How often gRPC re-reads them.
    pub refresh_interval: Duration,
}

// === impl Bootstrap ===

impl Bootstrap {
    /// The bootstrap file for `params`.
    pub fn new(params: &BootstrapParams) -> Self {
        let files = FileWatcherConfig {
            certificate_file: params.certificate_file.clone(),
            private_key_file: params.private_key_file.clone(),
            ca_certificate_file: params.ca_certificate_file.clone(),
            refresh_interval: Some(duration_json(params.refresh_interval)),
        };
        let metadata = params
            .service
            .iter()
            .map(|service| (NODE_METADATA_SERVICE.to_owned(), service.clone()))
            .collect();
        Self {
            xds_servers: vec![XdsServer {
                server_uri: params.server_uri.clone(),
                channel_creds: vec![ChannelCreds {
                    kind: "tls".to_owned(),
                    config: files.clone(),
                }],
                server_features: vec!["xds_v3".to_owned()],
            }],
            node: Node {
                id: params.node_id.clone(),
                cluster: params.service.clone().unwrap_or_default(),
                locality: params.zone.clone().map(|zone| Locality { zone }),
                metadata,
            },
            certificate_providers: BTreeMap::from([(
                CERTIFICATE_PROVIDER_INSTANCE.to_owned(),
                CertificateProvider {
                    plugin_name: "file_watcher".to_owned(),
                    config: files,
                },
            )]),
            server_listener_resource_name_template: SERVER_LISTENER_RESOURCE_NAME_TEMPLATE
                .to_owned(),
        }
    }

    /// The file's content: pretty JSON and a final newline.
    pub fn to_json(&self) -> String {
        // Plain structs of strings and maps with string keys: serializing cannot fail.
        let mut json = serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| unreachable!("a bootstrap always serializes: {e}"));
        json.push('\n');
        json
    }
}

/// A duration in protobuf's JSON form: whole seconds with an `s` (`"600s"`).
fn duration_json(duration: Duration) -> String {
    format!("{}s", duration.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BootstrapParams {
        BootstrapParams {
            server_uri: "mesh-control.mesh-system.svc:7400".into(),
            node_id: "greeter.default~host-1".into(),
            service: Some("greeter.default".into()),
            zone: Some("zone-a".into()),
            certificate_file: "/run/mesh/cert.pem".into(),
            private_key_file: "/run/mesh/key.pem".into(),
            ca_certificate_file: "/run/mesh/ca.pem".into(),
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
        }
    }

    #[test]
    fn the_json_has_grpcs_bootstrap_shape() {
        let json: serde_json::Value =
            serde_json::from_str(&Bootstrap::new(&params()).to_json()).unwrap();
        let files = serde_json::json!({
            "certificate_file": "/run/mesh/cert.pem",
            "private_key_file": "/run/mesh/key.pem",
            "ca_certificate_file": "/run/mesh/ca.pem",
            "refresh_interval": "600s",
        });
        assert_eq!(
            json,
            serde_json::json!({
                "xds_servers": [{
                    "server_uri": "mesh-control.mesh-system.svc:7400",
                    "channel_creds": [{"type": "tls", "config": files}],
                    "server_features": ["xds_v3"],
                }],
                "node": {
                    "id": "greeter.default~host-1",
                    "cluster": "greeter.default",
                    "locality": {"zone": "zone-a"},
                    "metadata": {"mesh.service": "greeter.default"},
                },
                "certificate_providers": {
                    "mesh": {"plugin_name": "file_watcher", "config": files},
                },
                "server_listener_resource_name_template":
                    "grpc/server?xds.resource.listening_address=%s",
            })
        );
    }

    #[test]
    fn a_client_only_workload_has_no_service_metadata_cluster_or_locality() {
        let mut params = params();
        params.service = None;
        params.zone = None;
        let json: serde_json::Value =
            serde_json::from_str(&Bootstrap::new(&params).to_json()).unwrap();
        assert_eq!(
            json["node"],
            serde_json::json!({"id": "greeter.default~host-1"})
        );
    }

    #[test]
    fn it_reads_back() {
        let bootstrap = Bootstrap::new(&params());
        let back: Bootstrap = serde_json::from_str(&bootstrap.to_json()).unwrap();
        assert_eq!(back, bootstrap);
    }
}
