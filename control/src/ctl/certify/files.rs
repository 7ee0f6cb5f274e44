//! Writing `cert.pem`, `key.pem` and `ca.pem` so that a reader never sees a certificate with
//! another certificate's key: the three files change together, in one rename.
//!
//! The layout is the one the kubelet uses for Secret volumes, which gRPC's `file_watcher`
//! certificate provider is built to follow:
//!
//! ```text
//! DIR/cert.pem -> ..data/cert.pem
//! DIR/key.pem  -> ..data/key.pem
//! DIR/ca.pem   -> ..data/ca.pem
//! DIR/..data   -> ..certs.<time>.<pid>.<n>      (a symlink, replaced by rename)
//! DIR/..certs.<time>.<pid>.<n>/{cert,key,ca}.pem (the files; key.pem mode 0600)
//! ```
//!
//! An update writes a new `..certs.*` directory (each file flushed), then renames a new
//! `..data` symlink over the old one: every path resolves to the new set from that instant,
//! never to a mix. Then it removes the old directory. A reader that opens `key.pem` before the
//! rename and `cert.pem` after it still gets a mismatched pair; gRPC's readers cope with that
//! window: the C core checks that the key file's modification time did not change while it
//! read both files and reads again if it did (the new key's time differs), and Go's provider
//! refuses a key that does not fit and keeps the old pair until its next refresh.
//!
//! Writing `key.pem` and `cert.pem` in place one after the other (each by its own rename)
//! cannot give that: whichever goes first, there is a moment when the two do not belong
//! together, and a reader at that moment keeps the old pair for a whole refresh interval.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_process::atomic_file;

/// The certificate chain file (leaf first).
pub const CERT_FILE: &str = "cert.pem";
/// The private key file (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "key.pem";
/// The trust bundle file.
pub const CA_FILE: &str = "ca.pem";

/// The symlink to the set in force.
const DATA_LINK: &str = "..data";
/// The prefix of the directories holding one set each.
const SET_PREFIX: &str = "..certs.";

/// Distinguishes the sets one process writes within one clock tick.
static SETS: AtomicU64 = AtomicU64::new(0);

/// The three files' contents.
pub(crate) struct Pems<'a> {
    /// `cert.pem`.
    pub(crate) chain: &'a str,
    /// `key.pem`.
    pub(crate) key: &'a str,
    /// `ca.pem`.
    pub(crate) ca: &'a str,
}

/// Replaces the set in `dir` (created when missing) with `pems`. Blocking.
pub(crate) fn write_set(dir: &Path, pems: &Pems<'_>) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let set_name = format!(
        "{SET_PREFIX}{stamp}.{}.{}",
        std::process::id(),
        SETS.fetch_add(1, Ordering::Relaxed)
    );
    let set = dir.join(&set_name);
    fs::create_dir(&set)?;
    // The key first and private; each file flushed before the switch below.
    atomic_file::write(&set.join(KEY_FILE), pems.key.as_bytes(), 0o600)?;
    atomic_file::write(&set.join(CERT_FILE), pems.chain.as_bytes(), 0o644)?;
    atomic_file::write(&set.join(CA_FILE), pems.ca.as_bytes(), 0o644)?;
    // The switch: one rename of the `..data` symlink.
    replace_symlink(dir, DATA_LINK, Path::new(&set_name))?;
    for name in [CERT_FILE, KEY_FILE, CA_FILE] {
        let target = Path::new(DATA_LINK).join(name);
        if fs::read_link(dir.join(name)).ok().as_deref() != Some(target.as_path()) {
            replace_symlink(dir, name, &target)?;
        }
    }
    remove_old_sets(dir, &set_name);
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Makes `dir/name` a symlink to `target`, atomically (a temporary link renamed over it).
fn replace_symlink(dir: &Path, name: &str, target: &Path) -> io::Result<()> {
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SETS.fetch_add(1, Ordering::Relaxed)
    ));
    std::os::unix::fs::symlink(target, &tmp)?;
    let renamed = fs::rename(&tmp, dir.join(name));
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed
}

/// Removes every set but `keep`. Best effort: a leftover directory is only disk space, and the
/// next update tries again.
fn remove_old_sets(dir: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SET_PREFIX) && name != keep {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn pems<'a>(chain: &'a str, key: &'a str, ca: &'a str) -> Pems<'a> {
        Pems { chain, key, ca }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_set_is_replaced_whole_and_old_sets_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        write_set(&out, &pems("c1", "k1", "a1")).unwrap();
        write_set(&out, &pems("c2", "k2", "a2")).unwrap();
        assert_eq!(fs::read_to_string(out.join(CERT_FILE)).unwrap(), "c2");
        assert_eq!(fs::read_to_string(out.join(KEY_FILE)).unwrap(), "k2");
        assert_eq!(fs::read_to_string(out.join(CA_FILE)).unwrap(), "a2");
        let names = names(&out);
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(
            names.iter().filter(|n| n.starts_with(SET_PREFIX)).count(),
            1
        );
        let mode = fs::metadata(out.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn regular_files_left_by_another_writer_become_links() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CERT_FILE), "old").unwrap();
        write_set(dir.path(), &pems("c", "k", "a")).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join(CERT_FILE)).unwrap(), "c");
        assert!(
            fs::symlink_metadata(dir.path().join(CERT_FILE))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_reader_that_opens_both_files_at_once_never_sees_a_mix() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), &pems("0", "0", "0")).unwrap();
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                for i in 1..200 {
                    let n = i.to_string();
                    write_set(dir.path(), &pems(&n, &n, &n)).unwrap();
                }
            });
            // Reading through the `..data` link once, as a reader that resolves it first does.
            while !writer.is_finished() {
                let Ok(set) = fs::read_link(dir.path().join(DATA_LINK)) else {
                    continue;
                };
                let set = dir.path().join(set);
                if let (Ok(cert), Ok(key)) = (
                    fs::read_to_string(set.join(CERT_FILE)),
                    fs::read_to_string(set.join(KEY_FILE)),
                ) {
                    assert_eq!(cert, key);
                }
            }
        });
    }
}
