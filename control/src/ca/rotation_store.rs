//! Where a rotating CA keeps its state (roots A and B with their keys, the phase and since
//! when): nowhere (an in-memory CA: a restart starts a new root), a file in the dev CA's state
//! directory (`ca-rotation.json`, mode 0600; the root in force is also kept as `ca.crt` and
//! `ca.key`), or a Kubernetes Secret that every replica reads at start and follows, so that
//! replicas and restarts agree.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::anchor_rotation::{Phase, Rotation};
use serde::{Deserialize, Serialize};

use super::issuer::{CaError, RootPair, write_dev_root};
#[cfg(feature = "kubernetes")]
use crate::source::kubernetes::ca_secret::{CaSecret, Written};

/// A rotation's whole state: what a restart or another replica resumes from.
#[derive(Debug, Clone)]
pub(crate) struct Resumed {
    pub(crate) rotation: Rotation,
    pub(crate) current: RootPair,
    pub(crate) next: Option<RootPair>,
    /// Counts the steps ever taken: a replica adopts a stored state with a higher one.
    pub(crate) generation: u64,
}

/// The state file in a dev CA's state directory.
const STATE_FILE: &str = "ca-rotation.json";

/// The stored form: PEM and Unix seconds, as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    generation: u64,
    phase: String,
    since_unix: u64,
    current_cert_pem: String,
    current_key_pem: String,
    #[serde(default)]
    next_cert_pem: Option<String>,
    #[serde(default)]
    next_key_pem: Option<String>,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The stored state does not parse, or its roots do not load.
    #[error("the stored CA state is unusable: {0}")]
    Invalid(String),
    /// A root in it does not load, or a file could not be written.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The state file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The API refused or failed.
    #[cfg(feature = "kubernetes")]
    #[error("the CA Secret: {0}")]
    Kubernetes(#[from] kube::Error),
}

/// Where the state lives.
#[derive(Clone)]
pub(crate) enum RotationStore {
    /// Nowhere: it dies with the process.
    Memory,
    /// A dev CA's state directory.
    Dir(PathBuf),
    /// A Secret, with the version last read or written.
    #[cfg(feature = "kubernetes")]
    Secret {
        secret: CaSecret,
        version: Option<String>,
    },
}

/// What saving found.
pub(crate) enum Saved {
    /// Stored (or nowhere to store).
    Stored,
    /// Another replica stored a state first; adopt it.
    Adopt(Box<Resumed>),
}

// === impl RotationStore ===

impl RotationStore {
    /// The stored state, if any (remembering the version read).
    pub(crate) async fn load(&mut self) -> Result<Option<Resumed>, StoreError> {
        match self {
            Self::Memory => Ok(None),
            Self::Dir(dir) => {
                let path = dir.join(STATE_FILE);
                match tokio::fs::read(&path).await {
                    Ok(bytes) => decode(&bytes).map(Some),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(StoreError::Io { path, source }),
                }
            }
            #[cfg(feature = "kubernetes")]
            Self::Secret { secret, version } => match secret.read().await? {
                None => Ok(None),
                Some((bytes, read)) => {
                    *version = Some(read);
                    decode(&bytes).map(Some)
                }
            },
        }
    }

    /// Stores `state` over the version last seen; on a conflict returns what is stored now.
    pub(crate) async fn save(&mut self, state: &Resumed) -> Result<Saved, StoreError> {
        match self {
            Self::Memory => Ok(Saved::Stored),
            Self::Dir(dir) => {
                let (dir, bytes) = (dir.clone(), encode(state)?);
                let (cert_pem, key_pem) = state.current.to_pem();
                let steady = state.next.is_none();
                // Small files, but fsynced: off the async workers.
                tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                    if steady {
                        write_dev_root(&dir, &cert_pem, &key_pem)?;
                    }
                    let path = dir.join(STATE_FILE);
                    mesh_process::atomic_file::write(&path, &bytes, 0o600)
                        .map_err(|source| StoreError::Io { path, source })
                })
                .await
                .map_err(|e| StoreError::Invalid(e.to_string()))??;
                Ok(Saved::Stored)
            }
            #[cfg(feature = "kubernetes")]
            Self::Secret { secret, version } => {
                match secret.write(&encode(state)?, version.as_deref()).await? {
                    Written::Stored(stored) => {
                        *version = Some(stored);
                        Ok(Saved::Stored)
                    }
                    Written::Conflict(Some((bytes, read))) => {
                        *version = Some(read);
                        Ok(Saved::Adopt(Box::new(decode(&bytes)?)))
                    }
                    Written::Conflict(None) => {
                        // Deleted under us: create it again at the next save.
                        *version = None;
                        Err(StoreError::Invalid(
                            "the Secret vanished during a write".into(),
                        ))
                    }
                }
            }
        }
    }

    /// Whether another replica may change the state (so it is read again now and then).
    pub(crate) fn shared(&self) -> bool {
        #[cfg(feature = "kubernetes")]
        if matches!(self, Self::Secret { .. }) {
            return true;
        }
        false
    }
}

fn encode(state: &Resumed) -> Result<Vec<u8>, StoreError> {
    let (current_cert_pem, current_key_pem) = state.current.to_pem();
    let (next_cert_pem, next_key_pem) = match &state.next {
        Some(next) => {
            let (cert, key) = next.to_pem();
            (Some(cert), Some(key))
        }
        None => (None, None),
    };
    let stored = Stored {
        generation: state.generation,
        phase: state.rotation.phase.as_str().to_owned(),
        since_unix: unix(state.rotation.since),
        current_cert_pem,
        current_key_pem,
        next_cert_pem,
        next_key_pem,
    };
    serde_json::to_vec(&stored).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn decode(bytes: &[u8]) -> Result<Resumed, StoreError> {
    let stored: Stored =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let phase = match stored.phase.as_str() {
        "steady" => Phase::Steady,
        "overlap" => Phase::Overlap,
        "issuing_next" => Phase::IssuingNext,
        other => return Err(StoreError::Invalid(format!("unknown phase {other:?}"))),
    };
    let current = RootPair::from_pem(&stored.current_cert_pem, &stored.current_key_pem)?;
    let next = match (&stored.next_cert_pem, &stored.next_key_pem) {
        (Some(cert), Some(key)) => Some(RootPair::from_pem(cert, key)?),
        (None, None) => None,
        _ => return Err(StoreError::Invalid("a next root without its key".into())),
    };
    if phase != Phase::Steady && next.is_none() {
        return Err(StoreError::Invalid(format!(
            "phase {} without a next root",
            stored.phase
        )));
    }
    Ok(Resumed {
        rotation: Rotation {
            phase,
            since: UNIX_EPOCH + Duration::from_secs(stored.since_unix),
        },
        current,
        next,
        generation: stored.generation,
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_survives_encoding() {
        let td = mesh_core::testing::trust_domain();
        let a = RootPair::generate(&td, Duration::from_secs(60)).expect("root");
        let b = RootPair::generate(&td, Duration::from_secs(60)).expect("root");
        let state = Resumed {
            rotation: Rotation {
                phase: Phase::IssuingNext,
                since: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            },
            current: a.clone(),
            next: Some(b.clone()),
            generation: 7,
        };
        let back = decode(&encode(&state).expect("encode")).expect("decode");
        assert_eq!(back.rotation, state.rotation);
        assert_eq!(back.generation, 7);
        assert_eq!(back.current.cert, a.cert);
        assert_eq!(back.next.map(|n| n.cert), Some(b.cert));
        assert!(decode(b"{}").is_err());
    }
}
