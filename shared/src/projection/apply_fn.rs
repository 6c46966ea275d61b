//! The functions a projection calls, and the same with their payload types erased so that
//! apply functions of different payloads share one table (as routes do).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use serde::de::DeserializeOwned;

use super::{Context, ProjectionError};

pub(super) type ApplyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), ProjectionError>> + Send + 'a>>;

/// An async function usable as an apply function: `async fn f(ctx: Context<'_>, payload: P) ->
/// Result<(), ProjectionError>`. Implemented for every such function; not meant to be
/// implemented by hand.
pub trait ApplyFn<'a, P>: Send + Sync + 'static {
    /// The function's future.
    type Future: Future<Output = Result<(), ProjectionError>> + Send + 'a;
    /// Call it.
    fn call(&self, ctx: Context<'a>, payload: P) -> Self::Future;
}

impl<'a, P, F, Fut> ApplyFn<'a, P> for F
where
    F: Fn(Context<'a>, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProjectionError>> + Send + 'a,
{
    type Future = Fut;
    fn call(&self, ctx: Context<'a>, payload: P) -> Fut {
        self(ctx, payload)
    }
}

pub(super) trait ErasedApply: Send + Sync {
    fn call<'a>(&'a self, ctx: Context<'a>) -> ApplyFuture<'a>;
}

pub(super) struct Typed<P, F> {
    apply: F,
    payload: PhantomData<fn() -> P>,
}

impl<P, F> Typed<P, F> {
    pub(super) fn new(apply: F) -> Self {
        Self {
            apply,
            payload: PhantomData,
        }
    }
}

impl<P, F> ErasedApply for Typed<P, F>
where
    P: DeserializeOwned + Send + 'static,
    F: for<'a> ApplyFn<'a, P>,
{
    fn call<'a>(&'a self, ctx: Context<'a>) -> ApplyFuture<'a> {
        match serde_json::from_slice::<P>(&ctx.event.body) {
            Ok(payload) => Box::pin(self.apply.call(ctx, payload)),
            Err(source) => Box::pin(std::future::ready(Err(ProjectionError::Decode {
                event_type: ctx.event.event_type.clone(),
                message_id: ctx.event.message_id.clone(),
                source,
            }))),
        }
    }
}
