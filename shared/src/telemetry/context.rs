//! The trace context of the work in progress (an HTTP request, a message being handled), and
//! how it is continued across hops.
//!
//! With an OpenTelemetry pipeline ([`super::init`] with an endpoint), the context is the
//! current span's: exported spans and propagated `traceparent`s agree, so collectors show the
//! parent/child tree. Without one, the kit keeps the context itself (a task-local), so every
//! hop still continues the same trace id at no cost beyond a few bytes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::trace_context::TraceParent;

static OTEL_ENABLED: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    static CURRENT: TraceParent;
}

pub(super) fn set_otel_enabled(enabled: bool) {
    OTEL_ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether spans are exported (an OpenTelemetry pipeline is installed).
pub fn otel_enabled() -> bool {
    OTEL_ENABLED.load(Ordering::Relaxed)
}

/// Make `span` continue `parent` (or start a trace), record its ids on the span (`trace_id`
/// and `span_id` fields, which then appear on every log line inside it), and return the trace
/// context of the work the span stands for. Call before the span is first entered.
pub fn continue_trace(span: &tracing::Span, parent: Option<TraceParent>) -> TraceParent {
    let trace = if otel_enabled() {
        if let Some(parent) = parent {
            let _ = span.set_parent(
                opentelemetry::Context::new().with_remote_span_context(span_context(&parent)),
            );
        }
        from_span_context(span.context().span().span_context())
            .unwrap_or_else(|| child_or_root(parent))
    } else {
        child_or_root(parent)
    };
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    span.record("span_id", tracing::field::display(trace.span_id()));
    trace
}

/// The trace context of the work in progress, if any.
pub fn current() -> Option<TraceParent> {
    if otel_enabled() {
        let context = tracing::Span::current().context();
        if let Some(trace) = from_span_context(context.span().span_context()) {
            return Some(trace);
        }
    }
    CURRENT.try_with(|trace| *trace).ok()
}

/// Run `work` as the unit of work `trace` (the kit-kept context when no pipeline exports).
pub async fn scope<F: Future>(trace: TraceParent, work: F) -> F::Output {
    CURRENT.scope(trace, work).await
}

fn child_or_root(parent: Option<TraceParent>) -> TraceParent {
    parent
        .map(|parent| parent.child())
        .unwrap_or_else(TraceParent::new_root)
}

fn span_context(parent: &TraceParent) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(parent.trace_id_bytes()),
        SpanId::from_bytes(parent.span_id_bytes()),
        if parent.sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    )
}

fn from_span_context(context: &SpanContext) -> Option<TraceParent> {
    context.is_valid().then(|| {
        TraceParent::from_parts(
            context.trace_id().to_bytes(),
            context.span_id().to_bytes(),
            context.trace_flags().to_u8(),
        )
    })
}
