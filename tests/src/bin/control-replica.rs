//! One control replica in a process of its own, for tests that kill it as a crash would
//! (`tests/tests/replicas.rs`): `mesh_control::start` (what the `mesh-control` binary runs) on
//! a control file, with a dev CA in a directory that the replicas share, its peers, and the
//! ports the test picked. It serves until it is killed.
//!
//! `control-replica CONFIG CA_DIR LISTEN ADMIN TRUST_BUNDLE_OUT [PEER...]`

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use mesh_control::{CaSource, ConfigSource, ControlOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut next = |what: &str| args.next().with_context(|| format!("missing {what}"));
    let config = PathBuf::from(next("CONFIG")?);
    let ca_dir = PathBuf::from(next("CA_DIR")?);
    let listen: SocketAddr = next("LISTEN")?.parse().context("LISTEN")?;
    let admin: SocketAddr = next("ADMIN")?.parse().context("ADMIN")?;
    let bundle = PathBuf::from(next("TRUST_BUNDLE_OUT")?);
    let peers: Vec<String> = std::iter::from_fn(|| next("PEER").ok()).collect();

    let mut options = ControlOptions::new(
        mesh_core::testing::trust_domain(),
        ConfigSource::File(config),
    );
    options.listen = listen;
    options.admin_listen = Some(admin);
    options.ca = CaSource::Dev { state_dir: ca_dir };
    options.trust_bundle_out = Some(bundle);
    options.peers = peers;
    let control = mesh_control::start(options).await?;
    println!(
        "serving {} admin {:?}",
        control.addr(),
        control.admin_addr()
    );
    // Until killed: the test ends it with SIGKILL, as a crash would.
    std::future::pending::<()>().await;
    Ok(())
}
