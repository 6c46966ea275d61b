//! `msgkit`: the operator CLI of the messaging kit.
//!
//! Configured like the services: `AMQP_URL` (broker and vhost), `DATABASE_URL` (timers,
//! projections), and for the management API `RABBITMQ_MANAGEMENT_URL` (default
//! `http://127.0.0.1:15672`) with the AMQP credentials unless `RABBITMQ_MANAGEMENT_USER` /
//! `RABBITMQ_MANAGEMENT_PASSWORD` are set.
//!
//! Exit codes: 0 done, 1 a chaos run found violations or a generated file is outdated, and
//! (sysexits) 64 bad usage or filter, 66 no such queue, message or scenario, 69 broker
//! unreachable, 70 anything else.

mod asyncapi;
mod bench;
mod broker;
mod chaos;
mod cluster;
mod dlq;
mod projection;
mod saga_services;
mod service_schema;
mod table;
mod timers;
mod token;
mod topology;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use msgkit::config::{ConfigSource, Lookup as _};

use crate::broker::BrokerConfig;

/// Operate a msgkit deployment.
#[derive(Debug, Parser)]
#[command(name = "msgkit", version, about)]
struct Cli {
    /// Broker URL, vhost included [default: the AMQP_URL setting, or the file AMQP_URL_FILE
    /// names, else amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(long, global = true)]
    amqp_url: Option<String>,
    /// RabbitMQ management API.
    #[arg(
        long,
        env = "RABBITMQ_MANAGEMENT_URL",
        default_value = "http://127.0.0.1:15672",
        global = true
    )]
    management_url: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect, replay and purge dead-lettered messages.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Run the example services under load and faults, then check nothing was lost or applied
    /// twice (exit 1 if something was).
    Chaos(chaos::ChaosArgs),
    /// Measure the kit against raw lapin ceilings on the same broker and database.
    Bench(bench::BenchArgs),
    /// Start a three-node RabbitMQ cluster, run the services on it under load, SIGKILL the
    /// node leading a work queue, then check nothing was lost and report the stalls.
    ClusterTest(cluster::ClusterTestArgs),
    /// List, show and cancel a service's pending durable timers.
    Timers(timers::TimersArgs),
    /// A service's projections of the event archive: status, and rebuilding one.
    Projection(projection::ProjectionArgs),
    /// Print a short-lived token for a service's stream (`--user U` or `--operator NAME`; risk's
    /// alerts by default, `--service rebate` for balances), signed with <SERVICE>_TOKEN_SECRET
    /// (else TOKEN_SECRET) from the environment.
    Token(token::TokenArgs),
    /// Declare the example system's whole topology (exchange, work queues with their DLQs,
    /// bindings, delay tiers, the archive when ARCHIVE_ENABLED) before the services start.
    Topology(topology::TopologyArgs),
    /// Write the AsyncAPI 3.0 document of the example services' events (channels, send and
    /// receive operations, payload schemas) from the contracts crate, or `--check` a committed
    /// copy (exit 1 when it differs).
    Asyncapi(asyncapi::AsyncApiArgs),
}

/// A failure with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or filter.
    #[error("{0}")]
    Usage(String),
    /// The queue or message does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The broker or its management API cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A chaos run broke invariants (listed in its report).
    #[error("{0} invariant violation(s)")]
    Violations(usize),
    /// A generated file is not what the code generates now (`asyncapi --check`).
    #[error("{0}")]
    Outdated(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Violations(_) | Self::Outdated(_) => 1,
            Self::Usage(_) => 64,
            Self::NotFound(_) => 66,
            Self::Unavailable(_) => 69,
            Self::Other(_) => 70,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The kit's own components (relays, consumers in `bench`) log through tracing; show their
    // logs on stderr when asked for with RUST_LOG.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // The environment with every `NAME_FILE` read into `NAME`, as the services read theirs:
    // secrets mounted as files reach the CLI too.
    let result = match ConfigSource::from_env().with_files_read() {
        Ok(settings) => run(cli, &settings).await,
        Err(error) => Err(CliError::Usage(error.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("msgkit: {error:#}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Run `cli`'s command with `settings`.
async fn run(cli: Cli, settings: &ConfigSource) -> Result<(), CliError> {
    let amqp_url = cli
        .amqp_url
        .clone()
        .or_else(|| settings.get("AMQP_URL").map(str::to_owned))
        .unwrap_or_else(|| msgkit::broker::DEFAULT_AMQP_URL.to_owned());
    let broker = BrokerConfig::new(&amqp_url, &cli.management_url, settings)?;
    match cli.command {
        Command::Dlq(command) => dlq::run(command, &broker, cli.json).await,
        Command::Chaos(args) => chaos::run(args, cli.json).await,
        Command::Bench(args) => bench::run(args, cli.json).await,
        Command::ClusterTest(args) => cluster::run(args, cli.json).await,
        Command::Timers(args) => timers::run(args, cli.json).await,
        Command::Projection(args) => projection::run(args, &broker, cli.json).await,
        Command::Token(args) => token::run(args, settings),
        Command::Topology(args) => topology::run(args, &broker, settings, cli.json).await,
        Command::Asyncapi(args) => asyncapi::run(args),
    }
}
