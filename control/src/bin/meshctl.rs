//! The `meshctl` binary: the mesh's operator command (see `mesh_control::ctl`).

use std::process::ExitCode;

use clap::Parser;
use mesh_control::ctl::{Cli, run};

fn main() -> ExitCode {
    ExitCode::from(run(Cli::parse()))
}
