//! What the exporter receives: spans captured through the same layer as [`super::install`]'s,
//! into the SDK's in-memory exporter, with a subscriber local to the test.

use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

use super::{http, span_layer, spans};
use crate::testing::TestMessage;

/// Run `work` with a subscriber that exports spans to memory; the spans it finished.
fn captured(work: impl FnOnce()) -> Vec<SpanData> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(span_layer(&provider));
    tracing::subscriber::with_default(subscriber, work);
    provider.force_flush().expect("a flush");
    exporter.get_finished_spans().expect("the spans")
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from(key.to_owned()))
        .map(|kv| kv.value.clone())
}

/// The semantic conventions type the attempt as an int; a string sorts "10" before "2" and
/// cannot be compared in a query.
#[test]
fn a_process_span_records_its_attempt_as_an_integer() {
    let message = TestMessage::raw("order.placed", "{}").attempt(2).build();
    let spans = captured(|| {
        let _span = spans::process(&spans::process_name("inventory"), "inventory", &message);
    });
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(
        attribute(&spans[0], "msgkit.attempt"),
        Some(Value::I64(2)),
        "{:?}",
        spans[0].attributes
    );
}

/// `http.response.status_code` is an int in the HTTP semantic conventions: recorded by the
/// middleware every service's HTTP API goes through.
#[test]
fn an_http_span_records_its_status_code_as_an_integer() {
    let spans = captured(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // A current-thread runtime: the server's tasks run on this thread, under the
        // subscriber `with_default` installed for it.
        runtime.block_on(async {
            let app = axum::Router::new()
                .route(
                    "/things/{id}",
                    axum::routing::post(|| async { axum::http::StatusCode::CREATED }),
                )
                .route_layer(axum::middleware::from_fn(http::trace_request));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a port");
            let addr = listener.local_addr().expect("an address");
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            let response = reqwest::Client::new()
                .post(format!("http://{addr}/things/7"))
                .send()
                .await
                .expect("a response");
            assert_eq!(response.status(), 201);
            server.abort();
        });
    });
    let http = spans
        .iter()
        .find(|span| span.name == "POST /things/{id}")
        .unwrap_or_else(|| panic!("no server span in {spans:?}"));
    assert_eq!(
        attribute(http, "http.response.status_code"),
        Some(Value::I64(201)),
        "{:?}",
        http.attributes
    );
}

/// A component's span lasts as long as the component (the process, for a service): it is not
/// exported, nor is the broker client's connection span, and what opens inside them (the
/// start-up `declare` spans) is a root, exported as soon as it ends.
#[test]
fn a_span_opened_inside_a_component_is_a_root_and_the_component_is_not_exported() {
    let spans = captured(|| {
        let component = tracing::info_span!(target: super::COMPONENT, "consumer", queue = "q");
        let _component = component.enter();
        let connection = tracing::info_span!(target: "lapin::io_loop", "io_loop");
        let _connection = connection.enter();
        let _declare = tracing::info_span!("declare").entered();
    });
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_ref()).collect();
    assert_eq!(names, ["declare"]);
    assert_eq!(
        spans[0].parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
}
