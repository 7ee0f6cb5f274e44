//! `meshctl certify`, the binary, against a control service running in this process over real
//! sockets: the files it writes (key mode, SPIFFE ID, chain, bootstrap), a refused token, a
//! control service with the wrong identity, and `--renew` replacing the files.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_control::{ConfigSource, ControlOptions, RunningControl};
use mesh_core::testing::eventually;
use mesh_core::tls::{TrustBundle, Usage, verify_svid};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde_json::Value;
use support::*;

const GREETER_TOKEN: &str = "greeter-token-0123456789";

async fn control(lifetime: Duration) -> RunningControl {
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(5000)));
    options.cert_lifetime = lifetime;
    mesh_control::start(options).await.expect("control starts")
}

/// A directory with the trust anchors and a token file for `control`.
fn inputs(control: &RunningControl, token: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("anchors.pem"), control.trust_bundle_pem()).unwrap();
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    dir
}

/// `meshctl certify` for `control`, writing into `dir/out`, with `extra` flags.
fn command(control: &RunningControl, dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    // `localhost`, a DNS name, is sent as SNI: the control service accepts any.
    let addr = format!("localhost:{}", control.addr().port());
    command
        .arg("certify")
        .args(["--control", &addr])
        .arg("--trust-anchors")
        .arg(dir.join("anchors.pem"))
        .arg("--token-file")
        .arg(dir.join("token"))
        .arg("--out")
        .arg(dir.join("out"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "MESH_CONTROL_ADDR",
        "MESH_CONTROL_IDENTITY",
        "MESH_TRUST_DOMAIN",
        "MESH_TRUST_ANCHORS_FILE",
        "MESH_TOKEN_FILE",
        "MESH_CERT_DIR",
        "MESH_SERVICE",
        "MESH_NODE_NAME",
        "MESH_ZONE",
    ] {
        command.env_remove(var);
    }
    command
}

/// Runs the command to its end: exit status and stderr.
async fn run(mut command: Command) -> (i32, String) {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What the files in `out` hold, checked: the chain verifies against `ca.pem` for client and
/// server use, the key fits the certificate, the key file is private. Returns the SPIFFE ID
/// and the leaf's serial.
fn check_files(out: &Path) -> (String, Vec<u8>) {
    let ca = std::fs::read(out.join("ca.pem")).unwrap();
    let bundle = TrustBundle::from_pem(trust_domain(), &ca).unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(out.join("cert.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (leaf, intermediates) = chain.split_first().unwrap();
    let id = verify_svid(&bundle, leaf, intermediates, UnixTime::now(), Usage::Client).unwrap();
    verify_svid(&bundle, leaf, intermediates, UnixTime::now(), Usage::Server).unwrap();
    let key = PrivateKeyDer::from_pem_file(out.join("key.pem")).unwrap();
    // rustls checks that the key's public half is the certificate's.
    rustls::sign::CertifiedKey::from_der(chain.clone(), key, &mesh_core::tls::crypto_provider())
        .expect("the key fits the certificate");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key.pem is private");
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).unwrap();
    (id.to_string(), parsed.raw_serial().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_writes_a_certificate_for_the_tokens_identity_and_the_bootstrap() {
    let control = control(Duration::from_secs(3600)).await;
    let dir = inputs(&control, GREETER_TOKEN);
    let (code, stderr) = run(command(
        &control,
        dir.path(),
        &[
            "--service",
            "greeter.default",
            "--zone",
            "zone-a",
            "--node-id",
            "greeter-1",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let out = dir.path().join("out");
    let (id, _) = check_files(&out);
    assert_eq!(id, "spiffe://mesh.local/ns/default/sa/greeter");
    assert_eq!(
        std::fs::read_to_string(out.join("ca.pem")).unwrap(),
        control.trust_bundle_pem()
    );

    let bootstrap: Value =
        serde_json::from_slice(&std::fs::read(out.join("bootstrap.json")).unwrap()).unwrap();
    let out = std::path::absolute(&out).unwrap();
    let file = |name: &str| Value::from(out.join(name).to_str().unwrap());
    let files = serde_json::json!({
        "certificate_file": file("cert.pem"),
        "private_key_file": file("key.pem"),
        "ca_certificate_file": file("ca.pem"),
        "refresh_interval": "600s",
    });
    let server = &bootstrap["xds_servers"][0];
    assert_eq!(
        server["server_uri"],
        format!("localhost:{}", control.addr().port())
    );
    assert_eq!(
        server["channel_creds"],
        serde_json::json!([{"type": "tls", "config": files}])
    );
    assert_eq!(server["server_features"], serde_json::json!(["xds_v3"]));
    assert_eq!(
        bootstrap["node"],
        serde_json::json!({
            "id": "greeter-1",
            "cluster": "greeter.default",
            "locality": {"zone": "zone-a"},
            "metadata": {"mesh.service": "greeter.default"},
        })
    );
    assert_eq!(
        bootstrap["certificate_providers"],
        serde_json::json!({"mesh": {"plugin_name": "file_watcher", "config": files}})
    );
    assert_eq!(
        bootstrap["server_listener_resource_name_template"],
        "grpc/server?xds.resource.listening_address=%s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_node_id_is_the_service_and_the_host_name() {
    let control = control(Duration::from_secs(3600)).await;
    let dir = inputs(&control, GREETER_TOKEN);
    let mut command = command(&control, dir.path(), &["--service", "greeter.default"]);
    command.env("HOSTNAME", "pod-7");
    let (code, stderr) = run(command).await;
    assert_eq!(code, 0, "{stderr}");
    let bootstrap: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out").join("bootstrap.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(bootstrap["node"]["id"], "greeter.default~pod-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_exits_1_and_writes_nothing() {
    let control = control(Duration::from_secs(3600)).await;
    let dir = inputs(&control, "no-such-token");
    let (code, stderr) = run(command(&control, dir.path(), &[])).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    assert!(!dir.path().join("out").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_service_with_another_identity_is_not_trusted() {
    let control = control(Duration::from_secs(3600)).await;
    let dir = inputs(&control, GREETER_TOKEN);
    let (code, stderr) = run(command(
        &control,
        dir.path(),
        &[
            "--control-identity",
            "spiffe://mesh.local/ns/mesh-system/sa/impostor",
        ],
    ))
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("mesh-control"), "{stderr}");
    assert!(!dir.path().join("out").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_replaces_the_files_with_a_new_certificate() {
    // Renewed at about half of 6 s.
    let control = control(Duration::from_secs(6)).await;
    let dir = inputs(&control, GREETER_TOKEN);
    let out: PathBuf = dir.path().join("out");
    let mut command = command(&control, dir.path(), &["--renew"]);
    // Never read while it runs: its log goes to the test's output.
    command.stderr(Stdio::inherit());
    let mut child = Running(command.spawn().unwrap());
    assert!(
        eventually(Duration::from_secs(30), || out
            .join("bootstrap.json")
            .exists())
        .await,
        "the first certificate is written"
    );
    let (id, first) = check_files(&out);
    assert_eq!(id, "spiffe://mesh.local/ns/default/sa/greeter");
    let renewed = eventually(Duration::from_secs(60), || {
        // A read between two renames may find a link to a set just removed: try again.
        std::panic::catch_unwind(|| check_files(&out)).is_ok_and(|(_, serial)| serial != first)
    })
    .await;
    assert!(renewed, "a renewed certificate replaces the first");
    let (id, _) = check_files(&out);
    assert_eq!(id, "spiffe://mesh.local/ns/default/sa/greeter");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "--renew keeps running"
    );
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_follows_the_trust_bundle_through_a_root_rotation() {
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(5000)));
    options.cert_lifetime = Duration::from_secs(6);
    // A new root joins the bundle 10 s in; leaves are signed by it once subscribers ACK it.
    options.root_rotation = Some(mesh_core::anchor_rotation::RotationSchedule {
        root_lifetime: Duration::from_secs(20),
        rotate_at_percent: 50,
        ack_timeout: Duration::from_secs(3),
    });
    let control = mesh_control::start(options).await.expect("control starts");
    let dir = inputs(&control, GREETER_TOKEN);
    let out: PathBuf = dir.path().join("out");
    let mut command = command(&control, dir.path(), &["--renew", "--node-id", "py-1"]);
    command.stderr(Stdio::inherit());
    let _child = Running(command.spawn().unwrap());

    // Between renewals it holds a Watch stream with its certificate and ACKs each version.
    let following = eventually(Duration::from_secs(30), || {
        control.subscribers().iter().any(|s| {
            s.node == "py-1"
                && s.identity.as_str() == "spiffe://mesh.local/ns/default/sa/greeter"
                && s.last_acked_version == Some(s.last_sent_version)
        })
    })
    .await;
    assert!(following, "{:?}", control.subscribers());
    // The next root reaches ca.pem while the old one still signs.
    let roots = |out: &Path| {
        std::fs::read(out.join("ca.pem"))
            .ok()
            .and_then(|pem| TrustBundle::from_pem(trust_domain(), &pem).ok())
            .map_or(0, |bundle| bundle.roots().len())
    };
    assert!(
        eventually(Duration::from_secs(60), || roots(&out) == 2).await,
        "both roots in ca.pem"
    );
    // Whatever the phase, the files verify against their own bundle.
    let (id, _) = check_files(&out);
    assert_eq!(id, "spiffe://mesh.local/ns/default/sa/greeter");
}
