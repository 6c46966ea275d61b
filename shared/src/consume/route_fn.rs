//! The functions routes call, and the same with their payload types erased so that routes of
//! different payloads share one table.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use serde::de::DeserializeOwned;

use super::context::{Batch, Context};
use super::handler::HandlerError;
use super::lateness::Lateness;
use crate::event::EventType;
use crate::timer::Fired;

pub(super) type RouteFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// An async function usable as a route: `async fn f(ctx: Context<'_, S>, payload: P) ->
/// Result<(), HandlerError>`. Implemented for every such function; not meant to be implemented
/// by hand.
pub trait RouteFn<'a, S: 'a, P>: Send + Sync + 'static {
    /// The function's future.
    type Future: Future<Output = Result<(), HandlerError>> + Send + 'a;
    /// Call it.
    fn call(&self, ctx: Context<'a, S>, payload: P) -> Self::Future;
}

impl<'a, S: 'a, P, F, Fut> RouteFn<'a, S, P> for F
where
    F: Fn(Context<'a, S>, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'a,
{
    type Future = Fut;
    fn call(&self, ctx: Context<'a, S>, payload: P) -> Fut {
        self(ctx, payload)
    }
}

/// An async function usable as a batch preparation: `async fn f(batch: Batch<'_, S>) ->
/// Result<(), HandlerError>`.
pub trait BatchFn<'a, S: 'a>: Send + Sync + 'static {
    /// The function's future.
    type Future: Future<Output = Result<(), HandlerError>> + Send + 'a;
    /// Call it.
    fn call(&self, batch: Batch<'a, S>) -> Self::Future;
}

impl<'a, S: 'a, F, Fut> BatchFn<'a, S> for F
where
    F: Fn(Batch<'a, S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'a,
{
    type Future = Fut;
    fn call(&self, batch: Batch<'a, S>) -> Fut {
        self(batch)
    }
}

/// A route with its payload type erased, so that routes of different payloads share a table.
pub(super) trait ErasedRoute<S>: Send + Sync {
    fn call<'a>(&'a self, ctx: Context<'a, S>) -> RouteFuture<'a>;
}

pub(super) struct Typed<S, P, F> {
    pub(super) event: EventType<P>,
    pub(super) handler: F,
    pub(super) late: Option<Lateness<S, P>>,
}

impl<S, P, F> ErasedRoute<S> for Typed<S, P, F>
where
    S: Send + Sync + 'static,
    P: DeserializeOwned + Send + 'static,
    F: for<'a> RouteFn<'a, S, P>,
{
    fn call<'a>(&'a self, mut ctx: Context<'a, S>) -> RouteFuture<'a> {
        let payload = match ctx.message.decode::<P>() {
            Ok(payload) => payload,
            Err(error) => return Box::pin(std::future::ready(Err(error))),
        };
        if let Some(time) = self.event.event_time_of(&payload) {
            ctx.event_time = time;
        }
        let Some(late) = &self.late else {
            return Box::pin(self.handler.call(ctx, payload));
        };
        Box::pin(async move {
            if late.judge(&mut ctx).await? {
                return late.on_late.call(ctx, payload).await;
            }
            self.handler.call(ctx, payload).await
        })
    }
}

/// A timer route: the message decoded into a [`Fired`] timer, handled now by the consumer's clock.
pub(super) struct TimerRoute<P, F> {
    pub(super) handler: F,
    pub(super) payload: PhantomData<fn() -> P>,
}

impl<S, P, F> ErasedRoute<S> for TimerRoute<P, F>
where
    S: Send + Sync + 'static,
    P: DeserializeOwned + Send + 'static,
    F: for<'a> RouteFn<'a, S, Fired<P>>,
{
    fn call<'a>(&'a self, ctx: Context<'a, S>) -> RouteFuture<'a> {
        match Fired::decode(ctx.message, ctx.scope.clock.now()) {
            Ok(fired) => Box::pin(self.handler.call(ctx, fired)),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }
}

pub(super) trait ErasedBatch<S>: Send + Sync {
    fn call<'a>(&'a self, batch: Batch<'a, S>) -> RouteFuture<'a>;
}

impl<S, F> ErasedBatch<S> for F
where
    S: Send + Sync + 'static,
    F: for<'a> BatchFn<'a, S>,
{
    fn call<'a>(&'a self, batch: Batch<'a, S>) -> RouteFuture<'a> {
        Box::pin(BatchFn::call(self, batch))
    }
}
