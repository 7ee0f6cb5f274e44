//! The sidecar baseline of the `request-path` scenario: two haproxy processes between a plain
//! tonic client and a plain tonic server, as a sidecar mesh puts them (client -> outbound
//! sidecar -> mTLS -> inbound sidecar -> server).
//!
//! Both run HTTP/2 in `mode http` (gRPC needs it end to end), with `http-reuse always` so the
//! hops multiplex over their connections, and mTLS between them with the same CA as the plain
//! tonic mTLS baseline. The outbound sidecar is pinned to the load's core and the inbound one
//! to the server's, as sidecars sit beside their applications. Both are killed when the pair
//! is dropped.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::procs::{self, ChildProcess};

/// Two running haproxy processes.
pub(crate) struct SidecarPair {
    outbound: ChildProcess,
    inbound: ChildProcess,
    /// Where the client connects (plaintext HTTP/2).
    pub(crate) front: SocketAddr,
    _dir: tempfile::TempDir,
}

/// PEM files haproxy reads: the CA, and certificate + key of each side.
pub(crate) struct Pems<'a> {
    pub(crate) ca: &'a str,
    pub(crate) server: &'a str,
    pub(crate) client: &'a str,
}

impl SidecarPair {
    /// Starts the pair in front of the h2c server at `app`, or says why not. `None` when
    /// haproxy is not installed.
    pub(crate) fn start(app: SocketAddr, pems: &Pems<'_>) -> anyhow::Result<Option<Self>> {
        if !procs::on_path("haproxy") {
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let file = |name: &str, contents: &str| -> anyhow::Result<String> {
            let path = dir.path().join(name);
            std::fs::write(&path, contents)?;
            Ok(path.to_string_lossy().into_owned())
        };
        let ca = file("ca.pem", pems.ca)?;
        let server = file("server.pem", pems.server)?;
        let client = file("client.pem", pems.client)?;
        let front = free_port()?;
        let middle = free_port()?;
        let outbound_cfg = file(
            "outbound.cfg",
            &config(&format!(
                "frontend outbound\n  bind {front} proto h2\n  default_backend inbound\n\
                 backend inbound\n  http-reuse always\n  server inbound {middle} ssl crt {client} ca-file {ca} verify required alpn h2\n"
            )),
        )?;
        let inbound_cfg = file(
            "inbound.cfg",
            &config(&format!(
                "frontend inbound\n  bind {middle} ssl crt {server} ca-file {ca} verify required alpn h2\n  default_backend app\n\
                 backend app\n  http-reuse always\n  server app {app} proto h2\n"
            )),
        )?;
        check(&inbound_cfg)?;
        check(&outbound_cfg)?;
        let inbound = spawn_pinned(0, &inbound_cfg)?;
        let outbound = spawn_pinned(1, &outbound_cfg)?;
        wait_listening(middle)?;
        wait_listening(front)?;
        Ok(Some(Self {
            outbound,
            inbound,
            front,
            _dir: dir,
        }))
    }

    /// The process ids (outbound, inbound), for their CPU time.
    pub(crate) fn pids(&self) -> [u32; 2] {
        [self.outbound.pid(), self.inbound.pid()]
    }
}

fn config(proxies: &str) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 4096\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         {proxies}"
    )
}

/// haproxy in the foreground (`-db`), under `taskset` on `core` when there is one.
fn spawn_pinned(core: usize, cfg: &str) -> anyhow::Result<ChildProcess> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut command = if procs::on_path("taskset") && cores.len() > core {
        // taskset execs haproxy: the child's pid is haproxy's.
        let mut c = Command::new("taskset");
        c.args(["-c", &core.to_string(), "haproxy"]);
        c
    } else {
        Command::new("haproxy")
    };
    command.args(["-db", "-q", "-f", cfg]);
    ChildProcess::spawn(&mut command)
}

/// Refuses a config haproxy refuses, with its messages.
fn check(cfg: &str) -> anyhow::Result<()> {
    let out = Command::new("haproxy").args(["-c", "-f", cfg]).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "haproxy refused {cfg}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A port free now (haproxy binds it a moment later).
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(anyhow::anyhow!("haproxy is not listening on {addr}"))
                .context("see haproxy's messages above");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A PEM file holding a certificate chain and its key, as haproxy's `crt` wants.
pub(crate) fn cert_and_key(cert_pem: &str, key_pem: &str) -> String {
    format!("{cert_pem}{key_pem}")
}
