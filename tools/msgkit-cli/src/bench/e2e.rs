//! End to end: orders over HTTP through all four service processes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinSet;

use super::overload::{self, OverloadStep};
use crate::CliError;
use crate::chaos::services::ServiceProcess;
use crate::saga_services::{ServiceOverrides, run_directory, start_services};

/// One open-loop step.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopStep {
    pub offered_per_sec: f64,
    pub completed: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    pub max_orders_per_sec: f64,
    pub closed_loop_clients: usize,
    /// CPU seconds each service used per 1,000 orders (closed loop).
    pub cpu_seconds_per_1000_orders: BTreeMap<String, f64>,
    /// All services together: cores busy per 1,000 orders/s (= CPU seconds per 1,000 orders).
    pub cores_per_1000_orders_per_sec: f64,
    /// The whole machine (services, PostgreSQL, RabbitMQ, everything else but this load
    /// generator) in CPU seconds per 1,000 orders: moving work into the database is no gain.
    pub machine_cpu_seconds_per_1000_orders: Option<f64>,
    pub peak_memory_mib: BTreeMap<String, f64>,
    pub open_loop: Vec<OpenLoopStep>,
    /// Twice the maximum, open loop (`--overload-secs`, 0 skips it).
    pub overload: Option<OverloadStep>,
}

impl EndToEnd {
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "\nEnd to end: **{:.0} orders/s** closed loop ({} clients); all services together **{:.2} CPU cores per 1,000 orders/s** (target < 0.7: {}).\n\n",
            self.max_orders_per_sec,
            self.closed_loop_clients,
            self.cores_per_1000_orders_per_sec,
            if self.cores_per_1000_orders_per_sec < 0.7 {
                "met"
            } else {
                "NOT met"
            },
        );
        if let Some(machine) = self.machine_cpu_seconds_per_1000_orders {
            out.push_str(&format!(
                "The whole machine but the load generator (services, PostgreSQL, RabbitMQ): **{machine:.2} CPU s per 1,000 orders**.\n\n"
            ));
        }
        out.push_str(
            "| service | CPU s / 1,000 orders | peak RSS (MiB) |\n| --- | ---: | ---: |\n",
        );
        for (service, cpu) in &self.cpu_seconds_per_1000_orders {
            out.push_str(&format!(
                "| {service} | {cpu:.2} | {:.0} |\n",
                self.peak_memory_mib
                    .get(service)
                    .copied()
                    .unwrap_or_default()
            ));
        }
        out.push_str("\nOpen loop (latency from the scheduled send to the notification's commit; no coordinated omission):\n\n| offered orders/s | completed | p50 ms | p90 ms | p99 ms | p99.9 ms |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for step in &self.open_loop {
            out.push_str(&format!(
                "| {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
                step.offered_per_sec,
                step.completed,
                step.p50_ms,
                step.p90_ms,
                step.p99_ms,
                step.p999_ms
            ));
        }
        if let Some(overload) = &self.overload {
            out.push_str(&overload.markdown());
        }
        out
    }
}

/// Each service's settings for the benchmark.
const SETTINGS: &str = r#"
[order.env]
RUST_LOG = "warn"
[inventory.env]
RUST_LOG = "warn"
[payment.env]
RUST_LOG = "warn"
GATEWAY_LATENCY_MS = "0"
[notify.env]
RUST_LOG = "warn"
"#;

pub(super) const ORDER: &str = r#"{"customer_id":"bench","items":[{"sku":"SKU-1","quantity":1}]}"#;

/// The closed loop for `duration`, open-loop steps half as long, then the overload step for
/// `overload` (skipped when zero).
pub async fn run(duration: Duration, overload: Duration) -> Result<EndToEnd, CliError> {
    // The services as shipped (admission limits at their defaults) for the closed loop and
    // the open-loop steps: the closed loop's clients do not wait for orders to complete, so
    // the backlog they leave would trip a tight limit, and shed requests retried at once cost
    // the order service more than accepted ones. The overload step restarts order with one.
    let settings: BTreeMap<String, ServiceOverrides> =
        toml::from_str(SETTINGS).map_err(|e| CliError::Other(e.into()))?;
    let db = msgkit::testing::TestDatabase::create().await;
    let broker = msgkit::testing::TestBroker::create().await;
    let run_dir = run_directory("bench")?;
    let mut processes = start_services(&settings, &db, &broker.amqp_url(), &run_dir).await?;
    let pool = db.pool().await;
    let api = processes[0].base_url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| CliError::Other(e.into()))?;

    // Closed loop: as fast as the system answers.
    eprintln!("bench: end to end, closed loop for {duration:?} ...");
    let clients = 32;
    let cpu_before = cpu(&processes);
    let machine_before = machine_cpu_seconds();
    let started = Instant::now();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (client, api, sent) = (client.clone(), api.clone(), Arc::clone(&sent));
        tasks.spawn(async move {
            while started.elapsed() < duration {
                if let Some(id) = place(&client, &api).await
                    && let Ok(mut sent) = sent.lock()
                {
                    sent.push((id, Utc::now()));
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let orders: Vec<(String, DateTime<Utc>)> = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let last = wait_done(&pool, &orders).await?;
    let elapsed = (last
        - (Utc::now() - chrono::Duration::from_std(started.elapsed()).unwrap_or_default()))
    .to_std()
    .unwrap_or(duration)
    .as_secs_f64();
    let max = orders.len() as f64 / elapsed;
    let cpu_after = cpu(&processes);
    let mut cpu_per_1000 = BTreeMap::new();
    for (name, after) in &cpu_after {
        let used = after - cpu_before.get(name).copied().unwrap_or_default();
        cpu_per_1000.insert(name.clone(), used / orders.len().max(1) as f64 * 1000.0);
    }
    let cores = cpu_per_1000.values().sum::<f64>();
    let machine = machine_before
        .zip(machine_cpu_seconds())
        .map(|(before, after)| (after - before) / orders.len().max(1) as f64 * 1000.0);

    // Open loop at fractions of the maximum: sends on a fixed schedule, latency measured from
    // the scheduled moment, so a slow system cannot hide its queueing.
    let mut open_loop = Vec::new();
    for fraction in [0.25, 0.5, 0.75] {
        let rate = (max * fraction).max(1.0);
        eprintln!("bench: end to end, open loop at {rate:.0} orders/s ...");
        let step = open_loop_step(&client, &api, &pool, rate, duration / 2).await?;
        open_loop.push(step);
    }
    let overload = if overload.is_zero() {
        None
    } else {
        let rate = (max * 2.0).max(2.0);
        // The admission limit that bounds an accepted order's latency under overload.
        let order = &mut processes[0];
        order.stop(Duration::from_secs(20)).await;
        order.set_env(
            "ORDER_ADMISSION_MAX_PENDING_AGE_MS",
            &overload::MAX_PENDING_AGE_MS.to_string(),
        );
        order.start()?;
        let ready = std::time::Instant::now() + Duration::from_secs(60);
        crate::chaos::services::wait_until_ready(&client, order, &format!("{api}/readyz"), ready)
            .await?;
        eprintln!("bench: end to end, overload at {rate:.0} orders/s for {overload:?} ...");
        Some(overload::run(&client, &api, &pool, rate, overload).await?)
    };
    let memory: BTreeMap<String, f64> = processes
        .iter()
        .filter_map(|p| Some((p.name.to_owned(), p.peak_memory_mib()?)))
        .collect();
    for process in &mut processes {
        process.stop(Duration::from_secs(20)).await;
    }
    pool.close().await;
    Ok(EndToEnd {
        max_orders_per_sec: max,
        closed_loop_clients: clients,
        cpu_seconds_per_1000_orders: cpu_per_1000,
        cores_per_1000_orders_per_sec: cores,
        machine_cpu_seconds_per_1000_orders: machine,
        peak_memory_mib: memory,
        open_loop,
        overload,
    })
}

/// CPU seconds the whole machine has been busy (`/proc/stat`: every state but idle and I/O
/// wait) minus what this process (the load generator) used.
fn machine_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(at, _)| *at != 3 && *at != 4)
        .map(|(_, ticks)| ticks)
        .sum();
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
    let own_ticks: f64 =
        fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((busy - own_ticks) / 100.0)
}

fn cpu(processes: &[ServiceProcess]) -> BTreeMap<String, f64> {
    processes
        .iter()
        .filter_map(|p| Some((p.name.to_owned(), p.cpu_seconds()?)))
        .collect()
}

async fn place(client: &reqwest::Client, api: &str) -> Option<String> {
    let response = client
        .post(format!("{api}/orders"))
        .header("content-type", "application/json")
        .body(ORDER)
        .send()
        .await
        .ok()?;
    if response.status() != 202 {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    body["order_id"].as_str().map(str::to_owned)
}

/// Wait until every order has its notification; returns when the last one was written.
async fn wait_done(
    pool: &sqlx::PgPool,
    orders: &[(String, DateTime<Utc>)],
) -> Result<DateTime<Utc>, CliError> {
    let ids: Vec<uuid::Uuid> = orders
        .iter()
        .filter_map(|(id, _)| id.parse().ok())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (done, last): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), max(sent_at) FROM notify.notifications WHERE order_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
        if done as usize >= ids.len() {
            return Ok(last.unwrap_or_else(Utc::now));
        }
        if Instant::now() > deadline {
            return Err(CliError::Other(anyhow::anyhow!(
                "only {done} of {} orders completed",
                ids.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open_loop_step(
    client: &reqwest::Client,
    api: &str,
    pool: &sqlx::PgPool,
    rate: f64,
    duration: Duration,
) -> Result<OpenLoopStep, CliError> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let count = (duration.as_secs_f64() * rate) as usize;
    let start = Instant::now() + Duration::from_millis(50);
    let start_wall = Utc::now() + chrono::Duration::milliseconds(50);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let scheduled = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        let scheduled_wall = start_wall
            + chrono::Duration::from_std(interval * u32::try_from(i).unwrap_or(u32::MAX))
                .unwrap_or_default();
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, api, sent) = (client.clone(), api.to_owned(), Arc::clone(&sent));
        tasks.spawn(async move {
            if let Some(id) = place(&client, &api).await
                && let Ok(mut sent) = sent.lock()
            {
                sent.push((id, scheduled_wall));
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let orders: Vec<(String, DateTime<Utc>)> = sent.lock().map(|s| s.clone()).unwrap_or_default();
    wait_done(pool, &orders).await?;
    let ids: Vec<uuid::Uuid> = orders
        .iter()
        .filter_map(|(id, _)| id.parse().ok())
        .collect();
    let done: Vec<(uuid::Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT order_id, sent_at FROM notify.notifications WHERE order_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .map_err(|e| CliError::Other(e.into()))?;
    let scheduled: BTreeMap<String, DateTime<Utc>> = orders.into_iter().collect();
    let mut latencies: Vec<f64> = done
        .iter()
        .filter_map(|(id, at)| {
            Some((*at - *scheduled.get(&id.to_string())?).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(
                ((latencies.len() as f64 * p).ceil() as usize)
                    .saturating_sub(1)
                    .min(latencies.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(OpenLoopStep {
        offered_per_sec: rate,
        completed: latencies.len(),
        p50_ms: pct(0.5),
        p90_ms: pct(0.9),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
    })
}
