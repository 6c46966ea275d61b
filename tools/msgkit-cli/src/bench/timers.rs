//! The timers stage: how many durable timers one consumer fires per second, all the way (the
//! claim, the outbox row, the relay, the delivery, the timer route), and the firing lag (due
//! instant to handling) when timers fall due at half that rate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use msgkit::consume::{Consumer, ConsumerConfig, Context, HandlerError, Routes};
use msgkit::testing::{TestBroker, TestDatabase};
use msgkit::timer::Fired;
use msgkit::{OutboxRelay, RelayConfig, Shutdown, TimerType};
use serde::Serialize;
use sqlx::PgPool;

use super::kit::wait_for;
use super::topology;
use crate::CliError;

/// The consumer (and queue) of the stage.
pub(super) const QUEUE: &str = "bench.timers";
const TICK: TimerType<u64> = TimerType::new("bench-tick");
/// How long the timers of the lag run take to fall due.
const LAG_RUN: Duration = Duration::from_secs(5);

/// What the stage measured.
#[derive(Clone, Debug, Serialize)]
pub struct TimerRun {
    /// Timers fired and handled per second, all due at once.
    pub max_per_sec: f64,
    /// The rate the lag run scheduled them at (half the maximum).
    pub lag_run_per_sec: f64,
    /// Due instant to handling, at that rate.
    pub lag_p50_ms: f64,
    /// The same, 99th percentile.
    pub lag_p99_ms: f64,
}

impl TimerRun {
    pub fn markdown(&self) -> String {
        format!(
            "\nTimers: {:.0} fired and handled per second (all due at once); falling due at {:.0}/s, \
             firing lag p50 {:.1} ms, p99 {:.1} ms.\n",
            self.max_per_sec, self.lag_run_per_sec, self.lag_p50_ms, self.lag_p99_ms
        )
    }
}

/// What the timer route saw.
#[derive(Clone, Default)]
struct Seen {
    handled: Arc<AtomicUsize>,
    lags: Arc<Mutex<Vec<Duration>>>,
}

async fn tick(ctx: Context<'_, Seen>, fired: Fired<u64>) -> Result<(), HandlerError> {
    let seen = ctx.state();
    if let Ok(mut lags) = seen.lags.lock() {
        lags.push(fired.lateness());
    }
    seen.handled.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Fire `n` timers due at once, then `n` falling due over five seconds at half that rate.
pub async fn run(db: &TestDatabase, broker: &TestBroker, n: usize) -> Result<TimerRun, CliError> {
    let pool = msgkit::database::pool_options(12)
        .connect_with(db.options())
        .await
        .map_err(other)?;
    let seen = Seen::default();
    let shutdown = Shutdown::new();
    let relay = OutboxRelay::new(
        pool.clone(),
        broker.settings("bench/timers-relay"),
        topology(),
        RelayConfig {
            batch_size: 500,
            poll_interval: Duration::from_millis(20),
            ..RelayConfig::new("bench")
        },
    );
    let routes = Routes::with_state(seen.clone()).on_timer(TICK, tick);
    let consumer = Consumer::new(
        pool.clone(),
        broker.settings("bench/timers"),
        topology(),
        ConsumerConfig {
            prefetch: 500,
            concurrency: 10,
            batch: 50,
            timer_poll_interval: Duration::from_millis(20),
            ..ConsumerConfig::new(QUEUE, QUEUE)
        },
        routes,
    );
    let (relay_stats, consumer_stats) = (relay.stats(), consumer.stats());
    shutdown.spawn(relay.run(shutdown.clone()));
    shutdown.spawn(consumer.run(shutdown.clone()));
    wait_for(
        Duration::from_secs(30),
        "the timer consumer to connect",
        || relay_stats.connected() && consumer_stats.connected(),
    )
    .await?;

    let started = Instant::now();
    schedule(&pool, n, 0, Duration::ZERO).await?;
    wait_for(Duration::from_secs(600), "every timer to fire", || {
        seen.handled.load(Ordering::Relaxed) >= n
    })
    .await?;
    let max_per_sec = n as f64 / started.elapsed().as_secs_f64();

    seen.handled.store(0, Ordering::Relaxed);
    lock(&seen.lags).clear();
    let lag_run_per_sec = max_per_sec / 2.0;
    let count = ((lag_run_per_sec * LAG_RUN.as_secs_f64()) as usize).max(1);
    schedule(&pool, count, n, LAG_RUN).await?;
    wait_for(
        LAG_RUN + Duration::from_secs(120),
        "the lag run's timers",
        || seen.handled.load(Ordering::Relaxed) >= count,
    )
    .await?;
    shutdown.trigger();
    shutdown.wait_for_tasks().await;
    pool.close().await;

    let mut lags: Vec<f64> = lock(&seen.lags)
        .iter()
        .map(|lag| lag.as_secs_f64() * 1000.0)
        .collect();
    lags.sort_by(f64::total_cmp);
    let at = |q: f64| {
        lags.get(((lags.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    Ok(TimerRun {
        max_per_sec,
        lag_run_per_sec,
        lag_p50_ms: at(0.5).unwrap_or_default(),
        lag_p99_ms: at(0.99).unwrap_or_default(),
    })
}

/// `count` timers (keys from `first`) falling due evenly over `over`, from a quarter second
/// from now (`over` zero: all due now). Written straight into the table, the way a handler's
/// transaction writes them; the firing task's 20 ms poll finds them.
async fn schedule(
    pool: &PgPool,
    count: usize,
    first: usize,
    over: Duration,
) -> Result<(), CliError> {
    let lead = if over.is_zero() { 0.0 } else { 0.25 };
    sqlx::query(
        "INSERT INTO msgkit_timers (consumer, name, key, due_at, payload, set_at) \
         SELECT $1, $2, 'k-' || g, \
                now() + make_interval(secs => $5 + (g - $3) * $6 / greatest($4, 1)), \
                to_jsonb(g), now() \
         FROM generate_series($3::bigint, $3::bigint + $4 - 1) g",
    )
    .bind(QUEUE)
    .bind(TICK.name())
    .bind(i64::try_from(first).unwrap_or(i64::MAX))
    .bind(i64::try_from(count).unwrap_or(i64::MAX))
    .bind(lead)
    .bind(over.as_secs_f64())
    .execute(pool)
    .await
    .map_err(other)?;
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn other(error: impl Into<anyhow::Error>) -> CliError {
    CliError::Other(error.into())
}
