//! SVID verification against certificates from the shared test CA, good and deliberately bad.

use rustls_pki_types::UnixTime;

use super::*;
use crate::testing::{TestCa, TestCert, edit};

fn ca() -> TestCa {
    TestCa::new("cluster.local")
}

fn verify(ca: &TestCa, cert: &TestCert, usage: Usage) -> Result<SpiffeId, VerifyError> {
    verify_svid(
        &ca.bundle(),
        cert.leaf(),
        cert.intermediates(),
        UnixTime::now(),
        usage,
    )
}

#[test]
fn valid_svids_pass_for_both_usages() {
    let ca = ca();
    let id = ca.id("default", "greeter");
    let cert = ca.issue(&id);
    assert_eq!(cert.chain.len(), 1);
    assert_eq!(verify(&ca, &cert, Usage::Server).unwrap(), id);
    assert_eq!(verify(&ca, &cert, Usage::Client).unwrap(), id);
    assert_eq!(spiffe_id_of(cert.leaf()).unwrap(), id);
}

#[test]
fn unusual_but_acceptable_leaves_pass() {
    let ca = ca();
    let id = ca.id("default", "greeter");
    type Edit = fn(&mut rcgen::CertificateParams);
    let edits: [(&str, Edit); 3] = [
        ("a DNS SAN besides the URI SAN", |p| {
            edit::extra_dns(p, "greeter.default.svc")
        }),
        ("no basicConstraints", edit::no_basic_constraints),
        ("no keyUsage", |p| p.key_usages.clear()),
    ];
    for (what, edit) in edits {
        let cert = ca.issue_with(&id, edit);
        assert_eq!(verify(&ca, &cert, Usage::Server).unwrap(), id, "{what}");
    }
}

#[test]
fn chains_through_intermediates() {
    let root = ca();
    let second = root.intermediate().intermediate();
    let id = root.id("prod", "api");
    let cert = second.issue(&id);
    assert_eq!(cert.chain.len(), 3);
    assert_eq!(verify(&root, &cert, Usage::Client).unwrap(), id);
    assert_eq!(second.bundle().roots(), root.bundle().roots());

    // Without the intermediates the leaf does not chain to the root.
    let err = verify_svid(
        &root.bundle(),
        cert.leaf(),
        &[],
        UnixTime::now(),
        Usage::Client,
    )
    .unwrap_err();
    assert!(
        matches!(&err, VerifyError::ChainInvalid(m) if m.contains("does not chain to the trust bundle")),
        "{err}"
    );
}

#[test]
fn bad_certificates_are_refused_with_the_right_reason() {
    let ca = ca();
    let id = ca.id("default", "greeter");
    let other_td = SpiffeId::parse("spiffe://other.org/ns/default/sa/greeter").unwrap();
    let stranger = TestCa::new("cluster.local");
    type Check = fn(&VerifyError) -> bool;
    let cases: Vec<(&str, TestCert, Usage, Check)> = vec![
        (
            "expired",
            ca.issue_with(&id, edit::expired),
            Usage::Server,
            |e| matches!(e, VerifyError::ChainInvalid(m) if m.contains("expired")),
        ),
        (
            "not yet valid",
            ca.issue_with(&id, edit::not_yet_valid),
            Usage::Server,
            |e| matches!(e, VerifyError::ChainInvalid(m) if m.contains("not yet valid")),
        ),
        (
            "CA as leaf",
            ca.issue_with(&id, edit::make_ca),
            Usage::Server,
            |e| matches!(e, VerifyError::LeafIsCa { peer } if peer.contains("sa/greeter")),
        ),
        (
            "two URI SANs",
            ca.issue_with(&id, |p| {
                edit::extra_uri(p, "spiffe://cluster.local/ns/default/sa/admin")
            }),
            Usage::Server,
            |e| matches!(e, VerifyError::MultipleUriSans { uris } if uris.len() == 2),
        ),
        (
            "no URI SAN",
            ca.issue_with(&id, edit::no_sans),
            Usage::Client,
            |e| matches!(e, VerifyError::NoUriSan { .. }),
        ),
        (
            "only a DNS SAN",
            ca.issue_with(&id, |p| {
                edit::no_sans(p);
                edit::extra_dns(p, "greeter");
            }),
            Usage::Client,
            |e| matches!(e, VerifyError::NoUriSan { .. }),
        ),
        (
            "URI SAN that is not a SPIFFE ID",
            ca.issue_with(&id, |p| edit::uri(p, "https://greeter.example/")),
            Usage::Server,
            |e| matches!(e, VerifyError::BadSpiffeId(SpiffeIdError::Scheme { .. })),
        ),
        (
            "URI SAN with an uppercase trust domain",
            ca.issue_with(&id, |p| edit::uri(p, "spiffe://Cluster.local/ns/a/sa/b")),
            Usage::Server,
            |e| {
                matches!(
                    e,
                    VerifyError::BadSpiffeId(SpiffeIdError::TrustDomainUppercase { .. })
                )
            },
        ),
        (
            "other trust domain, same CA",
            ca.issue(&other_td),
            Usage::Server,
            |e| {
                matches!(e, VerifyError::WrongTrustDomain { expected, found }
                if expected.as_str() == "cluster.local" && found.trust_domain().as_str() == "other.org")
            },
        ),
        (
            "chain to an unknown root",
            stranger.issue(&id),
            Usage::Server,
            |e| matches!(e, VerifyError::ChainInvalid(m) if m.contains("does not chain to the trust bundle")),
        ),
        (
            "keyUsage without digitalSignature",
            ca.issue_with(&id, edit::no_digital_signature),
            Usage::Server,
            |e| matches!(e, VerifyError::KeyUsage { .. }),
        ),
        (
            "server-only certificate used by a client",
            ca.issue_with(&id, edit::server_only),
            Usage::Client,
            |e| matches!(e, VerifyError::ChainInvalid(m) if m.contains("does not allow clientAuth")),
        ),
        (
            "client-only certificate used by a server",
            ca.issue_with(&id, edit::client_only),
            Usage::Server,
            |e| matches!(e, VerifyError::ChainInvalid(m) if m.contains("does not allow serverAuth")),
        ),
    ];
    for (what, cert, usage, is_expected) in cases {
        let err = verify(&ca, &cert, usage).expect_err(what);
        assert!(is_expected(&err), "{what}: unexpected {err:?}");
    }
}

#[test]
fn messages_name_the_peer() {
    let ca = ca();
    let id = ca.id("default", "greeter");
    let err = verify(&ca, &ca.issue_with(&id, edit::expired), Usage::Server).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(
            r#"invalid certificate chain: certificate of "spiffe://cluster.local/ns/default/sa/greeter": expired: not valid after "#
        ),
        "{message}"
    );

    let err = verify(&ca, &ca.issue_with(&id, edit::make_ca), Usage::Server).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"certificate of "spiffe://cluster.local/ns/default/sa/greeter" is a CA certificate, not a workload SVID"#
    );

    let err = verify(&ca, &ca.issue_with(&id, edit::no_sans), Usage::Server).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"certificate of subject "CN=ns/default/sa/greeter" has no URI SAN; an SVID carries exactly one SPIFFE ID"#
    );

    let two = ca.issue_with(&id, |p| edit::extra_uri(p, "spiffe://cluster.local/x"));
    assert_eq!(
        verify(&ca, &two, Usage::Server).unwrap_err().to_string(),
        "certificate has 2 URI SANs (spiffe://cluster.local/ns/default/sa/greeter, spiffe://cluster.local/x); an SVID carries exactly one SPIFFE ID"
    );
}

#[test]
fn server_verifier_requires_the_expected_identity() {
    let ca = ca();
    let store = TrustStore::new(ca.bundle());
    let greeter = ca.id("default", "greeter");
    let cert = ca.issue(&greeter);
    let name = ServerName::try_from("127.0.0.1").unwrap();

    let verifier = SpiffeServerVerifier::new(store.clone(), greeter.clone());
    assert_eq!(verifier.expected(), &greeter);
    verifier
        .verify_server_cert(
            cert.leaf(),
            cert.intermediates(),
            &name,
            &[],
            UnixTime::now(),
        )
        .unwrap();

    let expecting_other = SpiffeServerVerifier::new(store, ca.id("default", "billing"));
    let err = expecting_other
        .verify_server_cert(
            cert.leaf(),
            cert.intermediates(),
            &name,
            &[],
            UnixTime::now(),
        )
        .unwrap_err();
    assert!(
        matches!(
            VerifyError::from_rustls(&err),
            Some(VerifyError::UnexpectedIdentity { expected, found })
                if expected.as_str().ends_with("/billing") && found == &greeter
        ),
        "{err:?}"
    );
    // The message survives into rustls' own error, and the typed error is its source.
    let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = &err else {
        panic!("{err:?}");
    };
    let source = std::error::Error::source(other).and_then(|e| e.source());
    assert!(source.is_some_and(|e| e.downcast_ref::<VerifyError>().is_some()));
    assert_eq!(
        err.to_string(),
        r#"invalid peer certificate: Other(OtherError(peer presented "spiffe://cluster.local/ns/default/sa/greeter" but "spiffe://cluster.local/ns/default/sa/billing" was expected))"#
    );
}

#[test]
fn client_verifier_accepts_any_svid_of_the_trust_domain() {
    let ca = ca();
    let store = TrustStore::new(ca.bundle());
    let verifier = SpiffeClientVerifier::new(store.clone(), true);
    assert!(verifier.client_auth_mandatory());
    assert!(!SpiffeClientVerifier::new(store.clone(), false).client_auth_mandatory());

    let cert = ca.issue(&ca.id("default", "anyone"));
    verifier
        .verify_client_cert(cert.leaf(), cert.intermediates(), UnixTime::now())
        .unwrap();

    let bad = ca.issue_with(&ca.id("default", "anyone"), edit::expired);
    let err = verifier
        .verify_client_cert(bad.leaf(), bad.intermediates(), UnixTime::now())
        .unwrap_err();
    assert!(matches!(
        VerifyError::from_rustls(&err),
        Some(VerifyError::ChainInvalid(_))
    ));

    // A new bundle applies to the next handshake.
    let next = TestCa::new("cluster.local");
    store.store(next.bundle());
    assert!(
        verifier
            .verify_client_cert(cert.leaf(), &[], UnixTime::now())
            .is_err()
    );
    let from_next = next.issue(&next.id("default", "anyone"));
    verifier
        .verify_client_cert(from_next.leaf(), &[], UnixTime::now())
        .unwrap();
}

#[test]
fn bundles() {
    let td = TrustDomain::new("cluster.local").unwrap();
    let (old, new) = (ca(), ca());

    // Two roots during a rotation: leaves of either verify.
    let bundle = TrustBundle::from_der(td.clone(), vec![old.root_der(), new.root_der()]).unwrap();
    let id = old.id("default", "a");
    for issuer in [&old, &new] {
        let cert = issuer.issue(&id);
        verify_svid(&bundle, cert.leaf(), &[], UnixTime::now(), Usage::Server).unwrap();
    }

    // PEM round trip, with unrelated blocks skipped.
    let pem = bundle.to_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    let with_key = format!("{}{pem}", old.issue(&id).key_pem());
    let parsed = TrustBundle::from_pem(td.clone(), with_key.as_bytes()).unwrap();
    assert_eq!(parsed.roots(), bundle.roots());
    assert_eq!(parsed.trust_domain(), &td);

    let err = TrustBundle::from_der(td.clone(), vec![]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid trust bundle: no root certificates for trust domain "cluster.local""#
    );
    let err =
        TrustBundle::from_der(td.clone(), vec![CertificateDer::from(vec![1, 2, 3])]).unwrap_err();
    assert!(
        matches!(&err, VerifyError::BadBundle(m) if m.starts_with("root 0 ")),
        "{err}"
    );
    let err = TrustBundle::from_pem(td.clone(), b"nothing here").unwrap_err();
    assert!(
        matches!(&err, VerifyError::BadBundle(m) if m.starts_with("no CERTIFICATE blocks")),
        "{err}"
    );
    let err = TrustBundle::from_pem(
        td,
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap_err();
    assert!(
        matches!(&err, VerifyError::BadBundle(m) if m.starts_with("invalid PEM")),
        "{err}"
    );
}

#[test]
fn malformed_certificates() {
    let ca = ca();
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    let err = verify_svid(&ca.bundle(), &garbage, &[], UnixTime::now(), Usage::Server).unwrap_err();
    assert!(matches!(err, VerifyError::Malformed(_)), "{err:?}");
    assert!(matches!(
        spiffe_id_of(&garbage),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn test_cert_pem_helpers() {
    let ca = ca();
    let cert = ca.intermediate().issue(&ca.id("default", "a"));
    let pem = cert.chain_pem();
    let parsed: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(parsed, cert.chain);
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem().as_bytes()).unwrap();
    assert_eq!(key.secret_der(), cert.key.secret_der());
    assert_eq!(cert.clone().chain, cert.chain);
}
