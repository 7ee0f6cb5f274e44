//! Leaf certificate rotation under traffic: with 3 s certificates both sides renew several
//! times while callers keep calling, no call fails, and new connections present the new
//! certificates.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use examples::GreeterReplica;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use mesh_core::SpiffeId;
use mesh_tests::rawtls::{hello, raw_channel_observed};
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tonic::{MeshLayer, MeshTonicExt};
use mesh_tower::{Mesh, tls::client_config};
use rustls_pki_types::CertificateDer;
use tokio::time::Instant;

/// The shortest lifetime worth testing: `ControlOptions` accepts 1 s, but leaves are cut to
/// whole seconds, so 3 s gives renewals every ~2 s with margin for a slow CI machine.
const LIFETIME: Duration = Duration::from_secs(3);
const TRAFFIC: Duration = Duration::from_secs(10);
const CALLERS: usize = 4;

fn leaf(mesh: &Mesh) -> CertificateDer<'static> {
    mesh.identity().svid().certified.cert[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_certificates_renew_under_traffic_without_failing_calls() {
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(addr, "greeter")])
        .account("greeter")
        .account("client");
    let harness = Harness::start_with(&config, |options| options.cert_lifetime = LIFETIME)
        .await
        .unwrap();

    // The greeter, served as `Harness::greeter` does, but keeping its mesh to watch its SVID.
    let server = Mesh::start(harness.settings("greeter", Some("greeter")))
        .await
        .unwrap();
    let replica = GreeterReplica::new("g1", server.identity().id().to_string());
    let incoming = server.tonic_incoming(l).unwrap();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(MeshLayer::new())
            .add_service(GreeterServer::new(replica.clone()))
            .serve_with_incoming(incoming),
    );
    let client = harness.mesh("client").await.unwrap();
    let channel = client.channel("greeter.default").await.unwrap();
    let greeter_id = SpiffeId::parse(&spiffe("greeter")).unwrap();

    // Callers through the mesh's client, for the whole run.
    let deadline = Instant::now() + TRAFFIC;
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let (channel, ok, failed, errors) =
            (channel.clone(), ok.clone(), failed.clone(), errors.clone());
        callers.push(tokio::spawn(async move {
            let mut greeter = GreeterClient::new(channel);
            while Instant::now() < deadline {
                let request = HelloRequest {
                    name: format!("caller-{caller}"),
                };
                match greeter.say_hello(request).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        errors.lock().unwrap().push(status.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    // Meanwhile: every 50 ms, note both SVIDs; every 400 ms, a call on a fresh connection made
    // with the client's own TLS config (its SVID as the client certificate), noting which
    // certificate the server presents there.
    let (mut server_svids, mut client_svids) = (HashSet::new(), HashSet::new());
    let mut probes = Vec::new();
    let mut next_probe = Instant::now();
    while Instant::now() < deadline {
        server_svids.insert(leaf(&server));
        client_svids.insert(leaf(&client));
        if Instant::now() >= next_probe {
            next_probe += Duration::from_millis(400);
            let before = leaf(&server);
            let tls = client_config(
                client.identity().trust(),
                greeter_id.clone(),
                Some(client.identity()),
            );
            let (fresh, presented) = raw_channel_observed(addr, Some(tls)).await.unwrap();
            let reply = hello(fresh).await;
            let after = leaf(&server);
            let presented = presented.lock().unwrap().clone();
            probes.push((reply, presented, before, after));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for caller in callers {
        caller.await.unwrap();
    }

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let errors = errors.lock().unwrap();
    assert_eq!(
        failed,
        0,
        "{failed} of {} calls failed across rotations; first errors: {:?}",
        ok + failed,
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 100, "too little traffic to mean anything: {ok} calls");

    // ~10 s of 3 s certificates renewed at ~70 %: about five renewals per side; at least three.
    assert!(
        server_svids.len() >= 4,
        "the server's SVID changed only {} times",
        server_svids.len() - 1
    );
    assert!(
        client_svids.len() >= 4,
        "the client's SVID changed only {} times",
        client_svids.len() - 1
    );

    // Each fresh connection succeeded and was presented the server's SVID of its time (the one
    // in force just before or just after, when a renewal raced the probe), and across the run
    // the server presented several different certificates.
    let mut presented_leaves = HashSet::new();
    for (i, (reply, presented, before, after)) in probes.iter().enumerate() {
        assert!(reply.is_ok(), "probe {i} failed: {reply:?}");
        assert_eq!(presented.len(), 1, "probe {i}: one connection expected");
        assert!(
            presented[0] == *before || presented[0] == *after,
            "probe {i}: a new connection was presented a certificate that was no longer current"
        );
        presented_leaves.insert(presented[0].clone());
    }
    assert!(
        presented_leaves.len() >= 3,
        "new connections saw only {} distinct server certificates",
        presented_leaves.len()
    );

    // Every call the server saw came with the client's identity, through rotations of both.
    assert_eq!(replica.served(), ok + probes.len() as u64);
    serving.abort();
}

/// The client's side of the same property, seen from a server: each fresh mesh connection
/// presents the client's SVID in force at that moment, so after a renewal the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_client_connections_present_the_renewed_certificate() {
    let config = Config::new().account("greeter").account("client");
    let harness = Harness::start_with(&config, |options| options.cert_lifetime = LIFETIME)
        .await
        .unwrap();
    let server = harness.mesh("greeter").await.unwrap();
    let client = harness.mesh("client").await.unwrap();
    let greeter_id = SpiffeId::parse(&spiffe("greeter")).unwrap();

    // A bare TLS server with the mesh's server config, recording each client's leaf.
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server.server_tls_config());
    let seen = Arc::new(std::sync::Mutex::new(Vec::<CertificateDer<'static>>::new()));
    let accepting = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                let (tcp, _) = l.accept().await.unwrap();
                let stream = acceptor.accept(tcp).await.unwrap();
                let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
                seen.lock().unwrap().push(leaf);
            }
        }
    });

    let first = leaf(&client);
    let mut distinct = HashSet::new();
    // One config for every connection, as the mesh client keeps one per endpoint: a renewed
    // certificate must reach new connections through it (no stale resumed identity).
    let tls = client_config(
        client.identity().trust(),
        greeter_id.clone(),
        Some(client.identity()),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let before = leaf(&client);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        // The server's verdict arrives after the client's Finished: wait for it to be recorded.
        let recorded =
            mesh_tests::eventually(Duration::from_secs(2), || !seen.lock().unwrap().is_empty())
                .await;
        assert!(
            recorded,
            "the server did not accept the client's certificate"
        );
        let after = leaf(&client);
        let got = seen.lock().unwrap().pop().unwrap();
        assert!(
            got == before || got == after,
            "a new connection presented a certificate that was no longer current"
        );
        distinct.insert(got);
        tokio::io::AsyncWriteExt::shutdown(&mut stream).await.ok();
        tokio::time::sleep(Duration::from_millis(250)).await;
        if distinct.len() >= 3 {
            break;
        }
    }
    assert!(
        distinct.len() >= 3,
        "new connections presented only {} distinct client certificates in 5 s",
        distinct.len()
    );
    assert!(distinct.contains(&first));
    accepting.abort();
}
