//! Logs and traces for every service, set up in one call.
//!
//! - Logs: `RUST_LOG` filtering (default `info`), `LOG_FORMAT=json` for one JSON object per
//!   line. Lines inside a request or a message carry its `trace_id` and `span_id`.
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported over OTLP/HTTP
//!   (batched, from a thread of the SDK's). When it is not, no tracing pipeline exists at all:
//!   the W3C trace context is still carried from hop to hop ([`context`]) so that logs and a
//!   later-enabled collector see one trace per order.

pub mod context;
pub(crate) mod http;
pub(crate) mod spans;
#[cfg(test)]
mod tests;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the trace pipeline alive; dropping it flushes and shuts the exporter down. Hold it
/// in `main` for the life of the process, and drop it only once every component has stopped
/// (as [`crate::service::run`] does): a span that ends after the drop is never exported.
#[must_use = "dropping the guard shuts tracing down"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Export every finished span now.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Install logging, and OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Call once,
/// first thing in `main`; later calls change nothing.
pub fn init(service: &str) -> TelemetryGuard {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
    if endpoint.trim().is_empty() {
        install(service, None::<opentelemetry_otlp::SpanExporter>)
    } else {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => install(service, Some(exporter)),
            Err(error) => {
                let guard = install(service, None::<opentelemetry_otlp::SpanExporter>);
                tracing::error!(%error, "cannot build the OTLP exporter; traces are not exported");
                guard
            }
        }
    }
}

/// [`init`] with a given span exporter (tests use the SDK's in-memory exporter: the layers,
/// the batch processor and the propagation are the same as with OTLP).
pub fn init_with_exporter<E: SpanExporter + 'static>(service: &str, exporter: E) -> TelemetryGuard {
    install(service, Some(exporter))
}

/// The target of a component's span (`consumer{queue}`, `outbox_relay{app_id}`): it gives the
/// component's log lines its name but lives as long as the component, so it is never exported.
/// A span that lasts the whole process would reach a collector only at shutdown (or never, if
/// the process dies), and everything opened inside it (the start-up `declare` spans, a message
/// without a trace context) would hang off a parent the collector does not have; without it
/// they are roots.
pub(crate) const COMPONENT: &str = "msgkit::component";

/// The layer that turns spans into OpenTelemetry spans for `provider`'s exporter.
fn span_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    // The span pipeline has its own filter, so that `RUST_LOG=warn` quiets the logs without
    // cutting traces into pieces. Besides the components' spans, it leaves out the broker
    // client's (lapin's `io_loop` lasts as long as its connection) and the database driver's,
    // as the logs' default filter does.
    let filter = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target(COMPONENT, LevelFilter::OFF)
        .with_target("lapin", LevelFilter::WARN)
        .with_target("sqlx", LevelFilter::WARN);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("msgkit"))
        .with_filter(filter)
}

fn install<E: SpanExporter + 'static>(service: &str, exporter: Option<E>) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed()
    } else {
        // Colours only for a terminal: piped output (make run's prefixes, files) stays plain.
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed()
    }
    .with_filter(filter);

    let provider = exporter.map(|exporter| {
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build()
    });
    let otel = provider.as_ref().map(span_layer);
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if installed {
        context::set_otel_enabled(provider.is_some());
        tracing::debug!(
            service,
            tracing = provider.is_some(),
            "telemetry initialised"
        );
        TelemetryGuard { provider }
    } else {
        TelemetryGuard::default()
    }
}
