//! The command line's shape. No logic lives here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A duration on the command line: `30s`, `500ms`, `2m`, `1h`, or seconds.
fn duration(text: &str) -> Result<Duration, String> {
    flotilla_core::parse_duration(text)
}

const EXIT_CODES: &str = "\
Exit codes:
  0    success, or nothing to do
  1    an environment failed or was rolled back
  2    usage, configuration or migration-file error (validate: a rehearsal found a problem)
  3    refused by a gate: health, approval, destructive change, drift, rehearsal, lock
       timeout, quiesce — or paused by a quiesce mid-way (resume it with --resume)
  130  stopped by Ctrl-C (SIGINT); 143 stopped by SIGTERM. A first signal stops gracefully:
       no new environment starts, running ones finish, leases are released; a second
       exits at once.";

/// Deploy schema migrations to a fleet of SurrealDB databases as one planned rollout.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Configuration file (default: ./flotilla.toml, else ./environments.json).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Migrations directory (default: the config's `migrations`, else ./migrations).
    #[arg(
        short = 'm',
        long = "migrations-dir",
        global = true,
        value_name = "DIR"
    )]
    pub(crate) migrations_dir: Option<PathBuf>,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Human)]
    pub(crate) output: Output,

    /// More logging on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// How long to wait for a server to accept a connection (default: the config's, else 10s).
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration)]
    pub(crate) connect_timeout: Option<Duration>,

    /// How long to wait for the answer to a request that is not a migration (default: the
    /// config's, else 30s). Migrations run as long as they need while their lease is renewed.
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration)]
    pub(crate) request_timeout: Option<Duration>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Tables and progress for people.
    Human,
    /// JSON lines on stdout: one per event, then the result.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Scaffold flotilla.toml and migrations/ so `flotilla deploy --all` works at once.
    #[command(after_help = "Example:\n  flotilla init && flotilla deploy --all")]
    Init {
        /// Directory to scaffold in.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Create migrations/<timestamp>_<name>.surql with -- @up and -- @down sections.
    #[command(after_help = "Example:\n  flotilla new add_user_email")]
    New {
        /// What the migration does: letters, digits and underscores.
        name: String,
    },
    /// Deploy pending migrations to the selected environments.
    #[command(
        after_help = "Examples:\n  flotilla deploy --all\n  flotilla deploy -e staging,prod --strategy rolling --batch-size 2\n  flotilla deploy --tag tenant --strategy canary --canary-percent 5 --max-concurrent 32\n  flotilla deploy --all --dry-run --output json"
    )]
    Deploy(Box<DeployArgs>),
    /// Per environment: reachable, current version, pending count, drift, lock holder.
    #[command(after_help = "Example:\n  flotilla status --tag tenant")]
    Status(SelectArgs),
    /// Check the configuration and the migration files (parse, lint, and a rehearsal of every
    /// migration on an empty scratch database), then connectivity; with -e/--tag/--all, also
    /// rehearse each selected environment's pending migrations on a copy of its schema.
    #[command(
        after_help = "Examples:\n  flotilla validate --offline\n  flotilla validate -e prod\n\nExit 2 when a migration does not parse, fails, or does not undo itself."
    )]
    Validate(ValidateArgs),
    /// Show one environment's applied migrations.
    #[command(after_help = "Example:\n  flotilla history -e staging")]
    History {
        /// The environment.
        #[arg(short, long = "env")]
        environment: String,
    },
    /// Revert the newest migrations of one environment.
    #[command(
        after_help = "Examples:\n  flotilla rollback -e staging --steps 1\n  flotilla rollback -e staging --to 20260101_120000"
    )]
    Rollback(RollbackArgs),
    /// Inspect or break an environment's migration lock.
    #[command(
        subcommand,
        after_help = "Examples:\n  flotilla lock status -e prod\n  flotilla lock release --force -e prod"
    )]
    Lock(LockCommand),
    /// List deployments recorded in the control store, or show one per target.
    #[command(
        after_help = "Examples:\n  flotilla deployments\n  flotilla deployments show deploy-1733312000000-4242-0"
    )]
    Deployments(DeploymentsArgs),
    /// Stop deployments fleet-wide for a while: set, clear or show the quiesce flag.
    #[command(
        subcommand,
        after_help = "Examples:\n  flotilla quiesce set --ttl 30m --reason \"incident 42\"\n  flotilla quiesce status\n  flotilla quiesce clear"
    )]
    Quiesce(QuiesceCommand),
    /// What the fleets' tenant sources yield: each tenant's environment, without secrets.
    #[command(
        subcommand,
        after_help = "Example:\n  flotilla tenants list --fleet customers"
    )]
    Tenants(TenantsCommand),
    /// Print shell completions.
    #[command(
        after_help = "Example:\n  flotilla completions bash > /etc/bash_completion.d/flotilla"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SelectArgs {
    /// Environments, comma-separated.
    #[arg(short, long = "env", value_delimiter = ',', conflicts_with_all = ["tag", "all"])]
    pub(crate) environments: Vec<String>,
    /// Every environment with this tag (repeatable).
    #[arg(long)]
    pub(crate) tag: Vec<String>,
    /// Every environment of this fleet (repeatable).
    #[arg(long)]
    pub(crate) fleet: Vec<String>,
    /// Every environment (`-e all` works too).
    #[arg(long)]
    pub(crate) all: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    pub(crate) select: SelectArgs,
    /// Check only the files (configuration, migrations, lint, rehearsal on an empty scratch
    /// database); connect to no environment.
    #[arg(long, conflicts_with_all = ["environments", "tag", "all"])]
    pub(crate) offline: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    pub(crate) select: SelectArgs,
    /// sequential, parallel, rolling or canary (default: the config's, else sequential).
    #[arg(long)]
    pub(crate) strategy: Option<String>,
    /// Rolling: environments per batch.
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Canary: share of environments deployed first, in (0, 100].
    #[arg(long = "canary-percent")]
    pub(crate) canary_percent: Option<f64>,
    /// Most environments deployed at once.
    #[arg(long)]
    pub(crate) max_concurrent: Option<usize>,
    /// Parallel: start no new environment after a failure.
    #[arg(long)]
    pub(crate) fail_fast: bool,
    /// Read every environment and show what would run — per environment each pending
    /// migration, whether it is destructive, the version it would end at; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// With --dry-run: also print the statements each pending migration would run.
    #[arg(long, requires = "dry_run")]
    pub(crate) show_sql: bool,
    /// Do not rehearse the pending migrations on a scratch copy of an environment's schema
    /// before deploying.
    #[arg(long)]
    pub(crate) no_rehearse: bool,
    /// Do not probe environments before deploying.
    #[arg(long)]
    pub(crate) skip_health_check: bool,
    /// Probe every environment before deploying — the default; the surql toolkit's flag.
    #[arg(long, conflicts_with = "skip_health_check")]
    pub(crate) verify_health: bool,
    /// Do not revert this deployment's migrations when it fails.
    #[arg(long)]
    pub(crate) no_rollback: bool,
    /// Approve an environment that requires approval (repeatable).
    #[arg(long = "approve", value_name = "ENV")]
    pub(crate) approve: Vec<String>,
    /// Approve every environment that requires approval.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
    /// How long to wait for each environment's lock (default: the config's, else 30s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) lock_timeout: Option<Duration>,
    /// Lease length of each environment's lock, renewed every third (default: the
    /// config's, else 30s). A crashed deploy's leases block others this long.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) lease: Option<Duration>,
    /// Finish deployment ID: its plan again, for every environment that has not succeeded.
    #[arg(long, value_name = "ID", conflicts_with_all = ["environments", "tag", "all", "dry_run"])]
    pub(crate) resume: Option<String>,
    /// The deployment's id (letters, digits, `.`, `_`, `-`); shards of one deployment share
    /// it. Default: generated.
    #[arg(long, value_name = "ID", conflicts_with = "resume")]
    pub(crate) deployment_id: Option<String>,
    /// Deploy shard i of N (0-based) of the selected environments: a stable split by name,
    /// the same on every machine. Needs --deployment-id (or --resume).
    #[arg(long, value_name = "i/N")]
    pub(crate) shard: Option<String>,
    /// The shard from Kubernetes' Indexed Job: JOB_COMPLETION_INDEX of JOB_COMPLETIONS.
    #[arg(long, conflicts_with = "shard")]
    pub(crate) shard_from_env: bool,
    /// Also append every audit record to FILE as JSON lines (default: the config's).
    #[arg(long, value_name = "FILE")]
    pub(crate) audit_log: Option<PathBuf>,
    /// Keep each environment's failure its own: roll back only the environments that
    /// failed; those that succeeded keep what they applied (default: the config's, else off).
    #[arg(long)]
    pub(crate) isolate: bool,
    /// Deploy only to the selected environments with something pending (each is probed
    /// first).
    #[arg(long, conflicts_with_all = ["resume", "shard", "shard_from_env"])]
    pub(crate) only_pending: bool,
    /// Deploy to at most N of the selected environments (in plan order; with
    /// --only-pending, N of those with something pending): a chunk of a rollout.
    #[arg(long, value_name = "N", conflicts_with_all = ["resume", "shard", "shard_from_env"])]
    pub(crate) limit: Option<usize>,
    /// Deploy to the environments named in FILE, one per line (`#` starts a comment): say
    /// the list --write-failed left.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["environments", "tag", "fleet", "all", "resume"])]
    pub(crate) from_file: Option<PathBuf>,
    /// Write the environments that did not succeed to FILE, one per line, for --from-file.
    #[arg(long, value_name = "FILE")]
    pub(crate) write_failed: Option<PathBuf>,
    /// Run CMD (`sh -c`) after each environment (tenant) once its outcome is final: told by
    /// FLOTILLA_* variables and JSON on its standard input (default: the config's [hooks]).
    #[arg(long, value_name = "CMD", visible_alias = "on-environment")]
    pub(crate) on_tenant: Option<String>,
    /// How long one --on-tenant run may take (default: the config's, else 60s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) hook_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct DeploymentsArgs {
    #[command(subcommand)]
    pub(crate) command: Option<DeploymentsCommand>,
    /// How many of the newest deployments to list.
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: usize,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeploymentsCommand {
    /// One deployment: who, its runs (shards, resumes), and every environment once.
    Show {
        /// The deployment id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TenantsCommand {
    /// List every fleet's tenants (or one fleet's) as environments.
    List {
        /// Only this fleet.
        #[arg(long)]
        fleet: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum QuiesceCommand {
    /// Quiesce the fleet: no deployment starts, running ones start no further environment.
    Set {
        /// How long (at most 2h); it expires by itself.
        #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "30m")]
        ttl: Duration,
        /// Why (shown to everyone refused).
        #[arg(long)]
        reason: String,
    },
    /// Lift the quiesce.
    Clear,
    /// Whether the fleet is quiesced, by whom, why, until when.
    Status,
}

#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The environment.
    #[arg(short, long = "env")]
    pub(crate) environment: String,
    /// Revert the newest N migrations.
    #[arg(long, conflicts_with = "to", required_unless_present = "to")]
    pub(crate) steps: Option<usize>,
    /// Revert every migration newer than VERSION.
    #[arg(long, value_name = "VERSION")]
    pub(crate) to: Option<String>,
    /// Approve the environment if it requires approval.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
    /// How long to wait for the lock (default: the config's, else 30s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) lock_timeout: Option<Duration>,
    /// Lease length of the lock (default: the config's, else 30s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) lease: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LockCommand {
    /// Who holds the lock, since when, until when.
    Status {
        /// The environment.
        #[arg(short, long = "env")]
        environment: String,
    },
    /// Remove the lock whoever holds it (only when its holder is known to be gone).
    Release {
        /// The environment.
        #[arg(short, long = "env")]
        environment: String,
        /// Required: breaking a live holder's lock lets two deploys overlap.
        #[arg(long)]
        force: bool,
    },
}
