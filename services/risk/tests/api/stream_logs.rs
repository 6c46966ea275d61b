//! Tokens in a stream's query string never reach the logs; the push continues the trace.

use std::sync::{Arc, Mutex};

use msgkit::TraceParent;
use msgkit::auth::Role;

use crate::helpers::{DEADLINE, spawn_app, token};
use crate::sse::SseClient;
use crate::stream_support::{assert_frame_is, open, raise_traced_alert};

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_token_in_the_query_never_reaches_the_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_ansi(false)
        .finish();
    // This test's runtime has one thread: the service's tasks log here too.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;
    let good = token("u-1", Role::User);
    let mut live = SseClient::new(
        open(
            &app,
            &app.address,
            &format!("?access_token={good}&last_event_id=0"),
            None,
            None,
        )
        .await,
    );
    let refused = open(
        &app,
        &app.address,
        "?access_token=v1.secret-garbage.zzz",
        None,
        None,
    )
    .await;
    assert_eq!(refused.status(), 401);
    let trace = TraceParent::new_root();
    let alert = raise_traced_alert(&app, "u-1", Some(trace)).await;
    assert_frame_is(&live.next(DEADLINE).await.expect("the alert"), &alert);
    drop(live);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("access_token=REDACTED"),
        "the query is recorded, redacted"
    );
    assert!(logs.contains("token refused"), "the refusal is logged");
    // The push continues the trace of the request that completed the pattern.
    let pushed = logs
        .lines()
        .find(|line| line.contains("alert pushed"))
        .expect("the push is logged");
    assert!(pushed.contains(&trace.trace_id()), "{pushed}");
    let signature = good.rsplit('.').next().unwrap();
    assert!(
        !logs.contains(signature),
        "a token's signature is in the logs"
    );
    assert!(
        !logs.contains("secret-garbage"),
        "a refused token is in the logs"
    );
}
