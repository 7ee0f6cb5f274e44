//! Certify over real TLS: what the control service signs, and what it refuses.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::testing::csr;
use mesh_core::tls::{TrustBundle, Usage, verify_svid};
use rustls_pki_types::{CertificateDer, UnixTime};
use support::*;
use tonic::Code;
use x509_parser::extensions::GeneralName;

fn now_unix() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_secs(),
    )
    .expect("fits")
}

/// Every SAN of the leaf, as text.
fn sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    cert.subject_alternative_name()
        .expect("SAN parses")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => format!("URI:{u}"),
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn issues_an_svid_for_the_tokens_identity() {
    let mut options = ControlOptions::new(trust_domain(), ConfigSource::Inline(config_yaml(5000)));
    options.cert_lifetime = Duration::from_secs(2 * 3600);
    let control = mesh_control::start(options).await.expect("starts");
    let mut client = connect(&control, None).await;

    let (key, csr) = key_and_csr();
    let before = now_unix();
    let response = certify(&mut client, "greeter-token-0123456789", csr)
        .await
        .expect("certified");

    assert_eq!(
        response.spiffe_id,
        "spiffe://mesh.local/ns/default/sa/greeter"
    );
    assert_eq!(response.chain_der.len(), 1);
    let leaf = &response.chain_der[0];
    assert_eq!(
        sans(leaf),
        ["URI:spiffe://mesh.local/ns/default/sa/greeter"]
    );

    let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("certificate");
    assert!(!cert.is_ca());
    let eku = cert
        .extended_key_usage()
        .expect("parses")
        .expect("present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(
        cert.key_usage()
            .expect("parses")
            .expect("present")
            .value
            .digital_signature()
    );
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "the certificate is for the CSR's key"
    );
    // The configured lifetime, and not_after_unix says the same as the certificate.
    let not_after = cert.validity().not_after.timestamp();
    assert_eq!(response.not_after_unix, not_after);
    assert!(
        (before + 2 * 3600 - 1..=before + 2 * 3600 + 2).contains(&not_after),
        "{not_after} vs {before}"
    );

    // The returned bundle verifies it, for both directions of mTLS.
    let bundle = TrustBundle::from_der(
        trust_domain(),
        response
            .trust_bundle_der
            .iter()
            .cloned()
            .map(CertificateDer::from)
            .collect(),
    )
    .expect("bundle");
    assert_eq!(bundle.roots(), control.trust_bundle().roots());
    for usage in [Usage::Server, Usage::Client] {
        let id = verify_svid(
            &bundle,
            &CertificateDer::from(leaf.clone()),
            &[],
            UnixTime::now(),
            usage,
        )
        .expect("verifies");
        assert_eq!(id, spiffe_id("default", "greeter"));
    }

    // Another token, another identity.
    let (_, csr) = key_and_csr();
    let response = certify(&mut client, "client-token-0123456789", csr)
        .await
        .expect("certified");
    assert_eq!(
        response.spiffe_id,
        "spiffe://mesh.local/ns/default/sa/client"
    );
    control.shutdown().await;
}

#[tokio::test]
async fn a_csr_asking_for_ca_rights_and_other_names_gets_neither() {
    let control = start_inline(&config_yaml(5000)).await;
    let mut client = connect(&control, None).await;
    let (_, csr) = csr_with(csr::greedy);
    let response = certify(&mut client, "greeter-token-0123456789", csr)
        .await
        .expect("certified");
    let leaf = &response.chain_der[0];
    assert_eq!(
        sans(leaf),
        ["URI:spiffe://mesh.local/ns/default/sa/greeter"]
    );
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("certificate");
    assert!(!cert.is_ca());
    assert!(
        !cert
            .key_usage()
            .expect("parses")
            .expect("present")
            .value
            .key_cert_sign()
    );
    assert!(
        !cert
            .extended_key_usage()
            .expect("parses")
            .expect("present")
            .value
            .any
    );
    control.shutdown().await;
}

#[tokio::test]
async fn refuses_unknown_tokens_without_echoing_them() {
    let control = start_inline(&config_yaml(5000)).await;
    let mut client = connect(&control, None).await;
    let (_, csr) = key_and_csr();
    let status = certify(&mut client, "guessed-token-42", csr.clone())
        .await
        .expect_err("refused");
    assert_code(
        &status,
        Code::Unauthenticated,
        "bootstrap token not recognised",
    );
    assert!(!status.message().contains("guessed-token-42"));

    let status = certify(&mut client, "", csr).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    control.shutdown().await;
}

#[tokio::test]
async fn refuses_bad_csrs_naming_the_problem() {
    let control = start_inline(&config_yaml(5000)).await;
    let mut client = connect(&control, None).await;
    let token = "greeter-token-0123456789";

    let status = certify(&mut client, token, b"certainly not DER".to_vec())
        .await
        .expect_err("garbage");
    assert_code(
        &status,
        Code::InvalidArgument,
        "csr_der: not a DER PKCS#10 certificate signing request",
    );

    let status = certify(&mut client, token, csr::bad_signature())
        .await
        .expect_err("bad signature");
    assert_code(
        &status,
        Code::InvalidArgument,
        "csr_der: the request's signature does not verify",
    );

    let status = certify(&mut client, token, vec![0x30; 20_000])
        .await
        .expect_err("too large");
    assert_code(
        &status,
        Code::InvalidArgument,
        "csr_der: 20000 bytes, more than",
    );

    let status = certify(&mut client, token, Vec::new())
        .await
        .expect_err("empty");
    assert_code(&status, Code::InvalidArgument, "csr_der: empty");

    // The token is checked first: a bad token with a good CSR is UNAUTHENTICATED, a bad
    // token with a bad CSR too.
    let status = certify(&mut client, "nope", b"junk".to_vec())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    control.shutdown().await;
}

#[tokio::test]
async fn the_control_service_presents_its_own_identity() {
    let control = start_inline(&config_yaml(5000)).await;
    assert_eq!(
        control.identity().as_str(),
        "spiffe://mesh.local/ns/mesh-system/sa/mesh-control"
    );
    // A client that expects someone else refuses the handshake.
    let wrong = connect_to(
        control.addr(),
        control.trust_bundle(),
        spiffe_id("mesh-system", "impostor"),
        None,
    )
    .await;
    assert!(wrong.is_err(), "connected to the wrong identity");
    // A client that trusts another CA refuses it too.
    let other = mesh_core::testing::TestCa::new("mesh.local");
    let wrong = connect_to(
        control.addr(),
        other.bundle(),
        control.identity().clone(),
        None,
    )
    .await;
    assert!(wrong.is_err(), "connected through an unknown root");
    control.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_at_the_handshake() {
    let control = start_inline(&config_yaml(5000)).await;
    let other = mesh_core::testing::TestCa::new("mesh.local");
    let cert = other.issue(&spiffe_id("default", "greeter"));
    // With TLS 1.3 the client learns of the refusal on its first read: the connection or the
    // first call fails, either way nothing is served.
    match connect_to(
        control.addr(),
        control.trust_bundle(),
        control.identity().clone(),
        Some(&cert),
    )
    .await
    {
        Err(_) => {}
        Ok(mut client) => {
            let (_, csr) = key_and_csr();
            let status = certify(&mut client, "greeter-token-0123456789", csr)
                .await
                .expect_err("refused");
            assert!(
                format!("{status:?}").contains("fatal alert"),
                "expected a TLS alert, got {status:?}"
            );
        }
    }
    control.shutdown().await;
}
