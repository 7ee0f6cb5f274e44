//! The gRPC server glue: TLS and the accept loop, one task per connection, and the
//! `mesh.control.v1.Control` service that hands each call to Certify or Watch.
//!
//! - `tls`: the control service's own certificate (re-issued before it expires), the rustls
//!   config, the accept loop with handshakes off the accept path, and the peer identity each
//!   connection carries;
//! - `limits`: bounds on connections and TLS handshakes in progress, and their bookkeeping;
//! - `conn`: serves each HTTP/2 connection in one task that also polls its streams;
//! - `routes`: routes the calls, serving `Watch` itself;
//! - `watch_body`: Watch's response body, the shared encodings of its messages then the
//!   trailers;
//! - `service`: the `Control` service, which hands each call to
//!   [`crate::ca::certify`] or [`crate::watch::stream`];
//! - `ads`: Envoy's `AggregatedDiscoveryService` for gRPC libraries' xDS clients, which hands
//!   each stream to `crate::watch::xds`.

pub(crate) mod ads;
pub(crate) mod conn;
pub(crate) mod limits;
pub(crate) mod routes;
pub(crate) mod service;
pub(crate) mod tls;
pub(crate) mod watch_body;
