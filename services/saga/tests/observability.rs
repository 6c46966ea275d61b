//! One order's trace and metrics across every service. Its own test binary: the tracing
//! pipeline is global to a process.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashMap;

use msgkit::testing::{metric_value, scrape, wait_until_async};
use opentelemetry::Value as OtelValue;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use saga::{DEADLINE, Saga};
use serde_json::Value;

const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_SPAN: &str = "00f067aa0ba902b7";

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The attribute as exported, with its type (an int must not arrive as a string).
fn typed(span: &SpanData, key: &str) -> Option<OtelValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// The one span named `name` (with `outcome`, for process spans), failing if there is not
/// exactly one.
fn only<'a>(spans: &'a [SpanData], name: &str, outcome: Option<&str>) -> &'a SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| {
            s.name == name
                && outcome.is_none_or(|o| attribute(s, "msgkit.outcome").as_deref() == Some(o))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "spans named {name} ({outcome:?}): {:?}",
        names(spans)
    );
    found[0]
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{} [{:?}]", s.name, attribute(s, "msgkit.outcome")))
        .collect()
}

fn assert_child(child: &SpanData, parent: &SpanData) {
    assert_eq!(
        child.parent_span_id,
        parent.span_context.span_id(),
        "{} should be a child of {}",
        child.name,
        parent.name
    );
}

/// `descendant` is below `ancestor` in the tree (handlers may add spans in between).
fn assert_descendant(spans: &[SpanData], descendant: &SpanData, ancestor: &SpanData) {
    let mut parent = descendant.parent_span_id;
    while parent != ancestor.span_context.span_id() {
        let Some(up) = spans.iter().find(|s| s.span_context.span_id() == parent) else {
            panic!("{} should be below {}", descendant.name, ancestor.name);
        };
        parent = up.parent_span_id;
    }
}

#[tokio::test]
async fn one_order_is_one_trace_across_every_service_including_a_retry() {
    let exporter = InMemorySpanExporter::default();
    let telemetry = msgkit::telemetry::init_with_exporter("saga-test", exporter.clone());
    let saga = Saga::start(&[("INVENTORY_FAULT_FAIL_FIRST_ATTEMPTS", "1")]).await;

    let response = saga
        .client
        .post(format!("{}/orders", saga.api))
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
    let order_id = response.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(saga.wait_final(&order_id).await["status"], "confirmed");
    saga.wait_notifications(&order_id, 1).await;
    saga.stop().await;
    telemetry.flush();

    let trace_id = TraceId::from_hex(INCOMING_TRACE).unwrap();
    let spans: Vec<SpanData> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .collect();

    let http = only(&spans, "POST /orders", None);
    assert_eq!(
        http.parent_span_id,
        SpanId::from_hex(INCOMING_SPAN).unwrap(),
        "the incoming traceparent is continued"
    );
    assert_eq!(
        typed(http, "http.response.status_code"),
        Some(OtelValue::I64(202))
    );
    let placed_create = only(&spans, "order.placed create", None);
    let placed_publish = only(&spans, "order.placed publish", None);
    let inventory_retry = only(&spans, "inventory process", Some("retry"));
    let inventory = only(&spans, "inventory process", Some("ack"));
    let reserved_create = only(&spans, "inventory.reserved create", None);
    let reserved_publish = only(&spans, "inventory.reserved publish", None);
    let payment = only(&spans, "payment process", Some("ack"));
    let succeeded_create = only(&spans, "payment.succeeded create", None);
    let succeeded_publish = only(&spans, "payment.succeeded publish", None);
    let confirmed_create = only(&spans, "order.confirmed create", None);
    let confirmed_publish = only(&spans, "order.confirmed publish", None);
    let notify = only(&spans, "notify process", Some("ack"));

    assert_descendant(&spans, placed_create, http);
    assert_child(placed_publish, placed_create);
    // The retry and the attempt that succeeded both hang off the same publish.
    assert_child(inventory_retry, placed_publish);
    assert_child(inventory, placed_publish);
    assert_eq!(
        typed(inventory_retry, "msgkit.attempt"),
        Some(OtelValue::I64(1))
    );
    assert_eq!(typed(inventory, "msgkit.attempt"), Some(OtelValue::I64(2)));
    assert_descendant(&spans, reserved_create, inventory);
    assert_child(reserved_publish, reserved_create);
    assert_child(payment, reserved_publish);
    assert_descendant(&spans, succeeded_create, payment);
    assert_child(succeeded_publish, succeeded_create);
    let order_steps: Vec<&SpanData> = spans
        .iter()
        .filter(|s| {
            s.name == "order process" && attribute(s, "msgkit.outcome").as_deref() == Some("ack")
        })
        .collect();
    let concluding = order_steps
        .iter()
        .find(|s| s.parent_span_id == succeeded_publish.span_context.span_id())
        .expect("the order service handles payment.succeeded in the same trace");
    assert_descendant(&spans, confirmed_create, concluding);
    assert_child(confirmed_publish, confirmed_create);
    assert_child(notify, confirmed_publish);

    // Messaging semantic conventions on the consumer side.
    assert_eq!(
        attribute(notify, "messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        attribute(notify, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attribute(notify, "messaging.destination.name").as_deref(),
        Some("notify")
    );
    assert_eq!(
        attribute(notify, "messaging.rabbitmq.destination.routing_key").as_deref(),
        Some("order.confirmed")
    );
    assert_eq!(
        attribute(notify, "messaging.message.conversation_id").as_deref(),
        Some(order_id.as_str())
    );
    assert!(attribute(notify, "messaging.message.id").is_some());
}

#[tokio::test]
async fn the_metrics_move_by_exactly_one_order() {
    let saga = Saga::start(&[]).await;
    // Each service has a registry of its own: what its /metrics shows is its own doing.
    let services = ["order", "inventory", "payment", "notify"];
    let scrape_all = || async {
        let mut all = HashMap::new();
        for name in services {
            all.insert(name, scrape(&saga.client, &saga.urls[name]).await);
        }
        all
    };
    let before = scrape_all().await;
    let order_id = saga.place_order("c-1", &[("SKU-2", 1)]).await;
    assert_eq!(saga.wait_final(&order_id).await["status"], "confirmed");
    saga.wait_notifications(&order_id, 1).await;

    let expected: HashMap<&str, f64> = HashMap::from([
        ("inventory", 1.0),
        ("payment", 1.0),
        ("order", 2.0), // inventory.reserved, payment.succeeded
        ("notify", 1.0),
    ]);
    let acked = |text: &str, queue: &str| {
        metric_value(
            text,
            "msgkit_consumed_total",
            &[("queue", queue), ("outcome", "ack")],
        )
        .unwrap_or(0.0)
    };
    let after = wait_until_async("every consumer's count to move", DEADLINE, || async {
        let after = scrape_all().await;
        let moved = expected.iter().all(|(queue, delta)| {
            acked(&after[queue], queue) - acked(&before[queue], queue) == *delta
        });
        moved.then_some(after)
    })
    .await;
    let delta = |service: &str, name: &str, labels: &[(&str, &str)]| {
        metric_value(&after[service], name, labels).unwrap_or(0.0)
            - metric_value(&before[service], name, labels).unwrap_or(0.0)
    };
    for (service, published) in [("order", 2.0), ("inventory", 1.0), ("payment", 1.0)] {
        assert_eq!(
            delta(
                service,
                "msgkit_relay_published_total",
                &[("service", service)]
            ),
            published,
            "{service} (order: placed + confirmed)"
        );
    }
    assert_eq!(
        delta(
            "inventory",
            "msgkit_handler_duration_seconds_count",
            &[("queue", "inventory")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "notify",
            "msgkit_end_to_end_latency_seconds_count",
            &[("queue", "notify")]
        ),
        1.0
    );
    assert!(
        delta(
            "order",
            "msgkit_publish_confirm_seconds_count",
            &[("publisher", "relay")]
        ) >= 1.0
    );
    for outcome in ["retry", "dead_letter", "poison", "duplicate"] {
        assert_eq!(
            delta(
                "inventory",
                "msgkit_consumed_total",
                &[("queue", "inventory"), ("outcome", outcome)]
            ),
            0.0
        );
    }
    assert_eq!(
        metric_value(
            &after["inventory"],
            "msgkit_broker_connected",
            &[("component", "inventory/consumer")]
        ),
        Some(1.0)
    );
    // A service's registry holds its own series only.
    assert_eq!(
        metric_value(
            &after["order"],
            "msgkit_consumed_total",
            &[("queue", "inventory"), ("outcome", "ack")]
        ),
        None
    );
    saga.stop().await;
}
