//! `profile_call instructions`: instructions per call for the server and for the client, the
//! mesh against plain tonic over the same mTLS with the same handler, at 1 and at 64 calls in
//! flight, counted by callgrind. Counted instructions do not move with the machine's noise the
//! way time does, so this is the request path's steady figure, and with `--check FILE` the CI
//! guard against a committed baseline (`--write FILE` writes one).
//!
//! How the sides are told apart: the harness runs the server and the caller on two threads of
//! one process, each a current-thread runtime that runs all of its side's tasks. Each thread
//! marks the start and the end of the measured calls (after a warm-up) by calling a function
//! of its own ([`super::window`]); callgrind, told to zero before the start marker and dump
//! before the end marker with one dump per thread, writes each side's instructions over
//! exactly the measured calls to a file of its own. One process under valgrind runs one
//! thread at a time and switches between them at fixed points, so the interleaving, and with
//! it the count, repeats from run to run.
//!
//! The check: for each side and number in flight, the mesh's instructions per call, scaled by
//! how far plain tonic's moved since the baseline (a new compiler or CPU moves both), may not
//! exceed the baseline's mesh figure by more than its tolerance.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::callgrind::{self, Config, Counts};

const USAGE: &str = "usage: profile_call instructions [--calls N] [--repeat R] [--check FILE] [--write FILE] [--tolerance PERCENT] [--valgrind PATH]";

const HELP: &str = "\
Runs this program under callgrind (mesh, then plain tonic over the same mTLS; 1 call in flight
over 1 connection, and 64 over 4) and prints instructions per call for the server and for the
client, each counted on its own thread over the measured calls only (after a warm-up).

  --calls N          calls counted at 1 in flight (default 1000; 64 in flight counts 2 N)
  --repeat R         measure each configuration R times and print every count (default 1)
  --check FILE       fail when the mesh's server or client instructions per call exceed
                     FILE's (scaled by plain tonic's own change) by more than its tolerance
  --write FILE       write the figures as the new baseline (say why in CHANGELOG)
  --tolerance P      the tolerance written with --write, in percent (default 3)
  --valgrind PATH    the valgrind to run (default: valgrind on PATH)
";

/// A baseline file: the figures of one measurement and the tolerance the check allows.
#[derive(Debug, Serialize, Deserialize)]
struct Baseline {
    /// How the file was made and how to update it.
    about: String,
    /// How far (percent) the mesh's instructions per call may exceed the baseline's.
    tolerance_percent: f64,
    figures: Vec<Figure>,
}

/// One side's instructions per call at one number in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Figure {
    in_flight: usize,
    side: String,
    tonic: f64,
    mesh: f64,
}

/// The two configurations measured: 1 in flight over 1 connection, and 64 over 4 (as in
/// `bench request-path`).
const SHAPES: [(usize, usize, usize); 2] = [(1, 1, 1), (64, 4, 2)];

pub(crate) fn run(mut argv: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut calls = 1000;
    let mut repeat = 1;
    let mut check = None;
    let mut write = None;
    let mut tolerance = 3.0;
    let mut valgrind = PathBuf::from("valgrind");
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--calls" => calls = argv.next().context("--calls N")?.parse()?,
            "--repeat" => repeat = argv.next().context("--repeat R")?.parse()?,
            "--check" => check = Some(PathBuf::from(argv.next().context("--check FILE")?)),
            "--write" => write = Some(PathBuf::from(argv.next().context("--write FILE")?)),
            "--tolerance" => tolerance = argv.next().context("--tolerance P")?.parse()?,
            "--valgrind" => valgrind = argv.next().context("--valgrind PATH")?.into(),
            "-h" | "--help" => {
                println!("{USAGE}\n\n{HELP}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if calls == 0 || repeat == 0 {
        bail!("--calls and --repeat must be at least 1");
    }
    let exe = std::env::current_exe().context("this program's path")?;
    let scratch = tempfile::tempdir()?;
    let mut configs = Vec::new();
    for (in_flight, connections, scale) in SHAPES {
        for target in ["tonic", "mesh"] {
            for _ in 0..repeat {
                configs.push(Config {
                    target,
                    in_flight,
                    connections,
                    calls: calls * scale,
                });
            }
        }
    }
    println!(
        "instructions per call under callgrind: {} runs of this program, {} at a time",
        configs.len(),
        parallelism()
    );
    let started = Instant::now();
    let counts = measure_all(&valgrind, &exe, &configs, scratch.path())?;
    println!("(measured in {:.0} s)", started.elapsed().as_secs_f64());

    let figures = report(&configs, &counts);
    let mut failed = false;
    if let Some(path) = &check {
        failed = !check_against(path, &figures)?;
    }
    if let Some(path) = &write {
        let baseline = Baseline {
            about:
                "Instructions per call of the mesh and of plain tonic mTLS (same handler) under \
                    callgrind, written by `profile_call instructions --write`; `.ci/run` checks \
                    against it. Update it deliberately (see README, Performance) and say why in \
                    CHANGELOG."
                    .to_owned(),
            tolerance_percent: tolerance,
            figures,
        };
        std::fs::write(path, serde_json::to_string_pretty(&baseline)? + "\n")?;
        println!("baseline written to {}", path.display());
    }
    if failed {
        bail!("instructions per call over the baseline's tolerance (see above)");
    }
    Ok(())
}

/// How many runs go at once: one per core (each run is one thread at a time under valgrind).
fn parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Measures every configuration, [`parallelism`] at a time; counts in `configs`' order.
fn measure_all(
    valgrind: &Path,
    exe: &Path,
    configs: &[Config],
    scratch: &Path,
) -> anyhow::Result<Vec<Counts>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new((0..configs.len()).map(|_| None).collect::<Vec<_>>());
    std::thread::scope(|scope| {
        for _ in 0..parallelism().min(configs.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(config) = configs.get(i) else {
                        return;
                    };
                    let result = callgrind::measure(valgrind, exe, *config, scratch);
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .map(|r| r.context("a run did not report")?)
        .collect()
}

/// Prints every count and the table; gives the figures (medians over repeats).
fn report(configs: &[Config], counts: &[Counts]) -> Vec<Figure> {
    let per_call = |count: u64, config: &Config| count as f64 / config.calls as f64;
    if configs.len() > 4 {
        println!("\nevery run (instructions per call):");
        for (config, count) in configs.iter().zip(counts) {
            println!(
                "  {:<5} {:>2} in flight  server {:>10.1}  client {:>10.1}",
                config.target,
                config.in_flight,
                per_call(count.server, config),
                per_call(count.client, config)
            );
        }
    }
    let mut figures = Vec::new();
    println!(
        "\n  {:>9}  {:<6} {:>12} {:>12} {:>9} {:>8}",
        "in flight", "side", "tonic mTLS", "mesh", "added", "ratio"
    );
    for (in_flight, _, _) in SHAPES {
        for side in ["server", "client"] {
            let of = |target: &str| {
                let values: Vec<f64> = configs
                    .iter()
                    .zip(counts)
                    .filter(|(c, _)| c.target == target && c.in_flight == in_flight)
                    .map(|(c, n)| {
                        let n = if side == "server" { n.server } else { n.client };
                        per_call(n, c)
                    })
                    .collect();
                median(values)
            };
            let (tonic, mesh) = (of("tonic"), of("mesh"));
            println!(
                "  {in_flight:>9}  {side:<6} {tonic:>12.0} {mesh:>12.0} {:>+9.0} {:>8.4}",
                mesh - tonic,
                mesh / tonic
            );
            figures.push(Figure {
                in_flight,
                side: side.to_owned(),
                tonic,
                mesh,
            });
        }
    }
    figures
}

/// Checks `figures` against the baseline at `path`; prints each comparison; true when all
/// are within its tolerance.
fn check_against(path: &Path, figures: &[Figure]) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let baseline: Baseline =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let tolerance = baseline.tolerance_percent;
    println!(
        "\nagainst {} (tolerance {tolerance} %; the mesh's figure scaled by plain tonic's change):",
        path.display()
    );
    let mut ok = true;
    for figure in figures {
        let Some(base) = baseline
            .figures
            .iter()
            .find(|b| b.in_flight == figure.in_flight && b.side == figure.side)
        else {
            bail!(
                "{}: no figure for the {} at {} in flight",
                path.display(),
                figure.side,
                figure.in_flight
            );
        };
        let scaled = figure.mesh * base.tonic / figure.tonic;
        let change = (scaled / base.mesh - 1.0) * 100.0;
        let within = change <= tolerance;
        ok &= within;
        println!(
            "  {:<6} {:>2} in flight: mesh {:>10.0} (scaled {:>10.0}) vs baseline {:>10.0}: {change:+.2} %  {}",
            figure.side,
            figure.in_flight,
            figure.mesh,
            scaled,
            base.mesh,
            if within { "ok" } else { "OVER THE BASELINE" }
        );
        let tonic_moved = (figure.tonic / base.tonic - 1.0) * 100.0;
        if tonic_moved.abs() > tolerance {
            println!(
                "      (plain tonic itself moved {tonic_moved:+.2} % since the baseline: another \
                 compiler, dependency or CPU? re-measure the baseline on purpose if so)"
            );
        }
    }
    Ok(ok)
}

/// The median (the upper one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
