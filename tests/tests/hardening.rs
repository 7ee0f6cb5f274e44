//! Hardening: every kind of defective certificate is refused, by a meshed server (the handler
//! never runs), by a meshed client (the call fails UNAVAILABLE), and by the mesh's verifiers in
//! a real handshake (the refusal names the defect). Plus seeded property tests of `SpiffeId`.
//!
//! To make each refusal be about the defect and not about an unknown issuer, the control
//! service here signs from files ([`CaSource::Files`]) whose root file also holds the root of a
//! [`TestCa`]: that CA's certificates chain to a root every workload trusts, and it issues the
//! defective leaves. Its good leaves get through, which the tests check first.
//!
//! CSR refusals (CA rights, another identity, oversized) are in `control/tests/certify.rs`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use examples::GreeterReplica;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use mesh_control::CaSource;
use mesh_core::testing::rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use mesh_core::testing::{TestCa, TestCert, edit};
use mesh_core::tls::{
    SpiffeClientVerifier, SpiffeServerVerifier, TrustBundle, TrustStore, VerifyError,
    crypto_provider,
};
use mesh_core::{SpiffeId, SpiffeIdError, TrustDomain};
use mesh_tests::rawtls::{client_tls, raw_hello, verify_error};
use mesh_tests::{Config, Harness, TRUST_DOMAIN, listener, spiffe};
use mesh_tonic::MeshTonicExt;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One defective certificate: what it is, and the refusal it must get.
struct Defect {
    name: &'static str,
    cert: TestCert,
    /// The refusal expected from the verifier.
    refusal: fn(&VerifyError) -> bool,
    /// A word the refusal's message must contain.
    says: &'static str,
}

/// Every defect, for a leaf of `id` (a client's or a server's). All but the unknown-root ones
/// are issued by `trusted`, whose root the verifier trusts.
fn defects(trusted: &TestCa, id: &SpiffeId) -> Vec<Defect> {
    let other_root = TestCa::new(TRUST_DOMAIN);
    let other_domain = TestCa::new("other.local");
    let other_domain_id = SpiffeId::parse(&format!("spiffe://other.local{}", id.path())).unwrap();
    vec![
        Defect {
            name: "expired",
            cert: trusted.issue_with(id, edit::expired),
            refusal: |e| chain_says(e, "expired"),
            says: "expired",
        },
        Defect {
            name: "not yet valid",
            cert: trusted.issue_with(id, edit::not_yet_valid),
            refusal: |e| chain_says(e, "not yet valid"),
            says: "not yet valid",
        },
        Defect {
            name: "a CA certificate as the leaf",
            cert: trusted.issue_with(id, edit::make_ca),
            refusal: |e| matches!(e, VerifyError::LeafIsCa { .. }),
            says: "is a CA certificate",
        },
        Defect {
            name: "two URI SANs",
            cert: trusted.issue_with(id, |p| {
                edit::extra_uri(p, &format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/other"));
            }),
            refusal: |e| matches!(e, VerifyError::MultipleUriSans { uris } if uris.len() == 2),
            says: "2 URI SANs",
        },
        Defect {
            name: "no URI SAN",
            cert: trusted.issue_with(id, edit::no_sans),
            refusal: |e| matches!(e, VerifyError::NoUriSan { .. }),
            says: "no URI SAN",
        },
        Defect {
            name: "an uppercase trust domain in the SPIFFE ID",
            cert: trusted.issue_with(id, |p| edit::uri(p, "spiffe://UPPER/x")),
            refusal: |e| {
                matches!(
                    e,
                    VerifyError::BadSpiffeId(SpiffeIdError::TrustDomainUppercase { .. })
                )
            },
            says: "must be lowercase",
        },
        Defect {
            name: "a URI SAN that is not a SPIFFE ID",
            cert: trusted.issue_with(id, |p| edit::uri(p, "https://x")),
            refusal: |e| matches!(e, VerifyError::BadSpiffeId(SpiffeIdError::Scheme { .. })),
            says: "spiffe://",
        },
        Defect {
            name: "a SPIFFE ID of another trust domain (trusted root)",
            cert: trusted.issue_with(id, |p| edit::uri(p, other_domain_id.as_str())),
            refusal: |e| matches!(e, VerifyError::WrongTrustDomain { .. }),
            says: "not in trust domain",
        },
        Defect {
            name: "a keyUsage without digitalSignature",
            cert: trusted.issue_with(id, edit::no_digital_signature),
            refusal: |e| matches!(e, VerifyError::KeyUsage { .. }),
            says: "digitalSignature",
        },
        Defect {
            name: "chained to an unknown root",
            cert: other_root.issue(id),
            refusal: |e| chain_says(e, "unknown issuer"),
            says: "does not chain",
        },
        Defect {
            name: "from another trust domain's CA",
            cert: other_domain.issue(&other_domain_id),
            refusal: |e| chain_says(e, "unknown issuer"),
            says: "does not chain",
        },
    ]
}

fn chain_says(e: &VerifyError, what: &str) -> bool {
    matches!(e, VerifyError::ChainInvalid(m) if m.contains(what))
}

/// A `CaSource::Files` for a fresh root of the control service's own, with `also_trusted`'s
/// root added to the trust anchors (so to every workload's bundle).
fn control_ca_trusting(dir: &Path, also_trusted: &TestCa) -> CaSource {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "hardening control root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    edit::validity(
        &mut params,
        now - std::time::Duration::from_secs(3600),
        now + std::time::Duration::from_secs(24 * 3600),
    );
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let root = params.self_signed(&key).unwrap();
    let td = mesh_core::testing::trust_domain();
    let extra = TrustBundle::from_der(td, vec![also_trusted.root_der()]).unwrap();
    let (root_cert, issuer_cert, issuer_key) = (
        dir.join("roots.pem"),
        dir.join("issuer.pem"),
        dir.join("issuer.key"),
    );
    std::fs::write(&root_cert, format!("{}{}", root.pem(), extra.to_pem())).unwrap();
    std::fs::write(&issuer_cert, root.pem()).unwrap();
    std::fs::write(&issuer_key, key.serialize_pem()).unwrap();
    CaSource::Files {
        root_cert,
        issuer_cert,
        issuer_key,
    }
}

fn id(account: &str) -> SpiffeId {
    SpiffeId::parse(&spiffe(account)).unwrap()
}

#[tokio::test]
async fn a_meshed_server_refuses_every_defective_client_certificate_before_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = TestCa::new(TRUST_DOMAIN);
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(addr, "greeter")])
        .account("greeter");
    let ca = control_ca_trusting(dir.path(), &trusted);
    let harness = Harness::start_with(&config, |options| options.ca = ca)
        .await
        .unwrap();
    let replica = harness.greeter(l, "g1", "greeter").await.unwrap();
    let bundle = harness.control.as_ref().unwrap().trust_bundle();
    let (greeter, client) = (id("greeter"), id("client"));

    // The test CA's good certificate gets through: refusals below are about the defects.
    let good = client_tls(bundle.clone(), &greeter, Some(trusted.issue(&client)));
    let reply = raw_hello(addr, Some(good)).await.unwrap();
    assert!(reply.ends_with(&format!("to {client}")), "{reply}");
    assert_eq!(replica.greeter.served(), 1);

    for defect in defects(&trusted, &client) {
        let tls = client_tls(bundle.clone(), &greeter, Some(defect.cert));
        let result = raw_hello(addr, Some(tls)).await;
        assert!(
            result.is_err(),
            "a caller with {} got through: {result:?}",
            defect.name
        );
        assert_eq!(
            replica.greeter.served(),
            1,
            "a caller with {} reached the handler",
            defect.name
        );
    }
}

/// Serves a greeter over TLS with `cert`, outside the mesh: a server at the address discovery
/// gives, presenting a defective certificate.
struct RawGreeter {
    addr: SocketAddr,
    replica: GreeterReplica,
    /// TLS handshakes that completed (the client accepted the certificate).
    handshakes: Arc<AtomicU64>,
    /// Connections accepted.
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RawGreeter {
    async fn start(cert: TestCert) -> Self {
        let l = listener().await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(cert.chain, cert.key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let replica = GreeterReplica::new("raw", "raw");
        let (handshakes, connections) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let task = tokio::spawn({
            let (replica, handshakes, connections) =
                (replica.clone(), handshakes.clone(), connections.clone());
            async move {
                loop {
                    let Ok((tcp, _)) = l.accept().await else {
                        continue;
                    };
                    connections.fetch_add(1, Ordering::Relaxed);
                    let (acceptor, replica, handshakes) =
                        (acceptor.clone(), replica.clone(), handshakes.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        handshakes.fetch_add(1, Ordering::Relaxed);
                        let service = GreeterServer::new(replica);
                        let service = hyper::service::service_fn(move |request| {
                            let mut service = service.clone();
                            async move { tower::Service::call(&mut service, request).await }
                        });
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                    });
                }
            }
        });
        Self {
            addr,
            replica,
            handshakes,
            connections,
            task,
        }
    }
}

impl Drop for RawGreeter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_meshed_client_refuses_every_defective_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = TestCa::new(TRUST_DOMAIN);
    let greeter = id("greeter");
    let defects = defects(&trusted, &greeter);

    // One raw server per defect (and one with a good certificate), each the only endpoint of
    // its own service, so that the calls run at once and one endpoint's failures cannot
    // affect another's.
    let good = RawGreeter::start(trusted.issue(&greeter)).await;
    let mut servers = Vec::new();
    for defect in &defects {
        servers.push(RawGreeter::start(defect.cert.clone()).await);
    }
    let mut config = Config::new()
        .service("good", &[(good.addr, "greeter")])
        .account("client");
    for (i, server) in servers.iter().enumerate() {
        config = config.service(&format!("bad-{i}"), &[(server.addr, "greeter")]);
    }
    let ca = control_ca_trusting(dir.path(), &trusted);
    let harness = Harness::start_with(&config, |options| options.ca = ca)
        .await
        .unwrap();
    let client = harness.mesh("client").await.unwrap();

    // The good one works through the mesh's client: the raw servers are sound.
    let channel = client.channel("good.default").await.unwrap();
    GreeterClient::new(channel)
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .unwrap();
    assert_eq!(good.replica.served(), 1);

    let mut calls = Vec::new();
    for i in 0..servers.len() {
        let channel = client.channel(&format!("bad-{i}.default")).await.unwrap();
        calls.push(tokio::spawn(async move {
            GreeterClient::new(channel)
                .say_hello(HelloRequest { name: "ann".into() })
                .await
        }));
    }
    for ((defect, server), call) in defects.iter().zip(&servers).zip(calls) {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "{}: {status:?}",
            defect.name
        );
        assert!(
            server.connections.load(Ordering::Relaxed) >= 1,
            "{}: the client never tried the server",
            defect.name
        );
        assert_eq!(
            server.handshakes.load(Ordering::Relaxed),
            0,
            "{}: the client completed a handshake",
            defect.name
        );
        assert_eq!(server.replica.served(), 0, "{}", defect.name);
    }
}

/// A TLS 1.3 server config presenting `cert` and verifying clients with the mesh's verifier
/// over `bundle`.
fn mesh_verifying_server(bundle: TrustBundle, cert: TestCert) -> Arc<ServerConfig> {
    let verifier = SpiffeClientVerifier::new(TrustStore::new(bundle), true);
    let config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(cert.chain, cert.key)
        .unwrap();
    Arc::new(config)
}

fn check_refusal(defect: &Defect, error: &std::io::Error, side: &str) {
    let refusal = verify_error(error)
        .unwrap_or_else(|| panic!("{side}, {}: not a verifier refusal: {error}", defect.name));
    assert!(
        (defect.refusal)(&refusal),
        "{side}, {}: unexpected refusal {refusal:?}",
        defect.name
    );
    // The words reach the handshake error (and so the logs).
    assert!(
        error.to_string().contains(defect.says),
        "{side}, {}: {error} does not say {:?}",
        defect.name,
        defect.says
    );
}

#[tokio::test]
async fn the_client_verifier_names_each_defect_in_a_real_handshake() {
    let trusted = TestCa::new(TRUST_DOMAIN);
    let (greeter, client) = (id("greeter"), id("client"));
    let server = mesh_verifying_server(trusted.bundle(), trusted.issue(&greeter));
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();

    let handshake = async |cert: TestCert| {
        let tls: Arc<ClientConfig> = client_tls(trusted.bundle(), &greeter, Some(cert));
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::IpAddress(addr.ip().into());
            let mut stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            // TLS 1.3: the server judges the client's certificate after the client's
            // Finished, so the client learns the verdict on its first read.
            stream.write_all(b"ping").await?;
            let mut byte = [0u8; 1];
            stream.read(&mut byte).await
        };
        let accept = async {
            let (tcp, _) = l.accept().await?;
            let mut stream = acceptor.accept(tcp).await?;
            stream.write_all(b"p").await?;
            stream.flush().await
        };
        let (client, server) = tokio::join!(connect, accept);
        (client, server)
    };

    let (client_side, server_side) = handshake(trusted.issue(&client)).await;
    assert!(
        client_side.is_ok() && server_side.is_ok(),
        "a good client was refused"
    );

    for defect in defects(&trusted, &client) {
        let name = defect.name;
        let (client_side, server_side) = handshake(defect.cert.clone()).await;
        let error = server_side.expect_err(name);
        check_refusal(&defect, &error, "server");
        assert!(
            !matches!(client_side, Ok(n) if n > 0),
            "{name}: the refused client read data"
        );
    }
}

#[tokio::test]
async fn the_server_verifier_names_each_defect_in_a_real_handshake() {
    let trusted = TestCa::new(TRUST_DOMAIN);
    let greeter = id("greeter");
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();

    let handshake = async |cert: TestCert| {
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(cert.chain, cert.key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let verifier =
            SpiffeServerVerifier::new(TrustStore::new(trusted.bundle()), greeter.clone());
        let tls = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::IpAddress(addr.ip().into());
            tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(name, tcp)
                .await
                .map(drop)
        };
        let accept = async {
            let (tcp, _) = l.accept().await?;
            acceptor.accept(tcp).await.map(drop)
        };
        tokio::join!(connect, accept)
    };

    let (client_side, server_side) = handshake(trusted.issue(&greeter)).await;
    assert!(
        client_side.is_ok() && server_side.is_ok(),
        "a good server was refused"
    );

    // Server-specific: a valid SVID of another workload, and one not allowed to serve.
    let mut defects = defects(&trusted, &greeter);
    defects.push(Defect {
        name: "another workload's valid SVID",
        cert: trusted.issue(&id("impostor")),
        refusal: |e| matches!(e, VerifyError::UnexpectedIdentity { .. }),
        says: "was expected",
    });
    defects.push(Defect {
        name: "clientAuth only",
        cert: trusted.issue_with(&greeter, edit::client_only),
        refusal: |e| matches!(e, VerifyError::ChainInvalid(m) if m.contains("serverAuth")),
        says: "does not allow serverAuth",
    });
    for defect in defects {
        let (client_side, server_side) = handshake(defect.cert.clone()).await;
        let error = client_side.expect_err(defect.name);
        check_refusal(&defect, &error, "client");
        assert!(
            server_side.is_err(),
            "{}: the server completed",
            defect.name
        );
    }
}

/// A small deterministic generator (SplitMix64): property tests without a new dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick(&mut self, from: &[u8]) -> char {
        char::from(from[self.below(from.len())])
    }

    fn string(&mut self, alphabet: &[u8], min: usize, max: usize) -> String {
        let len = min + self.below(max - min + 1);
        (0..len).map(|_| self.pick(alphabet)).collect()
    }
}

const TD_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789.-_";
const PATH_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_";

/// A valid ID by construction: a trust domain of allowed characters, and segments of allowed
/// characters that are not `.` or `..`.
fn valid_id(rng: &mut Rng) -> String {
    let mut id = format!("spiffe://{}", rng.string(TD_CHARS, 1, 20));
    for _ in 0..rng.below(5) {
        let mut segment = rng.string(PATH_CHARS, 1, 12);
        if segment == "." || segment == ".." {
            segment.push('x');
        }
        id.push('/');
        id.push_str(&segment);
    }
    id
}

#[test]
fn property_valid_spiffe_ids_round_trip() {
    let mut rng = Rng(0x5EED_0001);
    for _ in 0..5_000 {
        let text = valid_id(&mut rng);
        let id = SpiffeId::parse(&text).unwrap_or_else(|e| panic!("{text:?} refused: {e}"));
        assert_eq!(id.as_str(), text);
        assert_eq!(id.to_string(), text);
        assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), text);
        assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        // Serde goes through the same string form.
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
    }
}

#[test]
fn property_arbitrary_text_never_panics_and_accepted_ids_are_valid() {
    // Mostly near-misses: a valid ID with one character inserted, replaced or removed, drawn
    // from characters that matter to the grammar.
    const NOISE: &[u8] = b"aZ09.-_/:@?#%Ue ~\\";
    let mut rng = Rng(0x5EED_0002);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut text = valid_id(&mut rng);
        if rng.below(4) == 0 {
            text = format!(
                "{}{}",
                ["SPIFFE://", "spiffe:/", "https://", ""][rng.below(4)],
                &text[9..]
            );
        }
        for _ in 0..1 + rng.below(2) {
            let at = rng.below(text.len() + 1);
            match rng.below(3) {
                0 => text.insert(at, rng.pick(NOISE)),
                1 if at < text.len() => {
                    text.replace_range(at..at + 1, &rng.pick(NOISE).to_string());
                }
                _ if at < text.len() => {
                    text.remove(at);
                }
                _ => {}
            }
        }
        match SpiffeId::parse(&text) {
            Ok(id) => {
                accepted += 1;
                // Whatever is accepted obeys the documented grammar and round-trips.
                let rest = text.strip_prefix("spiffe://").unwrap();
                let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                assert!(
                    !td.is_empty() && td.bytes().all(|b| TD_CHARS.contains(&b)),
                    "{text:?}"
                );
                assert!(
                    path.is_empty()
                        || path[1..].split('/').all(|s| {
                            !s.is_empty()
                                && s != "."
                                && s != ".."
                                && s.bytes().all(|b| PATH_CHARS.contains(&b))
                        }),
                    "{text:?}"
                );
                assert_eq!(id.as_str(), text);
                assert_eq!(TrustDomain::new(td).unwrap(), *id.trust_domain());
            }
            Err(error) => {
                // Every refusal repeats the input (cut only when too long).
                assert_eq!(error.input().as_str(), text, "{error}");
                assert!(error.to_string().contains("invalid SPIFFE ID"), "{error}");
            }
        }
    }
    // The generator reaches both verdicts.
    assert!(accepted > 1_000 && accepted < 19_000, "{accepted} accepted");
}
