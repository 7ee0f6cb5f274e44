//! The `mesh-control` binary: the control service from the command line (or environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mesh_control::{CaSource, ConfigSource, ConnectionLimits, ControlOptions, DEFAULT_NAMESPACE};
use mesh_core::TrustDomain;
use mesh_core::anchor_rotation::RotationSchedule;
use tracing_subscriber::EnvFilter;

/// The mesh's control service: config for meshed services (Watch) and their certificates
/// (Certify), over TLS.
#[derive(Debug, Parser)]
#[command(name = "mesh-control", version, about)]
struct Args {
    /// The control file (YAML: `services`, `bootstrapTokens`), re-read when it changes.
    #[arg(
        long,
        env = "MESH_CONTROL_CONFIG",
        value_name = "PATH",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    config: Option<PathBuf>,

    /// Read config from the Kubernetes API (in-cluster credentials or KUBECONFIG) instead of
    /// a file; Certify then authenticates pods by TokenReview.
    #[arg(long, env = "MESH_CONTROL_KUBERNETES")]
    kubernetes: bool,

    /// The audience workloads' projected ServiceAccount tokens must carry (Kubernetes only).
    #[arg(
        long,
        env = "MESH_CONTROL_TOKEN_AUDIENCE",
        default_value = "mesh-control"
    )]
    token_audience: String,

    /// Where gRPC listens.
    #[arg(long, env = "MESH_CONTROL_LISTEN", default_value = "127.0.0.1:7400")]
    listen: SocketAddr,

    /// Where the admin HTTP server (/healthz, /readyz, /subscribers, /metrics, /ui) listens.
    #[arg(long, env = "MESH_CONTROL_ADMIN", default_value = "127.0.0.1:7401")]
    admin: SocketAddr,

    /// The trust domain of every identity the control service signs.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = "mesh.local")]
    trust_domain: TrustDomain,

    /// The namespace in the control service's own identity
    /// (spiffe://<trust-domain>/ns/<namespace>/sa/mesh-control).
    #[arg(long, env = "MESH_CONTROL_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    namespace: String,

    /// Directory of the dev CA (ca.crt, ca.key) and of the default trust bundle file.
    #[arg(long, env = "MESH_CONTROL_STATE_DIR", default_value = ".mesh-control")]
    state_dir: PathBuf,

    /// Use an existing CA instead of the dev CA: its root certificate(s), PEM.
    #[arg(long, env = "MESH_CONTROL_CA_ROOT_CERT", requires = "ca_issuer_key")]
    ca_root_cert: Option<PathBuf>,

    /// The certificate of the signing CA, PEM; the root itself when omitted.
    #[arg(long, env = "MESH_CONTROL_CA_ISSUER_CERT", requires = "ca_root_cert")]
    ca_issuer_cert: Option<PathBuf>,

    /// The signing CA's private key, PKCS#8 PEM.
    #[arg(long, env = "MESH_CONTROL_CA_ISSUER_KEY", requires = "ca_root_cert")]
    ca_issuer_key: Option<PathBuf>,

    /// Where to write the trust bundle (PEM) for clients' MESH_TRUST_ANCHORS_FILE
    /// [default: <state-dir>/trust-bundle.pem].
    #[arg(long, env = "MESH_CONTROL_TRUST_BUNDLE_OUT")]
    trust_bundle_out: Option<PathBuf>,

    /// Lifetime of signed certificates, e.g. `24h`, `90m`, `1h30m`, `90s`.
    #[arg(long, env = "MESH_CONTROL_CERT_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    cert_lifetime: Duration,

    /// How often the control file is read for edits (an edit applies once two reads agree).
    #[arg(long, env = "MESH_CONTROL_POLL_INTERVAL", default_value = "200ms", value_parser = parse_poll_interval)]
    poll_interval: Duration,

    /// Connections held at once, TLS handshakes included; one over it is closed at once.
    /// Each takes a file descriptor: the open-file limit is raised to its hard limit at start.
    #[arg(long, env = "MESH_CONTROL_MAX_CONNECTIONS", default_value = "10000", value_parser = parse_positive)]
    max_connections: usize,

    /// TLS handshakes in progress at once; when full, the oldest is abandoned for a new one.
    #[arg(long, env = "MESH_CONTROL_MAX_HANDSHAKES", default_value = "256", value_parser = parse_positive)]
    max_handshakes: usize,

    /// TLS handshakes in progress at once from one source address (IPv6: one /64); a new
    /// connection from a source at its share is closed at once.
    #[arg(long, env = "MESH_CONTROL_MAX_HANDSHAKES_PER_IP", default_value = "32", value_parser = parse_positive)]
    max_handshakes_per_ip: usize,

    /// How long a TLS handshake may take, e.g. `10s`.
    #[arg(long, env = "MESH_CONTROL_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,

    /// How long a connection may have no call open before it is closed, e.g. `60s`.
    #[arg(long, env = "MESH_CONTROL_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// Rotate the dev CA's root automatically (state in <state-dir>/ca-rotation.json, or in
    /// the Secret `mesh-control-ca` with --kubernetes). Not with --ca-root-cert.
    #[arg(long, env = "MESH_CONTROL_ROOT_ROTATION")]
    root_rotation: bool,

    /// Lifetime of each root a rotation makes (at least 10s).
    #[arg(long, env = "MESH_CONTROL_ROOT_LIFETIME", default_value = "8760h", value_parser = parse_duration)]
    root_lifetime: Duration,

    /// At which share of a root's life its rotation starts (50 to 90).
    #[arg(
        long,
        env = "MESH_CONTROL_ROOT_ROTATE_AT_PERCENT",
        default_value = "66"
    )]
    root_rotate_at_percent: u8,

    /// How long a rotation waits for every subscriber to ACK the two roots before issuing
    /// from the new one anyway.
    #[arg(long, env = "MESH_CONTROL_ROOT_ACK_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    root_ack_timeout: Duration,

    /// Suffixes of the DNS names workload certificates carry, comma-separated:
    /// `<service>.<namespace>.<suffix>` for each service the workload's identity serves. An
    /// empty value gives certificates no DNS names.
    #[arg(
        long,
        env = "MESH_CONTROL_DNS_SAN_SUFFIXES",
        value_delimiter = ',',
        default_value = "svc,svc.cluster.local",
        value_name = "SUFFIX,..."
    )]
    dns_san_suffixes: Vec<String>,

    /// A name the control service's own certificate carries (a DNS name, or an IP address),
    /// besides `mesh-control.<namespace>.<suffix>`: the host gRPC clients in other languages
    /// dial (their bootstrap's `server_uri`). Repeatable or comma-separated.
    #[arg(
        long,
        env = "MESH_CONTROL_SERVER_NAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    server_name: Vec<String>,

    /// Another replica of this control service (`host:port` of its gRPC port), whose
    /// subscribers `/subscribers` and `meshctl status` list beside this replica's, asked over
    /// mTLS with the control service's own identity. A name that resolves to several
    /// addresses (the headless Service of the control Deployment) is every replica behind it,
    /// this one skipped. Repeatable or comma-separated.
    #[arg(
        long,
        env = "MESH_CONTROL_PEERS",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    peer: Vec<String>,

    /// The name this replica's subscribers are marked with in the view (e.g. the pod's name,
    /// `POD_NAME` from the downward API); by default its gRPC address.
    #[arg(long, env = "MESH_CONTROL_REPLICA_NAME")]
    replica_name: Option<String>,

    /// Peer addresses asked at most; those beyond are reported as not asked.
    #[arg(long, env = "MESH_CONTROL_MAX_PEERS", default_value = "16", value_parser = parse_positive)]
    max_peers: usize,

    /// How long a peer may take to connect and answer (peers are asked at once), e.g. `2s`.
    #[arg(long, env = "MESH_CONTROL_PEER_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    peer_timeout: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Colours only on a terminal (and not with `NO_COLOR`): a log file or collector gets text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(colour)
        .init();
    let args = Args::parse();
    let max_connections = fit_to_open_file_limit(args.max_connections, raise_open_file_limit());

    let ca = match (args.ca_root_cert, args.ca_issuer_key) {
        (Some(root_cert), Some(issuer_key)) => CaSource::Files {
            issuer_cert: args.ca_issuer_cert.unwrap_or_else(|| root_cert.clone()),
            root_cert,
            issuer_key,
        },
        _ => CaSource::Dev {
            state_dir: args.state_dir.clone(),
        },
    };
    let trust_bundle_out = args
        .trust_bundle_out
        .unwrap_or_else(|| args.state_dir.join("trust-bundle.pem"));

    let source = config_source(args.config, args.kubernetes, args.token_audience).await?;
    let mut options = ControlOptions::new(args.trust_domain, source);
    options.listen = args.listen;
    options.admin_listen = Some(args.admin);
    options.ca = ca;
    options.trust_bundle_out = Some(trust_bundle_out.clone());
    options.namespace = args.namespace;
    // `--dns-san-suffixes ''` is one empty value: no suffixes.
    options.dns_san_suffixes =
        mesh_control::DnsSanSuffixes::new(args.dns_san_suffixes.iter().filter(|s| !s.is_empty()))
            .map_err(|e| anyhow::anyhow!("--dns-san-suffixes: {e}"))?;
    options.server_names = args.server_name;
    options.peers = args.peer.into_iter().filter(|p| !p.is_empty()).collect();
    options.replica_name = args.replica_name;
    options.peer_limits.max_peers = args.max_peers;
    options.peer_limits.timeout = args.peer_timeout;
    options.cert_lifetime = args.cert_lifetime;
    options.file_poll_interval = args.poll_interval;
    options.root_rotation = args.root_rotation.then_some(RotationSchedule {
        root_lifetime: args.root_lifetime,
        rotate_at_percent: args.root_rotate_at_percent,
        ack_timeout: args.root_ack_timeout,
    });
    options.connection_limits = ConnectionLimits {
        max_connections,
        max_handshakes: args.max_handshakes,
        max_handshakes_per_ip: args.max_handshakes_per_ip,
        handshake_timeout: args.handshake_timeout,
        idle_timeout: args.idle_timeout,
    };

    let control = mesh_control::start(options)
        .await
        .context("mesh-control did not start")?;
    println!(
        "mesh-control {} listening on {} (admin http://{})",
        control.identity(),
        control.addr(),
        control.admin_addr().unwrap_or(args.admin),
    );
    println!("trust bundle: {}", trust_bundle_out.display());

    stop_signal().await?;
    tracing::info!("stopping");
    control.shutdown().await;
    Ok(())
}

/// The file, or the cluster when `kubernetes` is set (clap makes sure exactly one is given).
async fn config_source(
    config: Option<PathBuf>,
    kubernetes: bool,
    #[cfg_attr(not(feature = "kubernetes"), allow(unused_variables))] audience: String,
) -> anyhow::Result<ConfigSource> {
    if !kubernetes {
        let path = config.context("--config or --kubernetes is required")?;
        return Ok(ConfigSource::File(path));
    }
    #[cfg(feature = "kubernetes")]
    {
        let client = kube::Client::try_default()
            .await
            .context("no Kubernetes credentials (in-cluster or KUBECONFIG)")?;
        let mut source = mesh_control::k8s::KubernetesSource::new(client);
        source.audience = audience;
        Ok(ConfigSource::Kubernetes(source))
    }
    #[cfg(not(feature = "kubernetes"))]
    anyhow::bail!("--kubernetes: this build of mesh-control has no `kubernetes` feature")
}

/// File descriptors the process needs besides its connections: the listeners, the control
/// file, the CA files, the runtime's own, logs.
const SPARE_FILES: u64 = 64;

/// Raises the soft open-file limit to the hard one and logs what it did; returns the limit now
/// in force (`None`: unlimited). Every connection takes a file descriptor, and a common default
/// soft limit (1,024) is far below the default `--max-connections`.
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let show = |limit: Option<u64>| limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    if before.current == before.maximum {
        tracing::info!(
            limit = show(before.current),
            "open-file limit already at its hard limit"
        );
        return before.current;
    }
    let raised = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(
                from = show(before.current),
                to = show(before.maximum),
                "raised the open-file limit to its hard limit"
            );
            before.maximum
        }
        Err(error) => {
            tracing::warn!(
                limit = show(before.current),
                hard = show(before.maximum),
                %error,
                "could not raise the open-file limit"
            );
            before.current
        }
    }
}

/// The connection cap the process can keep: `wanted`, or fewer when the open-file `limit`
/// cannot hold that many connections besides [`SPARE_FILES`]. Past the descriptor limit an
/// accept fails and every new client waits in the kernel's queue, so a flood of established
/// connections would shut out everyone; under the cap a connection over it is closed at once
/// and the slots of idle ones come back (see `ConnectionLimits::idle_timeout`).
fn fit_to_open_file_limit(wanted: usize, limit: Option<u64>) -> usize {
    let Some(limit) = limit else { return wanted };
    let room = usize::try_from(limit.saturating_sub(SPARE_FILES))
        .unwrap_or(usize::MAX)
        .max(1);
    if room >= wanted {
        return wanted;
    }
    tracing::warn!(
        limit,
        wanted,
        max_connections = room,
        "the open-file limit holds fewer connections than --max-connections (plus \
         {SPARE_FILES} spare): the cap is lowered to fit; raise the hard limit for more"
    );
    room
}

/// A count of at least 1.
fn parse_positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err(format!("{text:?}: must be at least 1")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?}: {e}")),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Parses `24h`, `90m`, `1h30m`, `90s`: numbers each followed by `h`, `m` or `s`.
/// A Gateway API duration (`200ms`, `1s`), at least 1 ms.
fn parse_poll_interval(text: &str) -> Result<Duration, String> {
    match mesh_core::duration::parse(text) {
        Ok(d) if d >= Duration::from_millis(1) => Ok(d),
        Ok(_) => Err(format!("{text:?}: must be at least 1ms")),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let overflow = || format!("{text:?} is too long");
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {c:?}; use h, m or s (e.g. 24h, 90s)"
                ));
            }
        };
        if digits.is_empty() {
            return Err(format!("{text:?}: expected a number before {c:?}"));
        }
        let n: u64 = digits.parse().map_err(|_| overflow())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(overflow)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "{text:?}: missing unit after {digits}; use h, m or s (e.g. 24h, 90s)"
        ));
    }
    if total == 0 {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1h30m15s"), Ok(Duration::from_secs(5_415)));
        for bad in [
            "",
            "24",
            "h",
            "1d",
            "0s",
            "-1h",
            "1.5h",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_duration("24")
                .expect_err("refused")
                .contains("missing unit")
        );
    }

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        assert_eq!(fit_to_open_file_limit(10_000, None), 10_000);
        assert_eq!(fit_to_open_file_limit(10_000, Some(1 << 20)), 10_000);
        assert_eq!(fit_to_open_file_limit(10_000, Some(1024)), 960);
        assert_eq!(fit_to_open_file_limit(10_000, Some(10)), 1);
    }

    #[test]
    fn args_parse_with_defaults_and_ca_files() {
        let args = Args::try_parse_from(["mesh-control", "--config", "c.yaml"]).expect("parses");
        assert_eq!(args.listen, "127.0.0.1:7400".parse().expect("addr"));
        assert_eq!(args.admin, "127.0.0.1:7401".parse().expect("addr"));
        assert_eq!(args.trust_domain.as_str(), "mesh.local");
        assert_eq!(args.namespace, "mesh-system");
        assert_eq!(args.cert_lifetime, Duration::from_secs(86_400));
        // The flags' defaults are the library's.
        assert_eq!(
            ConnectionLimits {
                max_connections: args.max_connections,
                max_handshakes: args.max_handshakes,
                max_handshakes_per_ip: args.max_handshakes_per_ip,
                handshake_timeout: args.handshake_timeout,
                idle_timeout: args.idle_timeout,
            },
            ConnectionLimits::default()
        );
        let args = Args::try_parse_from(["mesh-control", "--kubernetes"]).expect("parses");
        assert!(args.kubernetes && args.config.is_none());
        assert_eq!(args.token_audience, "mesh-control");
        assert!(
            Args::try_parse_from(["mesh-control", "--kubernetes", "--config", "c"]).is_err(),
            "one source"
        );
        assert!(
            Args::try_parse_from(["mesh-control"]).is_err(),
            "--config is required"
        );
        assert!(
            Args::try_parse_from(["mesh-control", "--config", "c", "--ca-root-cert", "r"]).is_err(),
            "a root without a key"
        );
        let args = Args::try_parse_from([
            "mesh-control",
            "--config",
            "c",
            "--ca-root-cert",
            "r.pem",
            "--ca-issuer-key",
            "k.pem",
            "--cert-lifetime",
            "1h",
            "--max-connections",
            "500",
            "--max-handshakes-per-ip",
            "4",
        ])
        .expect("parses");
        assert_eq!((args.max_connections, args.max_handshakes_per_ip), (500, 4));
        assert!(
            Args::try_parse_from(["mesh-control", "--config", "c", "--max-handshakes", "0"])
                .is_err(),
            "zero lets nothing through"
        );
        assert_eq!(args.ca_root_cert, Some(PathBuf::from("r.pem")));
        assert_eq!(args.cert_lifetime, Duration::from_secs(3600));
        assert!(
            Args::try_parse_from([
                "mesh-control",
                "--config",
                "c",
                "--trust-domain",
                "Bad Domain"
            ])
            .is_err()
        );
    }
}
