//! A route's allowed lateness: an event older than its key's watermark minus the lateness goes
//! to the route's late hook instead of its handler, and is counted (see [`crate::event_time`]).

use std::time::Duration;

use super::context::Context;
use super::handler::HandlerError;
use super::route_fn::{RouteFn, RouteFuture};
use crate::event_time;

/// A late hook with its payload type kept, its future boxed.
pub(super) trait PayloadRoute<S, P>: Send + Sync {
    fn call<'a>(&'a self, ctx: Context<'a, S>, payload: P) -> RouteFuture<'a>;
}

impl<S, P, F> PayloadRoute<S, P> for F
where
    S: Send + Sync + 'static,
    P: Send + 'static,
    F: for<'a> RouteFn<'a, S, P>,
{
    fn call<'a>(&'a self, ctx: Context<'a, S>, payload: P) -> RouteFuture<'a> {
        Box::pin(RouteFn::call(self, ctx, payload))
    }
}

/// How late a route's events may be, and what becomes of those later than that.
pub(super) struct Lateness<S, P> {
    pub(super) allowed: Duration,
    pub(super) on_late: Box<dyn PayloadRoute<S, P>>,
}

impl<S, P> Lateness<S, P> {
    /// Raise the key's watermark to this event's time, and tell whether the event is late:
    /// older than the watermark as it was, minus the allowed lateness. A late event is counted
    /// and logged here; the caller hands it to the late hook.
    pub(super) async fn judge(&self, ctx: &mut Context<'_, S>) -> Result<bool, HandlerError> {
        let (key, event_time) = (ctx.correlation_id(), ctx.event_time());
        let previous = event_time::advance(ctx.tx, ctx.scope, key, event_time).await?;
        let allowed = chrono::Duration::from_std(self.allowed).unwrap_or(chrono::Duration::MAX);
        let late = previous.is_some_and(|watermark| {
            watermark
                .checked_sub_signed(allowed)
                .is_some_and(|limit| event_time < limit)
        });
        if late {
            if let Some(metrics) = &ctx.scope.metrics {
                metrics.late_event(ctx.message_type());
            }
            tracing::info!(
                key,
                %event_time,
                watermark = ?previous,
                allowed = ?self.allowed,
                "late event; handing it to the route's late hook"
            );
        }
        Ok(late)
    }
}
