//! `flotilla`: deploy schema migrations to a fleet of databases as one planned rollout.
//! Parses the command line, runs the command, maps the outcome to an exit code.

mod approve;
mod cli;
mod commands;
mod control;
mod dry_run;
mod fleets;
mod project;
mod render;
mod signals;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    render::init_logging(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(commands::EXIT_USAGE);
        }
    };
    ExitCode::from(runtime.block_on(async {
        signals::install();
        commands::run(cli).await
    }))
}
