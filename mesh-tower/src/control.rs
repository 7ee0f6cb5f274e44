//! The service's side of the control protocol: connecting to the control service over TLS,
//! asking for certificates (`Certify`) and following snapshots (`Watch`).
//!
//! Both workers run for the life of the mesh handle. The watch worker reconnects with jittered
//! exponential backoff, fails over between the control service's replicas ([`connector`] says
//! which it starts from and why), and keeps the last good snapshot in force while disconnected.
//!
//! The watch worker announces that it takes increments (`Subscribe.incremental`): after a
//! first full snapshot the control service sends only what changed. The worker keeps the
//! last wire snapshot it received, brings it forward with each increment
//! ([`mesh_core::delta::apply`]) and validates the result exactly as a full snapshot, so the
//! request path never sees the difference. An increment over a version it does not hold (a
//! lost message) is answered with `Ack.resync`, and increments are ignored until the full
//! snapshot that answers it arrives. A control service that predates increments ignores the
//! announcement and sends full snapshots, which are followed as before.
//!
//! When the snapshots ask for it (`edge_report_interval_ms`), the watch worker also sends an
//! `EdgeReport` on the same stream at that interval: what this workload's calls to each
//! destination did since the last one ([`crate::edges`]). A control service that predates
//! reports never asks, and is never sent one.

mod connector;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::TrustDomain;
use mesh_core::backoff::Backoff;
use mesh_core::delta;
use mesh_core::proto::{
    Ack, NACK_INVALID_FIELD, NACK_TRUST_BUNDLE, NackDetail, Subscribe, WatchRequest, watch_request,
};
use mesh_core::snapshot::{ServiceName, Snapshot};
use mesh_core::tls::{TrustBundle, TrustStore, VerifyError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub(crate) use connector::ControlConnector;

use crate::discovery::{Discovery, Wanted};
use crate::edges::Edges;
use crate::identity::{Identity, IdentityError, KeyAndCsr, Svid};
use crate::persist::StateDir;
use crate::settings::TokenSource;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The shortest report interval followed, whatever a control service asks: reports cost the
/// workload a drain of its counters and the control service a merge.
const MIN_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The longest report interval followed.
const MAX_REPORT_INTERVAL: Duration = Duration::from_secs(3600);

/// Obtains a certificate: a new key, a CSR, the token as proof, and the reply checked.
pub(crate) async fn certify(
    connector: &ControlConnector,
    trust: &TrustStore,
    token: &TokenSource,
    trust_domain: &TrustDomain,
) -> Result<(Svid, TrustBundle), IdentityError> {
    let key = KeyAndCsr::generate()?;
    let token = read_token(token).await?;
    let mut grpc = connector.connect(trust, None).await?;
    let reply = grpc
        .certify(key.request(token))
        .await
        .map_err(|status| {
            IdentityError::Refused(format!("{:?}: {}", status.code(), status.message()))
        })?
        .into_inner();
    key.accept(reply, trust_domain)
}

async fn read_token(token: &TokenSource) -> Result<String, IdentityError> {
    match token {
        TokenSource::Inline(token) => Ok(token.clone()),
        // Read at every request: a projected token is rotated by the kubelet.
        TokenSource::File(path) => tokio::fs::read_to_string(path)
            .await
            .map(|t| t.trim().to_owned())
            .map_err(|source| IdentityError::Token {
                path: path.clone(),
                source,
            }),
    }
}

/// Renews the certificate at about 70 % of its life, retrying with backoff until it expires.
pub(crate) async fn renew_forever(
    connector: Arc<ControlConnector>,
    identity: Identity,
    token: TokenSource,
    trust_domain: TrustDomain,
    state: Option<Arc<StateDir>>,
) {
    loop {
        let wait = identity
            .renew_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            match certify(&connector, identity.trust(), &token, &trust_domain).await {
                Ok((svid, bundle)) => {
                    tracing::info!(
                        id = %svid.id,
                        valid_for_secs = svid.valid_for().as_secs(),
                        "certificate renewed"
                    );
                    identity.rotate(svid, bundle);
                    if let Some(state) = &state {
                        // A restart while the control service is down needs the new one:
                        // the old one may expire before the control service is back.
                        state.save_identity(&identity.svid()).await;
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "certificate renewal failed; retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        }
    }
}

/// Who this subscriber is, as told to the control service.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub(crate) node: String,
    pub(crate) own_service: Option<ServiceName>,
}

/// Why a Watch stream ended in failure.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    /// The control service could not be reached.
    #[error(transparent)]
    Connect(#[from] crate::error::ConnectError),
    /// The control service refused the stream.
    #[error("Watch refused: {:?}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    /// The stream failed after it was opened.
    #[error("Watch stream: {:?}: {}", .0.code(), .0.message())]
    Stream(tonic::Status),
}

/// Follows snapshots for as long as the mesh lives, reconnecting with backoff, and reports
/// `edges` when the control service asks.
pub(crate) async fn watch_forever(
    connector: Arc<ControlConnector>,
    identity: Identity,
    discovery: Arc<Discovery>,
    subscriber: Subscriber,
    state: Option<Arc<StateDir>>,
    edges: Arc<Edges>,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        let result = watch_once(
            &connector,
            &identity,
            &discovery,
            &subscriber,
            state.as_deref(),
            &edges,
        )
        .await;
        discovery.set_status(|s| {
            s.connected = false;
            if let Err(error) = &result {
                s.last_error = Some(error.to_string());
            }
        });
        match result {
            Ok(received) => {
                tracing::info!("control stream ended; reconnecting");
                if received {
                    backoff.reset();
                }
            }
            Err(error) => {
                tracing::warn!(%error, "control stream failed; reconnecting");
                connector.failed();
            }
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// One Watch stream, until it ends. Returns whether any snapshot arrived.
async fn watch_once(
    connector: &ControlConnector,
    identity: &Identity,
    discovery: &Discovery,
    subscriber: &Subscriber,
    state: Option<&StateDir>,
    edges: &Edges,
) -> Result<bool, WatchError> {
    let mut grpc = connector.connect(identity.trust(), Some(identity)).await?;
    let mut wanted = discovery.wanted();
    let (requests, outbound) = mpsc::channel(16);
    let first = subscribe_message(subscriber, &wanted.borrow_and_update());
    // The receiver is alive: it is held by `outbound` right here.
    let _ = requests.send(first).await;
    let mut snapshots = grpc
        .watch(ReceiverStream::new(outbound))
        .await
        .map_err(WatchError::Refused)?
        .into_inner();
    discovery.set_status(|s| {
        s.connected = true;
        s.last_error = None;
    });
    let mut received = false;
    let mut reports = ReportSchedule::default();
    // The last wire snapshot received on this stream, the base of the next increment; `None`
    // while a resync is awaited.
    let mut base: Option<mesh_core::proto::Snapshot> = None;
    loop {
        tokio::select! {
            () = reports.due() => {
                reports.sent();
                if let Some(report) = edges.report() {
                    let report = WatchRequest {
                        kind: Some(watch_request::Kind::EdgeReport(report)),
                    };
                    // Not awaited: a report that finds the queue full is dropped rather than
                    // hold up ACKs; the next one carries on from there.
                    let _ = requests.try_send(report);
                }
            }
            message = snapshots.message() => {
                let wire = match message {
                    Ok(Some(wire)) => wire,
                    Ok(None) => return Ok(received),
                    Err(status) => return Err(WatchError::Stream(status)),
                };
                received = true;
                let version = wire.version;
                let wire = if delta::is_increment(&wire) {
                    let applied = match base.as_mut() {
                        Some(state) => delta::apply(state, wire).map(|()| state.clone()),
                        None => {
                            // A resync is awaited: its full snapshot carries this change too.
                            tracing::debug!(version, "increment ignored until the resync");
                            continue;
                        }
                    };
                    match applied {
                        Ok(full) => full,
                        Err(error) => {
                            tracing::info!(version, %error, "asking the control service for a full snapshot");
                            base = None;
                            let resync = WatchRequest {
                                kind: Some(watch_request::Kind::Ack(Ack {
                                    version,
                                    error: error.to_string(),
                                    details: Vec::new(),
                                    resync: true,
                                })),
                            };
                            if requests.send(resync).await.is_err() {
                                return Ok(received);
                            }
                            continue;
                        }
                    }
                } else {
                    base = Some(wire.clone());
                    wire
                };
                reports.follow(wire.edge_report_interval_ms, edges);
                // Encoded before validation consumes it: the wire form is what is persisted,
                // and it is validated again the same way when loaded.
                let encoded = state.map(|_| prost::Message::encode_to_vec(&wire));
                let checked = Snapshot::try_from(wire)
                    .map_err(|errors| {
                        let details = errors
                            .errors()
                            .iter()
                            .map(|e| NackDetail::new(&e.path, &e.message, NACK_INVALID_FIELD))
                            .collect();
                        (errors.to_string(), details)
                    })
                    .and_then(|snapshot| {
                        apply_trust_bundle(identity, &snapshot)
                            .map_err(|e| {
                                let message = e.to_string();
                                let detail = NackDetail::new(
                                    "trust_bundle_der",
                                    &message,
                                    NACK_TRUST_BUNDLE,
                                );
                                (format!("trust_bundle_der: {message}"), vec![detail])
                            })
                            .map(|()| snapshot)
                    });
                let (error, details) = match checked {
                    Ok(snapshot) => {
                        tracing::debug!(version, "snapshot accepted");
                        discovery.publish(snapshot);
                        if let (Some(state), Some(encoded)) = (state, encoded) {
                            state.save_snapshot(encoded).await;
                        }
                        (String::new(), Vec::new())
                    }
                    Err((error, details)) => {
                        // The last good snapshot stays in force.
                        tracing::warn!(version, %error, "snapshot refused");
                        discovery.rejected(version, error.clone());
                        (error, details)
                    }
                };
                let ack = WatchRequest {
                    kind: Some(watch_request::Kind::Ack(Ack {
                        version,
                        error,
                        details,
                        resync: false,
                    })),
                };
                if requests.send(ack).await.is_err() {
                    return Ok(received);
                }
            }
            changed = wanted.changed() => {
                if changed.is_err() {
                    return Ok(received);
                }
                let update = subscribe_message(subscriber, &wanted.borrow_and_update());
                if requests.send(update).await.is_err() {
                    return Ok(received);
                }
            }
        }
    }
}

/// When the next edge report is due on one Watch stream: never until a snapshot asks for
/// reports, then every interval it names.
#[derive(Debug, Default)]
struct ReportSchedule {
    every: Option<Duration>,
    next: Option<tokio::time::Instant>,
}

impl ReportSchedule {
    /// Follows the interval a snapshot asks for (in milliseconds, 0 for none), within
    /// [`MIN_REPORT_INTERVAL`] and [`MAX_REPORT_INTERVAL`].
    fn follow(&mut self, interval_ms: u32, edges: &Edges) {
        let every = (interval_ms > 0).then(|| {
            Duration::from_millis(interval_ms.into())
                .clamp(MIN_REPORT_INTERVAL, MAX_REPORT_INTERVAL)
        });
        if every == self.every {
            return;
        }
        if self.every.is_none() {
            // Counts from before this stream asked (while disconnected, or from a control
            // service that never asked) would read as a burst: start afresh.
            let _ = edges.report();
        }
        self.every = every;
        self.next = every.map(|every| tokio::time::Instant::now() + every);
    }

    /// Resolves when a report is due; never while reports are off.
    async fn due(&self) {
        match self.next {
            Some(next) => tokio::time::sleep_until(next).await,
            None => std::future::pending().await,
        }
    }

    /// Schedules the next report.
    fn sent(&mut self) {
        self.next = self.every.map(|every| tokio::time::Instant::now() + every);
    }
}

/// Puts the roots a snapshot carries in force (a root rotation reaches every workload this
/// way, without a restart). A set that does not parse refuses the whole snapshot.
fn apply_trust_bundle(identity: &Identity, snapshot: &Snapshot) -> Result<(), VerifyError> {
    if snapshot.trust_bundle.is_empty() {
        return Ok(());
    }
    let trust = identity.trust();
    if trust.load().roots() == snapshot.trust_bundle.as_slice() {
        return Ok(());
    }
    let trust_domain = identity.id().trust_domain().clone();
    let bundle = TrustBundle::from_der(trust_domain, snapshot.trust_bundle.clone())?;
    tracing::info!(roots = bundle.roots().len(), "trust bundle updated");
    trust.store(bundle);
    Ok(())
}

fn subscribe_message(subscriber: &Subscriber, wanted: &Wanted) -> WatchRequest {
    WatchRequest {
        kind: Some(watch_request::Kind::Subscribe(Subscribe {
            node: subscriber.node.clone(),
            own_service: subscriber.own_service.as_ref().map(Into::into),
            destinations: wanted.destinations.iter().map(Into::into).collect(),
            grpc_services: wanted.grpc_services.iter().cloned().collect(),
            incremental: true,
        })),
    }
}
