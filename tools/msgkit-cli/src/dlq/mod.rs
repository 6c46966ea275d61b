//! `msgkit dlq`: read, replay and purge dead letters.
//!
//! Messages are read with `basic.get` and left unacknowledged while a command decides; those
//! it does not remove are returned (`basic.nack` with requeue) in the order they were read.
//! Replay is a move: publish to the failed consumer's own work queue with a confirm, then ack
//! the dead letter. A crash in between leaves the message in both places, which the
//! consumer's inbox makes harmless; it never leaves it in neither.

mod letter;

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use msgkit::replay::replay_properties;
use msgkit::{ConfirmedPublisher, PublishOutcome};
use serde_json::json;

use self::letter::DeadLetter;
use crate::CliError;
use crate::broker::BrokerConfig;
use crate::table;

/// Most messages one command reads from one queue.
const SCAN_LIMIT: usize = 10_000;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Every dead-letter queue with its depth, and its messages grouped by failure
    /// fingerprint (reason/exception@service), oldest first.
    List,
    /// One message: properties, headers and body.
    Show {
        /// The message's `message_id`.
        message_id: String,
        /// Look only in this DLQ.
        #[arg(long)]
        queue: Option<String>,
    },
    /// Move messages back to the work queue of the consumer that failed them (never to the
    /// shared exchange: other consumers get no duplicates), attempt counter reset.
    Replay {
        /// The DLQ to replay from (default: every DLQ).
        #[arg(long)]
        queue: Option<String>,
        #[command(flatten)]
        filter: Filter,
        /// Show what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many messages per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
    },
    /// Delete messages for good (needs --yes); reports what it removed.
    Purge {
        /// The DLQ to purge.
        #[arg(long)]
        queue: String,
        #[command(flatten)]
        filter: Filter,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// Which messages a command touches (all of them when no filter is given).
#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// Only these message ids (repeatable).
    #[arg(long = "message-id")]
    message_ids: Vec<String>,
    /// Only this failure fingerprint, as `dlq list` prints it.
    #[arg(long)]
    fingerprint: Option<String>,
    /// Only messages that failed at least this long ago (e.g. `10m`, `2h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Only messages that failed at most this long ago.
    #[arg(long, value_parser = humantime::parse_duration)]
    newer_than: Option<Duration>,
    /// At most this many messages.
    #[arg(long)]
    limit: Option<usize>,
}

impl Filter {
    fn check(&self) -> Result<(), CliError> {
        if let (Some(older), Some(newer)) = (self.older_than, self.newer_than)
            && older > newer
        {
            return Err(CliError::Usage(
                "--older-than is longer than --newer-than: no message can match".to_owned(),
            ));
        }
        if self.limit == Some(0) {
            return Err(CliError::Usage("--limit must be at least 1".to_owned()));
        }
        if let Some(fingerprint) = &self.fingerprint
            && !(fingerprint.contains('/') && fingerprint.contains('@'))
        {
            return Err(CliError::Usage(format!(
                "--fingerprint {fingerprint:?} is not of the form reason/exception@service (see `msgkit dlq list`)"
            )));
        }
        Ok(())
    }

    fn matches(&self, letter: &DeadLetter) -> bool {
        (self.message_ids.is_empty() || self.message_ids.contains(&letter.message_id))
            && self
                .fingerprint
                .as_ref()
                .is_none_or(|f| *f == letter.fingerprint)
            && self
                .older_than
                .is_none_or(|min| letter.age().is_some_and(|age| age >= min))
            && self
                .newer_than
                .is_none_or(|max| letter.age().is_some_and(|age| age <= max))
    }
}

pub async fn run(command: DlqCommand, broker: &BrokerConfig, json: bool) -> Result<(), CliError> {
    match command {
        DlqCommand::List => list(broker, json).await,
        DlqCommand::Show { message_id, queue } => show(broker, &message_id, queue, json).await,
        DlqCommand::Replay {
            queue,
            filter,
            dry_run,
            rate,
        } => {
            filter.check()?;
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(CliError::Usage(
                    "--rate must be a positive number of messages per second".to_owned(),
                ));
            }
            replay(broker, queue, &filter, dry_run, rate, json).await
        }
        DlqCommand::Purge { queue, filter, yes } => {
            filter.check()?;
            if !yes {
                return Err(CliError::Usage(format!(
                    "purging {queue} deletes its messages for good: add --yes to confirm"
                )));
            }
            purge(broker, &queue, &filter, json).await
        }
    }
}

/// The DLQs of the vhost, with their depths.
async fn dead_letter_queues(broker: &BrokerConfig) -> Result<Vec<(String, u64)>, CliError> {
    let mut queues: Vec<(String, u64)> = broker
        .queues()
        .await?
        .into_iter()
        .filter(|q| q.name.ends_with(".dlq"))
        .map(|q| (q.name, q.messages))
        .collect();
    queues.sort();
    Ok(queues)
}

async fn chosen_queues(
    broker: &BrokerConfig,
    queue: Option<String>,
) -> Result<Vec<String>, CliError> {
    let all = dead_letter_queues(broker).await?;
    match queue {
        Some(queue) if all.iter().any(|(name, _)| *name == queue) => Ok(vec![queue]),
        Some(queue) => Err(CliError::NotFound(format!(
            "no dead-letter queue {queue:?} in vhost {:?} (known: {})",
            broker.vhost(),
            all.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => Ok(all.into_iter().map(|(name, _)| name).collect()),
    }
}

/// Messages taken (unacked) from one queue.
struct Taken {
    channel: Channel,
    messages: Vec<(u64, DeadLetter)>,
}

impl Taken {
    async fn read(channel: &Channel, queue: &str) -> Result<Self, CliError> {
        let mut messages = Vec::new();
        while messages.len() < SCAN_LIMIT {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(|error| CliError::Other(anyhow::anyhow!("reading {queue}: {error}")))?;
            let Some(got) = got else { break };
            let delivery = got.delivery;
            let tag = delivery.delivery_tag;
            messages.push((
                tag,
                DeadLetter::from_message(queue, delivery.properties, delivery.data),
            ));
        }
        Ok(Self {
            channel: channel.clone(),
            messages,
        })
    }

    /// Give back every message not removed, in the order read.
    async fn return_rest(self, removed: &[u64]) -> Result<(), CliError> {
        for (tag, _) in &self.messages {
            if !removed.contains(tag) {
                self.channel
                    .basic_nack(
                        *tag,
                        BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        },
                    )
                    .await
                    .map_err(|error| {
                        CliError::Other(anyhow::anyhow!("returning a message: {error}"))
                    })?;
            }
        }
        Ok(())
    }
}

async fn list(broker: &BrokerConfig, json: bool) -> Result<(), CliError> {
    let (_connection, channel) = broker.channel().await?;
    // The management API names the queues; their depths come from the broker itself, because
    // the API's statistics lag by several seconds.
    let mut queues = Vec::new();
    for (name, _) in dead_letter_queues(broker).await? {
        let declared = channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|error| {
                CliError::Other(anyhow::anyhow!("reading the depth of {name}: {error}"))
            })?;
        queues.push((name, u64::from(declared.message_count())));
    }
    let mut groups: BTreeMap<(String, String), Vec<DeadLetter>> = BTreeMap::new();
    for (queue, _) in &queues {
        let taken = Taken::read(&channel, queue).await?;
        for (_, letter) in &taken.messages {
            groups
                .entry((queue.clone(), letter.fingerprint.clone()))
                .or_default()
                .push(letter.clone());
        }
        taken.return_rest(&[]).await?;
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|(_, letters)| letters.iter().filter_map(|l| l.failed_at).min());
    if json {
        let value = json!({
            "vhost": broker.vhost(),
            "queues": queues.iter().map(|(name, messages)| json!({"queue": name, "messages": messages})).collect::<Vec<_>>(),
            "groups": groups.iter().map(|((queue, fingerprint), letters)| json!({
                "queue": queue,
                "fingerprint": fingerprint,
                "count": letters.len(),
                "oldest_failed_at": letters.iter().filter_map(|l| l.failed_at).min(),
                "message_ids": letters.iter().map(|l| l.message_id.clone()).collect::<Vec<_>>(),
                "example_error": letters.first().map(|l| l.exception_message.clone()),
            })).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|(name, messages)| vec![name.clone(), messages.to_string()])
        .collect();
    println!("{}", table::render(&["DLQ", "MESSAGES"], &rows));
    if !groups.is_empty() {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|((queue, fingerprint), letters)| {
                vec![
                    fingerprint.clone(),
                    letters.len().to_string(),
                    letters
                        .iter()
                        .filter_map(|l| l.failed_at)
                        .min()
                        .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default(),
                    queue.clone(),
                    letters
                        .first()
                        .map(|l| truncate(&l.exception_message, 60))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        println!();
        println!(
            "{}",
            table::render(
                &["FINGERPRINT", "COUNT", "OLDEST (UTC)", "DLQ", "ERROR"],
                &rows
            )
        );
    }
    Ok(())
}

async fn show(
    broker: &BrokerConfig,
    message_id: &str,
    queue: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let queues = chosen_queues(broker, queue).await?;
    let (_connection, channel) = broker.channel().await?;
    let mut found = None;
    for queue in &queues {
        let taken = Taken::read(&channel, queue).await?;
        if found.is_none() {
            found = taken
                .messages
                .iter()
                .find(|(_, letter)| letter.message_id == message_id)
                .map(|(_, letter)| letter.clone());
        }
        taken.return_rest(&[]).await?;
    }
    let letter = found.ok_or_else(|| {
        CliError::NotFound(format!("no dead letter with message_id {message_id}"))
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&letter).unwrap_or_default()
        );
        return Ok(());
    }
    let rows = vec![
        vec!["queue".to_owned(), letter.queue.clone()],
        vec!["message_id".to_owned(), letter.message_id.clone()],
        vec!["type".to_owned(), letter.message_type.clone()],
        vec!["correlation_id".to_owned(), letter.correlation_id.clone()],
        vec!["fingerprint".to_owned(), letter.fingerprint.clone()],
        vec![
            "failed_at".to_owned(),
            letter.failed_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        ],
        vec!["original_queue".to_owned(), letter.original_queue.clone()],
    ];
    println!("{}", table::render(&["PROPERTY", "VALUE"], &rows));
    println!("\nheaders:");
    for (name, value) in &letter.headers {
        let value = value
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        println!("  {name}: {value}");
    }
    println!(
        "\nbody:\n{}",
        serde_json::to_string_pretty(&letter.body).unwrap_or_default()
    );
    Ok(())
}

async fn replay(
    broker: &BrokerConfig,
    queue: Option<String>,
    filter: &Filter,
    dry_run: bool,
    rate: f64,
    json: bool,
) -> Result<(), CliError> {
    let queues = chosen_queues(broker, queue).await?;
    let (_connection, channel) = broker.channel().await?;
    // Its own connection: publishing and reading never share one (a blocked connection
    // would stop the acks too).
    let publisher = ConfirmedPublisher::without_declaring(broker.connection().await?)
        .await
        .map_err(|error| CliError::Unavailable(format!("cannot open a channel: {error}")))?;
    let moved = move_letters(&channel, &publisher, &queues, filter, dry_run, rate).await;
    publisher.close().await;
    report("replay", &moved?, dry_run, json);
    Ok(())
}

/// Republish the letters of `queues` that `filter` chooses, at most `rate` per second, and
/// remove each from its DLQ once the broker confirmed it; returns the letters moved (or, in a
/// dry run, those that would be).
async fn move_letters(
    channel: &Channel,
    publisher: &ConfirmedPublisher,
    queues: &[String],
    filter: &Filter,
    dry_run: bool,
    rate: f64,
) -> Result<Vec<DeadLetter>, CliError> {
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut replayed = Vec::new();
    let limit = filter.limit.unwrap_or(usize::MAX);
    for queue in queues {
        let taken = Taken::read(channel, queue).await?;
        let mut moved = Vec::new();
        for (tag, letter) in &taken.messages {
            if replayed.len() >= limit || !filter.matches(letter) {
                continue;
            }
            if !dry_run {
                pace.tick().await;
                let result = republish(publisher, letter).await;
                if let Err(error) = result {
                    taken.return_rest(&moved).await?;
                    return Err(error);
                }
                channel
                    .basic_ack(*tag, BasicAckOptions::default())
                    .await
                    .map_err(|error| {
                        CliError::Other(anyhow::anyhow!(
                            "removing the replayed message from {queue}: {error}"
                        ))
                    })?;
                moved.push(*tag);
            }
            replayed.push(letter.clone());
        }
        taken.return_rest(&moved).await?;
    }
    Ok(replayed)
}

/// Publish `letter` to its work queue through the default exchange and wait for the broker to
/// confirm that it was routed.
async fn republish(publisher: &ConfirmedPublisher, letter: &DeadLetter) -> Result<(), CliError> {
    let outcome = publisher
        .publish_raw(
            "",
            &letter.original_queue,
            &letter.raw_body,
            replay_properties(&letter.properties),
        )
        .await
        .map_err(|error| {
            CliError::Other(anyhow::anyhow!("publishing {}: {error}", letter.message_id))
        })?;
    match outcome {
        PublishOutcome::Confirmed => Ok(()),
        PublishOutcome::Returned { .. } => Err(CliError::NotFound(format!(
            "work queue {:?} of message {} does not exist; nothing was moved",
            letter.original_queue, letter.message_id
        ))),
        other => Err(CliError::Other(anyhow::anyhow!(
            "the broker did not confirm the replay of {} ({other:?}); it stays in the DLQ",
            letter.message_id
        ))),
    }
}

async fn purge(
    broker: &BrokerConfig,
    queue: &str,
    filter: &Filter,
    json: bool,
) -> Result<(), CliError> {
    let queue = chosen_queues(broker, Some(queue.to_owned()))
        .await?
        .remove(0);
    let (_connection, channel) = broker.channel().await?;
    let taken = Taken::read(&channel, &queue).await?;
    let limit = filter.limit.unwrap_or(usize::MAX);
    let mut removed_tags = Vec::new();
    let mut removed = Vec::new();
    for (tag, letter) in &taken.messages {
        if removed.len() >= limit || !filter.matches(letter) {
            continue;
        }
        channel
            .basic_ack(*tag, BasicAckOptions::default())
            .await
            .map_err(|error| CliError::Other(anyhow::anyhow!("removing from {queue}: {error}")))?;
        removed_tags.push(*tag);
        removed.push(letter.clone());
    }
    taken.return_rest(&removed_tags).await?;
    report("purge", &removed, false, json);
    Ok(())
}

fn report(action: &str, letters: &[DeadLetter], dry_run: bool, json: bool) {
    if json {
        let value = json!({
            "action": action,
            "dry_run": dry_run,
            "count": letters.len(),
            "messages": letters.iter().map(|l| json!({
                "message_id": l.message_id,
                "queue": l.queue,
                "to": l.original_queue,
                "fingerprint": l.fingerprint,
            })).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return;
    }
    let verb = match (action, dry_run) {
        ("replay", true) => "would replay",
        ("replay", false) => "replayed",
        _ => "purged",
    };
    println!("{verb} {} message(s)", letters.len());
    if !letters.is_empty() {
        let rows: Vec<Vec<String>> = letters
            .iter()
            .map(|l| {
                vec![
                    l.message_id.clone(),
                    l.queue.clone(),
                    l.original_queue.clone(),
                    l.fingerprint.clone(),
                ]
            })
            .collect();
        println!(
            "{}",
            table::render(&["MESSAGE_ID", "FROM", "TO", "FINGERPRINT"], &rows)
        );
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}
