//! Asking the peer replicas for their subscribers: mTLS with the control service's own
//! certificate on both sides, within [`PeerLimits`], every failure named by the peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::SpiffeId;
use mesh_core::proto::ReplicaSubscribersRequest;
use mesh_core::proto::control_client::ControlClient;
use mesh_core::tls::{SpiffeServerVerifier, TrustStore, crypto_provider};
use rustls::ClientConfig;
use rustls::client::ResolvesClientCert;
use rustls_pki_types::ServerName;
use tonic::transport::Endpoint;

/// How many peer addresses are asked at most unless told otherwise.
pub const DEFAULT_MAX_PEERS: usize = 16;

/// How long a peer gets to connect and answer unless told otherwise.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest answer read from one peer unless told otherwise (about 25,000 subscribers).
pub const DEFAULT_PEER_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The most peer names accepted in [`ControlOptions::peers`](crate::ControlOptions::peers).
const MAX_PEER_NAMES: usize = 64;

/// Views being assembled at once; more wait their turn. The admin port has no authentication,
/// so a client asking for `/subscribers` in a loop must not multiply the calls (and answers
/// held in memory) on every peer.
const MAX_VIEWS_IN_FLIGHT: usize = 2;

/// Bounds on asking the peers for their subscribers (the view costs one call per peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Peer addresses asked at most (after names are resolved); those beyond are reported
    /// unreachable, not asked (default 16).
    pub max_peers: usize,
    /// How long one peer may take to connect and answer; peers are asked at once, so this
    /// bounds the whole view (default 2 s).
    pub timeout: Duration,
    /// The largest answer read from one peer (default 16 MiB).
    pub max_response_bytes: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            max_peers: DEFAULT_MAX_PEERS,
            timeout: DEFAULT_PEER_TIMEOUT,
            max_response_bytes: DEFAULT_PEER_MAX_RESPONSE_BYTES,
        }
    }
}

impl PeerLimits {
    /// Refuses bounds that let nothing through, naming the field.
    pub fn check(&self) -> Result<(), InvalidPeer> {
        let refuse = |field: &'static str, reason: &str| InvalidPeer {
            peer: format!("peer_limits.{field}"),
            reason: reason.to_owned(),
        };
        if self.max_peers == 0 {
            return Err(refuse("max_peers", "must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(refuse("timeout", "must be above zero"));
        }
        if self.max_response_bytes < 1024 {
            return Err(refuse("max_response_bytes", "must be at least 1024"));
        }
        Ok(())
    }
}

/// A peer (or a bound on peers) the control service refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{peer}: {reason}")]
pub struct InvalidPeer {
    /// The peer as given (or the bound's field).
    pub peer: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Why a peer's subscribers are missing from the view; each names the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The peer's name did not resolve.
    #[error("peer {peer}: cannot resolve: {reason}")]
    Resolve {
        /// The `host:port` given.
        peer: String,
        /// The resolver's error.
        reason: String,
    },
    /// More peer addresses than `max_peers`: this one was not asked.
    #[error("peer {peer}: not asked: over peer_limits.max_peers ({max})")]
    OverLimit {
        /// The address.
        peer: String,
        /// The bound.
        max: usize,
    },
    /// TCP, TLS (a peer that is not the control service is refused here) or HTTP/2 failed.
    #[error("peer {peer}: connect: {reason}")]
    Connect {
        /// The address.
        peer: String,
        /// What failed, with its causes.
        reason: String,
    },
    /// The peer answered with an error (a peer that does not know the call predates
    /// replicas' views: UNIMPLEMENTED).
    #[error("peer {peer}: {code:?}: {message}")]
    Refused {
        /// The address.
        peer: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// No answer within `timeout`.
    #[error("peer {peer}: no answer within {after:?}")]
    Timeout {
        /// The address.
        peer: String,
        /// The bound.
        after: Duration,
    },
    /// The answer's subscriber list is not the JSON array it should be.
    #[error("peer {peer}: bad answer: {reason}")]
    BadAnswer {
        /// The address.
        peer: String,
        /// What was wrong.
        reason: String,
    },
}

impl PeerError {
    /// The address (or name) of the peer.
    pub fn peer(&self) -> &str {
        match self {
            Self::Resolve { peer, .. }
            | Self::OverLimit { peer, .. }
            | Self::Connect { peer, .. }
            | Self::Refused { peer, .. }
            | Self::Timeout { peer, .. }
            | Self::BadAnswer { peer, .. } => peer,
        }
    }
}

/// What one peer said.
#[derive(Debug, Clone)]
pub(crate) struct PeerAnswer {
    /// The address asked.
    pub(crate) addr: SocketAddr,
    /// Its name for itself.
    pub(crate) replica: String,
    /// Its config version.
    pub(crate) config_version: u64,
    /// Its subscribers.
    pub(crate) rows: Vec<serde_json::Value>,
}

/// One peer's outcome: its answer, or why there is none, with the `host:port` it came from.
#[derive(Debug, Clone)]
pub(crate) struct PeerOutcome {
    /// The `host:port` of [`ControlOptions::peers`](crate::ControlOptions::peers) it came from.
    pub(crate) target: String,
    pub(crate) result: Result<PeerAnswer, PeerError>,
}

/// The peers of this replica and how to reach them.
#[derive(Debug)]
pub(crate) struct Peers {
    targets: Vec<String>,
    limits: PeerLimits,
    tls: Arc<ClientConfig>,
    /// This replica's instance id: an answer carrying it is this replica's own.
    own_instance: String,
    /// Bounds the views assembled at once ([`MAX_VIEWS_IN_FLIGHT`]).
    in_flight: tokio::sync::Semaphore,
}

// === impl Peers ===

impl Peers {
    /// Checks `targets` (each `host:port`) and `limits`, naming what is refused.
    pub(crate) fn check(targets: &[String], limits: &PeerLimits) -> Result<(), InvalidPeer> {
        limits.check()?;
        if targets.len() > MAX_PEER_NAMES {
            return Err(InvalidPeer {
                peer: format!("peers ({} given)", targets.len()),
                reason: format!("at most {MAX_PEER_NAMES} names"),
            });
        }
        for target in targets {
            let refuse = |reason: &str| InvalidPeer {
                peer: target.clone(),
                reason: reason.to_owned(),
            };
            let (host, port) = target
                .rsplit_once(':')
                .ok_or_else(|| refuse("expected host:port"))?;
            if host.is_empty() {
                return Err(refuse("expected host:port (no host)"));
            }
            match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(refuse("expected host:port (port 1 to 65535)")),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Peers at `targets`, which must present `identity` (the control service's own); this
    /// replica presents its own certificate from `own_cert`, and checks theirs against `trust`.
    pub(crate) fn new(
        targets: Vec<String>,
        limits: PeerLimits,
        identity: SpiffeId,
        trust: TrustStore,
        own_cert: Arc<dyn ResolvesClientCert>,
        own_instance: String,
    ) -> Result<Self, rustls::Error> {
        let verifier = SpiffeServerVerifier::new(trust, identity);
        let mut tls = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            // Not dangerous in fact: the SPIFFE verifier checks the chain and that the peer is
            // the control service, as workloads check it.
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(own_cert);
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            targets,
            limits,
            tls: Arc::new(tls),
            own_instance,
            in_flight: tokio::sync::Semaphore::new(MAX_VIEWS_IN_FLIGHT),
        })
    }

    /// Whether any peer is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Asks every peer address at once, each within the timeout; this replica's own answer
    /// (reached through a name that resolves to it too) is left out.
    pub(crate) async fn ask_all(&self) -> Vec<PeerOutcome> {
        // Never closed: the permit always comes.
        let _turn = self.in_flight.acquire().await;
        let mut outcomes = Vec::new();
        let mut addrs: Vec<(String, SocketAddr)> = Vec::new();
        for target in &self.targets {
            let lookup = tokio::time::timeout(
                self.limits.timeout,
                tokio::net::lookup_host(target.as_str()),
            )
            .await;
            let resolved = match lookup {
                Ok(Ok(resolved)) => resolved,
                Ok(Err(error)) => {
                    outcomes.push(failed(
                        target,
                        PeerError::Resolve {
                            peer: target.clone(),
                            reason: error.to_string(),
                        },
                    ));
                    continue;
                }
                Err(_) => {
                    outcomes.push(failed(
                        target,
                        PeerError::Resolve {
                            peer: target.clone(),
                            reason: format!("no answer within {:?}", self.limits.timeout),
                        },
                    ));
                    continue;
                }
            };
            for addr in resolved {
                if !addrs.iter().any(|(_, a)| *a == addr) {
                    addrs.push((target.clone(), addr));
                }
            }
        }
        let over = addrs.split_off(addrs.len().min(self.limits.max_peers));
        for (target, addr) in over {
            outcomes.push(failed(
                &target,
                PeerError::OverLimit {
                    peer: addr.to_string(),
                    max: self.limits.max_peers,
                },
            ));
        }
        let asked = addrs.into_iter().map(|(target, addr)| async move {
            let result = match tokio::time::timeout(self.limits.timeout, self.ask(addr)).await {
                Ok(result) => result,
                Err(_) => Err(PeerError::Timeout {
                    peer: addr.to_string(),
                    after: self.limits.timeout,
                }),
            };
            (target, result)
        });
        for (target, result) in futures_util::future::join_all(asked).await {
            let result = match result {
                // Itself, through a name that resolves to every replica: not a peer.
                Ok(None) => continue,
                Ok(Some(answer)) => Ok(answer),
                Err(error) => {
                    tracing::warn!(%error, "a peer replica's subscribers are missing from the view");
                    Err(error)
                }
            };
            outcomes.push(PeerOutcome { target, result });
        }
        outcomes
    }

    /// Asks one peer address (the caller bounds the time); `None` when it is this replica.
    async fn ask(&self, addr: SocketAddr) -> Result<Option<PeerAnswer>, PeerError> {
        let peer = addr.to_string();
        let connect_failed = |reason: String| PeerError::Connect {
            peer: peer.clone(),
            reason,
        };
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| connect_failed(e.to_string()))?
            .connect_timeout(self.limits.timeout);
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_uri| {
                let connector = connector.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await?;
                    let _ = tcp.set_nodelay(true);
                    // Any name will do: the SPIFFE verifier checks the identity.
                    let name = ServerName::IpAddress(addr.ip().into());
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|e| connect_failed(error_chain(&e)))?;
        let answer = ControlClient::new(channel)
            .max_decoding_message_size(self.limits.max_response_bytes)
            .replica_subscribers(ReplicaSubscribersRequest {})
            .await
            .map_err(|status| PeerError::Refused {
                peer: peer.clone(),
                code: status.code(),
                message: status.message().to_owned(),
            })?
            .into_inner();
        if answer.instance == self.own_instance {
            return Ok(None);
        }
        let rows = match serde_json::from_str(&answer.subscribers_json) {
            Ok(serde_json::Value::Array(rows)) => rows,
            Ok(_) => {
                return Err(PeerError::BadAnswer {
                    peer,
                    reason: "subscribers_json is not a JSON array".to_owned(),
                });
            }
            Err(error) => {
                return Err(PeerError::BadAnswer {
                    peer,
                    reason: format!("subscribers_json: {error}"),
                });
            }
        };
        Ok(Some(PeerAnswer {
            addr,
            replica: answer.replica,
            config_version: answer.config_version,
            rows,
        }))
    }
}

fn failed(target: &str, error: PeerError) -> PeerOutcome {
    PeerOutcome {
        target: target.to_owned(),
        result: Err(error),
    }
}

/// An error and its sources on one line (tonic's transport error says only "transport error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        // An I/O error wrapped as its own source reads the same twice: once is enough.
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_checked_naming_the_one_refused() {
        let limits = PeerLimits::default();
        let ok = vec![
            "mesh-control-peers.mesh-system:7400".to_owned(),
            "10.0.0.2:7400".to_owned(),
        ];
        assert_eq!(Peers::check(&ok, &limits), Ok(()));
        for (bad, reason) in [
            ("no-port", "expected host:port"),
            (":7400", "no host"),
            ("a:0", "port 1 to 65535"),
            ("a:http", "port 1 to 65535"),
        ] {
            let error = Peers::check(&[bad.to_owned()], &limits).unwrap_err();
            assert_eq!(error.peer, bad);
            assert!(error.reason.contains(reason), "{bad}: {error}");
        }
        let zero = PeerLimits {
            max_peers: 0,
            ..limits
        };
        let error = Peers::check(&ok, &zero).unwrap_err();
        assert_eq!(
            error.to_string(),
            "peer_limits.max_peers: must be at least 1"
        );
    }
}
