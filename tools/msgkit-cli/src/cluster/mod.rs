//! `msgkit cluster-test`: the four services against a three-node RabbitMQ cluster on this
//! machine (`scripts/rabbitmq-cluster.sh`), each given all three addresses in `AMQP_URL`.
//! Under a steady load the node leading the `inventory` quorum queue is SIGKILLed; the run
//! then checks that every accepted order completed exactly once (stock, charges,
//! notifications) and reports how long publishing and consuming stalled around the kill.
//!
//! It starts the cluster, creates its own vhost on it and its own database, and removes all of
//! them at the end (the cluster is stopped and its data deleted unless `--keep-cluster`). It
//! uses its own RabbitMQ nodes, so it may run beside the test suite, but not beside
//! `msgkit chaos`, which restarts the shared PostgreSQL. Exit code 1 when something was lost.

mod check;
mod load;
mod nodes;
mod stalls;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use msgkit::testing::TestDatabase;
use serde_json::{Value, json};
use sqlx::PgPool;

use self::nodes::Cluster;
use crate::{CliError, table};

const WORK_QUEUES: [&str; 4] = ["order", "inventory", "payment", "notify"];

#[derive(Debug, Args)]
pub struct ClusterTestArgs {
    /// Orders per second (open loop).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long orders are sent, in seconds.
    #[arg(long, default_value_t = 40)]
    duration_secs: u64,
    /// When to kill the leader, in seconds after the load starts (default: a third of the way).
    #[arg(long)]
    kill_at_secs: Option<f64>,
    /// The work queue whose leader node is killed.
    #[arg(long, default_value = "inventory")]
    queue: String,
    /// How long the system may take to settle after the load, in seconds.
    #[arg(long, default_value_t = 90)]
    drain_timeout_secs: u64,
    /// Leave the cluster running at the end (by default it is stopped and its data removed).
    #[arg(long)]
    keep_cluster: bool,
    /// The cluster script (default: scripts/rabbitmq-cluster.sh of the repository).
    #[arg(long)]
    script: Option<PathBuf>,
}

pub async fn run(args: ClusterTestArgs, json_output: bool) -> Result<(), CliError> {
    let duration = args.duration_secs as f64;
    let kill_at = args.kill_at_secs.unwrap_or(duration / 3.0);
    if args.rate <= 0.0 || args.duration_secs == 0 || !(0.0..duration).contains(&kill_at) {
        return Err(CliError::Usage(
            "--rate and --duration-secs must be positive and --kill-at-secs within the load"
                .to_owned(),
        ));
    }
    if !WORK_QUEUES.contains(&args.queue.as_str()) {
        return Err(CliError::Usage(format!(
            "--queue must be one of {WORK_QUEUES:?}"
        )));
    }
    let mut cluster = Cluster::new(Cluster::find_script(args.script.as_deref())?);
    let started = Instant::now();
    eprintln!("cluster-test: starting the three-node cluster ...");
    let mut result = match cluster.script(&["up"], Duration::from_secs(300)).await {
        Ok(_) => {
            let up_secs = started.elapsed().as_secs_f64();
            on_cluster(&args, kill_at, &mut cluster, up_secs).await
        }
        Err(error) => Err(error),
    };
    if !args.keep_cluster {
        eprintln!("cluster-test: stopping the cluster and removing its data ...");
        if let Err(error) = cluster.script(&["down"], Duration::from_secs(180)).await {
            eprintln!("cluster-test: {error}");
            if result.is_ok() {
                result = Err(error);
            }
        }
    }
    let mut report = result?;
    report["total_secs"] = json!(started.elapsed().as_secs_f64());
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_report(&report);
    }
    let violations = report["violations"].as_array().map_or(0, Vec::len);
    if violations == 0 {
        Ok(())
    } else {
        Err(CliError::Violations(violations))
    }
}

/// The run on a started cluster, with its own vhost and database. The database is dropped at
/// the end; the vhost goes with the cluster's data, or, with `--keep-cluster`, is deleted once
/// the killed node is back (deleting quorum queues with a member down takes ~5 s per queue).
async fn on_cluster(
    args: &ClusterTestArgs,
    kill_at: f64,
    cluster: &mut Cluster,
    up_secs: f64,
) -> Result<Value, CliError> {
    let random = uuid::Uuid::new_v4().simple().to_string();
    let vhost = format!(
        "msgkit_cluster_{}_{}",
        Utc::now().timestamp(),
        &random[..12]
    );
    cluster.create_vhost(&vhost).await?;
    let db = TestDatabase::create().await;
    let outcome = exercise(args, kill_at, cluster, &vhost, &db).await;
    drop(db);
    if args.keep_cluster {
        eprintln!("cluster-test: restarting the killed node, then deleting vhost {vhost} ...");
        match cluster.script(&["up"], Duration::from_secs(300)).await {
            Ok(_) => cluster.revived(),
            Err(error) => eprintln!("cluster-test: {error}"),
        }
        if let Err(error) = cluster.delete_vhost(&vhost).await {
            eprintln!("cluster-test: could not delete vhost {vhost}: {error}");
        }
    }
    let mut report = outcome?;
    report["cluster_start_secs"] = json!(up_secs);
    Ok(report)
}

async fn exercise(
    args: &ClusterTestArgs,
    kill_at: f64,
    cluster: &mut Cluster,
    vhost: &str,
    db: &TestDatabase,
) -> Result<Value, CliError> {
    let run_dir = run_directory()?;
    let amqp_url = cluster.amqp_url_list(vhost);
    let mut processes =
        crate::saga_services::start_services(&BTreeMap::new(), db, &amqp_url, &run_dir).await?;
    let pool = db.pool().await;
    let mut violations = Vec::new();

    // The topology as the cluster sees it: quorum queues with a member on every node.
    let mut queues_before = Vec::new();
    for queue in WORK_QUEUES {
        match cluster
            .wait_queue(vhost, queue, Duration::from_secs(30), |q| {
                q.kind == "quorum" && q.members.len() == 3 && q.online.len() == 3
            })
            .await
        {
            Ok(view) => queues_before.push(view),
            Err(last) => violations.push(format!(
                "work queue {queue} is not a quorum queue with 3 online members: {last:?}"
            )),
        }
    }
    let initial_stock = check::stock(&pool).await?;

    eprintln!(
        "cluster-test: {} orders/s for {} s; the leader of {} is killed at t+{kill_at:.1}s",
        args.rate, args.duration_secs, args.queue
    );
    let load_started = Instant::now();
    let load = tokio::spawn(load::run(
        processes[0].base_url(),
        args.rate,
        Duration::from_secs(args.duration_secs),
    ));

    // The kill.
    tokio::time::sleep_until((load_started + Duration::from_secs_f64(kill_at)).into()).await;
    let victim = cluster
        .queue(vhost, &args.queue)
        .await
        .and_then(|q| q.leader)
        .ok_or_else(|| {
            CliError::Unavailable(format!("the {} queue has no leader to kill", args.queue))
        })?;
    let pid = cluster.pid(&victim).await?;
    let killed_at = Utc::now();
    cluster.kill(&victim, pid).await?;
    let kill_offset = load_started.elapsed().as_secs_f64();
    eprintln!(
        "cluster-test: t+{kill_offset:.1}s SIGKILL {victim} (pid {pid}), leader of {}",
        args.queue
    );
    let election = cluster
        .wait_queue(vhost, &args.queue, Duration::from_secs(60), |q| {
            q.leader
                .as_ref()
                .is_some_and(|l| *l != victim && q.online.contains(l))
        })
        .await;
    let (new_leader, elected_secs) = match election {
        Ok(view) => {
            let secs = (Utc::now() - killed_at).num_milliseconds() as f64 / 1000.0;
            eprintln!(
                "cluster-test: {} has a new leader, {}, {secs:.1} s after the kill",
                args.queue,
                view.leader.clone().unwrap_or_default()
            );
            (view.leader, Some(secs))
        }
        Err(last) => {
            violations.push(format!(
                "no new leader for {} within 60 s of the kill: {last:?}",
                args.queue
            ));
            (None, None)
        }
    };

    let sent = load
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!("the load generator failed: {e}")))?;
    let load_ended = Utc::now();
    let accepted: BTreeSet<uuid::Uuid> = sent.iter().filter_map(|s| s.order_id).collect();
    eprintln!(
        "cluster-test: load done ({} sent, {} accepted); draining ...",
        sent.len(),
        accepted.len()
    );
    let drain_started = Instant::now();
    if let Err(state) = drain(
        &pool,
        cluster,
        vhost,
        &accepted,
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await
    {
        violations.push(format!("the system did not drain: {state}"));
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();

    let queues_after = cluster.queues(vhost).await.unwrap_or_default();
    for queue in queues_after.iter().filter(|q| q.name.ends_with(".dlq")) {
        if queue.messages > 0 {
            violations.push(format!(
                "{} holds {} dead letter(s)",
                queue.name, queue.messages
            ));
        }
    }
    let findings = check::invariants(&pool, &accepted, &initial_stock).await?;
    violations.extend(findings.violations.iter().cloned());
    let recovery_secs = check::recovery(&pool, killed_at, killed_at).await?;
    let stalls = stalls::measure(&pool, killed_at, load_ended).await?;
    pool.close().await;

    // What the kill cost the services: sessions re-opened, publishes the broker refused.
    let mut reopened = BTreeMap::new();
    let mut refused_publishes = 0u64;
    let client = reqwest::Client::new();
    for process in &processes {
        let text = match client
            .get(format!("{}/metrics", process.base_url()))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // Counters: whole numbers.
        reopened.insert(
            process.name.clone(),
            sum_metric(&text, "msgkit_broker_reconnects_total") as u64,
        );
        refused_publishes += sum_metric(&text, "msgkit_relay_refused_total") as u64;
    }

    let mut exits = BTreeMap::new();
    for process in &mut processes {
        exits.insert(
            process.name.clone(),
            process.stop(Duration::from_secs(20)).await,
        );
    }
    for (name, code) in &exits {
        if *code != Some(0) {
            violations.push(format!(
                "{name} did not exit 0 on SIGTERM (exit {code:?}); see {}",
                run_dir.display()
            ));
        }
    }

    let refused = sent.iter().filter(|s| s.status != 202).count();
    let http_max = |from: f64, to: f64| {
        sent.iter()
            .filter(|s| {
                let offset = (s.at - killed_at).num_milliseconds() as f64 / 1000.0;
                (from..to).contains(&offset)
            })
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .fold(0.0, f64::max)
    };
    let leaders_after: BTreeMap<String, Option<String>> = queues_after
        .iter()
        .filter(|q| WORK_QUEUES.contains(&q.name.as_str()))
        .map(|q| (q.name.clone(), q.leader.clone()))
        .collect();
    Ok(json!({
        "passed": violations.is_empty(),
        "nodes": cluster.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        "amqp_url": msgkit::BrokerSettings::new(amqp_url.clone(), "report").redacted_url(),
        "work_queues_before": queues_before,
        "killed": {
            "queue": args.queue,
            "node": victim,
            "pid": pid,
            "at_secs_into_load": kill_offset,
            "new_leader": new_leader,
            "new_leader_seen_after_secs": elected_secs,
        },
        "leaders_after": leaders_after,
        "orders_sent": sent.len(),
        "orders_accepted": accepted.len(),
        "orders_refused": refused,
        "http_max_latency_ms": {
            "before_kill": http_max(-1e9, 0.0),
            "first_10s_after_kill": http_max(0.0, 10.0),
        },
        "final_states": findings.by_status,
        "charges": findings.charges,
        "notifications": findings.notifications,
        "end_to_end_latency_ms": {"p50": findings.latency_p50_ms, "p99": findings.latency_p99_ms},
        "recovery_secs": recovery_secs,
        "broker_sessions_reopened": reopened,
        "relay_publishes_refused": refused_publishes,
        "stalls": stalls,
        "drain_secs": drain_secs,
        "violations": violations,
        "logs": run_dir.display().to_string(),
    }))
}

/// The sum of every sample of `name` in a metrics exposition.
fn sum_metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// `target/cluster/<time>/` beside the binaries, for the services' logs.
fn run_directory() -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Other(e.into()))?;
    let base = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("cluster"))
        .unwrap_or_else(|| std::env::temp_dir().join("msgkit-cluster-test"));
    let dir = base.join(Utc::now().format("%Y%m%dT%H%M%S").to_string());
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Other(anyhow::anyhow!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Wait until every accepted order is final, the outboxes are empty, and every queue of the
/// vhost has stayed empty for a few seconds (the management API's counts lag).
async fn drain(
    pool: &PgPool,
    cluster: &Cluster,
    vhost: &str,
    accepted: &BTreeSet<uuid::Uuid>,
    timeout: Duration,
) -> Result<(), String> {
    let ids: Vec<uuid::Uuid> = accepted.iter().copied().collect();
    let deadline = Instant::now() + timeout;
    let mut quiet_since: Option<Instant> = None;
    loop {
        let pending = check::pending(pool, &ids).await.map(|p| p.len());
        let backlog = check::outbox_backlog(pool).await.unwrap_or(-1);
        let busy: Vec<String> = match cluster.queues(vhost).await {
            Ok(queues) => queues
                .iter()
                // The saga's own queues and the delay tiers: other services' queues (risk's
                // takes payment.succeeded) fill up without their service, which this test
                // does not run.
                .filter(|q| {
                    q.messages > 0
                        && (WORK_QUEUES.contains(&q.name.as_str())
                            || q.name.starts_with("msgkit.delay."))
                })
                .map(|q| format!("{}: {}", q.name, q.messages))
                .collect(),
            Err(error) => vec![format!("queues unknown: {error}")],
        };
        let state = format!(
            "{} order(s) not final, outbox backlog {backlog}, busy queues {busy:?}",
            pending
                .as_ref()
                .map_or_else(|e| format!("? ({e})"), ToString::to_string)
        );
        if matches!(pending, Ok(0)) && backlog == 0 && busy.is_empty() {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(5) {
                return Ok(());
            }
        } else {
            quiet_since = None;
        }
        if Instant::now() > deadline {
            return Err(state);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn secs(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"))
}

fn print_report(report: &Value) {
    let killed = &report["killed"];
    let queue_line = |q: &Value| {
        format!(
            "{} {} leader {} members {}",
            q["name"].as_str().unwrap_or_default(),
            q["kind"].as_str().unwrap_or_default(),
            q["leader"].as_str().unwrap_or("-"),
            q["members"].as_array().map_or(0, Vec::len)
        )
    };
    let rows = vec![
        vec![
            "result".to_owned(),
            if report["passed"] == true {
                "PASSED".to_owned()
            } else {
                "FAILED".to_owned()
            },
        ],
        vec![
            "AMQP_URL".to_owned(),
            report["amqp_url"].as_str().unwrap_or_default().to_owned(),
        ],
        vec![
            "work queues".to_owned(),
            report["work_queues_before"]
                .as_array()
                .map(|list| list.iter().map(queue_line).collect::<Vec<_>>().join("; "))
                .unwrap_or_default(),
        ],
        vec![
            "killed".to_owned(),
            format!(
                "{} (pid {}), leader of {}, SIGKILL at t+{:.1}s of the load",
                killed["node"].as_str().unwrap_or_default(),
                killed["pid"],
                killed["queue"].as_str().unwrap_or_default(),
                killed["at_secs_into_load"].as_f64().unwrap_or(0.0)
            ),
        ],
        vec![
            "new leader".to_owned(),
            format!(
                "{} (seen by the management API {} s after the kill)",
                killed["new_leader"].as_str().unwrap_or("none"),
                secs(&killed["new_leader_seen_after_secs"])
            ),
        ],
        vec![
            "orders sent / accepted / refused".to_owned(),
            format!(
                "{} / {} / {}",
                report["orders_sent"], report["orders_accepted"], report["orders_refused"]
            ),
        ],
        vec![
            "final states".to_owned(),
            report["final_states"].to_string(),
        ],
        vec![
            "charges / notifications".to_owned(),
            format!("{} / {}", report["charges"], report["notifications"]),
        ],
        vec![
            "POST /orders max latency (ms)".to_owned(),
            format!(
                "{:.0} before the kill, {:.0} in the 10 s after",
                report["http_max_latency_ms"]["before_kill"]
                    .as_f64()
                    .unwrap_or(0.0),
                report["http_max_latency_ms"]["first_10s_after_kill"]
                    .as_f64()
                    .unwrap_or(0.0)
            ),
        ],
        vec![
            "end-to-end latency p50 / p99 (ms)".to_owned(),
            format!(
                "{:.0} / {:.0}",
                report["end_to_end_latency_ms"]["p50"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                report["end_to_end_latency_ms"]["p99"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
        ],
        vec![
            "recovery (s)".to_owned(),
            format!(
                "{} (kill until an order placed after it was notified)",
                secs(&report["recovery_secs"])
            ),
        ],
        vec![
            "sessions re-opened / publishes nacked".to_owned(),
            format!(
                "{} / {}",
                report["broker_sessions_reopened"]
                    .as_object()
                    .map(|m| m
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default(),
                report["relay_publishes_refused"]
            ),
        ],
        vec![
            "cluster start / drain / total (s)".to_owned(),
            format!(
                "{} / {} / {}",
                secs(&report["cluster_start_secs"]),
                secs(&report["drain_secs"]),
                secs(&report["total_secs"])
            ),
        ],
    ];
    println!("{}", table::render(&["CLUSTER FAILOVER", ""], &rows));
    let stalls: Vec<Vec<String>> = report["stalls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                s["stream"].as_str().unwrap_or_default().to_owned(),
                s["events"].to_string(),
                secs(&s["baseline_max_gap_secs"]),
                secs(&s["resumed_after_kill_secs"]),
                secs(&s["gap_across_kill_secs"]),
                format!(
                    "{} (at {:+.1})",
                    secs(&s["longest_gap_after_kill_secs"]),
                    s["longest_gap_starts_at_secs"].as_f64().unwrap_or(0.0)
                ),
            ]
        })
        .collect();
    println!(
        "\nSTALLS (seconds; the kill is t=0)\n{}",
        table::render(
            &[
                "STREAM",
                "EVENTS",
                "MAX GAP BEFORE",
                "RESUMED AFTER",
                "GAP ACROSS KILL",
                "LONGEST GAP AFTER (START)",
            ],
            &stalls
        )
    );
    let violations = report["violations"].as_array().cloned().unwrap_or_default();
    if violations.is_empty() {
        println!("\nnothing lost, nothing applied twice");
    } else {
        println!("\nVIOLATIONS ({}):", violations.len());
        for violation in violations.iter().take(50) {
            println!("  - {}", violation.as_str().unwrap_or_default());
        }
    }
    println!("logs: {}", report["logs"].as_str().unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_samples_are_summed_over_their_labels() {
        let text = "# HELP msgkit_broker_reconnects_total x\n\
                    msgkit_broker_reconnects_total{component=\"order/relay\"} 2\n\
                    msgkit_broker_reconnects_total{component=\"order/consumer\"} 1\n\
                    msgkit_broker_reconnects_total_created 5\n\
                    msgkit_relay_refused_total{service=\"order\"} 3\n";
        assert_eq!(sum_metric(text, "msgkit_broker_reconnects_total"), 3.0);
        assert_eq!(sum_metric(text, "msgkit_relay_refused_total"), 3.0);
        assert_eq!(sum_metric(text, "missing"), 0.0);
    }
}
