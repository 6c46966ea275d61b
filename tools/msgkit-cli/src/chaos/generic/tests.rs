//! The generic invariant against the real RabbitMQ and PostgreSQL: a tiny system built on the
//! kit (one consumer with two routes, events published through its outbox relay), each test
//! on its own vhost and database.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use msgkit::consume::{ConsumerConfig, Context, HandlerError, Routes};
use msgkit::service::{Service, ServiceError};
use msgkit::testing::{TestBroker, TestDatabase, service_settings, wait_until_async};
use msgkit::{EventType, OutboxMessage, Shutdown, Topology, WorkQueue};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use super::{
    ConsumerTarget, FirehoseRecorder, ManagementApi, ServiceStore, SystemUnderTest, Verdict,
    ViolationKind, verdict,
};

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    account: String,
}

const CREDITED: EventType<Entry> = EventType::new("ledger.credited");
const DEBITED: EventType<Entry> = EventType::new("ledger.debited");

/// The handler's effect is the inbox row the kit writes in its transaction.
async fn apply(_ctx: Context<'_>, _entry: Entry) -> Result<(), HandlerError> {
    Ok(())
}

/// The `ledger` service: its outbox relay, and the consumer of its queue, bound to `ledger.#`
/// with a route for each of the two types. `extra` queues are declared too, unconsumed.
struct Ledger {
    pool: PgPool,
    db: TestDatabase,
    broker: TestBroker,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

impl Ledger {
    async fn start(extra: Vec<WorkQueue>) -> Self {
        let db = TestDatabase::create().await;
        let broker = TestBroker::create().await;
        let topology = extra.into_iter().fold(
            Topology::default().with_queue(WorkQueue::new("ledger").bind("ledger.#")),
            Topology::with_queue,
        );
        let settings = service_settings("ledger", "ledger", &db, broker.settings("ledger"));
        let routes = Routes::new().route(CREDITED, apply).route(DEBITED, apply);
        let service = Service::start(settings, topology, Migrator::DEFAULT)
            .await
            .unwrap()
            .with_relay()
            .consume_with(ConsumerConfig::new("ledger", "ledger"), routes)
            .unwrap();
        let pool = service.pool().clone();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(service.run_until_stopped(shutdown.clone()));
        Self {
            pool,
            db,
            broker,
            shutdown,
            task,
        }
    }

    fn system(&self) -> SystemUnderTest {
        let store = ServiceStore {
            database_url: self.db.url(),
            schema: Some("ledger".to_owned()),
        };
        SystemUnderTest {
            vhost: self.broker.vhost().to_owned(),
            broker: self.broker.settings("verdict"),
            management: ManagementApi {
                url: "http://127.0.0.1:15672".to_owned(),
                user: "guest".to_owned(),
                password: "guest".to_owned(),
            },
            events_exchange: msgkit::topology::EVENTS_EXCHANGE.to_owned(),
            consumers: vec![ConsumerTarget {
                queue: "ledger".to_owned(),
                consumer: "ledger".to_owned(),
                store,
            }],
            publishers: Vec::new(),
            timer_grace: Duration::from_secs(5),
            max_listed: 20,
        }
    }

    async fn recorder(&self) -> FirehoseRecorder {
        FirehoseRecorder::start(
            &self.broker.settings("firehose"),
            self.broker.vhost(),
            &["rabbitmqctl".to_owned()],
        )
        .await
        .unwrap()
    }

    /// Write events to the outbox, as a handler or an HTTP request would; the relay publishes.
    async fn emit(&self, types: &[&str]) {
        let mut tx = self.pool.begin().await.unwrap();
        for message_type in types {
            let entry = Entry {
                account: "acc-1".to_owned(),
            };
            let message = OutboxMessage::event(*message_type, "acc-1", &entry).unwrap();
            msgkit::outbox::enqueue(&mut tx, &message).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    /// Wait until the outbox is published and the ledger consumer has `count` inbox rows.
    async fn drained(&self, count: i64) {
        wait_until_async(
            &format!("the outbox published and {count} inbox rows"),
            DEADLINE,
            || async {
                let (pending, handled): (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT count(*) FROM msgkit_outbox WHERE published_at IS NULL), \
                            (SELECT count(*) FROM msgkit_inbox WHERE consumer = 'ledger')",
                )
                .fetch_one(&self.pool)
                .await
                .unwrap();
                (pending == 0 && handled == count).then_some(())
            },
        )
        .await;
    }

    async fn judge(&self, recorder: FirehoseRecorder) -> Verdict {
        let recording = recorder.finish(DEADLINE).await.unwrap();
        assert_eq!(recording.interrupted, None);
        verdict(&self.system(), &recording).await.unwrap()
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

fn kinds(verdict: &Verdict) -> Vec<(ViolationKind, Option<&str>, Option<&str>)> {
    verdict
        .violations
        .iter()
        .map(|v| (v.kind, v.message_type.as_deref(), v.queue.as_deref()))
        .collect()
}

#[tokio::test]
async fn a_healthy_system_that_handled_every_event_passes() {
    let ledger = Ledger::start(Vec::new()).await;
    let recorder = ledger.recorder().await;
    ledger.emit(&["ledger.credited", "ledger.debited"]).await;
    ledger.drained(2).await;
    let recording = recorder.finish(DEADLINE).await.unwrap();
    // What the firehose of RabbitMQ 3.10 says of each event: where it went.
    let routed: Vec<_> = recording
        .publishes
        .iter()
        .filter(|p| p.exchange == "events")
        .map(|p| (p.message_type.as_deref(), p.routed_queues.clone()))
        .collect();
    let ledger_only = Some(vec!["ledger".to_owned()]);
    assert_eq!(
        routed,
        [
            (Some("ledger.credited"), ledger_only.clone()),
            (Some("ledger.debited"), ledger_only)
        ]
    );
    let verdict = verdict(&ledger.system(), &recording).await.unwrap();
    assert!(verdict.holds(), "{:?}", verdict.violations);
    assert_eq!(verdict.events, 2);
    assert_eq!(verdict.deliveries_checked, 2);
    ledger.stop().await;
}

#[tokio::test]
async fn a_consumer_that_acks_one_type_without_handling_it_fails_naming_that_type() {
    // `audit` is bound to debits, and its consumer is hand-written: it acknowledges every
    // delivery and writes nothing, as a consumer outside the kit (or one that swallows a type)
    // does.
    let ledger = Ledger::start(vec![WorkQueue::new("audit").bind("ledger.debited")]).await;
    // The service declares its topology once running.
    wait_until_async("the audit queue declared", DEADLINE, || async {
        ledger.broker.queue_depth("audit").await
    })
    .await;
    let connection = ledger.broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    let mut deliveries = channel
        .basic_consume(
            "audit".into(),
            "swallower".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&acked);
    let swallower = tokio::spawn(async move {
        while let Some(Ok(delivery)) = deliveries.next().await {
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let recorder = ledger.recorder().await;
    ledger.emit(&["ledger.credited", "ledger.debited"]).await;
    ledger.drained(2).await;
    wait_until_async("audit acked the debit", DEADLINE, || async {
        (acked.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    let mut system = ledger.system();
    system.consumers.push(ConsumerTarget {
        queue: "audit".to_owned(),
        consumer: "audit".to_owned(),
        store: system.consumers[0].store.clone(),
    });
    let recording = recorder.finish(DEADLINE).await.unwrap();
    let verdict = verdict(&system, &recording).await.unwrap();
    assert!(!verdict.holds());
    assert_eq!(
        kinds(&verdict),
        [(
            ViolationKind::NotHandled,
            Some("ledger.debited"),
            Some("audit")
        )]
    );
    assert!(
        verdict.violations[0].to_string().contains("ledger.debited"),
        "{}",
        verdict.violations[0]
    );
    swallower.abort();
    let _ = connection.close(200, "done".into()).await;
    ledger.stop().await;
}

#[tokio::test]
async fn an_event_left_in_a_work_queue_fails_it() {
    // `idle` is bound to credits, described as consumed by `idle`, and never consumed.
    let ledger = Ledger::start(vec![WorkQueue::new("idle").bind("ledger.credited")]).await;
    let recorder = ledger.recorder().await;
    ledger.emit(&["ledger.credited", "ledger.debited"]).await;
    ledger.drained(2).await;
    wait_until_async("the credit waiting in idle", DEADLINE, || async {
        (ledger.broker.queue_depth("idle").await == Some(1)).then_some(())
    })
    .await;

    let mut system = ledger.system();
    system.consumers.push(ConsumerTarget {
        queue: "idle".to_owned(),
        consumer: "idle".to_owned(),
        store: system.consumers[0].store.clone(),
    });
    let recording = recorder.finish(DEADLINE).await.unwrap();
    let verdict = verdict(&system, &recording).await.unwrap();
    let found = kinds(&verdict);
    assert!(
        found.contains(&(ViolationKind::LeftInWorkQueue, None, Some("idle"))),
        "{found:?}"
    );
    assert!(
        found.contains(&(
            ViolationKind::NotHandled,
            Some("ledger.credited"),
            Some("idle")
        )),
        "{found:?}"
    );
    assert_eq!(verdict.total(), 2, "{found:?}");
    ledger.stop().await;
}

#[tokio::test]
async fn an_event_dead_lettered_with_a_reason_is_accounted_for() {
    // Bound by `ledger.#`, routed by no route: the consumer dead-letters it as poison.
    let ledger = Ledger::start(Vec::new()).await;
    let recorder = ledger.recorder().await;
    ledger.emit(&["ledger.credited", "ledger.audited"]).await;
    ledger.drained(1).await;
    wait_until_async("the audit event in ledger.dlq", DEADLINE, || async {
        (ledger.broker.queue_depth("ledger.dlq").await == Some(1)).then_some(())
    })
    .await;
    let verdict = ledger.judge(recorder).await;
    assert!(verdict.holds(), "{:?}", verdict.violations);
    assert_eq!(verdict.deliveries_checked, 2);
    // Read without taking: the dead letter is still there for an operator.
    assert_eq!(ledger.broker.queue_depth("ledger.dlq").await, Some(1));
    ledger.stop().await;
}

#[tokio::test]
async fn an_event_no_queue_is_bound_to_is_unroutable_and_stays_in_the_outbox() {
    let ledger = Ledger::start(Vec::new()).await;
    let recorder = ledger.recorder().await;
    ledger.emit(&["nobody.listens"]).await;
    // The relay publishes with the mandatory flag: the broker returns it, the row stays.
    wait_until_async("the relay's first refused attempt", DEADLINE, || async {
        let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM msgkit_outbox")
            .fetch_one(&ledger.pool)
            .await
            .unwrap();
        (attempts >= 1).then_some(())
    })
    .await;
    let verdict = ledger.judge(recorder).await;
    let found = kinds(&verdict);
    assert!(
        found.contains(&(ViolationKind::Unroutable, Some("nobody.listens"), None)),
        "{found:?}"
    );
    assert!(
        found.contains(&(ViolationKind::OutboxPending, Some("nobody.listens"), None)),
        "{found:?}"
    );
    ledger.stop().await;
}

#[tokio::test]
async fn the_recorder_listens_again_after_losing_its_connection_and_reports_the_gap() {
    let ledger = Ledger::start(Vec::new()).await;
    let recorder = ledger.recorder().await;
    ledger.emit(&["ledger.credited"]).await;
    ledger.drained(1).await;
    // As an operator would from the management UI; a broker restart does the same and more.
    // The API lists a new connection only after its next statistics tick: close until the
    // recorder's own connection was among the closed.
    wait_until_async("the recorder subscribed again", DEADLINE, || async {
        if recorder.recovered_gaps() == 0 {
            ledger.broker.close_all_connections().await;
        }
        (recorder.recovered_gaps() >= 1).then_some(())
    })
    .await;
    ledger.emit(&["ledger.debited"]).await;
    ledger.drained(2).await;
    let recording = recorder.finish(DEADLINE).await.unwrap();
    assert_eq!(recording.interrupted, None);
    assert!(!recording.gaps.is_empty());
    let verdict = verdict(&ledger.system(), &recording).await.unwrap();
    assert!(verdict.holds(), "{:?}", verdict.violations);
    assert_eq!(
        verdict.events, 2,
        "both events, one on each side of the gap"
    );
    ledger.stop().await;
}
