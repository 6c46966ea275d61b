//! The reconcile stage: reconciliations per second (closed loop), then, at half that rate
//! (open loop), the time to match: from the second side's publish confirm to the order's
//! reconciliation seen committed. Each order is our side (`payment.succeeded`) and the
//! gateway's (`payment.callback`) with the same amount, a quarter of them callback first,
//! published to the `events` exchange with confirms as payment's relay publishes them. One
//! reconcile process on a fresh database and vhost of the running stack; nothing is
//! restarted.

mod closed_loop;
mod decided;
mod open_loop;
mod traffic;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use msgkit::ConfirmedPublisher;
use msgkit::testing::{TestBroker, TestDatabase};
use serde::Serialize;

use self::closed_loop::closed_loop;
use self::open_loop::{OpenLoop, open_loop};
use super::stats::{Latency, load_average};
use crate::CliError;
use crate::chaos::services::{self, ServiceProcess};
use crate::saga_services::{fast_env, run_directory, sibling_binary};

/// What the reconcile stage measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileStage {
    /// Orders reconciled in the closed loop, all decided before the rate was taken.
    pub orders: usize,
    /// Orders decided per second, from the first publish to the last decision.
    pub max_reconciliations_per_sec: f64,
    /// Closed-loop orders by outcome (all `matched`, or the stage fails).
    pub by_outcome: BTreeMap<String, i64>,
    /// CPU seconds the reconcile process used per 1,000 orders (closed loop).
    pub cpu_seconds_per_1000: Option<f64>,
    pub open_loop: OpenLoop,
    /// The machine's 1-minute load average before and after the stage.
    pub load_average: (Option<f64>, Option<f64>),
}

impl ReconcileStage {
    pub fn markdown(&self) -> String {
        let open = &self.open_loop;
        let mut out = format!(
            "\nReconcile: **{:.0} reconciliations/s** (closed loop, {} orders, two sides each, a quarter callback first{}).\n\n",
            self.max_reconciliations_per_sec,
            self.orders,
            self.cpu_seconds_per_1000
                .map(|cpu| format!(", reconcile used {cpu:.2} CPU s per 1,000"))
                .unwrap_or_default(),
        );
        out.push_str(&format!(
            "At {:.0} orders/s (open loop, {} orders, sides {} ms apart):\n\n| latency | orders | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |\n",
            open.offered_per_sec, open.orders, open.gap_ms
        ));
        let mut row = |name: &str, l: &Latency| {
            out.push_str(&format!(
                "| {name} | {} | {:.0} | {:.0} | {:.0} |\n",
                l.count, l.p50_ms, l.p99_ms, l.max_ms
            ));
        };
        row(
            "time to match: second side confirmed -> reconciliation committed",
            &open.time_to_match,
        );
        row(
            "second side confirmed -> decided_at (handler's clock)",
            &open.to_decided_at,
        );
        row(
            "reconcile's own time to match (first side handled -> second)",
            &open.reconcile_own,
        );
        if let (Some(before), Some(after)) = self.load_average {
            out.push_str(&format!(
                "\nLoad average (1 min) {before:.2} before the stage, {after:.2} after it.\n"
            ));
        }
        out
    }
}

pub async fn run(duration: Duration) -> Result<ReconcileStage, CliError> {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let run_dir = run_directory("bench-reconcile")?;
    let port = services::free_port()?;
    let mut env = fast_env(&db.url(), &broker.amqp_url());
    env.insert("RUST_LOG".to_owned(), "warn".to_owned());
    env.insert(
        "RECONCILE_HTTP_ADDR".to_owned(),
        format!("127.0.0.1:{port}"),
    );
    let mut reconcile = ServiceProcess::new(
        "reconcile",
        sibling_binary("reconcile")?,
        env,
        run_dir.join("reconcile.log"),
        port,
    );
    reconcile.start()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| CliError::Other(e.into()))?;
    let ready = format!("{}/readyz", reconcile.base_url());
    let result = match services::wait_until_ready(
        &client,
        &reconcile,
        &ready,
        Instant::now() + Duration::from_secs(60),
    )
    .await
    {
        Ok(()) => measure(&reconcile, &db, &broker, duration).await,
        Err(error) => Err(error),
    };
    reconcile.stop(Duration::from_secs(20)).await;
    eprintln!("bench: reconcile's log is in {}", run_dir.display());
    result
}

async fn measure(
    reconcile: &ServiceProcess,
    db: &TestDatabase,
    broker: &TestBroker,
    duration: Duration,
) -> Result<ReconcileStage, CliError> {
    let load_before = load_average();
    let other =
        |e: &dyn std::fmt::Display| CliError::Other(anyhow::anyhow!("reconcile stage: {e}"));
    // Nothing in this vhost binds `reconcile.matched` (only notify binds mismatches and
    // resolutions): a queue of the stage's own takes reconcile's events, or its relay would
    // keep every match in the outbox, retrying it as unroutable.
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.map_err(|e| other(&e))?;
    channel
        .queue_declare(
            "bench.reconcile-events".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| other(&e))?;
    channel
        .queue_bind(
            "bench.reconcile-events".into(),
            "events".into(),
            "reconcile.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| other(&e))?;
    // reconcile declared the topology (the `events` exchange, its queue) when it started.
    let publisher = Arc::new(
        ConfirmedPublisher::without_declaring(broker.connect().await)
            .await
            .map_err(|e| other(&e))?,
    );
    let pool = db.pool().await;

    eprintln!("bench: reconcile, closed loop for {duration:?} ...");
    let cpu_before = reconcile.cpu_seconds();
    let (orders, first_publish, last_decided) = closed_loop(&publisher, &pool, duration).await?;
    let max = decided::per_second(orders, first_publish, last_decided);
    let cpu = cpu_before
        .zip(reconcile.cpu_seconds())
        .map(|(before, after)| (after - before) / orders.max(1) as f64 * 1000.0);
    let by_outcome = decided::by_outcome(&pool).await?;
    let matched = by_outcome.get("matched").copied().unwrap_or_default();
    if usize::try_from(matched).unwrap_or_default() != orders {
        return Err(other(&format!(
            "of {orders} closed-loop orders, {matched} matched: {by_outcome:?}"
        )));
    }

    let rate = (max / 2.0).max(1.0);
    eprintln!("bench: reconcile, open loop at {rate:.0} orders/s ...");
    let open_loop = open_loop(Arc::clone(&publisher), &pool, rate, duration).await?;
    if let Ok(publisher) = Arc::try_unwrap(publisher) {
        publisher.close().await;
    }
    let _ = connection.close(200, "done".into()).await;
    pool.close().await;
    Ok(ReconcileStage {
        orders,
        max_reconciliations_per_sec: max,
        by_outcome,
        cpu_seconds_per_1000: cpu,
        open_loop,
        load_average: (load_before, load_average()),
    })
}
