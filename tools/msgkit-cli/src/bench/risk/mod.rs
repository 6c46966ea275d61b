//! The risk stage: transactions per second through the risk engine with twenty enabled rules
//! (closed loop), then, at half that rate (open loop), how long a planted pattern takes from
//! its second transaction's `POST` returning to the alert being committed (decision latency)
//! and to the alert arriving on `GET /alerts/stream` (push latency, when the service has the
//! stream). One risk process on a fresh database and vhost of the running stack; nothing is
//! restarted.

mod open_loop;
mod rules;
mod sse;
mod traffic;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde::Serialize;
use tokio::task::JoinSet;

use self::open_loop::{OpenLoop, open_loop};
use self::traffic::Variety;
use super::stats::{Latency, load_average};
use crate::CliError;
use crate::chaos::services::{self, ServiceProcess};
use crate::saga_services::{fast_env, run_directory, sibling_binary};

/// Concurrent clients of the closed loop.
const CLIENTS: usize = 32;
const TOKEN_SECRET: &str = "bench-risk-stream-secret-at-least-32-bytes";

/// An operator's token under [`TOKEN_SECRET`]: the stage writes rules and reads every user's
/// alert stream.
fn operator_token() -> Result<String, CliError> {
    let key = msgkit::auth::TokenKey::new(TOKEN_SECRET).map_err(|e| CliError::Other(e.into()))?;
    Ok(key.issue(&msgkit::auth::Claims::new(
        "bench",
        msgkit::auth::Role::Operator,
        Utc::now(),
        chrono::TimeDelta::minutes(10),
    )))
}

/// What the risk stage measured.
#[derive(Debug, Clone, Serialize)]
pub struct RiskStage {
    pub enabled_rules: usize,
    pub closed_loop_clients: usize,
    /// Transactions recorded in the closed loop, all handled by the engine before the rate
    /// was taken.
    pub transactions: usize,
    /// Transactions per second from the first POST to the last one handled by the consumer.
    pub max_transactions_per_sec: f64,
    /// CPU seconds the risk process used per 1,000 transactions (closed loop).
    pub cpu_seconds_per_1000: Option<f64>,
    pub open_loop: OpenLoop,
    /// The machine's 1-minute load average before and after the stage (/proc/loadavg): how
    /// much else was running on the same cores.
    pub load_average: (Option<f64>, Option<f64>),
}

impl RiskStage {
    pub fn markdown(&self) -> String {
        let open = &self.open_loop;
        let mut out = format!(
            "\nRisk: **{:.0} transactions/s** through the engine with {} enabled rules (closed loop, {} clients, {} transactions{}).\n\n",
            self.max_transactions_per_sec,
            self.enabled_rules,
            self.closed_loop_clients,
            self.transactions,
            self.cpu_seconds_per_1000
                .map(|cpu| format!(", risk used {cpu:.2} CPU s per 1,000"))
                .unwrap_or_default(),
        );
        out.push_str(&format!(
            "At {:.0} transactions/s (open loop, {} planted pairs):\n\n| latency | alerts | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |\n",
            open.offered_per_sec, open.planted_pairs
        ));
        let mut row = |name: &str, l: &Latency| {
            out.push_str(&format!(
                "| {name} | {} | {:.0} | {:.0} | {:.0} |\n",
                l.count, l.p50_ms, l.p99_ms, l.max_ms
            ));
        };
        row("decision: POST returned -> alert committed", &open.decision);
        if let Some(push) = &open.push {
            row("push: POST returned -> alert on the stream", push);
        }
        if let Some(push) = &open.commit_to_push {
            row("push: alert committed -> on the stream", push);
        }
        if let (Some(before), Some(after)) = self.load_average {
            out.push_str(&format!(
                "\nLoad average (1 min) {before:.2} before the stage, {after:.2} after it.\n"
            ));
        }
        if let Some(why) = &open.push_unavailable {
            out.push_str(&format!("\nPush latency not measured: {why}.\n"));
        } else if let Some(push) = &open.push {
            out.push_str(&format!(
                "\nPush target p99 under 1 s: {}.\n",
                if push.p99_ms < 1000.0 {
                    "met"
                } else {
                    "NOT met"
                }
            ));
        }
        out
    }
}

pub async fn run(duration: Duration) -> Result<RiskStage, CliError> {
    let db = msgkit::testing::TestDatabase::create().await;
    let broker = msgkit::testing::TestBroker::create().await;
    let run_dir = run_directory("bench-risk")?;
    let port = services::free_port()?;
    let mut env = fast_env(&db.url(), &broker.amqp_url());
    env.insert("RUST_LOG".to_owned(), "warn".to_owned());
    env.insert("RISK_HTTP_ADDR".to_owned(), format!("127.0.0.1:{port}"));
    env.insert("RISK_TOKEN_SECRET".to_owned(), TOKEN_SECRET.to_owned());
    let mut risk = ServiceProcess::new(
        "risk",
        sibling_binary("risk")?,
        env,
        run_dir.join("risk.log"),
        port,
    );
    risk.start()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| CliError::Other(e.into()))?;
    let ready = format!("{}/readyz", risk.base_url());
    services::wait_until_ready(
        &client,
        &risk,
        &ready,
        Instant::now() + Duration::from_secs(60),
    )
    .await?;
    let result = measure(&client, &risk, &db, &broker, duration).await;
    risk.stop(Duration::from_secs(20)).await;
    eprintln!("bench: risk's log is in {}", run_dir.display());
    result
}

async fn measure(
    client: &reqwest::Client,
    risk: &ServiceProcess,
    db: &msgkit::testing::TestDatabase,
    broker: &msgkit::testing::TestBroker,
    duration: Duration,
) -> Result<RiskStage, CliError> {
    let load_before = load_average();
    let api = risk.base_url();
    let other = |e: &dyn std::fmt::Display| CliError::Other(anyhow::anyhow!("risk stage: {e}"));
    // Nothing consumes `risk.alert` in this vhost: a queue of the stage's own takes the alerts,
    // or the relay would retry them as unroutable.
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.map_err(|e| other(&e))?;
    channel
        .queue_declare(
            "bench.risk-alerts".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| other(&e))?;
    channel
        .queue_bind(
            "bench.risk-alerts".into(),
            "events".into(),
            "risk.alert".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| other(&e))?;
    let operator = operator_token()?;
    for rule in rules::extra_rules() {
        let response = client
            .post(format!("{api}/rules"))
            .bearer_auth(&operator)
            .json(&rule)
            .send()
            .await
            .map_err(|e| other(&e))?;
        if response.status() != 201 {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(other(&format!(
                "POST /rules answered {status}: {body} for {rule}"
            )));
        }
    }
    let pool = db.pool().await;

    eprintln!(
        "bench: risk, closed loop for {duration:?} with {} rules ...",
        rules::ENABLED_RULES
    );
    let variety = Arc::new(Variety::default());
    let cpu_before = risk.cpu_seconds();
    let started = Utc::now();
    let clock = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..CLIENTS {
        let (client, api, variety) = (client.clone(), api.clone(), Arc::clone(&variety));
        tasks.spawn(async move {
            let mut recorded = 0usize;
            while clock.elapsed() < duration {
                if traffic::post(&client, &api, &traffic::background(&variety))
                    .await
                    .is_some()
                {
                    recorded += 1;
                }
            }
            recorded
        });
    }
    let mut transactions = 0;
    while let Some(recorded) = tasks.join_next().await {
        transactions += recorded.map_err(|e| other(&e))?;
    }
    let last = wait_handled(&pool, transactions).await?;
    let elapsed = (last - started).to_std().unwrap_or(duration).as_secs_f64();
    let max = transactions as f64 / elapsed.max(f64::EPSILON);
    let cpu = cpu_before
        .zip(risk.cpu_seconds())
        .map(|(before, after)| (after - before) / transactions.max(1) as f64 * 1000.0);

    let rate = (max / 2.0).max(1.0);
    eprintln!("bench: risk, open loop at {rate:.0} transactions/s ...");
    let open_loop = open_loop(client, &api, &pool, rate, duration).await?;
    let _ = connection.close(200, "done".into()).await;
    pool.close().await;
    Ok(RiskStage {
        enabled_rules: rules::ENABLED_RULES,
        closed_loop_clients: CLIENTS,
        transactions,
        max_transactions_per_sec: max,
        cpu_seconds_per_1000: cpu,
        open_loop,
        load_average: (load_before, load_average()),
    })
}

/// Wait until the engine has handled `count` recorded transactions; returns when the last
/// was handled.
async fn wait_handled(
    pool: &sqlx::PgPool,
    count: usize,
) -> Result<chrono::DateTime<Utc>, CliError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (handled, last): (i64, Option<chrono::DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), max(processed_at) FROM risk.msgkit_inbox \
             WHERE consumer = 'risk' AND message_type = 'transaction.recorded'",
        )
        .fetch_one(pool)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
        if usize::try_from(handled).unwrap_or_default() >= count {
            return Ok(last.unwrap_or_else(Utc::now));
        }
        if Instant::now() > deadline {
            return Err(CliError::Other(anyhow::anyhow!(
                "risk stage: only {handled} of {count} transactions were handled"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
