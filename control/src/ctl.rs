//! `meshctl`, the mesh's operator command, as a library (the binary, `src/bin/meshctl.rs`,
//! only parses arguments and calls [`run`]).
//!
//! Everything here works offline, on a control file, and every decision it reports is made by
//! the same code the mesh runs: the file is read and validated by the file source's own
//! functions ([`file`](crate::file): size bound, UTF-8, YAML alias budget, shape, validation),
//! destinations are projected by [`ValidConfig`](mesh_core::config::ValidConfig) as the
//! control service projects them for a subscriber, and routing and authorization are decided
//! by mesh-core's [`CompiledRoutes`](mesh_core::route::CompiledRoutes) and
//! [`InboundPolicy::evaluate`](mesh_core::authz::InboundPolicy::evaluate).
//!
//! # Commands
//!
//! ## `meshctl check --config FILE [--trust-domain D] [--trust-bundle PEM] [--warnings-ok]`
//!
//! Prints every error the control service would refuse the file for, each with its field path
//! (`services[0].endpoints[1].address: ...`; syntax errors with their line and column), then
//! warnings for what validates but hurts, each with its field path and a one-line reason:
//!
//! - a route rule that can never apply because another rule of the same route ranks ahead of
//!   it (by mesh-core's precedence) and matches everything it matches ([`check`]'s
//!   `route_rules` explains what "covers" means; only what can be proven is reported);
//! - a rule whose backends all have weight 0, or that has none: every request it matches
//!   fails;
//! - a `backendRef` (of weight above 0) to a service, or port, the config does not have, or
//!   that has no endpoints;
//! - an authorization policy rule that can match no caller (only `unauthenticated` callers on
//!   a strict-mTLS service) or no request (e.g. gRPC methods with `methods: [GET]`, or ports
//!   no endpoint listens on);
//! - with `--trust-bundle`, each trust anchor that has expired or expires within 30 days;
//! - with `--admin HOST:PORT,...` (the control replicas' admin ports), a gRPC route match or a
//!   policy's `to.grpc` naming a service that the destination's running servers do not serve
//!   (meshed tonic servers report theirs: `mesh_tonic`'s `serving`); see [`check::served`].
//!
//! `meshctl check --admin HOST:PORT` without `--config` checks the config the control service
//! has in force (its `GET /config`), whatever its source: a control file, or the Kubernetes
//! objects it watches (field paths are then those of the config it built from them, and the
//! messages name the services). `meshctl check --kubernetes` reads the cluster of the current
//! kubeconfig itself, once and read-only, builds the config as the control service's
//! Kubernetes source does, lints it, and adds an error for each object the source would leave
//! out (an unsupported filter, a backend kind it cannot serve), naming the object and field.
//!
//! The last line sums up: `FILE: N error(s), M warning(s)`. Exit status 1 when anything was
//! found (0 with `--warnings-ok` and only warnings), 0 for a clean file.
//!
//! ## `meshctl routes DEST --config FILE [--from-namespace NS]`
//!
//! The route table a caller of `DEST` (`name.namespace[:port]`) receives, compiled: the
//! HTTPRoute and GRPCRoute matches in the order a client checks them (each rule once per
//! match, as precedence is per match), each with its conditions, its rule's weighted
//! backends (share, whether the service exists, how many endpoints), timeouts, retry policy
//! and filters. With no route attached, the service's own endpoints.
//!
//! ## `meshctl explain --config FILE --as SPIFFE_ID [--from-namespace NS] [-H 'k: v']... METHOD URL`
//! ## `meshctl explain --config FILE --as SPIFFE_ID --grpc package.Service/Method DEST`
//!
//! Without sending anything: every match checked, in precedence order, with the condition
//! each failed, up to the one that matched (mesh-core's
//! [`CompiledRoutes::attempts`](mesh_core::route::CompiledRoutes::attempts)); mesh-core's
//! one-line explanation of the decision, including what the winner beat the runner-up on;
//! the rule applied with its backends, timeouts and retry policy; and the authorization
//! verdict of the servers, with the policy and rule that decided it. The URL's host is the
//! destination: `http://greeter.default/path` or `http://greeter.default:7070/path`.
//!
//! ## `meshctl status [--admin HOST:PORT[,HOST:PORT...]]`
//!
//! Online: every Watch subscriber of every control replica (`--admin`, or
//! `MESH_CONTROL_ADMIN`, default `127.0.0.1:7401`; a name that resolves to several addresses,
//! such as a headless Service, is every replica behind it), read from each replica's
//! `/subscribers`: the replica, node, service, SPIFFE ID, versions acknowledged and sent,
//! `SYNCED` / `STALE` / `NACKED` (the last version sent was refused), the time left on its
//! certificate, and under a NACKing subscriber each refused field with its message and code.
//! A replica told its peers (`mesh-control --peer`) lists their subscribers too, each marked
//! with the replica serving it, so one `--admin` address is enough; with several, each
//! subscriber is shown once. A replica that cannot be read, or a peer that the replica asked
//! could not reach (and no other answer came from), is listed as `unreachable` and makes the
//! exit status 2.
//!
//! ## `meshctl certs [--admin HOST:PORT | --trust-bundle PEM] [--workload ADDR]`
//!
//! The trust bundle's roots (from the control service's `/trust-bundle`, or a file) with
//! serial and time left; with `--workload`, the chain the server at `ADDR` presents (read from
//! a TLS 1.3 handshake without a client certificate) and whether it verifies as an SVID of
//! the bundle, with the SPIFFE ID or the reason. Exit status 1 when a root expires within 30
//! days or the workload's chain does not verify.
//!
//! ## `meshctl top [--admin HOST:PORT,...] [--watch SECONDS]`
//!
//! Live calls/s, success rate, p50 and p99 per edge (a caller service, or the SPIFFE ID of a
//! workload that serves none, to a destination service), busiest first, over the last 30 s,
//! from every replica's live view (`/ui/graph.json`) merged ([`top`] says how); with
//! `--watch`, redrawn every few seconds until interrupted.
//!
//! ## `meshctl certify --control HOST:PORT --trust-anchors PEM --token-file FILE --out DIR [--renew]`
//!
//! A SPIFFE certificate for a workload in another language, by the same `Certify` flow Rust
//! workloads use: `cert.pem`, `key.pem` (made here, mode 0600) and `ca.pem` in `DIR`, replaced
//! together, and gRPC's xDS bootstrap file; with `--renew` it stays running and renews. See
//! [`certify`] for every flag, the file layout and the exit status.
//!
//! ## Output and exit status
//!
//! Text for people by default; `-o json` prints one JSON document (the `Serialize` types of
//! [`check`], [`routes`] and [`explain`]). Exit status 0 when all is well, 1 when `check`
//! finds problems, 2 on a usage or I/O error (printed on stderr as `meshctl: error: ...`,
//! whatever the output format).
//!
//! # Decisions where the spec is silent
//!
//! - `routes` and `explain` need a valid control file: an invalid one is exit status 2,
//!   pointing at `meshctl check`. `check` runs its lints only on a valid file (they read what
//!   the service would serve); the trust bundle is checked either way.
//! - `explain` and `routes` exit 0 whatever the request's fate (404, denied): the command
//!   worked. An unknown destination (or port) is exit status 2.
//! - `routes` without `--from-namespace` shows the service's own (producer) routes, what a
//!   caller in the service's namespace gets. `explain` without it uses the namespace of
//!   `--as`, as the control service does: a subscriber gets the consumer routes of the
//!   namespace of its verified identity.
//! - The authorization verdict is given for each service that may serve the request: the
//!   backends of weight above 0 of the rule that matched (a replica enforces the inbound
//!   policy of the service it runs as), or the destination itself with no routes; none when
//!   no rule matches (the client answers 404 itself). Each server's request is the caller's
//!   after the rule's `RequestHeaderModifier` filters; the route it matched is found with
//!   the server's own routes, and the port is the one its endpoints listen on when they
//!   agree on one (policies' `ports` are the server's own).
//! - A route attached to a service that does not exist cannot be written in the control
//!   file (routes are listed under their service), and a policy targeting an unknown
//!   service, or route, is a validation error: both show up as errors, not lints.
//! - An expired trust anchor is a warning, like one that expires soon: the file is not the
//!   problem, and the service still starts. A bundle that is not PEM certificates is exit 2.

mod admin_client;
pub mod certify;
pub mod certs;
pub mod check;
mod cli;
pub mod error;
pub mod explain;
pub mod finding;
pub mod load;
pub mod output;
pub mod routes;
pub mod status;
pub mod top;

pub use cli::{
    CheckArgs, Cli, Command, ConfigArgs, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, ExplainArgs,
    RoutesArgs, run,
};
pub use error::CtlError;
