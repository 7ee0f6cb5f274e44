//! Certificates for workloads in other languages, from `meshctl certify`: the command's own
//! code (its argument parser and `run`, all the binary does), run on a thread of its own as a
//! separate process would, against the harness's control service.

use std::path::{Path, PathBuf};

use clap::Parser;
use mesh_control::ctl::{Cli, EXIT_OK, run};

use crate::{Harness, token_for};

/// The files `meshctl certify` wrote.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The directory (`--out`).
    pub dir: PathBuf,
    /// `cert.pem`: the chain, leaf first.
    pub cert: PathBuf,
    /// `key.pem`.
    pub key: PathBuf,
    /// `ca.pem`: the trust bundle.
    pub ca: PathBuf,
    /// `bootstrap.json`: gRPC's xDS bootstrap.
    pub bootstrap: PathBuf,
}

impl Harness {
    /// Runs `meshctl certify` once for service account `account` (its bootstrap token, the
    /// harness's trust anchors and control service), writing into `dir`, with `extra` flags
    /// (`--service greeter.default`, `--zone a`, `--xds-server localhost:PORT`, ...).
    pub async fn certify_files(
        &self,
        account: &str,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<CertFiles> {
        std::fs::create_dir_all(dir)?;
        let token = dir.join(format!("{account}.token"));
        std::fs::write(&token, token_for(account))?;
        let out = dir.join(account);
        let mut args: Vec<String> = vec![
            "meshctl".into(),
            "certify".into(),
            "--control".into(),
            self.control_addr().to_string(),
            "--trust-domain".into(),
            self.trust_domain.to_string(),
            "--trust-anchors".into(),
            self.anchors.display().to_string(),
            "--token-file".into(),
            token.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let cli = Cli::try_parse_from(args)?;
        // Its own thread: `run` starts a runtime of its own, as the binary's process does.
        let thread = std::thread::spawn(move || run(cli));
        let code = tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("meshctl certify panicked"))?;
        anyhow::ensure!(code == EXIT_OK, "meshctl certify exited with {code}");
        Ok(CertFiles {
            cert: out.join("cert.pem"),
            key: out.join("key.pem"),
            ca: out.join("ca.pem"),
            bootstrap: out.join("bootstrap.json"),
            dir: out,
        })
    }
}
