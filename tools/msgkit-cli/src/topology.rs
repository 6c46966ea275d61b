//! `msgkit topology apply`: declare the whole topology of the example system (the `events`
//! exchange, every work queue with its dead-letter queue and bindings, the delay tiers and,
//! with `ARCHIVE_ENABLED`, the event archive) before any service starts, as one step with a
//! user of its own. Idempotent: run it at every deployment. (Today each service also declares
//! all of it at start-up; issue 21 narrows each service to its own part, and this step becomes
//! the only one that needs rights on the shared parts.)

use clap::{Args, Subcommand};
use msgkit::config::ConfigSource;
use msgkit::topology::Archive;
use serde_json::json;

use crate::CliError;
use crate::broker::BrokerConfig;

/// `msgkit topology ...`.
#[derive(Debug, Args)]
pub struct TopologyArgs {
    #[command(subcommand)]
    command: TopologyCommand,
}

#[derive(Debug, Subcommand)]
enum TopologyCommand {
    /// Declare every exchange, queue and binding on the broker of AMQP_URL (its vhost).
    Apply,
}

pub async fn run(
    args: TopologyArgs,
    broker: &BrokerConfig,
    settings: &ConfigSource,
    json: bool,
) -> Result<(), CliError> {
    match args.command {
        TopologyCommand::Apply => apply(broker, settings, json).await,
    }
}

async fn apply(broker: &BrokerConfig, settings: &ConfigSource, json: bool) -> Result<(), CliError> {
    let archive =
        Archive::from_config(settings).map_err(|error| CliError::Usage(error.to_string()))?;
    let mut topology = contracts::topology();
    if let Some(archive) = archive {
        topology = topology.with_archive(archive);
    }
    let (connection, channel) = broker.channel().await?;
    topology
        .declare(&channel)
        .await
        .map_err(|error| CliError::Unavailable(error.to_string()))?;
    let _ = connection.close(200, "topology applied".into()).await;
    let queues: Vec<&str> = topology.queues().iter().map(|q| q.name()).collect();
    if json {
        println!(
            "{}",
            json!({
                "vhost": broker.vhost(),
                "exchange": topology.exchange(),
                "queues": queues,
                "archive": topology.archive().is_some(),
            })
        );
    } else {
        println!(
            "topology applied on vhost {:?}: exchange {}, queues {} (each with its .dlq), delay tiers{}",
            broker.vhost(),
            topology.exchange(),
            queues.join(", "),
            if topology.archive().is_some() {
                ", event archive"
            } else {
                ""
            }
        );
    }
    Ok(())
}
