//! The mesh's benchmarks: each scenario starts everything it needs on 127.0.0.1, measures the
//! mesh against a baseline in the same run (these machines are noisy: absolute numbers move,
//! ratios hold), prints a table and the ratios with each target met or not, and writes the raw
//! figures as JSON.
//!
//! Usage: `bench [request-path|issuance|all] [--seconds N] [--runs N] [--json-dir DIR]`.

mod issuance;
mod request_path;

use std::path::PathBuf;

use anyhow::{Context, bail};

/// Command-line settings shared by the scenarios.
pub(crate) struct Args {
    scenario: String,
    pub(crate) seconds: u64,
    pub(crate) runs: usize,
    pub(crate) json_dir: PathBuf,
}

impl Args {
    /// Where a scenario writes its raw figures.
    pub(crate) fn json(&self, scenario: &str) -> PathBuf {
        self.json_dir.join(format!("{scenario}.json"))
    }
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        scenario: "request-path".to_owned(),
        seconds: 10,
        runs: 3,
        json_dir: PathBuf::from("target/bench"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "request-path" | "issuance" | "all" => args.scenario = arg,
            "--seconds" => args.seconds = it.next().context("--seconds N")?.parse()?,
            "--runs" => args.runs = it.next().context("--runs N")?.parse()?,
            "--json-dir" => args.json_dir = it.next().context("--json-dir DIR")?.into(),
            other => bail!(
                "unknown argument {other:?}; usage: bench [request-path|issuance|all] [--seconds N] [--runs N] [--json-dir DIR]"
            ),
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    examples::init_logging("warn");
    let args = parse_args()?;
    if matches!(args.scenario.as_str(), "request-path" | "all") {
        request_path::run(&args)?;
    }
    if matches!(args.scenario.as_str(), "issuance" | "all") {
        issuance::run(&args)?;
    }
    Ok(())
}
