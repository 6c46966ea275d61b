//! Recording every publish of a vhost through RabbitMQ's firehose tracer
//! (<https://www.rabbitmq.com/docs/firehose>): with `rabbitmqctl trace_on -p <vhost>` the broker
//! copies each message entering the vhost to the topic exchange `amq.rabbitmq.trace` with the
//! routing key `publish.<exchange>` (and each delivery as `deliver.<queue>`, not wanted here).
//!
//! The firehose is per node and not persistent (a broker restart turns it off), and the
//! recorder's exclusive queue goes with its connection: after either, the recorder connects
//! again, subscribes again, turns the firehose on again, and records the gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use msgkit::{BrokerSettings, Shutdown};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::traced::{Gap, Recording, parse};
use super::{GenericError, rabbitmqctl};

/// The exchange the broker copies traced messages to.
const TRACE_EXCHANGE: &str = "amq.rabbitmq.trace";
/// Publishes only (messages entering the broker), not deliveries.
const PUBLISHES: &str = "publish.#";
/// Between two failed attempts to subscribe again.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);

/// Records the publishes of one vhost from [`FirehoseRecorder::start`] until
/// [`FirehoseRecorder::finish`]. Owns its background task; dropping it unfinished (an error
/// path) aborts the task and still turns the firehose off.
pub struct FirehoseRecorder {
    vhost: String,
    rabbitmqctl: Vec<String>,
    /// Until [`FirehoseRecorder::finish`] has tried to turn it off: then Drop need not.
    firehose_on: bool,
    finish: Option<oneshot::Sender<()>>,
    stop: Shutdown,
    gaps: Arc<AtomicUsize>,
    task: Option<JoinHandle<Recording>>,
}

/// What the background task needs to subscribe (again).
struct Subscriber {
    broker: BrokerSettings,
    vhost: String,
    rabbitmqctl: Vec<String>,
}

/// One subscription to the trace exchange.
struct Session {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
}

impl FirehoseRecorder {
    /// Bind a fresh exclusive queue to the trace exchange, start consuming it, then turn the
    /// firehose on for `vhost` with `rabbitmqctl` (the program and leading arguments, e.g.
    /// `["rabbitmqctl"]`, or `["runuser", "-u", "rabbitmq", "--", "rabbitmqctl"]` when not
    /// root; it must reach the node serving the vhost).
    pub async fn start(
        broker: &BrokerSettings,
        vhost: &str,
        rabbitmqctl: &[String],
    ) -> Result<Self, GenericError> {
        let subscriber = Subscriber {
            broker: broker.clone(),
            vhost: vhost.to_owned(),
            rabbitmqctl: rabbitmqctl.to_vec(),
        };
        let session = subscriber.subscribe().await?;
        let (finish, finish_rx) = oneshot::channel();
        let stop = Shutdown::new();
        let gaps = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(record(
            subscriber,
            session,
            finish_rx,
            stop.clone(),
            Arc::clone(&gaps),
        ));
        Ok(Self {
            vhost: vhost.to_owned(),
            rabbitmqctl: rabbitmqctl.to_vec(),
            firehose_on: true,
            finish: Some(finish),
            stop,
            gaps,
            task: Some(task),
        })
    }

    /// Gaps so far that the recorder has recovered from (it is listening again).
    pub fn recovered_gaps(&self) -> usize {
        self.gaps.load(Ordering::SeqCst)
    }

    /// End the recording: publish an end marker and wait (at most `deadline`) until its copy
    /// arrives, so every publish confirmed before this call has been recorded; then turn the
    /// firehose off.
    pub async fn finish(mut self, deadline: Duration) -> Result<Recording, GenericError> {
        let recording = self.collect(deadline).await;
        let off = rabbitmqctl::trace(&self.rabbitmqctl, "trace_off", &self.vhost).await;
        // Turned off (or tried, and reported): nothing left for Drop to do.
        self.firehose_on = false;
        off.map(|()| recording)
    }

    async fn collect(&mut self, deadline: Duration) -> Recording {
        let Some(mut task) = self.task.take() else {
            return Recording::default();
        };
        if let Some(finish) = self.finish.take() {
            let _ = finish.send(());
        }
        match tokio::time::timeout(deadline, &mut task).await {
            Ok(joined) => joined.unwrap_or_else(|error| Recording {
                interrupted: Some(format!("the recorder task failed: {error}")),
                ..Recording::default()
            }),
            Err(_) => {
                self.stop.trigger();
                let mut recording = task.await.unwrap_or_default();
                recording.interrupted =
                    Some(format!("the end marker did not arrive within {deadline:?}"));
                recording
            }
        }
    }
}

impl Drop for FirehoseRecorder {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if !self.firehose_on {
            return;
        }
        // Not finished: an error path. The firehose slows the whole vhost down and outlives
        // this process, so turn it off even here, blocking (Drop cannot await).
        if let Err(error) = rabbitmqctl::trace_blocking(&self.rabbitmqctl, "trace_off", &self.vhost)
        {
            eprintln!(
                "chaos: {error}; turn it off with `rabbitmqctl trace_off -p {}`",
                self.vhost
            );
        }
    }
}

impl Subscriber {
    /// Connect, bind and consume a fresh queue, then turn the firehose on (again: a restarted
    /// broker has it off).
    async fn subscribe(&self) -> Result<Session, GenericError> {
        let connection = self
            .broker
            .connect()
            .await
            .map_err(|e| GenericError::broker("connecting the firehose recorder", e))?;
        let subscribed = async {
            let (channel, consumer) = declare_and_consume(&connection).await?;
            rabbitmqctl::trace(&self.rabbitmqctl, "trace_on", &self.vhost).await?;
            Ok((channel, consumer))
        };
        match subscribed.await {
            Ok((channel, consumer)) => Ok(Session {
                connection,
                channel,
                consumer,
            }),
            Err(error) => {
                let _ = connection.close(200, "done".into()).await;
                Err(error)
            }
        }
    }

    /// [`Subscriber::subscribe`] until it works, or `None` once `stop` is triggered.
    async fn resubscribe(&self, stop: &Shutdown) -> Option<Session> {
        loop {
            let attempt = tokio::select! {
                biased;
                () = stop.triggered() => return None,
                attempt = self.subscribe() => attempt,
            };
            match attempt {
                Ok(session) => return Some(session),
                Err(error) => eprintln!("chaos: firehose recorder: {error}; trying again"),
            }
            tokio::select! {
                () = stop.triggered() => return None,
                () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            }
        }
    }
}

async fn declare_and_consume(connection: &Connection) -> Result<(Channel, Consumer), GenericError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| GenericError::broker("opening the recorder's channel", e))?;
    // Server-named, exclusive and auto-delete: it goes away with the recorder's connection.
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| GenericError::broker("declaring the recorder's queue", e))?;
    channel
        .queue_bind(
            queue.name().clone(),
            TRACE_EXCHANGE.into(),
            PUBLISHES.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| GenericError::broker("binding the recorder's queue", e))?;
    // No acks: the queue is the recorder's alone and lives only as long as its connection.
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "msgkit-firehose".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| GenericError::broker("consuming the recorder's queue", e))?;
    Ok((channel, consumer))
}

/// Publish the end marker through the default exchange to no queue: only its trace copy
/// matters, and it arrives after the copies of everything confirmed before it.
async fn publish_marker(channel: &Channel, marker: &str) -> Result<(), lapin::Error> {
    let properties = BasicProperties::default().with_message_id(marker.into());
    channel
        .basic_publish(
            "".into(),
            marker.into(),
            BasicPublishOptions::default(),
            b"",
            properties,
        )
        .await
        .map(drop)
}

/// The background task: record until the end marker's copy arrives (once `finish` asked for
/// it) or `stop`; subscribe again whenever the subscription fails.
async fn record(
    subscriber: Subscriber,
    mut session: Session,
    mut finish: oneshot::Receiver<()>,
    stop: Shutdown,
    gaps: Arc<AtomicUsize>,
) -> Recording {
    let marker = format!("msgkit.firehose.end.{}", uuid::Uuid::new_v4().simple());
    let mut finishing = false;
    let mut recording = Recording::default();
    loop {
        let failure = tokio::select! {
            biased;
            () = stop.triggered() => {
                recording.interrupted = Some("stopped before the end marker arrived".to_owned());
                break;
            }
            _ = &mut finish, if !finishing => {
                finishing = true;
                match publish_marker(&session.channel, &marker).await {
                    Ok(()) => continue,
                    Err(error) => format!("publishing the end marker failed: {error}"),
                }
            }
            next = session.consumer.next() => match next {
                Some(Ok(delivery)) => {
                    match parse(&delivery, Utc::now()) {
                        Some(p) if p.message_id.as_deref() == Some(marker.as_str()) => break,
                        Some(publish) => recording.publishes.push(publish),
                        None => {}
                    }
                    continue;
                }
                Some(Err(error)) => format!("the trace queue failed: {error}"),
                None => "the trace queue's consumer ended".to_owned(),
            },
        };
        let from = Utc::now();
        let _ = session.connection.close(200, "done".into()).await;
        let Some(again) = subscriber.resubscribe(&stop).await else {
            recording.interrupted = Some(format!("{failure}; not subscribed again"));
            return recording;
        };
        session = again;
        recording.gaps.push(Gap {
            from,
            to: Utc::now(),
            reason: failure,
        });
        gaps.fetch_add(1, Ordering::SeqCst);
        // The marker may have been lost with the old subscription.
        if finishing && let Err(error) = publish_marker(&session.channel, &marker).await {
            eprintln!("chaos: firehose recorder: publishing the end marker failed: {error}");
        }
    }
    let _ = session.connection.close(200, "done".into()).await;
    recording
}
