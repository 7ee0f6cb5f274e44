//! Reloading a CA kept in files (an issuer under an external root, as cert-manager provides)
//! when the files change, and rotating roots with overlap.
//!
//! Every second the three files are read; when any changed, the CA is loaded again and, if it
//! holds up (the issuer matches its key and chains to the roots), it is put in force: new
//! certificates are signed by the new issuer, the control service's own TLS trusts the new
//! roots, and the roots go to every subscriber over `Watch` as the next version. A rotation is
//! then two edits: roots `old + new` with the new issuer (old and new certificates both verify
//! while workloads renew), later roots `new` alone (certificates from the old root are refused).
//! A set of files that does not hold up (say, mid-way through copying them) is logged and the
//! CA in force stays.
//!
//! The polling task never blocks an async worker: the files are read with `tokio::fs`, and
//! loading the CA (which reads and checks them) and writing the trust bundle file (with its
//! fsyncs) run on tokio's blocking threads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::TrustDomain;
use mesh_core::tls::TrustStore;
use tokio::task::JoinHandle;

use super::issuer::{Ca, CaError, CaHandle, CaSource};
use super::trust_bundle;
use crate::state::StateStore;

/// How often the CA files are read.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a reload updates besides the CA itself.
pub(crate) struct Targets {
    pub(crate) ca: CaHandle,
    pub(crate) server_trust: TrustStore,
    pub(crate) state: Arc<StateStore>,
    pub(crate) trust_bundle_out: Option<PathBuf>,
}

/// Follows a [`CaSource::Files`] CA; other sources have nothing to reload.
pub(crate) fn spawn(
    source: CaSource,
    trust_domain: TrustDomain,
    targets: Targets,
) -> Option<JoinHandle<()>> {
    let CaSource::Files {
        root_cert,
        issuer_cert,
        issuer_key,
    } = &source
    else {
        return None;
    };
    let paths = [root_cert.clone(), issuer_cert.clone(), issuer_key.clone()];
    Some(tokio::spawn(async move {
        let mut seen = read_all(&paths).await;
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let now = read_all(&paths).await;
            if now == seen {
                continue;
            }
            seen = now;
            match load(&source, &trust_domain).await {
                Ok(ca) => apply(ca, &targets).await,
                Err(error) => {
                    tracing::warn!(%error, "CA files changed but do not hold up; the CA in force stays")
                }
            }
        }
    }))
}

/// [`Ca::load`] on tokio's blocking threads: it reads (and stats) the CA files.
async fn load(source: &CaSource, trust_domain: &TrustDomain) -> Result<Ca, LoadError> {
    let (source, trust_domain) = (source.clone(), trust_domain.clone());
    tokio::task::spawn_blocking(move || Ca::load(&source, &trust_domain))
        .await?
        .map_err(LoadError::Ca)
}

/// Why a reload did not produce a CA.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    /// The files do not hold up.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The blocking load panicked or was cancelled.
    #[error("loading the CA files: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Puts a reloaded CA in force: the server's trust, the trust bundle file (written off the
/// async workers, before the new CA signs anything), the CA, and the roots sent over Watch.
async fn apply(ca: Ca, targets: &Targets) {
    let bundle = ca.trust_bundle();
    let roots = bundle.roots().to_vec();
    targets.server_trust.store(bundle);
    if let Some(path) = &targets.trust_bundle_out
        && let Err(error) = trust_bundle::write_async(path.clone(), ca.trust_bundle_pem()).await
    {
        tracing::warn!(%error, "writing the reloaded trust bundle failed");
    }
    let count = roots.len();
    targets.ca.store(Arc::new(ca));
    match targets.state.publish_trust_bundle(roots) {
        Some(version) => tracing::info!(version, roots = count, "CA reloaded; new roots published"),
        None => tracing::info!(
            roots = count,
            "CA reloaded (issuer changed, roots unchanged)"
        ),
    }
}

async fn read_all(paths: &[PathBuf; 3]) -> [Option<Vec<u8>>; 3] {
    let mut out = [None, None, None];
    for (slot, path) in out.iter_mut().zip(paths) {
        *slot = tokio::fs::read(path).await.ok();
    }
    out
}
