//! What a collector receives from a real service process: the order binary exports to an OTLP
//! receiver in this test, handles a request and a message, is stopped with SIGTERM, and every
//! span it made must have arrived by the time it exits, none of them as long as its life.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use contracts::OrderSetback;
use contracts::event_type::INVENTORY_REJECTED;
use msgkit::message::OutgoingMessage;
use msgkit::testing::{TestBroker, TestDatabase, wait_until_async};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(30);
const INCOMING_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_SPAN: &str = "10f067aa0ba902b7";

/// The spans posted to `/v1/traces`, as an OTLP/HTTP collector receives them.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Span>>>);

async fn export(State(received): State<Received>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let spans = request
        .resource_spans
        .into_iter()
        .flat_map(|resource| resource.scope_spans)
        .flat_map(|scope| scope.spans);
    received.0.lock().unwrap().extend(spans);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

async fn receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Ends with the test's runtime.
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn unix_nanos(at: SystemTime) -> u64 {
    u64::try_from(at.duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} parent={} {:?}ms",
                s.name,
                hex(&s.span_id),
                hex(&s.parent_span_id),
                s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) / 1_000_000
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn unpublished_and_published(pool: &sqlx::PgPool) -> Option<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE published_at IS NULL), \
                count(*) FILTER (WHERE published_at IS NOT NULL) \
         FROM orders.msgkit_outbox",
    )
    .fetch_one(pool)
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stopped_by_sigterm_has_exported_every_span_and_none_lasts_its_life() {
    let (collector, received) = receiver().await;
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.pool().await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_order"))
        .env("DATABASE_URL", db.url())
        .env("AMQP_URL", broker.amqp_url())
        .env("ORDER_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("OUTBOX_POLL_INTERVAL_MS", "200")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_SDK_DISABLED")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_until_async("the order service to be ready", DEADLINE, || async {
        let response = client.get(format!("{base}/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    let ready = SystemTime::now();

    // A request (HTTP span, create, the relay's publish) ...
    let response = client
        .post(format!("{base}/orders"))
        .header(
            "traceparent",
            format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"),
        )
        .json(
            &serde_json::json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 1}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let order_id: String = response.json::<serde_json::Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until_async("order.placed published", DEADLINE, || async {
        (unpublished_and_published(&pool).await? == (0, 1)).then_some(())
    })
    .await;

    // ... then a message without a trace context (its process span, and the relay's publish
    // of what the handler wrote).
    let rejection = OrderSetback {
        order_id: order_id.parse().unwrap(),
        reason: "out of stock".into(),
    };
    let message =
        OutgoingMessage::event(INVENTORY_REJECTED.name(), &order_id, "test", &rejection).unwrap();
    let publisher = broker.publisher(&contracts::topology()).await;
    assert!(publisher.publish(&message).await.unwrap().is_confirmed());
    publisher.close().await;
    wait_until_async("order.rejected published", DEADLINE, || async {
        (unpublished_and_published(&pool).await? == (0, 2)).then_some(())
    })
    .await;

    let stopping = SystemTime::now();
    let pid = child.id().unwrap().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("the service stops within the deadline")
        .unwrap();
    assert!(status.success(), "a graceful stop: {status:?}");

    // The exporter posts synchronously: whatever the process sent has arrived.
    let spans = received.0.lock().unwrap().clone();
    let all = describe(&spans);
    let ids: HashSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
    let incoming = hex_bytes(INCOMING_SPAN);
    for span in &spans {
        let parent = span.parent_span_id.as_slice();
        assert!(
            parent.is_empty() || parent == incoming.as_slice() || ids.contains(parent),
            "{}'s parent {} never arrived:\n{all}",
            span.name,
            hex(parent)
        );
        assert!(
            !(span.start_time_unix_nano < unix_nanos(ready)
                && span.end_time_unix_nano > unix_nanos(stopping)),
            "{} lasted from before the service was ready until after SIGTERM:\n{all}",
            span.name
        );
    }

    let declares: Vec<&Span> = spans.iter().filter(|s| s.name == "declare").collect();
    assert!(!declares.is_empty(), "no declare span:\n{all}");
    for declare in declares {
        assert!(
            declare.parent_span_id.is_empty(),
            "a declare span is a root:\n{all}"
        );
        assert!(
            matches!(attribute(declare, "queues"), Some(Value::IntValue(n)) if *n > 0),
            "{:?}",
            declare.attributes
        );
    }
    let http = named(&spans, "POST /orders", &all);
    assert_eq!(
        attribute(http, "http.response.status_code"),
        Some(&Value::IntValue(202))
    );
    named(&spans, "order.placed publish", &all);
    let process = spans
        .iter()
        .find(|s| {
            s.name == "order process"
                && attribute(s, "messaging.message.id")
                    == Some(&Value::StringValue(message.message_id.clone()))
        })
        .unwrap_or_else(|| panic!("the last message's process span never arrived:\n{all}"));
    assert_eq!(
        attribute(process, "msgkit.attempt"),
        Some(&Value::IntValue(1))
    );
    assert_eq!(
        attribute(process, "msgkit.outcome"),
        Some(&Value::StringValue("ack".into()))
    );
    let last_publish = named(&spans, "order.rejected publish", &all);
    assert_eq!(
        last_publish.trace_id, process.trace_id,
        "the handler's message continues its trace"
    );
}

fn named<'a>(spans: &'a [Span], name: &str, all: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span arrived:\n{all}"))
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
