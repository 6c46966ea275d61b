//! The page's reconciliation section: risk proxies `GET /reconciliation*` to the reconcile
//! service (same origin for the page), answers 503 when reconcile cannot be reached, and the
//! page shows open mismatches and resolved ones as they change, in headless Chromium.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use contracts::{GatewayOutcome, PaymentCallback, PaymentSucceeded, event_type};
use msgkit::clock::Clock;
use msgkit::message::OutgoingMessage;
use msgkit::service::ServiceError;
use msgkit::testing::{TestBroker, TestDatabase, service_settings, wait_until_async};
use msgkit::{ConfirmedPublisher, EventType, Shutdown};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

use crate::helpers::{DEADLINE, TestApp, spawn_app, spawn_app_on, spawn_app_with_config, token};

#[tokio::test]
async fn the_proxy_answers_503_with_a_reason_when_reconcile_is_unreachable() {
    // The test default points at a port nothing listens on.
    let app = spawn_app().await;
    for path in ["/reconciliation/summary", "/reconciliation?status=open"] {
        let response = app.send(Method::GET, path, None).await;
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "reconcile_unavailable", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("http://127.0.0.1:9") && message.contains("cannot be reached"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn the_proxy_gives_up_on_a_reconcile_that_does_not_answer() {
    // Accepts connections and never answers: only the timeout ends the request.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let holding = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let app = spawn_app_with_config(&[
        ("RISK_RECONCILE_URL", url.as_str()),
        ("RISK_RECONCILE_TIMEOUT_MS", "300"),
    ])
    .await;
    let started = Instant::now();
    let response = app.send(Method::GET, "/reconciliation/summary", None).await;
    let waited = started.elapsed();
    holding.abort();
    assert_eq!(response.status(), 503);
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(5)).contains(&waited),
        "{waited:?}"
    );
}

#[tokio::test]
async fn the_proxy_passes_reconciles_answers_through() {
    let (app, reconcile) = spawn_with_reconcile().await;
    let summary = app.send(Method::GET, "/reconciliation/summary", None).await;
    assert_eq!(summary.status(), 200);
    let summary: Value = summary.json().await.unwrap();
    assert_eq!(summary["total"], 0, "{summary}");
    // The query string goes through as is, and reconcile's refusal comes back as it said it.
    let refused = app
        .send(Method::GET, "/reconciliation?status=nope", None)
        .await;
    assert_eq!(refused.status(), 422);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["field"], "status", "{refused}");
    let order = Uuid::new_v4();
    reconcile.paid(order, 100).await;
    reconcile.clock.advance(WINDOW + Duration::from_secs(1));
    let open = wait_until_async("the open mismatch, through risk", DEADLINE, || async {
        let rows: Vec<Value> = app
            .send(Method::GET, "/reconciliation?status=open", None)
            .await
            .json()
            .await
            .unwrap();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(open[0]["order_id"], order.to_string());
    assert_eq!(open[0]["outcome"], "third-party-missing");
}

/// Reads the node script's `step: <name>` lines as it reaches them.
struct Steps<R> {
    lines: tokio::io::Lines<BufReader<R>>,
    seen: Vec<String>,
}

impl<R: tokio::io::AsyncRead + Unpin> Steps<R> {
    /// Waits for `step: name`; `false` if the script ended (failed) first.
    async fn reach(&mut self, name: &str) -> bool {
        let wanted = format!("step: {name}");
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no `{wanted}` within 60 s; saw {:?}", self.seen));
            match line {
                Ok(Some(line)) => {
                    let done = line == wanted;
                    self.seen.push(line);
                    if done {
                        return true;
                    }
                }
                _ => return false,
            }
        }
    }
}

#[tokio::test]
async fn an_operator_sees_a_mismatch_open_then_resolve_in_the_page_without_reloading() {
    let (app, mut reconcile) = spawn_with_reconcile().await;
    let (missing, matched, wrong) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // Before the page opens: our side of an order the gateway has not called back, and an
    // order with both sides (a second apart on reconcile's clock).
    reconcile.paid(missing, 12_000).await;
    reconcile.paid(matched, 4_250).await;
    reconcile.clock.advance(Duration::from_millis(1200));
    reconcile.called_back("cb-matched", matched, 4_250).await;

    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join("target"));
    std::fs::create_dir_all(target.join("ui")).unwrap();
    let screenshot = target.join("ui/risk-page-reconciliation.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut node = tokio::process::Command::new("node")
        .arg(workspace.join("tools/ui-screenshot/risk-page-reconciliation.mjs"))
        .env("PAGE_URL", &app.address)
        .env("TOKEN", token("operator", msgkit::auth::Role::Operator))
        .env("OUT", &screenshot)
        .env("MISSING_ORDER", missing.to_string())
        .env("MATCHED_ORDER", matched.to_string())
        .env("WRONG_ORDER", wrong.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); run scripts/ui-deps.sh"));
    let mut steps = Steps {
        lines: BufReader::new(node.stdout.take().unwrap()).lines(),
        seen: Vec::new(),
    };
    // Each step acts once the page has shown the one before, so what the page shows next can
    // only have come from a refresh, not from its first load.
    let mut completed = steps.reach("watching").await;
    if completed {
        // A wrong amount (decided on the second side), and the window of the unanswered
        // order ends.
        reconcile.paid(wrong, 5_000).await;
        reconcile.called_back("cb-wrong", wrong, 4_500).await;
        reconcile.clock.advance(WINDOW + Duration::from_secs(1));
        completed = steps.reach("open").await;
    }
    if completed {
        reconcile.called_back("cb-late", missing, 12_000).await;
        completed = steps.reach("resolved").await;
    }
    if completed {
        reconcile.stop().await;
        completed = steps.reach("unreachable").await;
    }
    let status = node.wait().await.unwrap();
    let mut stderr = String::new();
    if let Some(mut pipe) = node.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    assert!(
        completed && status.success(),
        "the browser check failed (run scripts/ui-deps.sh if Chromium or playwright-core is \
         missing; the page as it was: {}):\nsteps: {:?}\n{stderr}",
        target
            .join("ui/risk-page-reconciliation.failed.png")
            .display(),
        steps.seen,
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 10_000, "the screenshot has content");
    if std::env::var("MSGKIT_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::fs::copy(
            &screenshot,
            workspace.join("docs/images/risk-page-reconciliation.png"),
        )
        .unwrap();
    }
}

/// A reconcile service on a clock the test moves, in the risk test's database (its own
/// schema) and vhost; payment's events published to it directly.
struct Reconcile {
    pool: PgPool,
    clock: Clock,
    publisher: ConfirmedPublisher,
    shutdown: Shutdown,
    running: Option<tokio::task::JoinHandle<Result<(), ServiceError>>>,
}

impl Drop for Reconcile {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Reconcile's window in these tests.
const WINDOW: Duration = Duration::from_secs(60);

/// Risk with its proxy pointed at a reconcile service of its own.
async fn spawn_with_reconcile() -> (TestApp, Reconcile) {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let name = reconcile::startup::NAME;
    let mut settings = service_settings(name, name, &db, broker.settings(name));
    // Timers looked for often, so that a moved clock fires them within a tenth of a second;
    // a window long enough that only the test's moving the clock ends it (a slow browser start
    // must not).
    settings.source.set("TIMER_POLL_INTERVAL_MS", "100");
    // Risk passes the operator's token on: reconcile checks it with the same secret.
    settings
        .source
        .set("RECONCILE_TOKEN_SECRET", crate::helpers::TEST_SECRET);
    settings
        .source
        .set("RECONCILE_WINDOW_MS", WINDOW.as_millis().to_string());
    let clock = Clock::system();
    let service = reconcile::startup::build_with_clock(settings, clock.clone())
        .await
        .expect("build the reconcile service");
    let url = format!("http://{}", service.local_addr().expect("addr"));
    let pool = service.pool().clone();
    let publisher = broker.publisher(&contracts::topology()).await;
    let shutdown = Shutdown::new();
    let running = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    let app = spawn_app_on(db, broker, |settings| {
        settings.source.set("RISK_RECONCILE_URL", url);
    })
    .await;
    let reconcile = Reconcile {
        pool,
        clock,
        publisher,
        shutdown,
        running: Some(running),
    };
    (app, reconcile)
}

impl Reconcile {
    async fn paid(&self, order_id: Uuid, amount_cents: i64) {
        let payment = PaymentSucceeded {
            order_id,
            charge_id: format!("ch-{order_id}"),
            amount_cents,
            customer_id: "c-1".into(),
            location: None,
            occurred_at: None,
        };
        self.send(event_type::PAYMENT_SUCCEEDED, order_id, &payment)
            .await;
    }

    async fn called_back(&self, callback_id: &str, order_id: Uuid, amount_cents: i64) {
        let callback = PaymentCallback {
            callback_id: callback_id.into(),
            order_id,
            charge_id: None,
            outcome: GatewayOutcome::Success,
            amount_cents,
            known_order: true,
            received_at: chrono::Utc::now(),
        };
        self.send(event_type::PAYMENT_CALLBACK, order_id, &callback)
            .await;
    }

    /// Publishes one side as payment does and waits until reconcile has handled it.
    async fn send<P: Serialize>(&self, event: EventType<P>, order_id: Uuid, payload: &P) {
        let before = self.handled().await;
        let message =
            OutgoingMessage::event(event.name(), &order_id.to_string(), "payment", payload)
                .unwrap();
        assert!(
            self.publisher
                .publish(&message)
                .await
                .unwrap()
                .is_confirmed()
        );
        wait_until_async("reconcile handled the side", DEADLINE, || async {
            (self.handled().await > before).then_some(())
        })
        .await;
    }

    async fn handled(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM msgkit_inbox WHERE consumer = 'reconcile' \
             AND message_type IN ('payment.succeeded', 'payment.callback')",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Stops the service (as SIGTERM does) and waits until it has.
    async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(DEADLINE, running)
                .await
                .expect("reconcile stops")
                .expect("no panic")
                .expect("stopped cleanly");
        }
    }
}
