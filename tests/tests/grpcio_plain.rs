//! A plain grpcio client (Python, no xDS) calls a meshed Rust greeter over mTLS: the trust
//! bundle and a certificate from `meshctl certify`, the greeter's DNS SAN as the target name
//! override. The greeter sees the Python workload's SPIFFE ID; a client whose certificate the
//! mesh's CA did not sign is refused at the handshake.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mesh_tests::python::{self, grpcio_python};
use mesh_tests::{Config, Harness, listener, spiffe};

/// How long one script may run.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `plain_client.py` against `target` with these files; its one line of output.
async fn call(
    python: &std::path::Path,
    target: &str,
    ca: &std::path::Path,
    key: &std::path::Path,
    cert: &std::path::Path,
    server_name: &str,
) -> String {
    let args = [
        target,
        ca.to_str().unwrap(),
        key.to_str().unwrap(),
        cert.to_str().unwrap(),
        server_name,
        "Py",
    ];
    let output = python::run(python, "plain_client.py", &args, &[], LIMIT).await;
    assert!(output.success, "{output:?}");
    output.stdout.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_grpcio_client_with_a_certify_certificate_calls_a_meshed_greeter() {
    let Some(python) = grpcio_python() else {
        return;
    };
    let greeter_listener = listener().await.unwrap();
    let addr = greeter_listener.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(addr, "greeter")])
        .account("greeter")
        .account("py-client");
    let harness = Harness::start(&config).await.unwrap();
    let greeter = harness
        .greeter(greeter_listener, "greeter-1", "greeter")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = harness
        .certify_files("py-client", dir.path(), &[])
        .await
        .unwrap();

    // Verified by name (the greeter's certificate carries greeter.default.svc and
    // greeter.default.svc.cluster.local), and by the mesh's SPIFFE verifier on the server.
    for server_name in ["greeter.default.svc", "greeter.default.svc.cluster.local"] {
        let reply = call(
            &python,
            &addr.to_string(),
            &files.ca,
            &files.key,
            &files.cert,
            server_name,
        )
        .await;
        assert_eq!(
            reply,
            format!(
                "OK Hello, Py! from greeter-1 ({}) to {}",
                spiffe("greeter"),
                spiffe("py-client")
            )
        );
    }
    assert_eq!(greeter.greeter.served(), 2);

    // A name the greeter's certificate does not carry fails grpcio's own hostname check.
    let reply = call(
        &python,
        &addr.to_string(),
        &files.ca,
        &files.key,
        &files.cert,
        "other.default.svc",
    )
    .await;
    assert!(reply.starts_with("ERROR UNAVAILABLE"), "{reply}");
    assert_eq!(greeter.greeter.served(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_grpcio_client_with_a_certificate_from_another_ca_is_refused() {
    let Some(python) = grpcio_python() else {
        return;
    };
    let greeter_listener = listener().await.unwrap();
    let addr = greeter_listener.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(addr, "greeter")])
        .account("greeter");
    let harness = Harness::start(&config).await.unwrap();
    let greeter = harness
        .greeter(greeter_listener, "greeter-1", "greeter")
        .await
        .unwrap();
    // Same trust domain, same SPIFFE ID shape, another CA: what an impostor can make.
    let other_ca = mesh_core::testing::TestCa::new("mesh.local");
    let forged = other_ca.issue(&other_ca.id("default", "py-client"));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, forged.chain_pem()).unwrap();
    std::fs::write(&key, forged.key_pem()).unwrap();

    let reply = call(
        &python,
        &addr.to_string(),
        &harness.anchors,
        &key,
        &cert,
        "greeter.default.svc",
    )
    .await;
    assert!(reply.starts_with("ERROR UNAVAILABLE"), "{reply}");
    assert_eq!(greeter.greeter.served(), 0, "no call reached the greeter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meshed_server_accepts_any_server_name() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let greeter_listener = listener().await.unwrap();
    let addr = greeter_listener.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(addr, "greeter")])
        .account("greeter")
        .account("py-client");
    let harness = Harness::start(&config).await.unwrap();
    let _greeter = harness
        .greeter(greeter_listener, "greeter-1", "greeter")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = harness
        .certify_files("py-client", dir.path(), &[])
        .await
        .unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let bundle = mesh_core::tls::TrustBundle::from_pem(
        harness.trust_domain.clone(),
        &std::fs::read(&files.ca).unwrap(),
    )
    .unwrap();
    let verifier = mesh_core::tls::SpiffeServerVerifier::new(
        mesh_core::tls::TrustStore::new(bundle),
        spiffe("greeter").parse().unwrap(),
    );
    let mut tls = rustls::ClientConfig::builder_with_provider(mesh_core::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tls = std::sync::Arc::new(tls);
    for name in ["some.name", "greeter.default.svc", "x", "10.9.8.7"] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(tls.clone())
            .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
