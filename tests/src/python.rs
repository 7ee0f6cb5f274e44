//! Python programs that use the standard gRPC library (grpcio) against the mesh: where a
//! non-Rust workload would use its own gRPC library, the tests use the real one.
//!
//! The interpreter is `MESH_PYTHON` (CI sets it to a venv with grpcio), else `python3`. When it
//! cannot `import grpc` the caller skips, unless `MESH_REQUIRE_TOOLS=1` (CI), where that fails.
//! The scripts live in `tests/python/`; `hello_pb.py` there encodes the greeter's messages by
//! hand, so no code generator is needed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A Python interpreter that has grpcio, or `None` (after saying why) when there is none and
/// tools are not required.
pub fn grpcio_python() -> Option<PathBuf> {
    let python = PathBuf::from(std::env::var("MESH_PYTHON").unwrap_or_else(|_| "python3".into()));
    let has_grpc = std::process::Command::new(&python)
        .args(["-c", "import grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if has_grpc {
        return Some(python);
    }
    assert!(
        std::env::var("MESH_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "MESH_REQUIRE_TOOLS=1 but {} cannot import grpc (set MESH_PYTHON to a venv with grpcio)",
        python.display()
    );
    eprintln!(
        "skipped: {} has no grpcio (set MESH_PYTHON)",
        python.display()
    );
    None
}

/// The path of a script in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// What a finished script printed.
#[derive(Debug)]
pub struct ScriptOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `tests/python/<name>` with `args` and extra environment `envs`, killed after
/// `limit`. Panics when it cannot start or does not finish in time.
pub async fn run(
    python: &Path,
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    limit: Duration,
) -> ScriptOutput {
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script(name))
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("start python");
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish in {limit:?}"))
        .expect("wait for python");
    ScriptOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
