//! Tests of the CA: what it signs, what it refuses, how it loads and persists its key.

use std::os::unix::fs::PermissionsExt;
use std::time::UNIX_EPOCH;

use mesh_core::tls::verify_svid;
use rcgen::{PKCS_ECDSA_P384_SHA384, PKCS_ED25519};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;

use super::*;
use mesh_core::testing::trust_domain as td;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::from_service_account(&td(), "default", sa).expect("valid")
}

fn csr_with(key: &KeyPair, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let mut params = CertificateParams::default();
    edit(&mut params);
    params.serialize_request(key).expect("CSR").der().to_vec()
}

fn csr() -> Vec<u8> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    csr_with(&key, |_| {})
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
    x509_parser::parse_x509_certificate(der)
        .expect("certificate")
        .1
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .expect("SAN parses")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => format!("URI:{u}"),
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    GeneralName::IPAddress(ip) => format!("IP:{ip:?}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn unix(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs()).expect("fits")
}

#[test]
fn signs_fresh_svid_parameters() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    let lifetime = Duration::from_secs(3600);
    let before = unix(SystemTime::now());
    let issued = ca.sign(&csr(), &id("greeter"), lifetime).expect("signed");
    assert_eq!(
        issued.chain_der.len(),
        1,
        "a root issuer adds no intermediates"
    );
    let cert = parse(&issued.chain_der[0]);

    assert_eq!(
        uris(&cert),
        ["URI:spiffe://mesh.local/ns/default/sa/greeter"]
    );
    let bc = cert.basic_constraints().expect("parses").expect("present");
    assert!(!bc.value.ca);
    let ku = cert.key_usage().expect("parses").expect("present").value;
    assert!(ku.digital_signature());
    assert!(!ku.key_cert_sign());
    let eku = cert
        .extended_key_usage()
        .expect("parses")
        .expect("present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.any);

    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    assert!(
        (before - 61..=before - 59).contains(&not_before),
        "{not_before} vs {before}"
    );
    assert!((before + 3599..=before + 3601).contains(&not_after));
    assert_eq!(
        not_after,
        unix(issued.not_after),
        "Issued::not_after is the certificate's"
    );

    let now = UnixTime::now();
    for usage in [Usage::Server, Usage::Client] {
        let got = verify_svid(&ca.trust_bundle(), &issued.chain_der[0], &[], now, usage)
            .expect("verifies");
        assert_eq!(got, id("greeter"));
    }
}

#[test]
fn ignores_what_the_csr_asks_for() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let greedy = csr_with(&key, |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Any];
        p.distinguished_name.push(DnType::CommonName, "root");
    });
    let issued = ca
        .sign(&greedy, &id("greeter"), DEFAULT_CERT_LIFETIME)
        .expect("signed");
    let cert = parse(&issued.chain_der[0]);
    assert_eq!(
        uris(&cert),
        ["URI:spiffe://mesh.local/ns/default/sa/greeter"]
    );
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
    assert_eq!(
        cert.subject().iter().count(),
        0,
        "subject comes from the CA, empty"
    );
    // The key is the CSR's.
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let not_after = cert.validity().not_after.timestamp();
    assert!(not_after <= unix(SystemTime::now()) + 24 * 3600 + 1);
}

#[test]
fn refuses_bad_csrs() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    let sign = |der: &[u8]| ca.sign(der, &id("greeter"), DEFAULT_CERT_LIFETIME);

    assert_eq!(sign(&[]).expect_err("refused"), SignError::Empty);
    assert_eq!(
        sign(b"not a csr at all").expect_err("refused"),
        SignError::Malformed
    );
    assert_eq!(
        sign(&vec![0x30; MAX_CSR_BYTES + 1]).expect_err("refused"),
        SignError::TooLarge {
            len: MAX_CSR_BYTES + 1,
            max: MAX_CSR_BYTES
        }
    );

    let mut corrupted = csr();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0x01;
    assert_eq!(
        sign(&corrupted).expect_err("refused"),
        SignError::BadSignature
    );

    let mut truncated = csr();
    truncated.truncate(truncated.len() - 10);
    assert_eq!(sign(&truncated).expect_err("refused"), SignError::Malformed);

    for (alg, found) in [
        (&PKCS_ECDSA_P384_SHA384, "ECDSA P-384"),
        (&PKCS_ED25519, "Ed25519"),
    ] {
        let key = KeyPair::generate_for(alg).expect("key");
        assert_eq!(
            sign(&csr_with(&key, |_| {})).expect_err("refused"),
            SignError::UnsupportedKey {
                found: found.into()
            },
            "{alg:?}"
        );
    }

    // Messages say what is wrong without quoting the request.
    assert_eq!(
        SignError::BadSignature.to_string(),
        "the request's signature does not verify"
    );
    assert!(SignError::Malformed.is_caller_error());
    assert!(!SignError::Internal("x".into()).is_caller_error());
}

#[test]
fn serials_are_random() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    let a = ca.sign(&csr(), &id("a"), DEFAULT_CERT_LIFETIME).expect("a");
    let b = ca.sign(&csr(), &id("a"), DEFAULT_CERT_LIFETIME).expect("b");
    let serial = |i: &Issued| parse(&i.chain_der[0]).raw_serial().to_vec();
    assert_ne!(serial(&a), serial(&b));
    assert!(serial(&a).len() >= 16);
}

#[test]
fn issues_its_own_certificate_with_a_key_rustls_accepts() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    let me = SpiffeId::from_service_account(&td(), "mesh-system", "mesh-control").expect("id");
    let (issued, key) = ca.issue_own(&me, Duration::from_secs(90)).expect("issued");
    rustls::sign::CertifiedKey::from_der(issued.chain_der.clone(), key, &tls::crypto_provider())
        .expect("key matches certificate");
    let got = verify_svid(
        &ca.trust_bundle(),
        &issued.chain_der[0],
        &[],
        UnixTime::now(),
        Usage::Server,
    )
    .expect("verifies");
    assert_eq!(got, me);
}

#[test]
fn dev_ca_persists_and_is_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let source = CaSource::Dev {
        state_dir: state_dir.clone(),
    };
    let first = Ca::load(&source, &td()).expect("created");
    let key_mode = fs::metadata(state_dir.join("ca.key"))
        .expect("key written")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let dir_mode = fs::metadata(&state_dir).expect("dir").permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    let second = Ca::load(&source, &td()).expect("reloaded");
    assert_eq!(first.trust_bundle().roots(), second.trust_bundle().roots());
    // What the reloaded CA signs verifies against the first one's bundle.
    let issued = second
        .sign(&csr(), &id("greeter"), DEFAULT_CERT_LIFETIME)
        .expect("signed");
    verify_svid(
        &first.trust_bundle(),
        &issued.chain_der[0],
        &[],
        UnixTime::now(),
        Usage::Client,
    )
    .expect("verifies against the original root");
}

#[test]
fn dev_ca_refuses_another_trust_domain_and_half_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = CaSource::Dev {
        state_dir: dir.path().to_owned(),
    };
    Ca::load(&source, &td()).expect("created");
    let other = TrustDomain::new("other.local").expect("valid");
    let err = Ca::load(&source, &other)
        .expect_err("wrong trust domain")
        .to_string();
    assert!(err.contains("\"mesh.local\", not \"other.local\""), "{err}");
    assert!(err.contains("ca.crt"), "{err}");

    fs::remove_file(dir.path().join("ca.key")).expect("rm");
    let err = Ca::load(&source, &td())
        .expect_err("half state")
        .to_string();
    assert!(err.contains("found ca.crt without ca.key"), "{err}");
}

/// A root and an intermediate (with its key) as PEM files in `dir`.
struct CaFiles {
    root: PathBuf,
    issuer: PathBuf,
    issuer_key: PathBuf,
    root_key: PathBuf,
}

fn ca_params(cn: &str, lifetime: time::Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = OffsetDateTime::now_utc() + lifetime;
    params
}

fn write_ca_files(dir: &Path, issuer_lifetime: time::Duration) -> CaFiles {
    let root_key = KeyPair::generate().expect("key");
    let root_params = ca_params("test root", time::Duration::days(30));
    let root = root_params.self_signed(&root_key).expect("root");
    let root_issuer = Issuer::new(root_params, &root_key);
    let issuer_key = KeyPair::generate().expect("key");
    let issuer = ca_params("test intermediate", issuer_lifetime)
        .signed_by(&issuer_key, &root_issuer)
        .expect("intermediate");
    let files = CaFiles {
        root: dir.join("root.pem"),
        issuer: dir.join("issuer.pem"),
        issuer_key: dir.join("issuer.key"),
        root_key: dir.join("root.key"),
    };
    fs::write(&files.root, root.pem()).expect("write");
    fs::write(&files.issuer, issuer.pem()).expect("write");
    fs::write(&files.issuer_key, issuer_key.serialize_pem()).expect("write");
    fs::write(&files.root_key, root_key.serialize_pem()).expect("write");
    files
}

#[test]
fn files_ca_with_an_intermediate_sends_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = write_ca_files(dir.path(), time::Duration::hours(2));
    let ca = Ca::load(
        &CaSource::Files {
            root_cert: files.root.clone(),
            issuer_cert: files.issuer.clone(),
            issuer_key: files.issuer_key.clone(),
        },
        &td(),
    )
    .expect("loaded");
    assert_eq!(ca.trust_bundle().roots().len(), 1);
    let issued = ca
        .sign(&csr(), &id("greeter"), DEFAULT_CERT_LIFETIME)
        .expect("signed");
    assert_eq!(issued.chain_der.len(), 2, "leaf and intermediate");
    verify_svid(
        &ca.trust_bundle(),
        &issued.chain_der[0],
        &issued.chain_der[1..],
        UnixTime::now(),
        Usage::Server,
    )
    .expect("verifies through the intermediate");
    // The leaf does not outlive its issuer (2 h), although 24 h were asked for.
    let not_after = unix(issued.not_after);
    assert!(not_after <= unix(SystemTime::now()) + 2 * 3600 + 1);
}

#[test]
fn files_ca_may_sign_with_the_root_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = write_ca_files(dir.path(), time::Duration::hours(2));
    let ca = Ca::load(
        &CaSource::Files {
            root_cert: files.root.clone(),
            issuer_cert: files.root.clone(),
            issuer_key: files.root_key.clone(),
        },
        &td(),
    )
    .expect("loaded");
    let issued = ca
        .sign(&csr(), &id("greeter"), DEFAULT_CERT_LIFETIME)
        .expect("signed");
    assert_eq!(issued.chain_der.len(), 1);
}

#[test]
fn files_ca_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = write_ca_files(dir.path(), time::Duration::hours(2));
    let load = |root: &Path, issuer: &Path, key: &Path| {
        Ca::load(
            &CaSource::Files {
                root_cert: root.to_owned(),
                issuer_cert: issuer.to_owned(),
                issuer_key: key.to_owned(),
            },
            &td(),
        )
        .expect_err("refused")
        .to_string()
    };

    let missing = dir.path().join("nope.pem");
    let err = load(&missing, &files.issuer, &files.issuer_key);
    assert!(
        err.starts_with(&format!("{}: ", missing.display())),
        "{err}"
    );

    let err = load(&files.root, &files.issuer, &files.root_key);
    assert!(
        err.starts_with(&format!("{}: ", files.root_key.display())),
        "{err}"
    );
    assert!(err.contains("does not match"), "{err}");

    let err = load(&files.root, &files.issuer_key, &files.issuer_key);
    assert!(err.contains("no CERTIFICATE block"), "{err}");

    let garbage = dir.path().join("garbage.key");
    fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let err = load(&files.root, &files.issuer, &garbage);
    assert!(
        err.starts_with(&format!("{}: not a PKCS#8", garbage.display())),
        "{err}"
    );

    // An issuer that does not chain to the given root fails the self-check.
    let other = tempfile::tempdir().expect("tempdir");
    let other_files = write_ca_files(other.path(), time::Duration::hours(2));
    let err = load(&files.root, &other_files.issuer, &other_files.issuer_key);
    assert!(err.contains("do not belong together"), "{err}");

    // A leaf is not an issuer.
    let leaf_key = KeyPair::generate().expect("key");
    let mut leaf_params = ca_params("leaf", time::Duration::hours(1));
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    let leaf = leaf_params.self_signed(&leaf_key).expect("leaf");
    let leaf_path = dir.path().join("leaf.pem");
    let leaf_key_path = dir.path().join("leaf.key");
    fs::write(&leaf_path, leaf.pem()).expect("write");
    fs::write(&leaf_key_path, leaf_key.serialize_pem()).expect("write");
    let err = load(&files.root, &leaf_path, &leaf_key_path);
    assert!(err.contains("not a CA certificate"), "{err}");
}

/// The DER of ecdsa-with-SHA256 and another signature algorithm OID of the same length.
const ECDSA_SHA256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

/// `csr` with its signature algorithm identifier (ecdsa-with-SHA256) replaced by `oid`.
fn with_signature_oid(mut csr: Vec<u8>, oid: [u8; 10]) -> Vec<u8> {
    let at = csr
        .windows(ECDSA_SHA256_OID.len())
        .position(|w| w == ECDSA_SHA256_OID)
        .expect("a SHA-256 signed CSR");
    csr[at..at + oid.len()].copy_from_slice(&oid);
    csr
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

/// The raw value of the subjectKeyIdentifier a CSR requests, if any.
fn requested_ski(csr: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr).expect("CSR");
    req.certification_request_info
        .iter_attributes()
        .find_map(|attr| match attr.parsed_attribute() {
            x509_parser::cri_attributes::ParsedCriAttribute::ExtensionRequest(r) => r
                .extensions
                .iter()
                .find(|e| e.oid.to_id_string() == "2.5.29.14")
                .map(|e| e.value.to_vec()),
            _ => None,
        })
}

/// Signs `csr` and checks the leaf is the usual SVID, for the CSR's key.
fn assert_signs_an_svid(ca: &Ca, csr: &[u8]) {
    let issued = ca
        .sign(csr, &id("greeter"), DEFAULT_CERT_LIFETIME)
        .expect("signed");
    let cert = parse(&issued.chain_der[0]);
    assert_eq!(
        uris(&cert),
        ["URI:spiffe://mesh.local/ns/default/sa/greeter"]
    );
    assert_eq!(cert.subject().iter().count(), 0);
    assert!(!cert.is_ca());
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        csr_key(csr).as_slice()
    );
    // The CA's own extensions and no others; the key identifier is the CA's, not one the
    // request carried.
    let mut oids: Vec<String> = cert
        .extensions()
        .iter()
        .map(|e| e.oid.to_id_string())
        .collect();
    oids.sort();
    assert_eq!(
        oids,
        [
            "2.5.29.14", // subjectKeyIdentifier
            "2.5.29.15", // keyUsage
            "2.5.29.17", // subjectAltName
            "2.5.29.19", // basicConstraints
            "2.5.29.35", // authorityKeyIdentifier
            "2.5.29.37", // extKeyUsage
        ]
    );
    if let Some(requested) = requested_ski(csr) {
        let ski = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "2.5.29.14")
            .map(|e| e.value.to_vec());
        assert_ne!(
            ski,
            Some(requested),
            "the request's key identifier was copied"
        );
    }
    verify_svid(
        &ca.trust_bundle(),
        &issued.chain_der[0],
        &[],
        UnixTime::now(),
        Usage::Client,
    )
    .expect("verifies");
}

#[test]
fn ignores_extensions_it_does_not_use() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    // What `openssl req` requests with common configurations, made by rcgen...
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    assert_signs_an_svid(&ca, &csr_with(&key, mesh_core::testing::csr::like_openssl));
    // ... and by openssl itself (subjectKeyIdentifier, basicConstraints, keyUsage, a DNS SAN
    // the identity is entitled to here).
    let issued = ca
        .sign_with_names(
            mesh_core::testing::csr::OPENSSL_P256_WITH_EXTENSIONS,
            &id("greeter"),
            &["greeter.example".to_owned()],
            DEFAULT_CERT_LIFETIME,
        )
        .expect("signed");
    let cert = parse(&issued.chain_der[0]);
    assert_eq!(
        uris(&cert),
        [
            "URI:spiffe://mesh.local/ns/default/sa/greeter",
            "DNS:greeter.example"
        ]
    );
    // An extension nobody knows, even marked critical: requested, not granted.
    assert_signs_an_svid(
        &ca,
        &csr_with(&key, mesh_core::testing::csr::unknown_critical_extension),
    );
}

#[test]
fn accepts_p256_whatever_ecdsa_hash_signed_the_request() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    assert_signs_an_svid(&ca, &csr());
    assert_signs_an_svid(&ca, mesh_core::testing::csr::OPENSSL_P256_SHA384);

    // Claiming SHA-384 on a SHA-256 signature: the signature no longer verifies.
    let sha384_oid = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    assert_eq!(
        ca.sign(
            &with_signature_oid(csr(), sha384_oid),
            &id("greeter"),
            DEFAULT_CERT_LIFETIME
        )
        .expect_err("refused"),
        SignError::BadSignature
    );
    // A SHA-384 request whose signature was tampered with.
    let mut corrupted = mesh_core::testing::csr::OPENSSL_P256_SHA384.to_vec();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0x01;
    assert_eq!(
        ca.sign(&corrupted, &id("greeter"), DEFAULT_CERT_LIFETIME)
            .expect_err("refused"),
        SignError::BadSignature
    );
}

#[test]
fn refusals_name_the_key_or_signature_found() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    let sign = |der: &[u8]| ca.sign(der, &id("greeter"), DEFAULT_CERT_LIFETIME);

    let err = sign(mesh_core::testing::csr::OPENSSL_RSA_2048).expect_err("RSA");
    assert_eq!(
        err,
        SignError::UnsupportedKey {
            found: "RSA-2048".into()
        }
    );
    assert_eq!(err.to_string(), "the key must be ECDSA P-256, not RSA-2048");

    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("key");
    assert_eq!(
        sign(&csr_with(&key, |_| {}))
            .expect_err("P-384")
            .to_string(),
        "the key must be ECDSA P-256, not ECDSA P-384"
    );

    // A P-256 key under a hash the CA does not verify (ecdsa-with-SHA512).
    let sha512_oid = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    let err = sign(&with_signature_oid(csr(), sha512_oid)).expect_err("SHA-512");
    assert_eq!(
        err,
        SignError::UnsupportedSignature {
            found: "ecdsa-with-SHA512".into()
        }
    );
    assert!(err.to_string().contains("ecdsa-with-SHA256"), "{err}");
    assert!(err.is_caller_error());

    // Trailing bytes after the request: not a DER request.
    let mut trailing = csr();
    trailing.push(0);
    assert_eq!(sign(&trailing).expect_err("trailing"), SignError::Malformed);
}

#[test]
fn a_rotating_root_names_its_leaves_counts_their_expiry_and_survives_pem() {
    let a = RootPair::generate(&td(), Duration::from_secs(600)).expect("root");
    let b = RootPair::generate(&td(), Duration::from_secs(600)).expect("root");
    assert_eq!(a.signed_until(), None);
    assert_eq!(
        a.not_after.duration_since(a.not_before).expect("ordered"),
        Duration::from_secs(600),
        "not backdated: a rotation counts from not_before"
    );
    // Issuing with A, trusting A and B: A's leaves name A, verify, and move A's count.
    let ca = Ca::from_pair(&td(), &a, vec![a.cert.clone(), b.cert.clone()]).expect("CA");
    assert_eq!(ca.trust_roots().len(), 2);
    let issued = ca
        .sign(&csr(), &id("a"), Duration::from_secs(60))
        .expect("signed");
    let leaf = &issued.chain_der[0];
    assert_eq!(crate::ca::key_id::authority_key_id(leaf), Some(a.key_id()));
    assert_ne!(a.key_id(), b.key_id());
    assert_eq!(a.signed_until(), Some(issued.not_after));
    assert_eq!(b.signed_until(), None);
    verify_svid(
        &ca.trust_bundle(),
        leaf,
        &[],
        UnixTime::now(),
        Usage::Client,
    )
    .expect("verifies against A + B");
    // Stored as PEM and read back: the same root, and a key that still signs for it.
    let (cert_pem, key_pem) = a.to_pem();
    let back = RootPair::from_pem(&cert_pem, &key_pem).expect("loads");
    assert_eq!(back.cert, a.cert);
    assert_eq!(back.key_id(), a.key_id());
    let (_, other_key) = b.to_pem();
    assert!(
        RootPair::from_pem(&cert_pem, &other_key).is_err(),
        "a key of another root"
    );
}

#[test]
fn the_dns_names_given_go_beside_the_spiffe_id() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    let names = [
        "greeter.default.svc".to_owned(),
        "greeter.default.svc.cluster.local".to_owned(),
    ];
    let issued = ca
        .sign_with_names(&csr(), &id("greeter"), &names, DEFAULT_CERT_LIFETIME)
        .expect("signed");
    let cert = parse(&issued.chain_der[0]);
    assert_eq!(
        uris(&cert),
        [
            "URI:spiffe://mesh.local/ns/default/sa/greeter",
            "DNS:greeter.default.svc",
            "DNS:greeter.default.svc.cluster.local",
        ]
    );
    // Still an SVID: exactly one URI SAN, for both uses.
    for usage in [Usage::Client, Usage::Server] {
        let got = verify_svid(
            &ca.trust_bundle(),
            &issued.chain_der[0],
            &[],
            UnixTime::now(),
            usage,
        )
        .expect("verifies");
        assert_eq!(got, id("greeter"));
    }
}

#[test]
fn names_a_csr_asks_for_must_be_its_own() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let entitled = [
        "greeter.default.svc".to_owned(),
        "greeter.default.svc.cluster.local".to_owned(),
    ];
    let asking = |sans: Vec<SanType>| csr_with(&key, |p| p.subject_alt_names = sans);
    let dns = |name: &str| SanType::DnsName(name.try_into().expect("ia5"));
    let uri = |uri: &str| SanType::URI(uri.try_into().expect("ia5"));

    // Its own SPIFFE ID and a subset of its names (in any case): signed, with all its names.
    let own = asking(vec![
        uri("spiffe://mesh.local/ns/default/sa/greeter"),
        dns("GREETER.default.svc"),
    ]);
    let issued = ca
        .sign_with_names(&own, &id("greeter"), &entitled, DEFAULT_CERT_LIFETIME)
        .expect("signed");
    assert_eq!(uris(&parse(&issued.chain_der[0])).len(), 3);

    // Anything else: refused, naming what was asked for.
    let table: [(Vec<SanType>, &[&str]); 4] = [
        (
            vec![dns("evil.example"), dns("greeter.default.svc")],
            &["DNS:evil.example"],
        ),
        (
            vec![uri("spiffe://mesh.local/ns/kube-system/sa/admin")],
            &["URI:spiffe://mesh.local/ns/kube-system/sa/admin"],
        ),
        (
            vec![SanType::IpAddress("10.0.0.1".parse().expect("ip"))],
            &["IP:10.0.0.1"],
        ),
        (
            vec![dns("other.default.svc"), dns("x.example")],
            &["DNS:other.default.svc", "DNS:x.example"],
        ),
    ];
    for (sans, refused) in table {
        let error = ca
            .sign_with_names(
                &asking(sans),
                &id("greeter"),
                &entitled,
                DEFAULT_CERT_LIFETIME,
            )
            .expect_err("refused");
        assert!(error.is_caller_error());
        assert_eq!(
            error,
            SignError::NamesNotEntitled {
                refused: refused.iter().map(|s| s.to_string()).collect(),
                entitled: entitled.to_vec(),
            }
        );
    }
    // Without names of its own, even a DNS name is refused; the message says so.
    let error = ca
        .sign(
            &asking(vec![dns("greeter.default.svc")]),
            &id("greeter"),
            DEFAULT_CERT_LIFETIME,
        )
        .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "the request asks for names its identity is not entitled to: DNS:greeter.default.svc; it \
         may ask for its SPIFFE ID and the DNS names of the services it serves (none)"
    );
}

#[test]
fn the_control_services_own_certificate_carries_dns_names_and_addresses() {
    let ca = Ca::ephemeral(&td()).expect("CA");
    let names = [
        "mesh-control.mesh-system.svc".to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let (issued, _) = ca
        .issue_own_with_names(&id("mesh-control"), &names, DEFAULT_CERT_LIFETIME)
        .expect("issued");
    let cert = parse(&issued.chain_der[0]);
    assert_eq!(
        uris(&cert),
        [
            "URI:spiffe://mesh.local/ns/default/sa/mesh-control",
            "DNS:mesh-control.mesh-system.svc",
            "DNS:localhost",
            "IP:[127, 0, 0, 1]",
        ]
    );
    verify_svid(
        &ca.trust_bundle(),
        &issued.chain_der[0],
        &[],
        UnixTime::now(),
        Usage::Server,
    )
    .expect("an SVID still");
}
