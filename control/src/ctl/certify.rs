//! `meshctl certify`: a SPIFFE certificate for a workload that is not a Rust mesh workload (a
//! gRPC service in Python, Go, Java, C++), obtained and renewed by the same `Certify` flow Rust
//! workloads use, written as files that gRPC reads, with the xDS bootstrap file beside them.
//!
//! ```text
//! meshctl certify --control HOST:PORT --trust-anchors ca-bootstrap.pem \
//!     --token-file /var/run/secrets/tokens/mesh-token --out /var/run/mesh \
//!     [--service greeter.default] [--node-id ID] [--zone Z] [--xds-server HOST:PORT] \
//!     [--bootstrap FILE] [--refresh-interval 600] [--renew]
//! ```
//!
//! - The key pair is made in this process (ECDSA P-256) and written only to `key.pem` (mode
//!   0600); the CSR asks for nothing, and the control service decides the certificate's names
//!   from the token's identity: the SPIFFE ID, and DNS names of the services it serves.
//! - The proof is the token in `--token-file` (re-read at every request): a bootstrap token
//!   of the control file, or in Kubernetes a projected ServiceAccount token with the control
//!   service's audience.
//! - The control service must present its own SPIFFE ID (`--control-identity`, default
//!   `spiffe://<trust-domain>/ns/mesh-system/sa/mesh-control`) chained to the roots in
//!   `--trust-anchors`, as Rust workloads check it (`MESH_TRUST_ANCHORS_FILE`). The host of
//!   `--control` is sent as the TLS server name.
//! - `--out DIR` receives `cert.pem` (leaf first, then intermediates), `key.pem` and `ca.pem`
//!   (the trust bundle), replaced together in one rename (see `files` for the layout and why),
//!   and then the bootstrap file (`--bootstrap`, default `DIR/bootstrap.json`, see
//!   [`crate::xds_bootstrap`]): once the bootstrap file exists, the certificates are in place.
//! - Once (the default, for a Kubernetes init container): exit 0 when the files are written,
//!   1 when the control service refused, 2 on a usage or I/O error. With `--renew` it keeps
//!   running: renews at about half the lifetime, retries with backoff, and rewrites `ca.pem`
//!   when the trust domain's roots change (see `renew`).
//!
//! Every flag has an environment variable, the same as a Rust workload's where there is one:
//! `MESH_CONTROL_ADDR`, `MESH_CONTROL_IDENTITY`, `MESH_TRUST_DOMAIN`,
//! `MESH_TRUST_ANCHORS_FILE`, `MESH_TOKEN_FILE`, `MESH_SERVICE`, `MESH_NODE_NAME` (node id),
//! `MESH_ZONE`, and `MESH_CERT_DIR` for `--out`.

mod client;
pub mod files;
mod renew;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use mesh_core::backoff::Backoff;
use mesh_core::snapshot::ServiceName;
use mesh_core::tls::{TrustBundle, TrustStore};
use mesh_core::{SpiffeId, TrustDomain};

use crate::xds_bootstrap::{Bootstrap, BootstrapParams};
use client::{Control, Issued};

/// `meshctl certify`.
#[derive(Debug, Clone, Args)]
pub struct CertifyArgs {
    /// The control service's gRPC address, `host:port`; repeatable or comma-separated (tried
    /// in turn).
    #[arg(
        long,
        env = "MESH_CONTROL_ADDR",
        value_delimiter = ',',
        required = true,
        value_name = "HOST:PORT"
    )]
    pub control: Vec<String>,

    /// The SPIFFE ID the control service must present (default
    /// `spiffe://<trust-domain>/ns/mesh-system/sa/mesh-control`).
    #[arg(long, env = "MESH_CONTROL_IDENTITY", value_name = "SPIFFE_ID")]
    pub control_identity: Option<SpiffeId>,

    /// The trust domain.
    #[arg(
        long,
        env = "MESH_TRUST_DOMAIN",
        default_value = "mesh.local",
        value_name = "DOMAIN"
    )]
    pub trust_domain: TrustDomain,

    /// The roots (PEM) the control service's certificate must chain to.
    #[arg(long, env = "MESH_TRUST_ANCHORS_FILE", value_name = "PEM")]
    pub trust_anchors: PathBuf,

    /// The proof of identity: a bootstrap token, or a projected ServiceAccount token.
    #[arg(long, env = "MESH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: PathBuf,

    /// Where `cert.pem`, `key.pem` and `ca.pem` go (created when missing).
    #[arg(long, env = "MESH_CERT_DIR", value_name = "DIR")]
    pub out: PathBuf,

    /// The service this workload serves (`name.namespace`), told to the xDS server in the
    /// bootstrap's node metadata (`mesh.service`).
    #[arg(long, env = "MESH_SERVICE", value_name = "NAME.NAMESPACE")]
    pub service: Option<ServiceName>,

    /// The bootstrap's node id (default `<service>~<hostname>`, or `<spiffe-id>~<hostname>`
    /// without `--service`).
    #[arg(long, env = "MESH_NODE_NAME", value_name = "ID")]
    pub node_id: Option<String>,

    /// The zone this workload runs in (the bootstrap's `node.locality.zone`).
    #[arg(long, env = "MESH_ZONE", value_name = "ZONE")]
    pub zone: Option<String>,

    /// The xDS server in the bootstrap (`host:port`; default: the first `--control`). gRPC
    /// checks the host against the control service's certificate's DNS names.
    #[arg(long, value_name = "HOST:PORT")]
    pub xds_server: Option<String>,

    /// Where the xDS bootstrap file goes (default `<out>/bootstrap.json`).
    #[arg(long, value_name = "FILE")]
    pub bootstrap: Option<PathBuf>,

    /// How often gRPC re-reads the certificate files, in seconds (written to the bootstrap).
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub refresh_interval: u64,

    /// Keep running: renew at about half the lifetime and follow the trust bundle.
    #[arg(long)]
    pub renew: bool,
}

/// Why `meshctl certify` failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// A flag's value is unusable.
    #[error("--{flag}: {reason}")]
    Usage {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The token file could not be read or is unusable.
    #[error("token file {}: {reason}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key or CSR could not be made.
    #[error("making the key or CSR: {0}")]
    Key(#[source] rcgen::Error),
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(String),
    /// No control address could be reached.
    #[error("control service {control}: {reason}")]
    Connect {
        /// The address.
        control: String,
        /// Why.
        reason: String,
    },
    /// The control service refused.
    #[error("control service refused: {code:?}: {message}")]
    Refused {
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The reply does not hold up.
    #[error("the issued certificate is unusable: {0}")]
    BadReply(String),
    /// A file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl CertifyError {
    /// The exit status: 1 when the control service refused, 2 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused { .. } => 1,
            _ => 2,
        }
    }
}

/// The longest `--zone` (a Kubernetes label value, as `MESH_ZONE`).
pub const MAX_ZONE_BYTES: usize = 63;
/// The longest `--node-id`.
pub const MAX_NODE_ID_BYTES: usize = 253;

/// Checks the flags that go into the bootstrap as they are.
fn check_args(args: &CertifyArgs) -> Result<(), CertifyError> {
    let too_long = |flag, len: usize, max: usize| CertifyError::Usage {
        flag,
        reason: format!("{len} bytes, more than the {max} allowed"),
    };
    if let Some(zone) = &args.zone
        && zone.len() > MAX_ZONE_BYTES
    {
        return Err(too_long("zone", zone.len(), MAX_ZONE_BYTES));
    }
    if let Some(node) = &args.node_id {
        if node.is_empty() {
            return Err(CertifyError::Usage {
                flag: "node-id",
                reason: "empty".to_owned(),
            });
        }
        if node.len() > MAX_NODE_ID_BYTES {
            return Err(too_long("node-id", node.len(), MAX_NODE_ID_BYTES));
        }
    }
    if args.control.is_empty() {
        return Err(CertifyError::Usage {
            flag: "control",
            reason: "no address given".to_owned(),
        });
    }
    Ok(())
}

/// Runs `meshctl certify` to completion (once), or forever with `--renew`.
pub async fn certify(args: &CertifyArgs) -> Result<(), CertifyError> {
    check_args(args)?;
    let anchors = std::fs::read(&args.trust_anchors).map_err(|e| CertifyError::Usage {
        flag: "trust-anchors",
        reason: format!("{}: {e}", args.trust_anchors.display()),
    })?;
    let bundle = TrustBundle::from_pem(args.trust_domain.clone(), &anchors).map_err(|e| {
        CertifyError::Usage {
            flag: "trust-anchors",
            reason: format!("{}: {e}", args.trust_anchors.display()),
        }
    })?;
    let control = Control {
        addrs: args.control.clone(),
        identity: match &args.control_identity {
            Some(id) => id.clone(),
            None => default_control_identity(&args.trust_domain)?,
        },
    };
    let trust = TrustStore::new(bundle);
    let issued = control.certify(&trust, &args.token_file).await?;
    trust.store(issued.bundle.clone());
    write_set(args, &issued, &issued.bundle).await?;
    let node = node_id(args, &issued.id);
    write_bootstrap(args, &node).await?;
    tracing::info!(id = %issued.id, valid_for_secs = valid_for(&issued).as_secs(), "certificate written");
    if !args.renew {
        return Ok(());
    }
    let mut issued = issued;
    loop {
        let at = renew::renew_at(issued.received_at, issued.not_after, fastrand::f64());
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        let renewal = tokio::time::sleep(wait);
        tokio::pin!(renewal);
        let mut backoff = Backoff::new(renew::BACKOFF_MIN, renew::BACKOFF_MAX);
        // Follow the trust bundle until it is time to renew.
        loop {
            let follow = renew::follow_bundle(&control, &trust, &issued, &node, |bundle| {
                write_set_blocking(args, &issued, bundle)
            });
            tokio::select! {
                () = &mut renewal => break,
                ended = follow => {
                    match ended {
                        // A stream that ran and ended (the control service restarted, say) is
                        // reopened after the shortest wait again.
                        Ok(()) => backoff.reset(),
                        Err(error) => tracing::debug!(%error, "trust bundle stream failed"),
                    }
                    tokio::select! {
                        () = &mut renewal => break,
                        () = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
            }
        }
        let mut backoff = Backoff::new(renew::BACKOFF_MIN, renew::BACKOFF_MAX);
        issued = loop {
            match control.certify(&trust, &args.token_file).await {
                Ok(renewed) => break renewed,
                Err(error) => {
                    tracing::warn!(%error, "renewal failed; retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        };
        trust.store(issued.bundle.clone());
        // A write that fails is retried at the next renewal; the files in place stay valid.
        match write_set(args, &issued, &issued.bundle).await {
            Ok(()) => tracing::info!(
                id = %issued.id,
                valid_for_secs = valid_for(&issued).as_secs(),
                "certificate renewed"
            ),
            Err(error) => tracing::error!(%error, "writing the renewed certificate failed"),
        }
    }
}

fn valid_for(issued: &Issued) -> Duration {
    issued
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

fn default_control_identity(trust_domain: &TrustDomain) -> Result<SpiffeId, CertifyError> {
    SpiffeId::from_service_account(
        trust_domain,
        crate::DEFAULT_NAMESPACE,
        crate::SERVICE_ACCOUNT,
    )
    .map_err(|e| CertifyError::Usage {
        flag: "control-identity",
        reason: e.to_string(),
    })
}

/// `--node-id`, else `<service>~<hostname>` (`<spiffe-id>~<hostname>` without a service).
fn node_id(args: &CertifyArgs, id: &SpiffeId) -> String {
    if let Some(node) = &args.node_id {
        return node.clone();
    }
    let who = args
        .service
        .as_ref()
        .map_or_else(|| id.to_string(), ToString::to_string);
    format!("{who}~{}", hostname())
}

/// `HOSTNAME`, else the kernel's host name, else the process id.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

/// Writes the three files on a blocking thread.
async fn write_set(
    args: &CertifyArgs,
    issued: &Issued,
    bundle: &TrustBundle,
) -> Result<(), CertifyError> {
    let out = args.out.clone();
    let chain = mesh_core::pem::certificates(issued.chain.iter().map(|c| c.as_ref()));
    let key = issued.key_pem.clone();
    let ca = bundle.to_pem();
    tokio::task::spawn_blocking(move || {
        files::write_set(
            &out,
            &files::Pems {
                chain: &chain,
                key: &key,
                ca: &ca,
            },
        )
        .map_err(|source| CertifyError::Write { path: out, source })
    })
    .await
    .map_err(|e| CertifyError::Write {
        path: args.out.clone(),
        source: std::io::Error::other(e),
    })?
}

/// Writes the three files here (the trust bundle follower's callback; small files).
fn write_set_blocking(
    args: &CertifyArgs,
    issued: &Issued,
    bundle: &TrustBundle,
) -> Result<(), CertifyError> {
    let chain = mesh_core::pem::certificates(issued.chain.iter().map(|c| c.as_ref()));
    files::write_set(
        &args.out,
        &files::Pems {
            chain: &chain,
            key: &issued.key_pem,
            ca: &bundle.to_pem(),
        },
    )
    .map_err(|source| CertifyError::Write {
        path: args.out.clone(),
        source,
    })
}

/// Writes the bootstrap file (once: nothing in it changes with a renewal).
async fn write_bootstrap(args: &CertifyArgs, node: &str) -> Result<(), CertifyError> {
    let out = absolute(&args.out)?;
    let path = args
        .bootstrap
        .clone()
        .unwrap_or_else(|| args.out.join("bootstrap.json"));
    let xds_server = args
        .xds_server
        .clone()
        .or_else(|| args.control.first().cloned())
        .unwrap_or_default();
    let bootstrap = Bootstrap::new(&BootstrapParams {
        server_uri: xds_server,
        node_id: node.to_owned(),
        service: args.service.as_ref().map(ToString::to_string),
        zone: args.zone.clone(),
        certificate_file: out.join(files::CERT_FILE),
        private_key_file: out.join(files::KEY_FILE),
        ca_certificate_file: out.join(files::CA_FILE),
        refresh_interval: Duration::from_secs(args.refresh_interval.max(1)),
    });
    mesh_process::atomic_file::write_async(path.clone(), bootstrap.to_json().into_bytes(), 0o644)
        .await
        .map_err(|source| CertifyError::Write { path, source })
}

/// `path` made absolute: gRPC resolves the bootstrap's file names from its own working
/// directory.
fn absolute(path: &std::path::Path) -> Result<PathBuf, CertifyError> {
    std::path::absolute(path).map_err(|source| CertifyError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::ctl::{Cli, Command};

    fn args(extra: &[&str]) -> CertifyArgs {
        let base = [
            "meshctl",
            "certify",
            "--control",
            "127.0.0.1:7400",
            "--trust-anchors",
            "a.pem",
            "--token-file",
            "t",
            "--out",
            "o",
        ];
        let cli = Cli::try_parse_from(base.iter().chain(extra)).expect("parses");
        match cli.command {
            Command::Certify(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bootstrap_values_are_bounded() {
        assert!(check_args(&args(&["--zone", "zone-a", "--node-id", "n"])).is_ok());
        let long = "z".repeat(64);
        let error = check_args(&args(&["--zone", &long])).expect_err("too long");
        assert_eq!(
            error.to_string(),
            "--zone: 64 bytes, more than the 63 allowed"
        );
        let error = check_args(&args(&["--node-id", ""])).expect_err("empty");
        assert_eq!(error.to_string(), "--node-id: empty");
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn a_service_must_name_its_namespace() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "certify",
            "--control",
            "c:1",
            "--trust-anchors",
            "a",
            "--token-file",
            "t",
            "--out",
            "o",
            "--service",
            "greeter",
        ]);
        assert!(cli.is_err());
    }
}
