//! Certify over real TLS: what the control service signs, and what it refuses.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::proto::CertifyResponse;
use mesh_core::proto::control_client::ControlClient;
use mesh_core::testing::csr;
use mesh_core::tls::{TrustBundle, Usage, verify_svid};
use rustls_pki_types::{CertificateDer, UnixTime};
use support::*;
use tonic::Code;
use tonic::transport::Channel;
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
    assert_eq!(sans(leaf), GREETER_SANS);

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

/// The names of a `greeter` certificate: its SPIFFE ID and the DNS names of the one service
/// it serves in [`config_yaml`], with the default suffixes.
const GREETER_SANS: [&str; 3] = [
    "URI:spiffe://mesh.local/ns/default/sa/greeter",
    "DNS:greeter.default.svc",
    "DNS:greeter.default.svc.cluster.local",
];

#[tokio::test]
async fn a_csr_asking_for_other_names_is_refused_naming_them() {
    let control = start_inline(&config_yaml(5000)).await;
    let mut client = connect(&control, None).await;
    let (_, csr) = csr_with(csr::greedy);
    let status = certify(&mut client, "greeter-token-0123456789", csr)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "csr_der: the request asks for names its identity is not entitled to: \
         URI:spiffe://mesh.local/ns/kube-system/sa/admin, DNS:control.example; it may ask for \
         its SPIFFE ID and the DNS names of the services it serves (greeter.default.svc, \
         greeter.default.svc.cluster.local)"
    );
    // Its own names are granted (all of them, whichever it asked for).
    let (_, csr) = csr_with(|params| {
        params.subject_alt_names = vec![rcgen::SanType::DnsName(
            "greeter.default.svc".try_into().expect("ia5"),
        )];
    });
    let response = certify(&mut client, "greeter-token-0123456789", csr)
        .await
        .expect("certified");
    assert_eq!(sans(&response.chain_der[0]), GREETER_SANS);
    control.shutdown().await;
}

#[tokio::test]
async fn a_csr_asking_for_ca_rights_does_not_get_them() {
    let control = start_inline(&config_yaml(5000)).await;
    let mut client = connect(&control, None).await;
    let (_, csr) = csr_with(|params| {
        csr::greedy(params);
        params.subject_alt_names.clear();
    });
    let response = certify(&mut client, "greeter-token-0123456789", csr)
        .await
        .expect("certified");
    let leaf = &response.chain_der[0];
    assert_eq!(sans(leaf), GREETER_SANS);
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

/// The public key (uncompressed point) a CSR carries.
fn csr_key(csr: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr).expect("CSR");
    req.certification_request_info
        .subject_pki
        .subject_public_key
        .data
        .to_vec()
}

/// Certifies `csr` as greeter and checks the leaf: the usual SVID, for the CSR's key, with
/// none of the names the CSR asked for.
async fn assert_certified(client: &mut ControlClient<Channel>, csr: Vec<u8>, what: &str) {
    let response = certify(client, "greeter-token-0123456789", csr.clone())
        .await
        .unwrap_or_else(|status| panic!("{what}: refused: {status:?}"));
    let leaf = &response.chain_der[0];
    assert_eq!(sans(leaf), GREETER_SANS, "{what}");
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("certificate");
    assert!(!cert.is_ca(), "{what}");
    assert_eq!(cert.subject().iter().count(), 0, "{what}");
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        csr_key(&csr).as_slice(),
        "{what}: the certificate is for the CSR's key"
    );
}

/// A fresh CSR from the `openssl` binary: `openssl req` for a new P-256 key with `args`
/// added. None, with a message, when `openssl` is not installed (the same kinds of CSR are
/// also tested from files and from rcgen, which never skip).
fn openssl_req(args: &[&str]) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.pem");
    let output = std::process::Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout"])
        .arg(&key)
        .args(["-subj", "/CN=greeter", "-outform", "DER"])
        .args(args)
        .output();
    match output {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED the live `openssl req` case: no openssl binary on PATH");
            None
        }
        Err(error) => panic!("running openssl: {error}"),
        Ok(output) => {
            assert!(
                output.status.success(),
                "openssl req failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Some(output.stdout)
        }
    }
}

#[tokio::test]
async fn a_csr_with_extensions_other_tools_add_is_signed_with_the_cas_own() {
    let control = start_inline(&config_yaml(5000)).await;
    let mut client = connect(&control, None).await;

    // subjectKeyIdentifier, basicConstraints CA:FALSE and a subject, made by rcgen.
    let (_, like_openssl) = csr_with(csr::like_openssl);
    assert_certified(&mut client, like_openssl, "rcgen, openssl-like").await;
    // An unknown extension marked critical is a request like any other: ignored.
    let (_, unknown) = csr_with(csr::unknown_critical_extension);
    assert_certified(&mut client, unknown, "unknown critical extension").await;
    // Made by `openssl req` (kept as a file): SKI, basicConstraints, keyUsage, and a DNS SAN
    // (greeter.example) this identity has no right to: refused for that name alone.
    let status = certify(
        &mut client,
        "greeter-token-0123456789",
        csr::OPENSSL_P256_WITH_EXTENSIONS.to_vec(),
    )
    .await
    .expect_err("refused");
    assert!(
        status.message().contains(": DNS:greeter.example;"),
        "{}",
        status.message()
    );
    // And a fresh one from the openssl binary.
    if let Some(live) = openssl_req(&[
        "-sha256",
        "-addext",
        "subjectKeyIdentifier=hash",
        "-addext",
        "keyUsage=digitalSignature,keyEncipherment",
    ]) {
        assert_certified(&mut client, live, "openssl req").await;
    }
    control.shutdown().await;
}

#[tokio::test]
async fn a_p256_csr_signed_with_sha384_is_signed() {
    let control = start_inline(&config_yaml(5000)).await;
    let mut client = connect(&control, None).await;
    assert_certified(
        &mut client,
        csr::OPENSSL_P256_SHA384.to_vec(),
        "openssl -sha384 file",
    )
    .await;
    if let Some(live) = openssl_req(&["-sha384"]) {
        assert_certified(&mut client, live, "openssl req -sha384").await;
    }
    control.shutdown().await;
}

#[tokio::test]
async fn a_key_that_is_not_p256_is_refused_by_name() {
    let control = start_inline(&config_yaml(5000)).await;
    let mut client = connect(&control, None).await;
    let token = "greeter-token-0123456789";
    let status = certify(&mut client, token, csr::OPENSSL_RSA_2048.to_vec())
        .await
        .expect_err("RSA");
    assert_code(
        &status,
        Code::InvalidArgument,
        "csr_der: the key must be ECDSA P-256, not RSA-2048",
    );
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let status = certify(&mut client, token, csr::for_key(&key, |_| {}))
        .await
        .expect_err("P-384");
    assert_code(
        &status,
        Code::InvalidArgument,
        "csr_der: the key must be ECDSA P-256, not ECDSA P-384",
    );
    control.shutdown().await;
}

/// `CertifyRequest` with `token` as bytes: what a caller can put on the wire that the
/// generated client (a `String`) cannot.
#[derive(Clone, PartialEq, prost::Message)]
struct RawCertifyRequest {
    #[prost(bytes = "vec", tag = "1")]
    csr_der: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    token: Vec<u8>,
}

/// `CertifyRequest` with `csr_der` sent as a number: the wrong wire type.
#[derive(Clone, PartialEq, prost::Message)]
struct MistypedCertifyRequest {
    #[prost(uint64, tag = "1")]
    csr_der: u64,
}

/// Calls Certify with any message.
async fn certify_raw<M: prost::Message + Send + Sync + 'static>(
    control: &mesh_control::RunningControl,
    message: M,
) -> Result<CertifyResponse, tonic::Status> {
    let channel = channel_to(
        control.addr(),
        control.trust_bundle(),
        control.identity().clone(),
        None,
    )
    .await
    .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(message),
        tonic::codegen::http::uri::PathAndQuery::from_static("/mesh.control.v1.Control/Certify"),
        tonic_prost::ProstCodec::<M, CertifyResponse>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn an_undecodable_request_is_invalid_argument_naming_the_field() {
    let control = start_inline(&config_yaml(5000)).await;
    let (_, csr) = key_and_csr();

    // A token that is not UTF-8 (`string` in the proto) cannot be decoded, let alone be a token.
    let mut token = b"greeter-token-0123456789".to_vec();
    token[3] = 0xff;
    let status = certify_raw(
        &control,
        RawCertifyRequest {
            csr_der: csr.clone(),
            token,
        },
    )
    .await
    .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("CertifyRequest.token") && status.message().contains("UTF-8"),
        "{status:?}"
    );

    let status = certify_raw(&control, MistypedCertifyRequest { csr_der: 7 })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("CertifyRequest.csr_der"),
        "{status:?}"
    );

    // The same bytes with a UTF-8 token are an ordinary request.
    let response = certify_raw(
        &control,
        RawCertifyRequest {
            csr_der: csr,
            token: b"greeter-token-0123456789".to_vec(),
        },
    )
    .await
    .expect("certified");
    assert_eq!(
        response.spiffe_id,
        "spiffe://mesh.local/ns/default/sa/greeter"
    );
    control.shutdown().await;
}
