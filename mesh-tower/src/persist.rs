//! Static stability across restarts: the state a meshed service keeps in `MESH_STATE_DIR` so
//! that it can start, and serve, while the control service is down.
//!
//! # What is kept
//!
//! - [`SNAPSHOT_FILE`] (`snapshot.pb`): the last snapshot the service accepted, in the wire
//!   form the control service sent it (`mesh.control.v1.Snapshot`, protobuf), rewritten each
//!   time a snapshot is accepted. When it was saved is the file's modification time. On load
//!   it is validated again exactly as one from the control service is, so a file from another
//!   version of the mesh, or a damaged one, is refused rather than half-applied.
//! - [`IDENTITY_FILE`] (`identity.pem`), only when the user opted in
//!   (`MESH_PERSIST_IDENTITY=true`): the workload's private key (a `PRIVATE KEY` block,
//!   PKCS#8) followed by its certificate chain (`CERTIFICATE` blocks, leaf first), rewritten at
//!   every renewal. The file has mode 0600. Key and chain share one file so that they are
//!   replaced together: a crash can never leave a key next to another key's certificate.
//!   When the option is off, a file left from an earlier run with it on is removed.
//!
//! Every write goes to a temporary file in the same directory (created with its final mode)
//! which is flushed to disk and then renamed over the old one, so a reader, or a restart after
//! a crash, sees the old file or the new one, never a torn one. The directory is created with
//! mode 0700 when it does not exist.
//!
//! The private key never leaves the process except into [`IDENTITY_FILE`], and only with the
//! user's consent: without `MESH_PERSIST_IDENTITY` a restart needs the control service to issue
//! a new certificate, and only the snapshot (endpoints, routes, policies, trust roots; no
//! secrets) is written.
//!
//! # When it is used
//!
//! [`crate::Mesh::start`] tries the control service first. When the control service cannot be
//! reached (usable state present: after one short attempt of a couple of seconds; otherwise
//! after the whole start-up timeout) and the state directory holds a valid snapshot and an
//! unexpired identity, the mesh starts from them: it presents the persisted certificate,
//! serves with the persisted snapshot, reports `restored_from_disk` and the snapshot's age in
//! [`crate::ControlStatus`], and keeps trying the control service in the background. Without
//! usable state it fails with an error naming the file that is missing, expired or invalid.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mesh_core::TrustDomain;
use mesh_core::snapshot::Snapshot;
use mesh_core::tls::TrustBundle;
use mesh_process::atomic_file;
use prost::Message;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::identity::{PersistedIdentityError, SecretKey, Svid};

/// The last accepted snapshot, protobuf wire form.
pub const SNAPSHOT_FILE: &str = "snapshot.pb";
/// The private key and certificate chain, PEM, mode 0600 (only with `MESH_PERSIST_IDENTITY`).
pub const IDENTITY_FILE: &str = "identity.pem";

/// Why the state in `MESH_STATE_DIR` cannot be started from: which file, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No snapshot was saved.
    #[error("{} is missing: no snapshot was accepted with this MESH_STATE_DIR yet", path.display())]
    NoSnapshot {
        /// The snapshot file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The snapshot does not decode or validate.
    #[error("{} is not a valid snapshot: {reason}", path.display())]
    BadSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The snapshot's trust bundle is unusable.
    #[error("{}: the snapshot's trust bundle: {reason}", path.display())]
    BadTrustBundle {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The identity is not kept (`MESH_PERSIST_IDENTITY` is off).
    #[error(
        "no persisted identity ({} is only written with MESH_PERSIST_IDENTITY=true), so a \
         certificate must come from the control service",
        path.display()
    )]
    IdentityNotPersisted {
        /// Where it would be.
        path: PathBuf,
    },
    /// The identity file is missing.
    #[error("{} is missing", path.display())]
    NoIdentity {
        /// The identity file.
        path: PathBuf,
    },
    /// The identity file is unusable.
    #[error("{}: {source}", path.display())]
    BadIdentity {
        /// The identity file.
        path: PathBuf,
        /// What is wrong.
        source: PersistedIdentityError,
    },
}

/// The state directory of one mesh handle.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
    identity: bool,
}

/// State read back from the directory, checked and ready to use.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) snapshot: Snapshot,
    /// When the snapshot was saved.
    pub(crate) saved_at: SystemTime,
    pub(crate) svid: Svid,
    /// The roots the identity was checked against (the snapshot's, else the anchors).
    pub(crate) bundle: TrustBundle,
}

impl StateDir {
    pub(crate) fn new(dir: PathBuf, identity: bool) -> Self {
        Self { dir, identity }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Saves an accepted snapshot's wire form. A failure is logged, not returned: the service
    /// keeps working, only a restart without the control service would be affected.
    pub(crate) async fn save_snapshot(&self, wire: Vec<u8>) {
        let path = self.dir.join(SNAPSHOT_FILE);
        if let Err(error) = write_atomic(path.clone(), wire, 0o644).await {
            tracing::warn!(path = %path.display(), %error, "could not save the snapshot");
        }
    }

    /// Saves the identity when the user opted in; otherwise makes sure none is left on disk.
    pub(crate) async fn save_identity(&self, svid: &Svid) {
        let path = self.dir.join(IDENTITY_FILE);
        if !self.identity {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => tracing::info!(
                    path = %path.display(),
                    "removed a persisted identity: MESH_PERSIST_IDENTITY is off"
                ),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "could not remove the persisted identity");
                }
            }
            return;
        }
        let mut blocks = vec![pem::Pem::new("PRIVATE KEY", svid.key.0.clone())];
        blocks.extend(
            svid.certified
                .cert
                .iter()
                .map(|cert| pem::Pem::new("CERTIFICATE", cert.to_vec())),
        );
        let text = pem::encode_many(&blocks).into_bytes();
        if let Err(error) = write_atomic(path.clone(), text, 0o600).await {
            tracing::warn!(path = %path.display(), %error, "could not save the identity");
        }
    }

    /// Reads the state back and checks it: the snapshot decodes and validates, and the identity
    /// (when persisted) is unexpired, verifies to the snapshot's roots (else `anchors`) and fits
    /// its key. The error says which file is missing or unusable, and why.
    pub(crate) async fn load(
        &self,
        anchors: &TrustBundle,
        trust_domain: &TrustDomain,
    ) -> Result<Restored, StateError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let (wire, saved_at) = match read_with_mtime(&path).await {
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NoSnapshot { path });
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let snapshot = match mesh_core::proto::Snapshot::decode(wire.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|wire| Snapshot::try_from(wire).map_err(|e| e.to_string()))
        {
            Ok(snapshot) => snapshot,
            Err(reason) => return Err(StateError::BadSnapshot { path, reason }),
        };
        let bundle = if snapshot.trust_bundle.is_empty() {
            anchors.clone()
        } else {
            match TrustBundle::from_der(trust_domain.clone(), snapshot.trust_bundle.clone()) {
                Ok(bundle) => bundle,
                Err(error) => {
                    return Err(StateError::BadTrustBundle {
                        path,
                        reason: error.to_string(),
                    });
                }
            }
        };

        let path = self.dir.join(IDENTITY_FILE);
        if !self.identity {
            return Err(StateError::IdentityNotPersisted { path });
        }
        let pem = match tokio::fs::read(&path).await {
            Ok(pem) => pem,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NoIdentity { path });
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let svid = match parse_identity(&pem, &bundle) {
            Ok(svid) => svid,
            Err(source) => return Err(StateError::BadIdentity { path, source }),
        };
        Ok(Restored {
            snapshot,
            saved_at,
            svid,
            bundle,
        })
    }
}

fn parse_identity(pem: &[u8], bundle: &TrustBundle) -> Result<Svid, PersistedIdentityError> {
    let key = PrivatePkcs8KeyDer::from_pem_slice(pem)
        .map_err(|e| PersistedIdentityError::NoKey(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PersistedIdentityError::BadPem(e.to_string()))?;
    Svid::from_persisted(chain, SecretKey(key.secret_pkcs8_der().to_vec()), bundle)
}

async fn read_with_mtime(path: &Path) -> std::io::Result<(Vec<u8>, SystemTime)> {
    let bytes = tokio::fs::read(path).await?;
    let saved_at = tokio::fs::metadata(path).await?.modified()?;
    Ok((bytes, saved_at))
}

/// Replaces `path` with `contents` atomically ([`mesh_process::atomic_file`]), creating the
/// state directory (mode 0700) when it is missing. File system calls run on a blocking thread.
async fn write_atomic(path: PathBuf, contents: Vec<u8>, mode: u32) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        let dir = path
            .parent()
            .ok_or_else(|| std::io::Error::other("the state file has no directory"))?;
        atomic_file::create_private_dir(dir)?;
        atomic_file::write(&path, &contents, mode)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn writes_replace_the_file_and_leave_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("f");
        write_atomic(path.clone(), b"one".to_vec(), 0o600)
            .await
            .unwrap();
        write_atomic(path.clone(), b"two".to_vec(), 0o600)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
    }

    #[tokio::test]
    async fn missing_and_damaged_state_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let td = TrustDomain::new("mesh.local").unwrap();
        let ca = mesh_core::testing::TestCa::new("mesh.local");
        let anchors = ca.bundle();
        let state = StateDir::new(dir.path().to_owned(), true);

        let error = state.load(&anchors, &td).await.unwrap_err().to_string();
        assert!(error.contains("snapshot.pb is missing"), "{error}");

        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"\xff\xff not protobuf").unwrap();
        let error = state.load(&anchors, &td).await.unwrap_err().to_string();
        assert!(
            error.contains("snapshot.pb is not a valid snapshot"),
            "{error}"
        );

        let empty = mesh_core::proto::Snapshot {
            version: 3,
            ..Default::default()
        };
        state.save_snapshot(empty.encode_to_vec()).await;
        let error = state.load(&anchors, &td).await.unwrap_err().to_string();
        assert!(error.contains("identity.pem is missing"), "{error}");

        std::fs::write(dir.path().join(IDENTITY_FILE), b"not pem").unwrap();
        let error = state.load(&anchors, &td).await.unwrap_err().to_string();
        assert!(
            error.contains("identity.pem: no usable PRIVATE KEY"),
            "{error}"
        );

        let id = ca.id("default", "client");
        let expired = ca.issue_with(&id, mesh_core::testing::edit::expired);
        let pem = expired.key_pem() + &expired.chain_pem();
        std::fs::write(dir.path().join(IDENTITY_FILE), pem).unwrap();
        let error = state.load(&anchors, &td).await.unwrap_err().to_string();
        assert!(
            error.contains("identity.pem: the certificate expired"),
            "{error}"
        );

        let other = mesh_core::testing::TestCa::new("mesh.local").issue(&id);
        let good = ca.issue(&id);
        let pem = other.key_pem() + &good.chain_pem();
        std::fs::write(dir.path().join(IDENTITY_FILE), pem).unwrap();
        let error = state.load(&anchors, &td).await.unwrap_err().to_string();
        assert!(error.contains("the key does not fit"), "{error}");

        let without = StateDir::new(dir.path().to_owned(), false);
        let error = without.load(&anchors, &td).await.unwrap_err().to_string();
        assert!(error.contains("MESH_PERSIST_IDENTITY=true"), "{error}");
    }

    #[tokio::test]
    async fn a_saved_identity_loads_back_and_is_removed_when_not_wanted() {
        let dir = tempfile::tempdir().unwrap();
        let td = TrustDomain::new("mesh.local").unwrap();
        let ca = mesh_core::testing::TestCa::new("mesh.local");
        let id = ca.id("default", "client");
        let cert = ca.issue(&id);
        let pem = cert.key_pem() + &cert.chain_pem();
        let svid = parse_identity(pem.as_bytes(), &ca.bundle()).unwrap();
        assert_eq!(svid.id, id);
        assert!(svid.valid_for() > std::time::Duration::ZERO);
        assert!(svid.issued_at <= SystemTime::now());

        let state = StateDir::new(dir.path().to_owned(), true);
        let snapshot = mesh_core::proto::Snapshot {
            version: 7,
            ..Default::default()
        };
        state.save_snapshot(snapshot.encode_to_vec()).await;
        state.save_identity(&svid).await;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join(IDENTITY_FILE)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        let restored = state.load(&ca.bundle(), &td).await.unwrap();
        assert_eq!(restored.snapshot.version, 7);
        assert_eq!(restored.svid.id, id);
        assert_eq!(restored.svid.certified.cert, svid.certified.cert);
        assert!(restored.saved_at <= SystemTime::now());

        // The user turned the option off: the key does not stay on disk.
        StateDir::new(dir.path().to_owned(), false)
            .save_identity(&svid)
            .await;
        assert!(!dir.path().join(IDENTITY_FILE).exists());
        assert!(dir.path().join(SNAPSHOT_FILE).exists());
    }
}
