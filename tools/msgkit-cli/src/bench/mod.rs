//! `msgkit bench`: the kit against the raw limits of the same machine, in the same run, on the
//! same broker and database. See docs/performance.md.

mod e2e;
mod plot;
mod raw;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use msgkit::consume::{
    Consumer, ConsumerConfig, Handler, HandlerError, IncomingMessage, RetryPolicy,
};
use msgkit::message::OutgoingMessage;
use msgkit::testing::{TestBroker, TestDatabase};
use msgkit::{ConfirmedPublisher, OutboxRelay, RelayConfig, Shutdown, Topology, WorkQueue};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;

use crate::{CliError, table};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages per throughput stage.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Seconds of closed-loop end-to-end load (open-loop steps are as long).
    #[arg(long, default_value_t = 20)]
    e2e_secs: u64,
    /// Skip the end-to-end stages (they need the service binaries).
    #[arg(long)]
    skip_e2e: bool,
    /// Write report.md, report.json, throughput.svg and latency.svg here.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

/// One measured stage.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: String,
    pub rate: f64,
    pub ceiling: Option<String>,
    pub ratio: Option<f64>,
    pub target: Option<f64>,
}

const BODY: &[u8] = br#"{"order_id":"00000000-0000-0000-0000-000000000000","customer_id":"c-1","items":[{"sku":"SKU-1","quantity":2}]}"#;

struct Noop;

impl Handler for Noop {
    async fn handle(
        &self,
        _message: &IncomingMessage,
        _tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn topology() -> Topology {
    Topology::default()
        .with_queue(WorkQueue::new("bench.raw").bind("bench.raw"))
        .with_queue(WorkQueue::new("bench.fan1").bind("bench.fan"))
        .with_queue(WorkQueue::new("bench.fan2").bind("bench.fan"))
        .with_queue(WorkQueue::new("bench.fan3").bind("bench.fan"))
        .with_queue(WorkQueue::new("bench.relay").bind("bench.relay"))
        .with_queue(WorkQueue::new("bench.work").bind("bench.work"))
        .with_queue(WorkQueue::new("bench.inbox").bind("bench.inbox"))
}

pub async fn run(args: BenchArgs, json_output: bool) -> Result<(), CliError> {
    let n = args.messages;
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let connection = broker.connect().await;
    let setup = raw::confirm_channel(&connection).await?;
    topology()
        .declare(&setup)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    let mut stages = Vec::new();

    eprintln!("bench: raw publish with confirms ({n} messages) ...");
    let raw_publish = raw::publish(&setup, "events", "bench.raw", n, BODY).await?;
    eprintln!("bench: raw consume and ack ...");
    let raw_consume = raw::consume(&connection, "bench.raw", n).await?;

    eprintln!("bench: raw fanout to three queues with three consumers ...");
    let started = Instant::now();
    let consumers: Vec<_> = ["bench.fan1", "bench.fan2", "bench.fan3"]
        .into_iter()
        .map(|queue| {
            let settings = broker.settings(&format!("bench/{queue}"));
            tokio::spawn(async move {
                let connection = settings
                    .connect()
                    .await
                    .map_err(|e| CliError::Other(e.into()))?;
                raw::consume(&connection, queue, n).await
            })
        })
        .collect();
    raw::publish(&setup, "events", "bench.fan", n, BODY).await?;
    for consumer in consumers {
        consumer.await.map_err(|e| CliError::Other(e.into()))??;
    }
    let raw_fanout = n as f64 / started.elapsed().as_secs_f64();
    stages.push(stage(
        "raw: publish with confirms (1 quorum queue)",
        raw_publish,
        None,
        None,
    ));
    stages.push(stage("raw: consume and ack", raw_consume, None, None));
    stages.push(stage(
        "raw: fanout to 3 queues, 3 consumers acking",
        raw_fanout,
        None,
        None,
    ));

    eprintln!("bench: outbox relay drain ...");
    let relay = relay_drain(&db, &broker, n).await?;
    stages.push(stage(
        "kit: outbox relay drain",
        relay,
        Some(("raw publish with confirms", raw_publish)),
        Some(0.8),
    ));

    eprintln!("bench: consumer runtime, inbox off ...");
    let consumer_off = consume_with_kit(&db, &broker, &setup, n, "bench.work", false).await?;
    stages.push(stage(
        "kit: consumer runtime, inbox off",
        consumer_off,
        Some(("raw consume and ack", raw_consume)),
        Some(0.9),
    ));
    eprintln!("bench: consumer runtime, inbox on ...");
    let consumer_on = consume_with_kit(&db, &broker, &setup, n, "bench.inbox", true).await?;
    stages.push(stage(
        "kit: consumer runtime, inbox on",
        consumer_on,
        Some(("raw consume and ack", raw_consume)),
        None,
    ));
    let _ = connection.close(200, "done".into()).await;

    let e2e = if args.skip_e2e {
        None
    } else {
        Some(e2e::run(Duration::from_secs(args.e2e_secs)).await?)
    };
    if let Some(e2e) = &e2e {
        stages.push(stage(
            "kit: end to end, orders/s (closed loop)",
            e2e.max_orders_per_sec,
            Some(("raw fanout", raw_fanout)),
            Some(0.5),
        ));
    }

    std::fs::create_dir_all(&args.out).map_err(|e| CliError::Other(e.into()))?;
    let report = json!({
        "machine": machine(),
        "messages_per_stage": n,
        "stages": stages,
        "end_to_end": e2e,
    });
    let markdown = markdown(&stages, e2e.as_ref());
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| CliError::Other(e.into()))?;
    std::fs::write(args.out.join("report.md"), &markdown).map_err(|e| CliError::Other(e.into()))?;
    std::fs::write(args.out.join("throughput.svg"), plot::throughput(&stages))
        .map_err(|e| CliError::Other(e.into()))?;
    if let Some(e2e) = &e2e {
        std::fs::write(args.out.join("latency.svg"), plot::latency(&e2e.open_loop))
            .map_err(|e| CliError::Other(e.into()))?;
    }
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!("{markdown}");
        println!("written to {}", args.out.display());
    }
    Ok(())
}

fn stage(name: &str, rate: f64, ceiling: Option<(&str, f64)>, target: Option<f64>) -> Stage {
    Stage {
        name: name.to_owned(),
        rate,
        ceiling: ceiling.map(|(name, _)| name.to_owned()),
        ratio: ceiling.map(|(_, c)| rate / c),
        target,
    }
}

async fn relay_drain(db: &TestDatabase, broker: &TestBroker, n: usize) -> Result<f64, CliError> {
    let pool = db.pool().await;
    msgkit::schema::migrate(&pool)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    // 1,000 aggregates: a realistic spread (the relay takes one head row per aggregate).
    sqlx::query(
        "INSERT INTO msgkit_outbox (id, aggregate_id, exchange, routing_key, message_type, payload, headers) \
         SELECT gen_random_uuid(), 'agg-' || (g % 1000), 'events', 'bench.relay', 'bench.relay', $2::jsonb, '{}'::jsonb \
         FROM generate_series(1, $1) g",
    )
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .bind(serde_json::from_slice::<serde_json::Value>(BODY).unwrap_or_default())
    .execute(&pool)
    .await
    .map_err(|e| CliError::Other(e.into()))?;
    let relay = OutboxRelay::new(
        pool.clone(),
        broker.settings("bench/relay"),
        topology(),
        RelayConfig {
            batch_size: 500,
            ..RelayConfig::new("bench")
        },
    );
    let publisher = ConfirmedPublisher::open(
        &broker.settings("bench/relay"),
        &topology(),
        &Shutdown::new(),
    )
    .await
    .map_err(|e| CliError::Other(e.into()))?;
    let started = Instant::now();
    let mut published = 0;
    loop {
        let report = relay
            .relay_batch(&publisher)
            .await
            .map_err(|e| CliError::Other(e.into()))?;
        published += report.published;
        if report.claimed == 0 {
            break;
        }
    }
    let rate = published as f64 / started.elapsed().as_secs_f64();
    publisher.close().await;
    pool.close().await;
    if published != n {
        return Err(CliError::Other(anyhow::anyhow!(
            "the relay published {published} of {n}"
        )));
    }
    Ok(rate)
}

async fn consume_with_kit(
    db: &TestDatabase,
    broker: &TestBroker,
    setup: &lapin::Channel,
    n: usize,
    queue: &str,
    inbox: bool,
) -> Result<f64, CliError> {
    // Kit messages (with ids, which the inbox needs), published raw.
    let publisher = ConfirmedPublisher::on_connection(broker.connect().await, &topology())
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    let mut batch = Vec::with_capacity(raw::WINDOW);
    for i in 0..n {
        let mut message = OutgoingMessage::event(
            queue,
            &format!("agg-{i}"),
            "bench",
            &serde_json::json!({"n": i}),
        )
        .map_err(|e| CliError::Other(e.into()))?;
        message.routing_key = queue.to_owned();
        batch.push(message);
        if batch.len() == raw::WINDOW || i + 1 == n {
            publisher
                .publish_batch(&batch)
                .await
                .map_err(|e| CliError::Other(e.into()))?;
            batch.clear();
        }
    }
    publisher.close().await;
    let _ = setup;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(12)
        .connect_with(db.options())
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    msgkit::schema::migrate(&pool)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    let consumer = Consumer::new(
        pool.clone(),
        broker.settings(&format!("bench/{queue}")),
        topology(),
        ConsumerConfig {
            prefetch: 500,
            concurrency: 10,
            inbox,
            retry: RetryPolicy::default(),
            ..ConsumerConfig::new("bench", queue)
        },
        Noop,
    );
    let stats = consumer.stats();
    let shutdown = Shutdown::new();
    let started = Instant::now();
    shutdown.spawn(consumer.run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(600);
    let stats_ref = Arc::clone(&stats);
    while (stats_ref.handled() as usize) < n {
        if Instant::now() > deadline {
            return Err(CliError::Other(anyhow::anyhow!(
                "the consumer handled {} of {n}",
                stats_ref.handled()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    shutdown.trigger();
    shutdown.wait_for_tasks().await;
    pool.close().await;
    Ok(rate)
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.to_owned()))
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "memory": memory,
        "rabbitmq": "local node (see scripts/stack.sh)",
        "date": chrono::Utc::now().to_rfc3339(),
    })
}

fn markdown(stages: &[Stage], e2e: Option<&e2e::EndToEnd>) -> String {
    let rows: Vec<Vec<String>> = stages
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                format!("{:.0}", s.rate),
                s.ceiling.clone().unwrap_or_default(),
                s.ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
                match (s.ratio, s.target) {
                    (Some(r), Some(t)) => {
                        format!("≥ {t} {}", if r >= t { "met" } else { "NOT met" })
                    }
                    _ => String::new(),
                },
            ]
        })
        .collect();
    let mut out = String::from(
        "| stage | msgs/s | against | ratio | target |\n| --- | ---: | --- | ---: | --- |\n",
    );
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    if let Some(e2e) = e2e {
        out.push_str(&e2e.markdown());
    }
    let _ = table::render;
    out
}
