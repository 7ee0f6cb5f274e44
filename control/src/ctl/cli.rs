//! `meshctl`'s arguments, and running one command: what it prints and the exit status.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand};
use mesh_core::snapshot::DestinationKey;
use mesh_core::{SpiffeId, TrustDomain};

use super::check::{self, CheckOptions};
use super::error::CtlError;
use super::explain::{self, Request};
use super::load;
use super::output::{self, Format};
use super::routes;
use super::{certs, finding, status, top};

/// Exit status: all is well.
pub const EXIT_OK: u8 = 0;
/// Exit status: `check` found problems.
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit status: a usage or I/O error.
pub const EXIT_USAGE: u8 = 2;

/// The mesh's operator command: checks a control file, and shows what the mesh would do with
/// it (route tables, routing and authorization decisions), offline.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version)]
pub struct Cli {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Human)]
    pub output: Format,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A `meshctl` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a control file as the control service does, then lint it; exits 1 on any
    /// error or warning.
    Check(CheckArgs),
    /// The route table a caller of a destination gets, in precedence order.
    Routes(RoutesArgs),
    /// Which route, rule, backends and authorization verdict one request would get, without
    /// sending it.
    Explain(ExplainArgs),
    /// Every subscriber of every control replica: versions sent and acknowledged, NACKs by
    /// field, staleness, certificate expiry.
    Status(StatusArgs),
    /// The trust bundle's roots and their expiry; with `--workload`, the chain a workload
    /// presents and whether it verifies.
    Certs(CertsArgs),
    /// Live calls/s, success rate and latency per edge (caller -> service), from every
    /// control replica's live view.
    Top(TopArgs),
    /// Obtain (and with `--renew` keep renewing) a SPIFFE certificate for a workload in
    /// another language, and write gRPC's xDS bootstrap file.
    Certify(super::certify::CertifyArgs),
}

/// `meshctl top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub admin: AdminArgs,

    /// Redraw every this many seconds until interrupted; once when omitted.
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<u64>,
}

/// The control service's admin ports.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// A control replica's admin port, `host:port`; repeatable or comma-separated. A name that
    /// resolves to several addresses (a headless Service) is every replica behind it.
    #[arg(
        long,
        env = "MESH_CONTROL_ADMIN",
        value_delimiter = ',',
        default_value = "127.0.0.1:7401",
        value_name = "HOST:PORT"
    )]
    pub admin: Vec<String>,
}

/// `meshctl status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub admin: AdminArgs,
}

/// `meshctl certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub admin: AdminArgs,

    /// Read the trust bundle from this PEM file instead of the control service.
    #[arg(long, value_name = "PEM")]
    pub trust_bundle: Option<PathBuf>,

    /// The trust domain of the bundle.
    #[arg(
        long,
        env = "MESH_TRUST_DOMAIN",
        default_value = "mesh.local",
        value_name = "DOMAIN"
    )]
    pub trust_domain: TrustDomain,

    /// A workload's mTLS address (`ip:port`): show the chain it presents.
    #[arg(long, value_name = "ADDR")]
    pub workload: Option<std::net::SocketAddr>,
}

/// The control file and its trust domain.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The control file (YAML), as `mesh-control --config` reads it.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,

    /// The trust domain identities must belong to.
    #[arg(
        long,
        env = "MESH_TRUST_DOMAIN",
        default_value = "mesh.local",
        value_name = "DOMAIN"
    )]
    pub trust_domain: TrustDomain,
}

/// `meshctl check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The control file (YAML), as `mesh-control --config` reads it. Omitted with `--admin`:
    /// the config the control service has in force (from its file or from Kubernetes).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["admin", "kubernetes"],
        conflicts_with = "kubernetes"
    )]
    pub config: Option<PathBuf>,

    /// Check what the control service would build from the Kubernetes cluster of the current
    /// kubeconfig (listed once, read only), and every object it would leave out.
    #[arg(long)]
    pub kubernetes: bool,

    /// The trust domain identities must belong to.
    #[arg(
        long,
        env = "MESH_TRUST_DOMAIN",
        default_value = "mesh.local",
        value_name = "DOMAIN"
    )]
    pub trust_domain: TrustDomain,

    /// A trust bundle (PEM) whose anchors must not expire within 30 days.
    #[arg(long, value_name = "PEM")]
    pub trust_bundle: Option<PathBuf>,

    /// Exit 0 when only warnings were found.
    #[arg(long)]
    pub warnings_ok: bool,

    /// Also check against the running mesh, read from these control replicas' admin ports
    /// (`host:port`, repeatable or comma-separated): gRPC routes and policies that name a
    /// service the destination's servers do not serve.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    pub admin: Vec<String>,
}

/// `meshctl routes`.
#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// The destination: `name.namespace[:port]`.
    #[arg(value_name = "DEST")]
    pub destination: DestinationKey,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArgs,

    /// The caller's namespace (its consumer routes apply); the service's own routes when
    /// omitted.
    #[arg(long, value_name = "NS")]
    pub from_namespace: Option<String>,
}

/// `meshctl explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArgs,

    /// The caller's SPIFFE ID (`spiffe://mesh.local/ns/default/sa/client`).
    #[arg(long = "as", value_name = "SPIFFE_ID")]
    pub caller: SpiffeId,

    /// The caller's namespace for consumer routes; the namespace of `--as` when omitted.
    #[arg(long, value_name = "NS")]
    pub from_namespace: Option<String>,

    /// Explain a gRPC call of `package.Service/Method`; then the one argument is DEST.
    #[arg(long, value_name = "SERVICE/METHOD")]
    pub grpc: Option<String>,

    /// A request header (gRPC metadata), `name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,

    /// The request carries a valid token of this issuer (rules on principals see it).
    #[arg(long, value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The token's subject (`sub`), with `--jwt-issuer`.
    #[arg(long, value_name = "SUB", default_value = "", requires = "jwt_issuer")]
    pub jwt_subject: String,

    /// The token's claims as a JSON object (`{"groups": ["admin"]}`), with `--jwt-issuer`.
    #[arg(long, value_name = "JSON", requires = "jwt_issuer")]
    pub jwt_claims: Option<String>,

    /// `METHOD URL` (`GET http://greeter.default/path`), or `DEST` with `--grpc`.
    #[arg(value_name = "METHOD URL | DEST", required = true, num_args = 1..=2)]
    pub request: Vec<String>,
}

/// Runs `cli`, writing the report to stdout and errors to stderr; returns the exit status.
pub fn run(cli: Cli) -> u8 {
    if let Command::Certify(args) = &cli.command {
        return run_certify(args);
    }
    match execute(&cli) {
        Ok((text, status)) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`meshctl ... | head`) is not worth a panic.
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
            status
        }
        Err(e) => {
            eprintln!("meshctl: error: {e}");
            EXIT_USAGE
        }
    }
}

/// `meshctl certify`: logs on stderr, exit status 0 once the files are written (never, with
/// `--renew`), 1 when the control service refused, 2 on any other error.
fn run_certify(args: &super::certify::CertifyArgs) -> u8 {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("meshctl: error: starting the runtime: {e}");
            return EXIT_USAGE;
        }
    };
    match runtime.block_on(super::certify::certify(args)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("meshctl: error: {e}");
            e.exit_code()
        }
    }
}

/// The report and the exit status.
fn execute(cli: &Cli) -> Result<(String, u8), CtlError> {
    let render = |json: Result<String, CtlError>, human: String| match cli.output {
        Format::Json => json,
        Format::Human => Ok(human),
    };
    match &cli.command {
        // Run by `run` before this.
        Command::Certify(_) => Ok((String::new(), EXIT_OK)),
        Command::Check(args) => {
            let served = if args.admin.is_empty() {
                None
            } else {
                let status = status::status(&args.admin)?;
                if let Some(down) = status.unreachable.first() {
                    return Err(CtlError::Admin {
                        target: down.replica.clone(),
                        message: down.error.clone(),
                    });
                }
                Some(status.served())
            };
            let options = CheckOptions {
                trust_domain: args.trust_domain.clone(),
                trust_bundle: args.trust_bundle.clone(),
                now: SystemTime::now(),
                served,
            };
            #[cfg_attr(not(feature = "kubernetes"), allow(unused_mut))]
            let mut left_out: Vec<String> = Vec::new();
            let loaded = match (&args.config, args.admin.first()) {
                (Some(path), _) => load::read(path, &args.trust_domain)?,
                #[cfg(feature = "kubernetes")]
                (None, _) if args.kubernetes => {
                    let (loaded, refused) = load::read_kubernetes(&args.trust_domain)?;
                    left_out = refused;
                    loaded
                }
                #[cfg(not(feature = "kubernetes"))]
                (None, _) if args.kubernetes => {
                    return Err(CtlError::Usage(
                        "--kubernetes: this build of meshctl has no `kubernetes` feature",
                    ));
                }
                (None, Some(admin)) => load::read_live(admin, &args.trust_domain)?,
                // clap requires one of the two.
                (None, None) => {
                    return Err(CtlError::Usage(
                        "give --config FILE, --kubernetes or --admin HOST:PORT",
                    ));
                }
            };
            let mut report = check::check_loaded(&loaded, &options)?;
            // Objects the source would leave out of the config: errors in their own right.
            report
                .errors
                .extend(left_out.iter().map(|why| finding::Finding::error("", why)));
            let text = render(output::json(&report), output::check(&report))?;
            Ok((text, report.exit_code(args.warnings_ok)))
        }
        Command::Routes(args) => {
            let valid = load::read_valid(&args.config.config, &args.config.trust_domain)?;
            let table = routes::table(&valid, &args.destination, args.from_namespace.as_deref())?;
            Ok((
                render(output::json(&table), output::routes(&table))?,
                EXIT_OK,
            ))
        }
        Command::Status(args) => {
            let status = status::status(&args.admin.admin)?;
            let text = render(
                output::json(&status),
                output::status(&status, SystemTime::now()),
            )?;
            let code = if status.unreachable.is_empty() {
                EXIT_OK
            } else {
                EXIT_USAGE
            };
            Ok((text, code))
        }
        Command::Top(args) => {
            let Some(every) = args.watch else {
                let top = top::top(&args.admin.admin)?;
                let text = render(output::json(&top), output::top(&top))?;
                let code = if top.unreachable.is_empty() {
                    EXIT_OK
                } else {
                    EXIT_USAGE
                };
                return Ok((text, code));
            };
            // Refreshed in place (clear screen, home) until interrupted.
            loop {
                let top = top::top(&args.admin.admin)?;
                let text = render(output::json(&top), output::top(&top))?;
                let mut stdout = std::io::stdout().lock();
                let _ = write!(stdout, "\x1b[2J\x1b[H{text}");
                let _ = stdout.flush();
                std::thread::sleep(std::time::Duration::from_secs(every.max(1)));
            }
        }
        Command::Certs(args) => {
            let (pem, source) = match &args.trust_bundle {
                Some(path) => (
                    std::fs::read_to_string(path).map_err(|e| CtlError::Admin {
                        target: path.display().to_string(),
                        message: e.to_string(),
                    })?,
                    path.display().to_string(),
                ),
                None => {
                    let target = args.admin.admin.first().cloned().unwrap_or_default();
                    let addr = super::admin_client::replicas(&target)?
                        .into_iter()
                        .next()
                        .ok_or_else(|| CtlError::Admin {
                            target: target.clone(),
                            message: "resolves to no address".to_owned(),
                        })?;
                    (
                        super::admin_client::get(addr, "/trust-bundle")?,
                        format!("control {addr}"),
                    )
                }
            };
            let certs = certs::certs(
                &pem,
                &source,
                &args.trust_domain,
                args.workload,
                SystemTime::now(),
            )?;
            let text = render(output::json(&certs), output::certs(&certs))?;
            let code = match &certs.workload {
                Some(chain) if chain.verified.is_err() => EXIT_PROBLEMS,
                _ if certs
                    .roots
                    .iter()
                    .any(|r| r.expires_in_seconds < 30 * 86_400) =>
                {
                    EXIT_PROBLEMS
                }
                _ => EXIT_OK,
            };
            Ok((text, code))
        }
        Command::Explain(args) => {
            let mut request = match (&args.grpc, args.request.as_slice()) {
                (Some(call), [destination]) => Request::grpc(call, destination, &args.headers)?,
                (None, [method, url]) => Request::http(method, url, &args.headers)?,
                (Some(_), _) => {
                    return Err(CtlError::Url {
                        url: args.request.join(" "),
                        reason: "with --grpc, give only the destination (name.namespace[:port])"
                            .to_owned(),
                    });
                }
                (None, _) => {
                    return Err(CtlError::Url {
                        url: args.request.join(" "),
                        reason: "expected METHOD URL, e.g. GET http://greeter.default/hello"
                            .to_owned(),
                    });
                }
            };
            if let Some(issuer) = &args.jwt_issuer {
                request = request.with_principal(
                    issuer,
                    &args.jwt_subject,
                    args.jwt_claims.as_deref(),
                )?;
            }
            let valid = load::read_valid(&args.config.config, &args.config.trust_domain)?;
            let from_namespace = args
                .from_namespace
                .as_deref()
                .or_else(|| args.caller.namespace());
            let explained = explain::explain(&valid, &request, &args.caller, from_namespace)?;
            Ok((
                render(output::json(&explained), output::explain(&explained))?,
                EXIT_OK,
            ))
        }
    }
}
