//! `mesh-control`: the mesh's control service, as a library (for the demo and tests) and a
//! binary.
//!
//! It serves `mesh.control.v1.Control` over TLS with its own SPIFFE identity
//! (`spiffe://<td>/ns/<namespace>/sa/mesh-control`):
//!
//! - `Certify`: a workload proves who it is with a bootstrap token from the control file and
//!   sends a CSR; the CA signs fresh parameters for the SPIFFE ID the token maps to, with the
//!   DNS names of the services that identity serves (`greeter.default.svc`,
//!   `greeter.default.svc.cluster.local`: [`DnsSanSuffixes`], default `svc` and
//!   `svc.cluster.local`) so that plain TLS clients can check a meshed server by name. Names
//!   come from config, never from the CSR: a CSR asking for others is refused, naming them.
//!   The service's own certificate names its Service the same way (`mesh-control.<ns>.svc`)
//!   plus [`ControlOptions::server_names`]; it accepts any server name (SNI).
//! - Workloads in other languages get their certificate and gRPC's xDS bootstrap file from
//!   `meshctl certify` ([`ctl::certify`]).
//! - `Watch`: a workload with a certificate names the destinations it needs; it gets a
//!   versioned snapshot of them at once and a new one whenever its projection changes, and it
//!   ACKs or NACKs each version. [`RunningControl::subscribers`] shows who is on which version.
//!
//! Config comes from a YAML control file ([`file`](mod@file)) that is polled for edits: a valid edit
//! becomes the next version, an invalid one is logged with its field paths and ignored.
//! With the `kubernetes` feature (on by default) it can instead read the Kubernetes API
//! (`ConfigSource::Kubernetes`, module `k8s`): Services, EndpointSlices, Pods, GAMMA routes
//! and `AuthorizationPolicy` objects become the same versioned config, and `Certify` checks
//! pods' projected ServiceAccount tokens with TokenReview.
//!
//! # Getting started
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_control::{CaSource, ConfigSource, ControlOptions};
//! use mesh_core::TrustDomain;
//!
//! let yaml = "
//! services:
//!   - name: greeter
//!     endpoints:
//!       - address: 127.0.0.1:50051
//!         identity: spiffe://mesh.local/ns/default/sa/greeter
//! bootstrapTokens:
//!   - token: greeter-secret
//!     namespace: default
//!     serviceAccount: greeter
//! ";
//! let mut options = ControlOptions::new(
//!     TrustDomain::new("mesh.local")?,
//!     ConfigSource::Inline(yaml.to_owned()),
//! );
//! options.ca = CaSource::Ephemeral;
//! let control = mesh_control::start(options).await?;
//! println!("control at {}, trust anchors:\n{}", control.addr(), control.trust_bundle_pem());
//! control.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Tasks
//!
//! One task accepts TCP connections, within [`ConnectionLimits`], and spawns a task per TLS
//! handshake; one task per
//! established connection serves it with every stream on it, Watch streams and Certify calls
//! (see `serve/conn.rs` for why not a task per stream); one task polls the control file; one
//! re-issues the service's own certificate at about 70 % of its lifetime; one serves the admin
//! port ([`admin`](ControlOptions::admin_listen)).
//!
//! # Where things live
//!
//! - `start`: [`start()`] and the steps it takes; `options`: [`ControlOptions`] and
//!   [`StartError`]; `running`: [`RunningControl`];
//! - `source/`: where config comes from, [`ConfigSource`]: the control file
//!   ([`file`](mod@file)) and the Kubernetes API (`kubernetes`, public as `k8s`, feature
//!   `kubernetes`);
//! - `state`: the versioned config in force ([`State`]), which every source publishes to and
//!   every Watch stream reads;
//! - `ca/`: workload identity: the CA ([`ca`]), reloading and rotating it, the trust bundle
//!   file, authentication ([`authn`]) and the `Certify` RPC;
//! - `watch/`: the `Watch` fan-out: streams, shared projections, the subscriber registry,
//!   propagation timing, and the [`skew`] test hook;
//! - `serve/`: the gRPC server glue: TLS and the accept loop, one task per connection, routing
//!   and the `Control` service;
//! - `admin/`: the admin HTTP port and the service's metrics;
//! - [`ctl`]: `meshctl`, the operator command (the `meshctl` binary): `check`, `routes`,
//!   `explain` (offline, on a control file), `status` and `certs` (online).
//! - [`xds_bootstrap`]: the xDS bootstrap file gRPC libraries read, as `meshctl certify`
//!   writes it, and the names (certificate provider instance, node metadata) the xDS
//!   translation shares with it.
//! - [`replicas`]: several replicas of the control service, and the view of every replica's
//!   subscribers that any of them serves;
//! - `view/`: the live view of the mesh on the admin port (`/ui`, `/ui/graph.json`), from the
//!   edge reports workloads send on their Watch streams.

mod admin;
pub mod ca;
pub mod ctl;
mod jwks;
mod options;
pub mod replicas;
mod running;
mod serve;
mod source;
mod start;
mod state;
mod view;
mod watch;
pub mod xds_bootstrap;

pub use ca::authn::{self, Authenticator, AuthnError, AuthnFuture, BootstrapTokens};
pub use ca::certify::CertifyRateLimit;
pub use ca::dns_names::{DEFAULT_DNS_SAN_SUFFIXES, DnsSanSuffixes, InvalidDnsSuffix, MAX_DNS_SANS};
pub use ca::{Ca, CaError, CaSource, Issued, SignError};
pub use jwks::JwksOptions;
pub use options::{
    ControlOptions, DEFAULT_EDGE_REPORT_INTERVAL, DEFAULT_NAMESPACE, SERVICE_ACCOUNT, StartError,
};
pub use running::RunningControl;
pub use serve::limits::{
    ConnectionLimits, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_HANDSHAKES_PER_IP, InvalidLimit,
};
pub use serve::tls::{PeerInfo, ServerCertError};
pub use source::ConfigSource;
pub use source::file::{self, ControlConfig, LoadError, ParseError};
#[cfg(feature = "kubernetes")]
pub use source::kubernetes as k8s;
pub use start::start;
pub use state::{Jwks, State};
pub use watch::limits::WatchLimits;
pub use watch::registry::{MAX_NACK_DETAILS, Nack, NackDetail, SubscriberStatus};
pub use watch::skew;
