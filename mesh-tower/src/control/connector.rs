//! Which control replica a workload talks to: every address of every configured control
//! address, in a stable order, starting from one picked by a hash of the workload's instance
//! name, moving to the next on failure, and staying with the one that worked last.
//!
//! # Why this way
//!
//! With several control replicas (`MESH_CONTROL_ADDR=a:7400,b:7400`, or one DNS name that
//! resolves to several addresses, such as a headless Service), workloads that all started from
//! the first address would pile onto one replica while the others idle, and all move together
//! when it fails. Each workload instead starts from `fnv1a(instance name) % addresses`: the
//! same pod (or process) comes back to the same replica after a restart, different pods
//! spread evenly, and no randomness makes a failure hard to reproduce. Istio and Linkerd get
//! the same effect from a Service VIP's connection balancing; a proxyless client has to do it
//! itself, as gRPC's `pick_first` with `shuffle_address_list` does.
//!
//! The addresses of one name are sorted before picking, so that a DNS server's rotation does
//! not move a workload at each reconnect. Once connected, a workload stays with that replica
//! (reconnecting to it first after a stream that ended cleanly); when its stream fails, the
//! next connection starts from the replica after it, so a replica that hangs rather than
//! refuses is not waited on again.
//! Workloads do not move back when a replica returns: like Istio's sidecars, they are spread
//! again as they restart.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use http::uri::Authority;
use mesh_core::SpiffeId;
use mesh_core::proto::control_client::ControlClient;
use mesh_core::tls::TrustStore;

use crate::connect::{Http2Sender, connect_http2};
use crate::error::ConnectError;
use crate::identity::Identity;
use crate::tls::client_config;

/// A gRPC client of the control service on one connection.
pub(crate) type ControlGrpc = ControlClient<Http2Sender<tonic::body::Body>>;

/// Opens connections to the control service, spreading workloads over its replicas.
#[derive(Debug)]
pub(crate) struct ControlConnector {
    addrs: Vec<String>,
    expected: SpiffeId,
    /// Where a workload with no replica yet starts: a hash of its instance name.
    seed: u64,
    /// Where the next connection starts.
    last: Mutex<Last>,
}

/// The replica a workload was last on, and how that went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// None yet: start where the hash says.
    Nothing,
    /// Connected there: start there again.
    Worked(SocketAddr),
    /// Its stream failed there: start with the one after it.
    Failed(SocketAddr),
}

/// One address to try, with the configured `host:port` it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    from: usize,
    addr: SocketAddr,
}

// === impl ControlConnector ===

impl ControlConnector {
    /// Connects to `addrs` (each `host:port`, a name may resolve to several replicas),
    /// checking that the server is `expected`; `instance` (the workload's node name) picks the
    /// first replica tried.
    pub(crate) fn new(addrs: Vec<String>, expected: SpiffeId, instance: &str) -> Self {
        Self {
            addrs,
            expected,
            seed: fnv1a(instance.as_bytes()),
            last: Mutex::new(Last::Nothing),
        }
    }

    /// A gRPC client on a fresh connection. Presents `identity` when given (Watch); without one
    /// the control service accepts only `Certify`.
    pub(crate) async fn connect(
        &self,
        trust: &TrustStore,
        identity: Option<&Identity>,
    ) -> Result<ControlGrpc, ConnectError> {
        let tls = client_config(trust, self.expected.clone(), identity);
        let (candidates, mut last_error) = self.resolve().await;
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let start = start_index(&candidates, last, self.seed);
        for i in 0..candidates.len() {
            let candidate = &candidates[(start + i) % candidates.len()];
            match connect_http2(candidate.addr, tls.clone()).await {
                Ok((sender, connection)) => {
                    tokio::spawn(connection);
                    *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
                        Last::Worked(candidate.addr);
                    let authority = Authority::try_from(self.addrs[candidate.from].as_str())
                        .unwrap_or_else(|_| Authority::from_static("mesh-control"));
                    return Ok(ControlClient::new(Http2Sender::new(sender, authority)));
                }
                Err(error) => {
                    tracing::debug!(control = %candidate.addr, %error, "control replica unreachable");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ConnectError::Resolve {
            peer: self.addrs.join(","),
            source: std::io::Error::other("no address"),
        }))
    }

    /// Tells the connector that the stream on the replica it connected to last failed: the
    /// next connection starts from the replica after it.
    pub(crate) fn failed(&self) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Last::Worked(addr) = *last {
            *last = Last::Failed(addr);
        }
    }

    /// Every address of every configured `host:port`, names in the order given, each name's
    /// addresses sorted; with the last resolution error, if any.
    async fn resolve(&self) -> (Vec<Candidate>, Option<ConnectError>) {
        let mut candidates = Vec::new();
        let mut error = None;
        for (from, host_port) in self.addrs.iter().enumerate() {
            match tokio::net::lookup_host(host_port.as_str()).await {
                Ok(resolved) => {
                    let mut addrs: Vec<SocketAddr> = resolved.collect();
                    addrs.sort();
                    addrs.dedup();
                    for addr in addrs {
                        if !candidates.iter().any(|c: &Candidate| c.addr == addr) {
                            candidates.push(Candidate { from, addr });
                        }
                    }
                }
                Err(source) => {
                    error = Some(ConnectError::Resolve {
                        peer: host_port.clone(),
                        source,
                    });
                }
            }
        }
        (candidates, error)
    }
}

/// Where to start in `candidates`: the one that worked last, or the one after the one that
/// failed, while it is still there; else the one the workload's `seed` picks.
fn start_index(candidates: &[Candidate], last: Last, seed: u64) -> usize {
    let len = candidates.len();
    if len == 0 {
        return 0;
    }
    let position = |addr: SocketAddr| candidates.iter().position(|c| c.addr == addr);
    let known = match last {
        Last::Nothing => None,
        Last::Worked(addr) => position(addr),
        Last::Failed(addr) => position(addr).map(|i| (i + 1) % len),
    };
    // The remainder is below `len`, a usize: the conversion back cannot fail.
    known.unwrap_or_else(|| usize::try_from(seed % len as u64).unwrap_or(0))
}

/// FNV-1a, 64 bits: stable across releases and platforms (std's hasher promises neither).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(n: u16) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                from: usize::from(i),
                addr: SocketAddr::from(([127, 0, 0, 1], 7400 + i)),
            })
            .collect()
    }

    #[test]
    fn instances_spread_over_replicas() {
        let list = candidates(3);
        let mut per_replica = [0u32; 3];
        for pod in 0..300 {
            let seed = fnv1a(format!("greeter-7d9f-{pod}").as_bytes());
            per_replica[start_index(&list, Last::Nothing, seed)] += 1;
        }
        // Not all on the first: each replica takes a fair share (about 100).
        for (replica, count) in per_replica.iter().enumerate() {
            assert!(
                (70..=130).contains(count),
                "replica {replica}: {per_replica:?}"
            );
        }
    }

    #[test]
    fn the_same_instance_picks_the_same_replica() {
        let list = candidates(4);
        let seed = fnv1a(b"client-0");
        assert_eq!(
            start_index(&list, Last::Nothing, seed),
            start_index(&list, Last::Nothing, seed)
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(
            fnv1a(b"a"),
            0xaf63_dc4c_8601_ec8c,
            "the published FNV-1a value"
        );
    }

    #[test]
    fn stays_with_the_replica_that_worked_last() {
        let list = candidates(3);
        let seed = fnv1a(b"x");
        assert_eq!(start_index(&list, Last::Worked(list[2].addr), seed), 2);
        // Its stream failed: the next one, wrapping around.
        assert_eq!(start_index(&list, Last::Failed(list[2].addr), seed), 0);
        assert_eq!(start_index(&list, Last::Failed(list[0].addr), seed), 1);
        // Gone from the list (the name no longer resolves to it): back to the hash.
        let gone = SocketAddr::from(([10, 0, 0, 1], 1));
        assert_eq!(
            start_index(&list, Last::Worked(gone), seed),
            start_index(&list, Last::Nothing, seed)
        );
        assert_eq!(start_index(&[], Last::Nothing, seed), 0);
    }
}
