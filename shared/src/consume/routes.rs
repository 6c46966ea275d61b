//! Typed routes: a consumer's handlers declared once, one line per event type, each an async
//! function of a [`Context`] and the decoded payload.
//!
//! ```
//! use msgkit::EventType;
//! use msgkit::consume::{Context, HandlerError, Routes};
//! # #[derive(serde::Serialize, serde::Deserialize)] pub struct OrderPlaced { order_id: String }
//! # #[derive(serde::Serialize, serde::Deserialize)] pub struct Reserved { order_id: String }
//! const ORDER_PLACED: EventType<OrderPlaced> = EventType::new("order.placed");
//! const RESERVED: EventType<Reserved> = EventType::new("inventory.reserved");
//!
//! async fn reserve(mut ctx: Context<'_>, order: OrderPlaced) -> Result<(), HandlerError> {
//!     sqlx::query("UPDATE stock SET ...").execute(ctx.tx()).await?; // a database error: retry
//!     ctx.publish(RESERVED, &Reserved { order_id: order.order_id }).await?;
//!     Ok(())
//! }
//!
//! let routes = Routes::new().route(ORDER_PLACED, reserve);
//! assert_eq!(routes.event_types().collect::<Vec<_>>(), ["order.placed"]);
//! ```
//!
//! A body that does not decode into the route's payload is poison (dead-lettered at once); a
//! message whose type has no route meets the consumer's [`Unrouted`] policy. Fired timers are
//! routed the same way, with [`Routes::on_timer`] (see [`crate::timer`]).

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use sqlx::PgConnection;

use super::context::{Batch, Context};
use super::handler::{ConsumerSetup, FailureKind, Handler, HandlerError};
use super::lateness::Lateness;
use super::message::IncomingMessage;
use super::route_fn::{BatchFn, ErasedBatch, ErasedRoute, RouteFn, TimerRoute, Typed};
use crate::event::EventType;
use crate::state::StateScope;
use crate::timer::{Fired, TimerType};

/// What becomes of a message whose type has no route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unrouted {
    /// Dead-letter it as poison (`x-exception-type: msgkit::Unrouted`), where an operator sees
    /// it and can replay it once a route exists. The default: a message bound to the queue but
    /// not handled is a deployment mistake, not something to lose.
    #[default]
    DeadLetter,
    /// Acknowledge it without effect (logged): for queues that knowingly receive more types
    /// than they handle.
    Acknowledge,
}

/// The exception type recorded on a dead-lettered unrouted message.
pub const UNROUTED_ERROR_TYPE: &str = "msgkit::Unrouted";

/// One route: the message type it handles, the event type when it is one (timers are not: they
/// come to the queue by name, through no binding), and the handler.
struct Route<S> {
    message_type: String,
    event: Option<&'static str>,
    handler: Box<dyn ErasedRoute<S>>,
}

/// A consumer's handlers, one per event type, sharing a state `S`. It is the [`Handler`] the
/// kit runs; [`crate::service::Service::consume`] also checks that the routes and the queue's
/// bindings agree before the service starts.
pub struct Routes<S = ()> {
    state: S,
    // A handful of routes per queue: a linear scan beats hashing the type on every message.
    routes: Vec<Route<S>>,
    duplicates: Vec<String>,
    before_batch: Option<Box<dyn ErasedBatch<S>>>,
    unrouted: Unrouted,
    /// Whether sequenced messages are applied in their key's order.
    key_order: bool,
    /// Event types routed with an allowed lateness.
    late: Vec<&'static str>,
    /// Whose keyed state the handlers see: set by the consumer ([`Handler::configure`]).
    scope: StateScope,
}

impl Routes<()> {
    /// No routes yet, no state.
    pub fn new() -> Self {
        Self::with_state(())
    }
}

impl Default for Routes<()> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync + 'static> Routes<S> {
    /// No routes yet; every handler sees `state` through [`Context::state`].
    pub fn with_state(state: S) -> Self {
        Self {
            state,
            routes: Vec::new(),
            duplicates: Vec::new(),
            before_batch: None,
            unrouted: Unrouted::default(),
            key_order: false,
            late: Vec::new(),
            scope: StateScope::default(),
        }
    }

    /// Handle `event` with `handler`. One function may serve several events (its context tells
    /// which); an event routed twice is refused when the service starts.
    pub fn route<P, F>(self, event: EventType<P>, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: for<'a> RouteFn<'a, S, P>,
    {
        self.add_event(Typed {
            event,
            handler,
            late: None,
        })
    }

    /// Handle `event` with `handler`, judging each event by its event time against its key's
    /// watermark (the largest event time seen for the message's correlation id): an event older
    /// than the watermark minus `allowed` goes to `on_late` instead, and is counted in
    /// `msgkit_late_events_total` (see [`crate::event_time`]). Events are never retracted: an
    /// on-time event handled before a later-arriving older one stays handled.
    pub fn route_with_lateness<P, F, L>(
        mut self,
        event: EventType<P>,
        allowed: Duration,
        handler: F,
        on_late: L,
    ) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: for<'a> RouteFn<'a, S, P>,
        L: for<'a> RouteFn<'a, S, P>,
    {
        let late = Lateness {
            allowed,
            on_late: Box::new(on_late),
        };
        self.late.push(event.name());
        self.add_event(Typed {
            event,
            handler,
            late: Some(late),
        })
    }

    fn add_event<P, F>(self, typed: Typed<S, P, F>) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: for<'a> RouteFn<'a, S, P>,
    {
        let name = typed.event.name();
        self.add(name.to_owned(), Some(name), Box::new(typed))
    }

    /// Handle `timer` when it fires with `handler`, an `async fn(Context<'_, S>, Fired<P>)`.
    /// A fired timer reaches the consumer's queue by name, so it needs no binding.
    pub fn on_timer<P, F>(self, timer: TimerType<P>, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: for<'a> RouteFn<'a, S, Fired<P>>,
    {
        let route = TimerRoute {
            handler,
            payload: PhantomData,
        };
        self.add(timer.message_type(), None, Box::new(route))
    }

    fn add(
        mut self,
        message_type: String,
        event: Option<&'static str>,
        handler: Box<dyn ErasedRoute<S>>,
    ) -> Self {
        if self.find(&message_type).is_some() {
            self.duplicates.push(message_type.clone());
        }
        self.routes.push(Route {
            message_type,
            event,
            handler,
        });
        self
    }

    /// Run `prepare` once a batch's transaction has begun, before any of its messages (for
    /// consumers whose batch is above 1): the place to take locks shared across correlations,
    /// in one global order, so that concurrent batches cannot deadlock (see
    /// [`Handler::before_batch`]).
    pub fn before_batch<F>(mut self, prepare: F) -> Self
    where
        F: for<'a> BatchFn<'a, S>,
    {
        self.before_batch = Some(Box::new(prepare));
        self
    }

    /// What becomes of a message whose type has no route (default: dead-letter).
    pub fn unrouted(mut self, policy: Unrouted) -> Self {
        self.unrouted = policy;
        self
    }

    /// Apply each key's sequenced events (event types declared with
    /// [`EventType::in_sequence`]) in the order they were written, through retries: while one
    /// waits for a retry its key's later events wait too, parked, and other keys flow (see
    /// [`crate::key_order`]). The consumer then handles one message per transaction, and its
    /// service must keep the inbox and run the outbox relay. Messages without a sequence are
    /// handled as they come.
    pub fn in_key_order(mut self) -> Self {
        self.key_order = true;
        self
    }

    /// The routed event types, in the order they were added (timers are not events).
    pub fn event_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.iter().filter_map(|route| route.event)
    }

    /// The message types of the routed timers (`msgkit.timer.<name>`).
    pub fn timer_types(&self) -> impl Iterator<Item = &str> + '_ {
        self.routes
            .iter()
            .filter(|route| route.event.is_none())
            .map(|route| route.message_type.as_str())
    }

    /// Event and timer message types routed more than once.
    pub(crate) fn duplicates(&self) -> &[String] {
        &self.duplicates
    }

    fn find(&self, message_type: &str) -> Option<&dyn ErasedRoute<S>> {
        self.routes
            .iter()
            .find(|route| route.message_type == message_type)
            .map(|route| route.handler.as_ref())
    }
}

impl<S: Send + Sync + 'static> Handler for Routes<S> {
    async fn handle(
        &self,
        message: &IncomingMessage,
        tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        let Some(route) = self.find(message.message_type()) else {
            return match self.unrouted {
                Unrouted::DeadLetter => Err(HandlerError::new(
                    FailureKind::Poison,
                    UNROUTED_ERROR_TYPE,
                    format!("no route for message type {:?}", message.message_type()),
                )),
                Unrouted::Acknowledge => {
                    tracing::warn!(
                        message_type = message.message_type(),
                        "no route for this message type; acknowledged without effect"
                    );
                    Ok(())
                }
            };
        };
        let ctx = Context {
            message,
            tx,
            state: &self.state,
            scope: &self.scope,
            event_time: message
                .created_at()
                .unwrap_or_else(|| self.scope.clock.now()),
        };
        route.call(ctx).await
    }

    async fn before_batch(
        &self,
        messages: &[&IncomingMessage],
        tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        let Some(prepare) = &self.before_batch else {
            return Ok(());
        };
        let batch = Batch {
            messages,
            tx,
            state: &self.state,
            scope: &self.scope,
        };
        prepare.call(batch).await
    }

    fn configure(&mut self, setup: &ConsumerSetup<'_>) {
        let config = setup.config;
        self.scope = StateScope {
            consumer: config.name.clone(),
            clock: config.clock.clone(),
            entry_limit: config.state_entry_limit,
            metrics: Some(setup.metrics.clone()),
            timer_poll_interval: config.timer_poll_interval,
        };
    }

    fn handles_timers(&self) -> bool {
        self.timer_types().next().is_some()
    }

    fn key_order(&self) -> bool {
        self.key_order
    }

    fn late_event_types(&self) -> Vec<&'static str> {
        self.late.clone()
    }
}
