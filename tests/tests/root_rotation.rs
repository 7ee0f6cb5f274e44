//! Root rotation with overlap, under traffic: the control service's CA files move from root A
//! to roots A + B (signing with B), then to B alone. Every workload gets each bundle over
//! `Watch` and renews its certificate from B; no call fails; a certificate from A is refused
//! once A is gone.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_control::CaSource;
use mesh_core::testing::TestCa;
use mesh_core::tls::{TrustBundle, Usage, verify_svid};
use mesh_tests::{Config, Harness, eventually, listener, spiffe};
use mesh_tonic::MeshTonicExt;
use rustls_pki_types::UnixTime;

fn write_ca(dir: &Path, roots: &[&TestCa], issuer: &TestCa) {
    let roots: String = roots.iter().map(|ca| ca.cert_pem()).collect();
    std::fs::write(dir.join("roots.pem.tmp"), roots).unwrap();
    std::fs::write(dir.join("issuer.pem.tmp"), issuer.cert_pem()).unwrap();
    std::fs::write(dir.join("issuer.key.tmp"), issuer.key_pem()).unwrap();
    for name in ["issuer.key", "issuer.pem", "roots.pem"] {
        std::fs::rename(dir.join(format!("{name}.tmp")), dir.join(name)).unwrap();
    }
}

/// Whether `mesh`'s current certificate chains to `root` alone.
fn issued_by(mesh: &mesh_tower::Mesh, root: &TestCa) -> bool {
    let svid = mesh.identity().svid();
    let bundle = TrustBundle::from_der(root.trust_domain().clone(), vec![root.root_der()]).unwrap();
    let chain = &svid.certified.cert;
    verify_svid(
        &bundle,
        &chain[0],
        &chain[1..],
        UnixTime::now(),
        Usage::Client,
    )
    .is_ok()
}

#[tokio::test]
async fn roots_rotate_with_overlap_without_a_failed_call() {
    let a = TestCa::new("mesh.local");
    let b = TestCa::new("mesh.local");
    let ca_dir = tempfile::tempdir().unwrap();
    write_ca(ca_dir.path(), &[&a], &a);

    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .account("greeter")
        .account("client");
    let harness = Harness::start_with(&config, |options| {
        options.ca = CaSource::Files {
            root_cert: ca_dir.path().join("roots.pem"),
            issuer_cert: ca_dir.path().join("issuer.pem"),
            issuer_key: ca_dir.path().join("issuer.key"),
        };
        options.cert_lifetime = Duration::from_secs(2);
    })
    .await
    .unwrap();
    let server = harness.greeter(l, "g1", "greeter").await.unwrap();
    let client = harness.mesh("client").await.unwrap();
    assert!(issued_by(&client, &a));

    // Traffic all along: new connections and renewals happen while calls flow.
    let channel = client.channel("greeter.default").await.unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let mut greeter = GreeterClient::new(channel.clone());
        let (running, ok, failed) = (running.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                match greeter.say_hello(HelloRequest { name: "r".into() }).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        eprintln!("call failed: {status:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    // Overlap: both roots trusted, B signs. Both sides get the two-root bundle and renew
    // from B; calls between an A-certificate and a B-certificate keep verifying.
    write_ca(ca_dir.path(), &[&a, &b], &b);
    assert!(
        eventually(Duration::from_secs(10), || {
            client.identity().trust().load().roots().len() == 2 && issued_by(&client, &b)
        })
        .await,
        "the client got both roots and a certificate from B"
    );

    // B alone: A is dropped everywhere; every certificate in use is from B by then.
    write_ca(ca_dir.path(), &[&b], &b);
    assert!(
        eventually(Duration::from_secs(10), || {
            client.identity().trust().load().roots() == [b.root_der()]
        })
        .await,
        "the client dropped root A"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.store(false, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} calls failed ({ok} succeeded)");
    assert!(ok > 100, "traffic flowed: {ok}");
    assert!(server.greeter.served() >= ok);

    // A certificate from A, for a real identity, is refused now.
    let forged = a.issue(&mesh_core::SpiffeId::parse(&spiffe("client")).unwrap());
    let verdict = verify_svid(
        &client.identity().trust().load(),
        forged.leaf(),
        forged.intermediates(),
        UnixTime::now(),
        Usage::Client,
    );
    assert!(
        verdict.is_err(),
        "a certificate from the retired root verified"
    );
}
