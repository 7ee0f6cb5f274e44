//! Replacing a file atomically: readers see the old content or the new, never a partial write.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes `contents` to a temporary file created with `mode` next to `path`, then renames it
/// over `path`.
pub(crate) fn write(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    // A leftover from a crash may have another mode, and the mode applies only on creation.
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    drop(file);
    if let Err(error) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn replaces_content_with_the_given_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.pem");
        write(&path, b"one", 0o600).expect("write");
        write(&path, b"two", 0o600).expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing left behind.
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
