//! Starting and stopping: start-up errors, the dev CA across restarts, the trust bundle file,
//! the admin endpoints, shutdown and drop.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_control::{CaSource, ConfigSource, ControlOptions, StartError};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

fn file_options(path: PathBuf) -> ControlOptions {
    ControlOptions::new(trust_domain(), ConfigSource::File(path))
}

/// A minimal HTTP/1.1 GET; returns the status code and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("admin connects");
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request sent");
    let mut response = String::new();
    tcp.read_to_string(&mut response)
        .await
        .expect("response read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn a_bad_initial_config_names_the_file_and_the_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.yaml");
    std::fs::write(
        &path,
        "bootstrapTokens:\n  - token: abc\n    namespace: default\n    serviceAccount: Nope\n",
    )
    .expect("write");
    let err = mesh_control::start(file_options(path.clone()))
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("bootstrapTokens[0].serviceAccount: "), "{err}");

    std::fs::write(&path, "services:\n  - name: a\n    unknown: 1\n").expect("write");
    let err = mesh_control::start(file_options(path.clone()))
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("line 3 column 5"), "{err}");

    let missing = dir.path().join("missing.yaml");
    let err = mesh_control::start(file_options(missing.clone()))
        .await
        .expect_err("refused");
    assert!(matches!(err, StartError::ConfigFile(_)), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let err = mesh_control::start(ControlOptions::new(
        trust_domain(),
        ConfigSource::Inline("services: 1\n".into()),
    ))
    .await
    .expect_err("refused")
    .to_string();
    assert!(err.starts_with("inline config: "), "{err}");
}

#[tokio::test]
async fn a_port_in_use_or_a_bad_ca_file_is_a_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(1)));
    options.listen = taken.local_addr().expect("addr");
    let err = mesh_control::start(options).await.expect_err("port in use");
    assert!(matches!(err, StartError::Bind { .. }), "{err:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root.pem");
    std::fs::write(&root, "not PEM").expect("write");
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(1)));
    options.ca = CaSource::Files {
        root_cert: root.clone(),
        issuer_cert: root.clone(),
        issuer_key: dir.path().join("key.pem"),
    };
    let err = mesh_control::start(options).await.expect_err("bad CA");
    assert!(matches!(err, StartError::Ca(_)), "{err:?}");
    assert!(
        err.to_string().contains(&root.display().to_string()),
        "{err}"
    );

    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(1)));
    options.namespace = "Mesh System".into();
    let err = mesh_control::start(options)
        .await
        .expect_err("bad namespace");
    assert!(matches!(err, StartError::Namespace { .. }), "{err:?}");

    // A root rotation too short for the certificates' lifetime, or on a CA in files.
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(1)));
    options.root_rotation = Some(mesh_core::anchor_rotation::RotationSchedule {
        root_lifetime: std::time::Duration::from_secs(60),
        ..Default::default()
    });
    let err = mesh_control::start(options)
        .await
        .expect_err("rotation shorter than a leaf");
    assert!(matches!(err, StartError::RootRotation(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("root_rotation.root_lifetime"),
        "{err}"
    );
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(1)));
    options.ca = CaSource::Files {
        root_cert: root.clone(),
        issuer_cert: root.clone(),
        issuer_key: dir.path().join("key.pem"),
    };
    options.root_rotation = Some(mesh_core::anchor_rotation::RotationSchedule::default());
    let err = mesh_control::start(options)
        .await
        .expect_err("rotation of a CA in files");
    assert!(matches!(err, StartError::RootRotationSource), "{err:?}");
}

#[tokio::test]
async fn the_dev_ca_survives_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let bundle_path = dir.path().join("out/trust-bundle.pem");
    let options = || {
        let mut options =
            ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(5000)));
        options.ca = CaSource::Dev {
            state_dir: state_dir.clone(),
        };
        options.trust_bundle_out = Some(bundle_path.clone());
        options
    };

    let first = mesh_control::start(options()).await.expect("starts");
    let first_root = first.trust_bundle().roots().to_vec();
    let written = std::fs::read_to_string(&bundle_path).expect("bundle written");
    assert_eq!(written, first.trust_bundle_pem());
    // A certificate issued before the restart.
    let cert = obtain_cert(&first, "client-token-0123456789").await;
    first.shutdown().await;

    let second = mesh_control::start(options()).await.expect("restarts");
    assert_eq!(
        second.trust_bundle().roots(),
        first_root.as_slice(),
        "same root"
    );
    assert_eq!(
        std::fs::read_to_string(&bundle_path).expect("bundle"),
        written
    );
    // The old certificate is still good for Watch against the restarted service.
    let mut client = connect(&second, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("n", &["greeter"]))
        .await
        .expect("opens");
    assert_eq!(watch.next().await.version, 1);
    second.shutdown().await;
}

#[tokio::test]
async fn admin_reports_health_readiness_and_subscribers() {
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(5000)));
    options.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let control = mesh_control::start(options).await.expect("starts");
    let admin = control.admin_addr().expect("admin bound");

    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    assert_eq!(http_get(admin, "/nope").await.0, 404);

    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("pod-z", &["greeter"]))
        .await
        .expect("opens");
    watch.next().await;
    watch.send(ack(1, "")).await;
    assert_eventually(WAIT, "ACK recorded", || {
        control
            .subscribers()
            .first()
            .is_some_and(|s| s.last_acked_version == Some(1))
    })
    .await;
    let (status, body) = http_get(admin, "/subscribers").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["configVersion"], 1);
    assert_eq!(json["subscribers"][0]["node"], "pod-z");
    assert_eq!(json["subscribers"][0]["lastAckedVersion"], 1);
    assert_eq!(json["subscribers"][0]["stale"], false);

    control.shutdown().await;
    assert!(
        TcpStream::connect(admin).await.is_err(),
        "admin still listening after shutdown"
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let control = start_inline(&config_yaml(5000)).await;
    let addr = control.addr();
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("n", &["greeter"]))
        .await
        .expect("opens");
    watch.next().await;
    drop(control);
    let status = watch.end_status().await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Nothing accepts any more.
    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_slow_handshake_does_not_block_others() {
    let control = start_inline(&config_yaml(5000)).await;
    // Connections that never speak TLS.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(control.addr()).await.expect("tcp"));
    }
    let mut client = connect(&control, None).await;
    let (_, csr) = key_and_csr();
    tokio::time::timeout(WAIT, certify(&mut client, "greeter-token-0123456789", csr))
        .await
        .expect("not blocked by idle connections")
        .expect("certified");
    drop(idle);
    control.shutdown().await;
}

/// The leaf certificate the control service presents on a fresh connection.
async fn served_leaf(control: &mesh_control::RunningControl) -> Vec<u8> {
    use std::sync::Arc;

    use mesh_core::tls::{SpiffeServerVerifier, TrustStore, crypto_provider};
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            TrustStore::new(control.trust_bundle()),
            control.identity().clone(),
        )))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(control.addr()).await.expect("tcp");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::IpAddress(control.addr().ip().into()),
            tcp,
        )
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

#[tokio::test]
async fn the_control_certificate_is_reissued_before_it_expires() {
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(5000)));
    options.cert_lifetime = Duration::from_secs(3);
    let control = mesh_control::start(options).await.expect("starts");
    let first = served_leaf(&control).await;
    // Re-issued at 70 % of 3 s.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let second = served_leaf(&control).await;
    assert_ne!(first, second, "a new certificate is served");
    control.shutdown().await;
}

#[tokio::test]
async fn a_dev_ca_rotates_its_root_and_a_restart_resumes_from_the_state_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let options = || {
        let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(1)));
        options.ca = CaSource::Dev {
            state_dir: state_dir.clone(),
        };
        options.cert_lifetime = std::time::Duration::from_secs(2);
        options.root_rotation = Some(mesh_core::anchor_rotation::RotationSchedule {
            root_lifetime: std::time::Duration::from_secs(12),
            rotate_at_percent: 50,
            ack_timeout: std::time::Duration::from_secs(1),
        });
        options
    };
    let control = mesh_control::start(options()).await.expect("starts");
    let first = control.trust_bundle_pem();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline
        && (control.trust_bundle().roots().len() != 1 || control.trust_bundle_pem() == first)
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let rotated = control.trust_bundle_pem();
    assert_ne!(rotated, first, "the root rotated");
    assert_eq!(control.trust_bundle().roots().len(), 1);
    control.shutdown().await;

    // The state directory holds the new root, in the rotation's state and as ca.crt.
    let ca_crt = std::fs::read_to_string(state_dir.join("ca.crt")).expect("ca.crt");
    assert_eq!(ca_crt, rotated);
    assert!(state_dir.join("ca-rotation.json").exists());
    let restarted = mesh_control::start(options()).await.expect("restarts");
    assert_eq!(restarted.trust_bundle_pem(), rotated);
    restarted.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_that_never_acks_the_two_roots_holds_the_switch_only_until_ack_timeout() {
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(1)));
    options.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    options.cert_lifetime = Duration::from_secs(2);
    options.root_rotation = Some(mesh_core::anchor_rotation::RotationSchedule {
        root_lifetime: Duration::from_secs(12),
        rotate_at_percent: 50,
        ack_timeout: Duration::from_secs(2),
    });
    let control = mesh_control::start(options).await.expect("starts");
    let admin = control.admin_addr().expect("admin port");

    // A subscriber that ACKs the first version, then nothing more.
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("stuck", &["greeter"]))
        .await
        .expect("opens");
    watch.next().await;
    watch.send(ack(1, "")).await;

    let mut saw_unacked = false;
    let mut steps = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let (_, body) = http_get(admin, "/subscribers").await;
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let subscriber = &json["subscribers"][0];
        assert!(subscriber["certificateIssuerKeyId"].is_string(), "{json}");
        if json["rootRotation"]["phase"] == "overlap" {
            saw_unacked |= subscriber["bundleAcked"] == false;
        }
        steps = json["rootRotation"]["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|t| {
                format!(
                    "{}/{}",
                    t["phase"].as_str().unwrap_or(""),
                    t["reason"].as_str().unwrap_or("")
                )
            })
            .collect();
        if steps.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_unacked, "/subscribers showed the subscriber behind");
    assert_eq!(
        steps[..3],
        [
            "overlap/scheduled",
            "issuing_next/ack_timeout",
            "steady/old_leaves_expired"
        ],
        "{steps:?}"
    );
    control.shutdown().await;
}
