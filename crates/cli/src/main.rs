//! # palisade — the command line
//!
//! One file per subcommand under `cmd/`, each with its `Args` and `run`. `main` only parses
//! and dispatches; errors go to stderr with a non-zero exit (1 for invalid input or a failed
//! check, 2 for usage errors, which clap reports itself).

mod cmd;
mod input;
mod signals;
mod source;

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
    /// Timings on synthetic clusters (e.g. `bench matrix`); run a release build.
    Bench(cmd::bench::Args),
    /// Store manifests (Namespaces, Pods, NetworkPolicies) in the datastore, all or nothing.
    Apply(cmd::apply::Args),
    /// Remove objects stored by `apply`, by manifest or by name.
    Delete(cmd::delete::Args),
    /// List what the datastore holds: networkpolicies, namespaces, endpoints, status.
    Get(cmd::get::Args),
    /// The ruleset one node would get (ipset + iptables-restore text, or an nft script).
    Render(cmd::render::Args),
    /// Watch the Kubernetes API and keep the datastore in step (leader-elected, with metrics).
    Controller(cmd::controller::Args),
    /// Serve the datastore's lists and watches to many agents from one watch (fan-out relay).
    Relay(cmd::relay::Args),
    /// A multi-node cluster of network namespaces on this machine: real packets, real agents.
    Lab(cmd::lab::Args),
    /// The node agent: program this node's packet filter from the datastore (`agent status`:
    /// every node's agent status).
    Agent(Box<cmd::agent::Args>),
    /// Per-rule packet counters and drops of a node, with the policies active on its pods.
    Counters(cmd::counters::Args),
    /// Packets policy dropped, as they happen: pods, protocol and port, direction, tier,
    /// policy and rule (from every agent's /drops).
    Drops(cmd::drops::Args),
}

/// Commands that only compute and print: when the reader of stdout goes away (`palisade
/// matrix ... | head`), end quietly as other command-line tools do instead of panicking on
/// the failed write. Not for commands with sockets or child processes, which rely on
/// SIGPIPE being ignored to see EPIPE as an error.
fn end_quietly_on_closed_stdout() {
    // SAFETY: restoring the default disposition of SIGPIPE before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Validate(_) | Command::Matrix(_) | Command::Explain(_) => {
            end_quietly_on_closed_stdout()
        }
        Command::Render(args) if !args.check => end_quietly_on_closed_stdout(),
        _ => {}
    }
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Matrix(args) => cmd::matrix::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Apply(args) => cmd::apply::run(args),
        Command::Delete(args) => cmd::delete::run(args),
        Command::Get(args) => cmd::get::run(args),
        Command::Render(args) => cmd::render::run(args),
        Command::Controller(args) => cmd::controller::run(args),
        Command::Relay(args) => cmd::relay::run(args),
        Command::Lab(args) => cmd::lab::run(args),
        Command::Agent(args) => cmd::agent::run(*args),
        Command::Counters(args) => cmd::counters::run(args),
        Command::Drops(args) => cmd::drops::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err)
            if err.is::<cmd::datastore_args::NoDatastore>() || err.is::<source::UsageError>() =>
        {
            eprintln!("error: {err:#}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
