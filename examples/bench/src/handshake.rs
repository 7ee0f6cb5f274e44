//! Scenario `handshake`: the cost of the post-quantum hybrid key exchange. Full mutual TLS 1.3
//! handshakes between two mesh certificates, in memory on one thread (no sockets, so only the
//! cryptography and rustls count), with the mesh's provider (X25519MLKEM768 preferred) and
//! with ring's classical groups alone (X25519), interleaved in the same run: handshakes per
//! second and the bytes each side sends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_control::Ca;
use mesh_core::TrustDomain;
use mesh_core::tls::{SpiffeClientVerifier, SpiffeServerVerifier, TrustStore, crypto_provider};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ClientConnection, NamedGroup, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;

use crate::Args;

/// One side's configs for a provider.
struct Pair {
    name: &'static str,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

/// What one handshake cost.
#[derive(Debug, Clone, Copy)]
struct Handshake {
    client_bytes: usize,
    server_bytes: usize,
    group: Option<NamedGroup>,
}

/// Runs the scenario.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let seconds = Duration::from_secs(args.seconds.clamp(1, 30));
    println!(
        "\nhandshake benchmark: mutual TLS 1.3, in memory, one thread, {} s x {} runs",
        seconds.as_secs(),
        args.runs
    );
    let td = TrustDomain::new("mesh.local")?;
    let ca = Ca::ephemeral(&td)?;
    let hybrid = pair("mesh (X25519MLKEM768)", &ca, &td, crypto_provider())?;
    let classical = pair(
        "classical (X25519)",
        &ca,
        &td,
        Arc::new(rustls::crypto::ring::default_provider()),
    )?;
    let mut rates: Vec<(f64, f64)> = Vec::new();
    for run in 1..=args.runs {
        // Interleaved: both see the same machine state.
        let c = rate(&classical, seconds / 2)?;
        let h = rate(&hybrid, seconds / 2)?;
        println!(
            "  run {run}: classical {c:.0}/s, hybrid {h:.0}/s, ratio {:.2}",
            h / c
        );
        rates.push((c, h));
    }
    let median = |f: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = rates.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, h) = (median(|r| r.0), median(|r| r.1));
    let hs_c = handshake(&classical)?;
    let hs_h = handshake(&hybrid)?;
    println!(
        "| key exchange | handshakes/s (median) | client sends | server sends | group |\n|---|---|---|---|---|"
    );
    for (p, rate, hs) in [(&classical, c, hs_c), (&hybrid, h, hs_h)] {
        println!(
            "| {} | {rate:.0} | {} B | {} B | {:?} |",
            p.name,
            hs.client_bytes,
            hs.server_bytes,
            hs.group.unwrap_or(NamedGroup::Unknown(0))
        );
    }
    println!(
        "hybrid / classical: {:.2}x handshakes per second, +{} B from the client, +{} B from the server",
        h / c,
        hs_h.client_bytes.saturating_sub(hs_c.client_bytes),
        hs_h.server_bytes.saturating_sub(hs_c.server_bytes)
    );
    crate::write_json(
        &args.json("handshake"),
        &serde_json::json!({
            "classical_per_second": c,
            "hybrid_per_second": h,
            "ratio": h / c,
            "classical_bytes": [hs_c.client_bytes, hs_c.server_bytes],
            "hybrid_bytes": [hs_h.client_bytes, hs_h.server_bytes],
        }),
    )?;
    Ok(())
}

/// Client and server configs with `provider`'s groups, presenting certificates of `ca`.
fn pair(
    name: &'static str,
    ca: &Ca,
    td: &TrustDomain,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Pair> {
    let server_id = mesh_core::SpiffeId::from_service_account(td, "default", "server")?;
    let client_id = mesh_core::SpiffeId::from_service_account(td, "default", "client")?;
    let day = Duration::from_secs(86_400);
    let (server_cert, server_key) = ca.issue_own(&server_id, day)?;
    let (client_cert, client_key) = ca.issue_own(&client_id, day)?;
    let store = TrustStore::new(ca.trust_bundle());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(store.clone(), true)))
        .with_single_cert(server_cert.chain_der, server_key)?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(store, server_id)))
        .with_client_auth_cert(client_cert.chain_der, client_key)?;
    // Full handshakes every time, as between workloads that do not resume.
    client.resumption = rustls::client::Resumption::disabled();
    server.send_tls13_tickets = 0;
    Ok(Pair {
        name,
        client: Arc::new(client),
        server: Arc::new(server),
    })
}

/// Full handshakes per second for `seconds`.
fn rate(pair: &Pair, seconds: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < seconds {
        handshake(pair)?;
        done += 1;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// One full handshake, bytes moved between the two in memory.
fn handshake(pair: &Pair) -> anyhow::Result<Handshake> {
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut client = ClientConnection::new(pair.client.clone(), name)?;
    let mut server = ServerConnection::new(pair.server.clone())?;
    let (mut client_bytes, mut server_bytes) = (0, 0);
    let mut buffer = Vec::with_capacity(8192);
    while client.is_handshaking() || server.is_handshaking() {
        buffer.clear();
        while client.wants_write() {
            client.write_tls(&mut buffer)?;
        }
        client_bytes += buffer.len();
        let mut read = &buffer[..];
        while !read.is_empty() {
            server.read_tls(&mut read)?;
        }
        server.process_new_packets()?;
        buffer.clear();
        while server.wants_write() {
            server.write_tls(&mut buffer)?;
        }
        server_bytes += buffer.len();
        let mut read = &buffer[..];
        while !read.is_empty() {
            client.read_tls(&mut read)?;
        }
        client.process_new_packets()?;
    }
    Ok(Handshake {
        client_bytes,
        server_bytes,
        group: client.negotiated_key_exchange_group().map(|g| g.name()),
    })
}
