//! `msgkit bench`: the kit against the raw limits of the same machine, in the same run, on the
//! same broker and database. See docs/performance.md.

mod e2e;
mod kit;
mod overload;
mod plot;
mod projection;
mod raw;
mod raw_inbox;
mod reconcile;
mod report;
mod risk;
mod stats;
mod timers;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use msgkit::testing::{TestBroker, TestDatabase};
use msgkit::{Topology, WorkQueue};
use serde::Serialize;
use serde_json::json;

use crate::CliError;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages per throughput stage.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Measure every throughput stage this many times, interleaved with its ceiling; the
    /// report gives medians, the spread, and the median of the paired ratios.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Seconds of closed-loop end-to-end load (open-loop steps are as long); also the length
    /// of the risk and reconcile stages' two loops.
    #[arg(long, default_value_t = 20)]
    e2e_secs: u64,
    /// Seconds of the end-to-end stage's overload step: twice the measured maximum, open
    /// loop, the order API shedding the excess (0 skips it).
    #[arg(long, default_value_t = 60)]
    overload_secs: u64,
    /// Skip the stages that need the service binaries (e2e, risk, reconcile).
    #[arg(long)]
    skip_e2e: bool,
    /// Run only these stages (comma-separated: raw, relay, relay-archive, consumer,
    /// projection, e2e, timers, risk, reconcile);
    /// ratios need `raw`.
    /// All by default.
    #[arg(long, value_delimiter = ',', value_enum)]
    stages: Vec<StageKind>,
    /// Write report.md, report.json, throughput.svg and latency.svg here.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

impl BenchArgs {
    /// Whether to run `kind`: every stage when none is named, and never the stages that
    /// start service binaries under `--skip-e2e`.
    fn wants(&self, kind: StageKind) -> bool {
        let needs_services = matches!(
            kind,
            StageKind::E2e | StageKind::Risk | StageKind::Reconcile
        );
        (self.stages.is_empty() || self.stages.contains(&kind))
            && !(needs_services && self.skip_e2e)
    }
}

/// A group of stages to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StageKind {
    /// The plain-lapin ceilings.
    Raw,
    /// The outbox relay drain.
    Relay,
    /// The outbox relay drain with the event archive on, against the same drain with it off
    /// (run next to it): what the second confirmed publish of every event costs.
    RelayArchive,
    /// The consumer runtime, inbox off and on, one message per transaction and in batches.
    Consumer,
    /// A projection catching up with N archived events, against a plain lapin + sqlx stream
    /// consumer doing the same upserts on the same stream.
    Projection,
    /// Orders through the four service processes.
    E2e,
    /// Durable timers: fired per second, and the firing lag at half that rate.
    Timers,
    /// Transactions through the risk engine with 20 rules; decision and push latency.
    Risk,
    /// Payments reconciled with the gateway's callbacks per second; time to match at half
    /// that rate.
    Reconcile,
}

/// One measured stage.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: String,
    /// Median over the repetitions.
    pub rate: f64,
    /// Every repetition's rate, in order.
    pub samples: Vec<f64>,
    pub ceiling: Option<String>,
    /// Median of the ratios of each repetition to the ceiling measured next to it.
    pub ratio: Option<f64>,
    pub target: Option<f64>,
}

const BODY: &[u8] = br#"{"order_id":"00000000-0000-0000-0000-000000000000","customer_id":"c-1","items":[{"sku":"SKU-1","quantity":2}]}"#;

fn topology() -> Topology {
    Topology::default()
        .with_queue(WorkQueue::new("bench.raw").bind("bench.raw"))
        .with_queue(WorkQueue::new("bench.fan1").bind("bench.fan"))
        .with_queue(WorkQueue::new("bench.fan2").bind("bench.fan"))
        .with_queue(WorkQueue::new("bench.fan3").bind("bench.fan"))
        .with_queue(WorkQueue::new("bench.relay").bind("bench.relay"))
        .with_queue(WorkQueue::new("bench.work").bind("bench.work"))
        .with_queue(WorkQueue::new("bench.inbox").bind("bench.inbox"))
        // Fired timers come to their consumer's queue by name: no binding.
        .with_queue(WorkQueue::new(timers::QUEUE))
}

pub async fn run(args: BenchArgs, json_output: bool) -> Result<(), CliError> {
    let n = args.messages;
    let repeat = args.repeat.max(1);
    let wanted = |kind: StageKind| args.wants(kind);
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let connection = broker.connect().await;
    let setup = raw::confirm_channel(&connection).await?;
    topology()
        .declare(&setup)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    let pool = db.pool().await;
    msgkit::schema::migrate(&pool)
        .await
        .map_err(|e| CliError::Other(e.into()))?;

    let projection = if wanted(StageKind::Projection) {
        eprintln!("bench: archiving {n} events for the projection stage ...");
        Some(projection::ProjectionWorkload::prepare(n).await?)
    } else {
        None
    };

    // Each repetition measures every stage once, ceilings first, so that a kit stage is
    // compared with the ceiling measured seconds before it: the machine's speed drifts (a
    // shared virtual machine), and only paired ratios are stable.
    let mut samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for round in 1..=repeat {
        eprintln!("bench: round {round} of {repeat}");
        if wanted(StageKind::Raw) {
            let raw = raw_ceilings(&broker, &connection, &setup, n).await?;
            samples.entry(RAW_PUBLISH).or_default().push(raw.publish);
            samples.entry(RAW_CONSUME).or_default().push(raw.consume);
            samples.entry(RAW_FANOUT).or_default().push(raw.fanout);
        }
        if wanted(StageKind::Relay) || wanted(StageKind::RelayArchive) {
            eprintln!("bench: outbox relay drain ...");
            let rate = kit::relay_drain(&pool, &broker, &setup, n, None).await?;
            samples.entry(KIT_RELAY).or_default().push(rate);
        }
        if wanted(StageKind::RelayArchive) {
            eprintln!("bench: outbox relay drain, archive on ...");
            let archive = Some(msgkit::topology::Archive::default());
            let rate = kit::relay_drain(&pool, &broker, &setup, n, archive).await?;
            samples.entry(KIT_RELAY_ARCHIVE).or_default().push(rate);
        }
        if wanted(StageKind::Consumer) {
            eprintln!("bench: {RAW_CONSUME_INBOX} ...");
            let rate = kit::consume_raw_with_inbox(&db, &broker, n, "bench.inbox", BATCH).await?;
            samples.entry(RAW_CONSUME_INBOX).or_default().push(rate);
            for (stage, queue, inbox, batch) in [
                (KIT_CONSUMER, "bench.work", false, 1),
                (KIT_CONSUMER_BATCH, "bench.work", false, BATCH),
                (KIT_CONSUMER_INBOX, "bench.inbox", true, 1),
                (KIT_CONSUMER_INBOX_BATCH, "bench.inbox", true, BATCH),
            ] {
                eprintln!("bench: {stage} ...");
                let rate = kit::consume_with_kit(&db, &broker, n, queue, inbox, batch).await?;
                samples.entry(stage).or_default().push(rate);
            }
        }
        if let Some(projection) = &projection {
            let rates = projection.round(&db, round).await?;
            samples
                .entry(RAW_PROJECTION)
                .or_default()
                .push(rates.ceiling);
            samples
                .entry(RAW_PROJECTION_BOUND)
                .or_default()
                .push(rates.bound);
            samples.entry(KIT_PROJECTION).or_default().push(rates.kit);
        }
    }
    drop(projection);
    let timers = if wanted(StageKind::Timers) {
        eprintln!("bench: timers ...");
        Some(timers::run(&db, &broker, n.min(20_000)).await?)
    } else {
        None
    };
    let _ = connection.close(200, "done".into()).await;
    pool.close().await;

    let e2e = if wanted(StageKind::E2e) {
        Some(
            e2e::run(
                Duration::from_secs(args.e2e_secs),
                Duration::from_secs(args.overload_secs),
            )
            .await?,
        )
    } else {
        None
    };
    if let Some(e2e) = &e2e {
        samples.insert(KIT_E2E, vec![e2e.max_orders_per_sec]);
    }
    let risk = if wanted(StageKind::Risk) {
        Some(risk::run(Duration::from_secs(args.e2e_secs)).await?)
    } else {
        None
    };
    let reconcile = if wanted(StageKind::Reconcile) {
        Some(reconcile::run(Duration::from_secs(args.e2e_secs)).await?)
    } else {
        None
    };

    // (stage, its ceiling, target ratio)
    let layout: [(&str, Option<&str>, Option<f64>); 14] = [
        (RAW_PUBLISH, None, None),
        (RAW_CONSUME, None, None),
        (RAW_CONSUME_INBOX, None, None),
        (RAW_FANOUT, None, None),
        (RAW_PROJECTION, None, None),
        (RAW_PROJECTION_BOUND, Some(RAW_PROJECTION), None),
        (KIT_RELAY, Some(RAW_PUBLISH), Some(0.8)),
        (KIT_RELAY_ARCHIVE, Some(KIT_RELAY), None),
        (KIT_PROJECTION, Some(RAW_PROJECTION), None),
        (KIT_CONSUMER, Some(RAW_CONSUME), Some(0.9)),
        (KIT_CONSUMER_BATCH, Some(RAW_CONSUME), Some(0.9)),
        (KIT_CONSUMER_INBOX, Some(RAW_CONSUME), None),
        (KIT_CONSUMER_INBOX_BATCH, Some(RAW_CONSUME_INBOX), Some(0.8)),
        (KIT_E2E, Some(RAW_FANOUT), Some(0.5)),
    ];
    let stages: Vec<Stage> = layout
        .into_iter()
        .filter_map(|(name, ceiling, target)| {
            let rates = samples.get(name)?;
            let ceiling = ceiling.and_then(|c| Some((c, samples.get(c)?)));
            Some(stage(name, rates, ceiling, target))
        })
        .collect();

    std::fs::create_dir_all(&args.out).map_err(|e| CliError::Other(e.into()))?;
    let report = json!({
        "machine": report::machine(),
        "messages_per_stage": n,
        "repetitions": repeat,
        "stages": stages,
        "end_to_end": e2e,
        "timers": timers,
        "risk": risk,
        "reconcile": reconcile,
    });
    let mut markdown = report::markdown(&stages, e2e.as_ref());
    if let Some(timers) = &timers {
        markdown.push_str(&timers.markdown());
    }
    if let Some(risk) = &risk {
        markdown.push_str(&risk.markdown());
    }
    if let Some(reconcile) = &reconcile {
        markdown.push_str(&reconcile.markdown());
    }
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

const RAW_PUBLISH: &str = "raw: publish with confirms (1 quorum queue)";
const RAW_CONSUME: &str = "raw: consume and ack";
const RAW_CONSUME_INBOX: &str =
    "raw: consume, inbox rows of a batch in one INSERT, commit, ack (10 workers, batches of 50)";
const RAW_FANOUT: &str = "raw: fanout to 3 queues, 3 consumers acking";
const RAW_PROJECTION: &str = "raw: stream catch-up, a batch of upserts per round trip";
const RAW_PROJECTION_BOUND: &str = "raw: stream catch-up, an upsert per round trip";
const KIT_RELAY: &str = "kit: outbox relay drain";
const KIT_RELAY_ARCHIVE: &str = "kit: outbox relay drain, archive on";
const KIT_PROJECTION: &str = "kit: projection catch-up (events/s)";
const KIT_CONSUMER: &str = "kit: consumer runtime, inbox off";
const KIT_CONSUMER_BATCH: &str = "kit: consumer runtime, inbox off, batches of 50";
const KIT_CONSUMER_INBOX: &str = "kit: consumer runtime, inbox on";
const KIT_CONSUMER_INBOX_BATCH: &str = "kit: consumer runtime, inbox on, batches of 50";
/// `ConsumerConfig::batch` of the batching consumer stages.
const BATCH: usize = 50;
const KIT_E2E: &str = "kit: end to end, orders/s (closed loop)";

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

/// A stage from its repetitions; against a ceiling, the ratio is the median of the ratios of
/// repetitions measured side by side (or against the ceiling's median when the counts differ,
/// as for the single end-to-end run).
fn stage(
    name: &str,
    rates: &[f64],
    ceiling: Option<(&str, &Vec<f64>)>,
    target: Option<f64>,
) -> Stage {
    let ratio = ceiling.map(|(_, ceiling)| {
        if ceiling.len() == rates.len() {
            let ratios: Vec<f64> = rates.iter().zip(ceiling).map(|(r, c)| r / c).collect();
            median(&ratios)
        } else {
            median(rates) / median(ceiling)
        }
    });
    Stage {
        name: name.to_owned(),
        rate: median(rates),
        samples: rates.to_vec(),
        ceiling: ceiling.map(|(name, _)| name.to_owned()),
        ratio,
        target,
    }
}

/// The plain-lapin ceilings, messages/s.
struct Ceilings {
    publish: f64,
    consume: f64,
    fanout: f64,
}

async fn raw_ceilings(
    broker: &TestBroker,
    connection: &lapin::Connection,
    setup: &lapin::Channel,
    n: usize,
) -> Result<Ceilings, CliError> {
    eprintln!("bench: raw publish with confirms ({n} messages) ...");
    let publish = raw::publish(setup, "events", "bench.raw", n, BODY).await?;
    eprintln!("bench: raw consume and ack ...");
    let consume = raw::consume(connection, "bench.raw", n).await?;

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
    raw::publish(setup, "events", "bench.fan", n, BODY).await?;
    for consumer in consumers {
        consumer.await.map_err(|e| CliError::Other(e.into()))??;
    }
    let fanout = n as f64 / started.elapsed().as_secs_f64();
    Ok(Ceilings {
        publish,
        consume,
        fanout,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(words: &[&str]) -> BenchArgs {
        Cli::parse_from(std::iter::once("bench").chain(words.iter().copied())).bench
    }

    #[test]
    fn plain_bench_runs_the_reconcile_stage_and_skip_e2e_skips_it() {
        assert!(args(&[]).wants(StageKind::Reconcile));
        assert!(!args(&["--skip-e2e"]).wants(StageKind::Reconcile));
        assert!(!args(&["--skip-e2e"]).wants(StageKind::Risk));
        assert!(args(&["--skip-e2e"]).wants(StageKind::Timers));
    }

    #[test]
    fn stages_named_alone_run_alone() {
        let only = args(&["--stages", "reconcile"]);
        assert!(only.wants(StageKind::Reconcile));
        assert!(!only.wants(StageKind::Risk) && !only.wants(StageKind::Raw));
        let new = args(&["--stages", "projection,relay-archive"]);
        assert!(new.wants(StageKind::Projection) && new.wants(StageKind::RelayArchive));
        assert!(!new.wants(StageKind::Relay));
        let two = args(&["--stages", "risk,reconcile"]);
        assert!(two.wants(StageKind::Risk) && two.wants(StageKind::Reconcile));
    }

    #[test]
    fn the_overload_step_lasts_a_minute_unless_told_and_zero_skips_it() {
        assert_eq!(args(&[]).overload_secs, 60);
        assert_eq!(args(&["--overload-secs", "10"]).overload_secs, 10);
        assert_eq!(args(&["--overload-secs", "0"]).overload_secs, 0);
    }
}
