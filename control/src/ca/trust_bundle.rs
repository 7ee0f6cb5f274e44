//! The trust bundle file (`ControlOptions::trust_bundle_out`): the CA's roots as PEM, written
//! atomically at start-up and again whenever a reload changes them, for workloads that read
//! their trust anchors from disk.

use std::io;
use std::path::{Path, PathBuf};

/// The trust bundle file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("trust bundle {}: {source}", path.display())]
pub(crate) struct WriteError {
    /// Where it was to go.
    pub(crate) path: PathBuf,
    /// The I/O error.
    pub(crate) source: io::Error,
}

/// Writes `pem` to `path` (creating its directory), replacing the file atomically. Blocking:
/// call it at start-up or from a blocking thread ([`write_async`]).
pub(crate) fn write(path: &Path, pem: &str) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    mesh_process::atomic_file::write(path, pem.as_bytes(), 0o644).map_err(err)
}

/// [`write`] on tokio's blocking threads, so the directory creation and the fsyncs never stall
/// an async worker.
pub(crate) async fn write_async(path: PathBuf, pem: String) -> Result<(), WriteError> {
    let target = path.clone();
    tokio::task::spawn_blocking(move || write(&target, &pem))
        .await
        .map_err(|join| WriteError {
            path,
            source: io::Error::other(join),
        })?
}
