//! One module per command; this one dispatches and holds what they share: the exit codes and
//! how a failure becomes one.

mod control;
mod deploy;
mod inspect;
mod resume;
mod rollback;
mod scaffold;
mod validate;

use flotilla_runner::{ErrorClass, RunnerError};

use crate::cli::{Cli, Command, Output};
use crate::render;

pub(crate) const EXIT_OK: u8 = 0;
pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;
pub(crate) const EXIT_REFUSED: u8 = 3;

/// A command that could not do its job, with the exit code that says why.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

/// A usage, configuration or file error (exit 2).
pub(crate) fn usage(message: impl std::fmt::Display) -> Failure {
    Failure {
        code: EXIT_USAGE,
        message: message.to_string(),
    }
}

/// A runner's error as a failure: refusals (lock held, drift) exit 3, the rest 1.
pub(crate) fn runner_failure(error: RunnerError) -> Failure {
    let code = match error.class() {
        ErrorClass::LockTimeout | ErrorClass::ChecksumMismatch | ErrorClass::Drift => EXIT_REFUSED,
        _ => EXIT_FAILED,
    };
    Failure {
        code,
        message: error.to_string(),
    }
}

pub(crate) type CommandResult = Result<u8, Failure>;

/// Runs the command and returns the process's exit code; failures are printed here.
pub(crate) async fn run(cli: Cli) -> u8 {
    let json = cli.output == Output::Json;
    match dispatch(&cli).await {
        Ok(code) => code,
        Err(failure) => {
            render::error(&failure.message, json);
            failure.code
        }
    }
}

async fn dispatch(cli: &Cli) -> CommandResult {
    match &cli.command {
        Command::Init { dir } => scaffold::init(dir, cli.output == Output::Json),
        Command::New { name } => scaffold::new_migration(cli, name),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "flotilla", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
        Command::Deploy(args) => deploy::deploy(cli, args).await,
        Command::Status(select) => inspect::status(cli, select).await,
        Command::Validate(args) => validate::validate(cli, args).await,
        Command::History { environment } => inspect::history(cli, environment).await,
        Command::Rollback(args) => rollback::rollback(cli, args).await,
        Command::Lock(command) => inspect::lock(cli, command).await,
        Command::Deployments(args) => control::deployments(cli, args).await,
        Command::Quiesce(command) => control::quiesce(cli, command).await,
        Command::Tenants(command) => inspect::tenants(cli, command).await,
    }
}
