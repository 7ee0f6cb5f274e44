//! Replacing a file atomically: readers, and a restart after a crash, see the old content or
//! the new, never a torn write.
//!
//! The one helper for every file the mesh writes (the workload's persisted state, the control
//! service's certificates): a temporary file with a name unique to this process and this write
//! (two writers in one process never touch each other's), created with its final mode (a key
//! is never readable by others, not even for a moment), flushed, renamed over the target, and
//! the directory flushed so the rename survives a crash.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes the temporary files of concurrent writes in one process.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `contents`, the file created with permission bits `mode` (Unix). The
/// directory must exist (see [`create_private_dir`]). Blocking: call it from
/// [`write_async`] or a blocking thread, not from an async worker.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_new(&tmp, contents, mode).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    // Best effort: some file systems cannot open a directory for syncing.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// [`write`] on tokio's blocking threads, so file system calls never stall an async worker.
pub async fn write_async(path: PathBuf, contents: Vec<u8>, mode: u32) -> io::Result<()> {
    tokio::task::spawn_blocking(move || write(&path, &contents, mode))
        .await
        .map_err(io::Error::other)?
}

/// Creates `dir` and its missing parents, the ones it creates with mode 0700 (Unix).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates `tmp` (which must not exist) with `mode`, writes `contents` and flushes them.
fn write_new(tmp: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(tmp)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_content_with_the_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.pem");
        write(&path, b"one", 0o600).unwrap();
        write(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(names(dir.path()), vec!["f.pem"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn concurrent_writers_in_one_process_do_not_remove_each_others_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared");
        std::thread::scope(|scope| {
            for writer in 0..8u8 {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..50 {
                        write(path, &[writer; 64], 0o644).unwrap();
                    }
                });
            }
        });
        let content = fs::read(&path).unwrap();
        assert_eq!(content.len(), 64);
        assert!(content.iter().all(|b| *b == content[0]), "a torn write");
        assert_eq!(names(dir.path()), vec!["shared"]);
    }

    #[tokio::test]
    async fn async_write_and_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a").join("b");
        create_private_dir(&state).unwrap();
        write_async(state.join("f"), b"x".to_vec(), 0o600)
            .await
            .unwrap();
        assert_eq!(fs::read(state.join("f")).unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&state).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
