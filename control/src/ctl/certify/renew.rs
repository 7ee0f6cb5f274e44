//! `--renew`: when to renew, and following the trust bundle between renewals.
//!
//! A certificate is renewed at about half its lifetime (45 % to 55 %, at random, so replicas
//! started together do not renew together), earlier than a Rust workload's 70 %: a gRPC
//! reader picks the new files up only at its next refresh (10 minutes by default), and a
//! failed renewal then still has half the lifetime to succeed in. A failed renewal is retried
//! with jittered exponential backoff (0.5 s to 30 s) until it succeeds; the files in place
//! stay valid meanwhile.
//!
//! Between renewals the command holds a Watch stream with its certificate, subscribed to no
//! destination, whose snapshots carry the trust domain's roots: a new set (a root rotation
//! adds the next root well before it signs anything) is written to `ca.pem` at once, and each
//! version is ACKed, so the workload is listed on `/subscribers` with its certificate's
//! expiry like any other.

use std::time::{Duration, SystemTime};

use mesh_core::proto::{Ack, NackDetail, Subscribe, WatchRequest, watch_request};
use mesh_core::tls::{TrustBundle, TrustStore};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::CertifyError;
use super::client::{Control, Issued};

/// The shortest wait between two failed attempts.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// When to renew a certificate valid from `not_before` to `not_after`: at 45 % to 55 % of
/// its lifetime (`jitter` in `0..1` picks where).
pub(crate) fn renew_at(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_before + life.mul_f64(0.45 + 0.10 * jitter.clamp(0.0, 1.0))
}

/// Follows the trust bundle on one Watch stream, presenting `issued`, until the stream ends or
/// fails. Each new bundle is handed to `on_bundle` (which writes it) and put in `trust`.
pub(crate) async fn follow_bundle(
    control: &Control,
    trust: &TrustStore,
    issued: &Issued,
    node: &str,
    mut on_bundle: impl FnMut(&TrustBundle) -> Result<(), CertifyError>,
) -> Result<(), CertifyError> {
    let mut grpc = control
        .connect(trust, Some((&issued.chain, &issued.key_pem)))
        .await?;
    let (requests, outbound) = mpsc::channel(4);
    let subscribe = WatchRequest {
        kind: Some(watch_request::Kind::Subscribe(Subscribe {
            node: node.to_owned(),
            ..Subscribe::default()
        })),
    };
    // The receiver is alive: `outbound` holds it right here.
    let _ = requests.send(subscribe).await;
    let refused = |status: tonic::Status| CertifyError::Refused {
        code: status.code(),
        message: status.message().to_owned(),
    };
    let mut snapshots = control_watch(&mut grpc, outbound).await.map_err(refused)?;
    while let Some(snapshot) = snapshots.message().await.map_err(refused)? {
        let mut ack = Ack {
            version: snapshot.version,
            ..Ack::default()
        };
        if !snapshot.trust_bundle_der.is_empty()
            && snapshot.trust_bundle_der.as_slice()
                != trust
                    .load()
                    .roots()
                    .iter()
                    .map(|r| r.to_vec())
                    .collect::<Vec<_>>()
                    .as_slice()
        {
            let roots = snapshot
                .trust_bundle_der
                .into_iter()
                .map(rustls_pki_types::CertificateDer::from)
                .collect();
            match TrustBundle::from_der(trust.load().trust_domain().clone(), roots)
                .map_err(|e| CertifyError::BadReply(format!("trust bundle: {e}")))
                .and_then(|bundle| on_bundle(&bundle).map(|()| bundle))
            {
                Ok(bundle) => {
                    tracing::info!(roots = bundle.roots().len(), "trust bundle updated");
                    trust.store(bundle);
                }
                Err(error) => {
                    tracing::warn!(%error, "trust bundle refused");
                    ack.error = format!("trust_bundle_der: {error}");
                    ack.details = vec![NackDetail {
                        field: "trust_bundle_der".to_owned(),
                        message: error.to_string(),
                        code: "trust_bundle".to_owned(),
                    }];
                }
            }
        }
        let ack = WatchRequest {
            kind: Some(watch_request::Kind::Ack(ack)),
        };
        if requests.send(ack).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Opens the Watch stream.
async fn control_watch(
    grpc: &mut mesh_core::proto::control_client::ControlClient<tonic::transport::Channel>,
    outbound: mpsc::Receiver<WatchRequest>,
) -> Result<tonic::Streaming<mesh_core::proto::Snapshot>, tonic::Status> {
    grpc.watch(ReceiverStream::new(outbound))
        .await
        .map(tonic::Response::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_about_half_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(1000);
        assert_eq!(renew_at(start, end, 0.0), start + Duration::from_secs(450));
        assert_eq!(renew_at(start, end, 0.5), start + Duration::from_secs(500));
        assert_eq!(renew_at(start, end, 1.0), start + Duration::from_secs(550));
        // Out of range jitter is clamped; an inverted validity renews at once.
        assert_eq!(renew_at(start, end, 7.0), start + Duration::from_secs(550));
        assert_eq!(renew_at(end, start, 0.5), end);
    }
}
