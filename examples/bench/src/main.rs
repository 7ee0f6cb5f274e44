//! The mesh's benchmarks: each scenario starts everything it needs on 127.0.0.1, measures the
//! mesh against a baseline in the same run (these machines are noisy: absolute numbers move,
//! ratios hold), prints a table and the ratios with each target met or not, and writes the raw
//! figures as JSON.
//!
//! Usage: `cargo run --release -p bench -- [request-path|fan-out|balancing|hedging|issuance|rate-limit|overload|handshake|all]
//! [--seconds N] [--runs N] [--subscribers N] [--json-dir DIR]` (`--help` explains them).
//!
//! Servers whose CPU time or memory is measured run in processes of their own: the binary runs
//! itself with a hidden subcommand (`__control`, `__stream`, `__server`).

mod balancing;
mod callers;
mod chart;
mod fanout;
mod fanout_churn;
mod fanout_servers;
mod handshake;
mod haproxy;
mod hedging;
mod issuance;
mod judge;
mod machine;
mod overload;
mod plain_tls;
mod procs;
mod rate_limit;
mod request_path;
mod rss;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo run --release -p bench -- [request-path|fan-out|balancing|hedging|issuance|rate-limit|overload|handshake|all] [--seconds N] [--runs N] [--poll] [--subscribers N] [--json-dir DIR]";

const HELP: &str = "\
The mesh's benchmarks: each scenario starts everything on 127.0.0.1 and measures the mesh
against a baseline in the same run, prints medians over the runs, the ratios and whether each
target is met, and writes the raw figures as JSON (and the latency chart as SVG).

Scenarios (default: request-path):
  request-path   the mesh against plain tonic (h2c and mTLS) and two haproxy hops (when
                 haproxy is installed); RSS the mesh adds to a server; latency chart
  fan-out        the control service pushing a config change to 1,000 and 10,000 subscribers,
                 against plain tonic streaming
  balancing      three greeter endpoints, one ten times slower: the latency callers see with
                 the mesh's P2C balancer against a plain round robin
  hedging        three greeter endpoints, one answering 5 % of its calls 20 times slower:
                 p50/p99/p99.9 without hedging, hedging at the observed p95 and at a
                 fixed delay, and the extra load (tries per call)
  issuance       Certify calls per second against the control service, next to the raw rate
                 of checking a CSR and signing a certificate
  rate-limit     a meshed greeter with a total limit of 500/s under 64 calls in flight: the
                 rate admitted against the limit (target within 5 %)
  overload       three greeter endpoints, one rate-limited: success rate and the share of
                 calls it is offered, the mesh's overload-aware P2C against round robin
  handshake      mutual TLS handshakes per second and bytes, the mesh's post-quantum hybrid
                 key exchange (X25519MLKEM768) against classical X25519
  all            every scenario

Options:
  --seconds N      measured seconds per run (default 10)
  --runs N         runs per scenario; figures are medians over them (default 3; request-path
                   9: each target is met only when the median of the runs meets it and at
                   least 7 of 9 runs do, the same share of another number rounded up)
  --poll           request-path only: measure 1 call in flight a second time with idle cores
                   polling 200 µs before they halt (writes the haltpoll driver's
                   guest_halt_poll_ns, machine-wide, root only; restored afterwards)
  --subscribers N  fan-out only: one subscriber count instead of 1,000 and 10,000
  --json-dir DIR   where the raw figures and the chart go (default target/bench)
  -h, --help       this text

The profiling harness for the per-call path is a separate binary of this package:
  cargo run --profile profiling -p bench --bin profile_call -- --help
So is the Kubernetes index at size (500 to 50,000 endpoints against a fake API server:
time to the first config, heap per endpoint, the cost of one EndpointSlice change):
  cargo run --release -p bench --bin k8s_index -- --help
";

/// Command-line settings shared by the scenarios.
pub(crate) struct Args {
    scenario: String,
    pub(crate) seconds: u64,
    pub(crate) runs: usize,
    /// Whether `--runs` was given (request-path's default is 9, the others' 3).
    pub(crate) runs_given: bool,
    /// `request-path` only: measure 1 in flight with idle cores polling as well.
    pub(crate) poll: bool,
    /// `fan-out` only: one subscriber count instead of 1,000 and 10,000.
    pub(crate) subscribers: Option<usize>,
    pub(crate) json_dir: PathBuf,
}

impl Args {
    /// Where a scenario writes its raw figures.
    pub(crate) fn json(&self, scenario: &str) -> PathBuf {
        self.json_dir.join(format!("{scenario}.json"))
    }
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut parsed = Args {
        scenario: "request-path".to_owned(),
        seconds: 10,
        runs: 3,
        runs_given: false,
        poll: false,
        subscribers: None,
        json_dir: PathBuf::from("target/bench"),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "request-path" | "fan-out" | "balancing" | "hedging" | "issuance" | "rate-limit"
            | "overload" | "handshake" | "all" => {
                parsed.scenario = arg.clone();
            }
            "--seconds" => parsed.seconds = it.next().context("--seconds N")?.parse()?,
            "--runs" => {
                parsed.runs = it.next().context("--runs N")?.parse()?;
                parsed.runs_given = true;
            }
            "--poll" => parsed.poll = true,
            "--subscribers" => {
                parsed.subscribers = Some(it.next().context("--subscribers N")?.parse()?);
            }
            "--json-dir" => parsed.json_dir = it.next().context("--json-dir DIR")?.into(),
            "-h" | "--help" => {
                println!("{USAGE}\n\n{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if parsed.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(parsed)
}

fn main() -> anyhow::Result<()> {
    examples::init_logging("warn");
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // The hidden subcommands: a measured server in a process of its own.
    match argv.first().map(String::as_str) {
        Some("__control") => return fanout_servers::control_main(&argv[1..]),
        Some("__stream") => return fanout_servers::stream_main(&argv[1..]),
        Some("__server") => return rss::server_main(&argv[1..]),
        _ => {}
    }
    let args = parse_args(&argv)?;
    let idle = machine::IdleSettings::read();
    println!("machine: {}", idle.describe());
    write_json(&args.json("machine"), &idle.to_json())?;
    let all = args.scenario == "all";
    if all || args.scenario == "request-path" {
        request_path::run(&args)?;
    }
    if all || args.scenario == "fan-out" {
        fanout::run(&args)?;
    }
    if all || args.scenario == "balancing" {
        balancing::run(&args)?;
    }
    if all || args.scenario == "hedging" {
        hedging::run(&args)?;
    }
    if all || args.scenario == "issuance" {
        issuance::run(&args)?;
    }
    if all || args.scenario == "rate-limit" {
        rate_limit::run(&args)?;
    }
    if all || args.scenario == "overload" {
        overload::run(&args)?;
    }
    if all || args.scenario == "handshake" {
        handshake::run(&args)?;
    }
    Ok(())
}

/// Mesh settings for the workloads of one benchmark: the running control service, its trust
/// anchors written to a directory, and `<account>-bench-token` bootstrap tokens.
pub(crate) struct BenchSettings {
    control_addr: String,
    trust_domain: mesh_core::TrustDomain,
    anchors: PathBuf,
}

impl BenchSettings {
    /// Writes `control`'s trust bundle into `dir` (which must outlive the workloads).
    pub(crate) fn new(
        control: &mesh_control::RunningControl,
        trust_domain: &mesh_core::TrustDomain,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let anchors = dir.join("trust-bundle.pem");
        std::fs::write(&anchors, control.trust_bundle_pem())?;
        Ok(Self {
            control_addr: control.addr().to_string(),
            trust_domain: trust_domain.clone(),
            anchors,
        })
    }

    /// The trust anchors file.
    pub(crate) fn anchors(&self) -> &Path {
        &self.anchors
    }

    /// Settings for a workload running as `account`, serving `service` (in `default`) if
    /// given.
    pub(crate) fn for_account(
        &self,
        account: &str,
        service: Option<&str>,
    ) -> anyhow::Result<mesh_tower::MeshSettings> {
        let mut settings = mesh_tower::MeshSettings::new(
            self.control_addr.clone(),
            self.trust_domain.clone(),
            &self.anchors,
            mesh_tower::TokenSource::Inline(format!("{account}-bench-token")),
        )
        .with_node(account);
        settings.service_account = account.to_owned();
        settings.service = service
            .map(|n| mesh_core::snapshot::ServiceName::new("default", n))
            .transpose()?;
        Ok(settings)
    }
}

/// "met" or "not met", for a target.
pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

/// The median of `values` (the upper one of an even count); NaN when empty.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Writes a scenario's raw figures and says where.
pub(crate) fn write_json(path: &Path, document: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(document)?)?;
    println!("raw figures: {}", path.display());
    Ok(())
}
