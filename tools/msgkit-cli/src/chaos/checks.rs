//! After the load: waiting for the system to drain, then the scenario's SQL invariants and
//! figures, and the kit's own invariant set up from the scenario's services.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use msgkit::testing::{TestBroker, TestDatabase};
use sqlx::PgPool;

use super::generic::{ConsumerTarget, ManagementApi, ServiceStore, SystemUnderTest};
use super::load::LoadResult;
use super::scenario::{Scenario, SqlInvariant};
use crate::CliError;

/// How long everything must stay quiet to count as drained (the management API's queue
/// figures lag by a few seconds).
const QUIET_FOR: Duration = Duration::from_secs(6);

/// The captured values a parameter names (`accepted:<load>` or `accepted:<load>:<tag>`).
pub type Captured = BTreeMap<String, LoadResult>;

fn param(captured: &Captured, name: &str) -> Vec<String> {
    let mut parts = name.splitn(3, ':').skip(1);
    let load = parts.next().unwrap_or_default();
    let tag = parts.next();
    captured
        .get(load)
        .map(|result| result.values(tag))
        .unwrap_or_default()
}

fn db(error: sqlx::Error) -> CliError {
    CliError::Other(anyhow::anyhow!("reading the run's database: {error}"))
}

/// Rows of `query` with `params` bound, each as its columns' text.
async fn rows(
    pool: &PgPool,
    query: &str,
    params: &[String],
    captured: &Captured,
) -> Result<Vec<Vec<String>>, CliError> {
    // The scenario's own SQL, run on the run's throwaway database. Each row becomes a JSON
    // array of its columns in their order (`json_each` of a `json` row keeps the order and
    // repeated names, which a JSON object would not).
    let wrapped = format!(
        "SELECT (SELECT json_agg(c.value ORDER BY c.n) \
         FROM json_each(row_to_json(t)) WITH ORDINALITY AS c(key, value, n))::text \
         FROM ({query}) t"
    );
    let mut statement = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(wrapped));
    for name in params {
        statement = statement.bind(param(captured, name));
    }
    let rows = statement
        .fetch_all(pool)
        .await
        .map_err(|e| CliError::Usage(format!("query {query:?} failed: {e}")))?;
    Ok(rows
        .iter()
        .map(|row| {
            let columns: Vec<serde_json::Value> = serde_json::from_str(row).unwrap_or_default();
            columns
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect()
        })
        .collect())
}

/// The violations of one SQL invariant: one per row.
pub async fn sql_invariant(
    pool: &PgPool,
    invariant: &SqlInvariant,
    captured: &Captured,
) -> Result<Vec<String>, CliError> {
    let found = rows(pool, &invariant.query, &invariant.params, captured).await?;
    Ok(found
        .into_iter()
        .map(|columns| {
            let mut message = invariant.message.clone();
            for (i, column) in columns.iter().enumerate() {
                message = message.replace(&format!("{{{i}}}"), column);
            }
            message
        })
        .collect())
}

/// The scenario's figures: name, then each row as "label: value".
pub async fn figures(
    pool: &PgPool,
    scenario: &Scenario,
    captured: &Captured,
) -> Result<BTreeMap<String, String>, CliError> {
    let mut figures = BTreeMap::new();
    for figure in &scenario.figures {
        let found = rows(pool, &figure.query, &figure.params, captured).await?;
        let text = found
            .iter()
            .map(|columns| columns.join(": "))
            .collect::<Vec<_>>()
            .join(", ");
        figures.insert(figure.name.clone(), text);
    }
    Ok(figures)
}

/// Wait until the work queues, delay tiers and outboxes have been empty, and the scenario's
/// `drained_when` queries without rows, for [`QUIET_FOR`]; `Err` with what was still busy at
/// the deadline.
pub async fn drain(
    pool: &PgPool,
    broker: &TestBroker,
    scenario: &Scenario,
    captured: &Captured,
) -> Result<Result<(), String>, CliError> {
    let queues: Vec<&String> = scenario.services.iter().flat_map(|s| &s.queues).collect();
    let deadline = Instant::now() + Duration::from_secs(scenario.drain_timeout_secs);
    let mut quiet_since: Option<Instant> = None;
    loop {
        let mut busy = Vec::new();
        for queue in &queues {
            match broker.queue_totals(queue).await {
                Some((0, 0)) => {}
                Some((ready, unacked)) => {
                    busy.push(format!("{queue}: {ready} ready, {unacked} unacked"));
                }
                None => busy.push(format!("{queue}: unknown")),
            }
        }
        for delay in msgkit::topology::delay_tiers() {
            let name = msgkit::topology::delay_tier_name(delay);
            if let Some(ready) = broker.queue_depth(&name).await
                && ready > 0
            {
                busy.push(format!("{name}: {ready} waiting"));
            }
        }
        let backlog = outbox_backlog(pool).await.unwrap_or(-1);
        if backlog != 0 {
            busy.push(format!("outbox backlog {backlog}"));
        }
        for query in &scenario.invariants.drained_when {
            let found = rows(pool, query, &[], captured).await?.len();
            if found > 0 {
                busy.push(format!("{found} row(s) of {query:?}"));
            }
        }
        if busy.is_empty() {
            if quiet_since.get_or_insert_with(Instant::now).elapsed() >= QUIET_FOR {
                return Ok(Ok(()));
            }
        } else {
            quiet_since = None;
        }
        if Instant::now() > deadline {
            return Ok(Err(busy.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Unpublished rows in every kit outbox of the database, whatever the schema.
async fn outbox_backlog(pool: &PgPool) -> Result<i64, CliError> {
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'msgkit_outbox'",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut total = 0;
    for schema in schemas {
        // The schema's name comes from the catalogue, quoted.
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{}\".msgkit_outbox WHERE published_at IS NULL",
            schema.replace('"', "\"\"")
        )))
        .fetch_one(pool)
        .await
        .map_err(db)?;
        total += count;
    }
    Ok(total)
}

/// The kit's invariant's view of the scenario's system: each declared queue with its
/// consumer and schema, and the services that only publish.
pub fn system_under_test(
    scenario: &Scenario,
    db: &TestDatabase,
    broker: &TestBroker,
) -> SystemUnderTest {
    let store = |schema: &Option<String>| ServiceStore {
        database_url: db.url(),
        schema: schema.clone(),
    };
    let consumers = scenario
        .services
        .iter()
        .flat_map(|service| {
            service.queues.iter().map(move |queue| ConsumerTarget {
                queue: queue.clone(),
                consumer: service
                    .consumer
                    .clone()
                    .unwrap_or_else(|| service.name.clone()),
                store: store(&service.schema),
            })
        })
        .collect();
    let publishers = scenario
        .services
        .iter()
        .filter(|s| s.queues.is_empty() && s.schema.is_some())
        .map(|s| store(&s.schema))
        .collect();
    SystemUnderTest {
        vhost: broker.vhost().to_owned(),
        broker: broker.settings("msgkit-chaos/kit-invariant"),
        management: ManagementApi {
            url: "http://127.0.0.1:15672".to_owned(),
            user: "guest".to_owned(),
            password: "guest".to_owned(),
        },
        events_exchange: msgkit::topology::EVENTS_EXCHANGE.to_owned(),
        consumers,
        publishers,
        timer_grace: Duration::from_secs(5),
        max_listed: 50,
    }
}
