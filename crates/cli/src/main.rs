//! # palisade — the command line
//!
//! One file per subcommand under `cmd/`, each with its `Args` and `run`. `main` only parses
//! and dispatches; errors go to stderr with a non-zero exit (1 for invalid input or a failed
//! check, 2 for usage errors, which clap reports itself).

mod cmd;
mod input;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Palisade: Kubernetes NetworkPolicy, computed, enforced and explained.
#[derive(Parser)]
#[command(name = "palisade", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check manifests against the NetworkPolicy contract; list every error.
    Validate(cmd::validate::Args),
    /// Which pod can reach which: the reachability matrix for a set of probes.
    Matrix(cmd::matrix::Args),
    /// Why one flow is allowed or denied: the verdict and the policies and rules behind it.
    Explain(cmd::explain::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Matrix(args) => cmd::matrix::run(args),
        Command::Explain(args) => cmd::explain::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
