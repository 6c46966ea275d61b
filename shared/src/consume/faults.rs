//! Fault injection for tests and chaos runs. Off by default; read with the rest of a
//! consumer's settings, so `<QUEUE>_FAULT_*` names one consumer and `FAULT_*` every consumer of
//! the process.
//!
//! | variable | effect |
//! | --- | --- |
//! | `FAULT_TRANSIENT_RATE` | fraction (0.0-1.0) of attempts that fail as transient |
//! | `FAULT_FAIL_FIRST_ATTEMPTS` | the first N attempts of every message fail as transient |
//! | `FAULT_DELAY_MS` | extra processing time per message |
//! | `FAULT_POISON_MARKER` | a message whose body contains this text is poison |
//! | `FAULT_ACK_BEFORE_COMMIT` | `1`: ack before handling — a deliberately broken consumer |
//! | `FAULT_DROP_TYPE` | acknowledge messages of this type without handling them (no inbox row, no effect) — a deliberately broken consumer |
//!
//! A process that reads any of these logs a warning at start-up, so a forgotten setting in
//! production is visible.

use std::future::Future;
use std::time::Duration;

use sqlx::PgConnection;

use super::handler::{FailureKind, Handler, HandlerError};
use super::message::IncomingMessage;
use super::retry::random_unit;
use crate::config::{ConfigError, Lookup};

/// Faults to inject before the handler runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Fraction of attempts that fail as transient.
    pub transient_rate: f64,
    /// The first N attempts of each message fail as transient.
    pub fail_first_attempts: u32,
    /// Extra processing time per message.
    pub delay: Duration,
    /// Body text that makes a message poison.
    pub poison_marker: Option<String>,
    /// Acknowledge each delivery before handling it: deliberately breaks the kit's guarantee
    /// (a crash mid-handling loses the message), so that the chaos runner can prove it
    /// catches a broken consumer. Never for production.
    pub ack_before_commit: bool,
    /// Acknowledge every message of this type without handling it: deliberately loses one
    /// event type, so that the chaos runner can prove its kit invariant catches a consumer
    /// that never handles a type it is bound to. Never for production.
    pub drop_type: Option<String>,
}

impl Faults {
    /// These faults with what `config` sets of `FAULT_*` (see the module docs); a setting
    /// left unset keeps its value here (off by default).
    pub fn configured(self, config: &impl Lookup) -> Result<Self, ConfigError> {
        let faults = Self {
            transient_rate: config
                .parse("FAULT_TRANSIENT_RATE", self.transient_rate)?
                .clamp(0.0, 1.0),
            fail_first_attempts: config
                .parse("FAULT_FAIL_FIRST_ATTEMPTS", self.fail_first_attempts)?,
            delay: config.millis("FAULT_DELAY_MS", self.delay)?,
            poison_marker: config
                .get("FAULT_POISON_MARKER")
                .map(str::to_owned)
                .or(self.poison_marker),
            ack_before_commit: config
                .parse_opt::<u8>("FAULT_ACK_BEFORE_COMMIT")?
                .map_or(self.ack_before_commit, |flag| flag == 1),
            drop_type: config
                .get("FAULT_DROP_TYPE")
                .map(str::to_owned)
                .or(self.drop_type),
        };
        if faults.is_active() {
            tracing::warn!(?faults, "FAULT INJECTION IS ON");
        }
        Ok(faults)
    }

    /// Whether any fault is configured.
    pub fn is_active(&self) -> bool {
        *self != Self::default()
    }

    /// Inject the configured faults for this attempt.
    pub(crate) async fn apply(&self, message: &IncomingMessage) -> Result<(), HandlerError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(marker) = &self.poison_marker
            && contains(message.body(), marker.as_bytes())
        {
            return Err(HandlerError::new(
                FailureKind::Poison,
                "msgkit::faults::InjectedPoison",
                format!("injected poison: body contains {marker:?}"),
            ));
        }
        if message.attempt() <= self.fail_first_attempts {
            return Err(HandlerError::new(
                FailureKind::Transient,
                "msgkit::faults::InjectedFailure",
                format!("injected failure of attempt {}", message.attempt()),
            ));
        }
        if self.transient_rate > 0.0 && random_unit() < self.transient_rate {
            return Err(HandlerError::new(
                FailureKind::Transient,
                "msgkit::faults::InjectedFailure",
                "injected transient failure",
            ));
        }
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A [`Handler`] that injects the configured faults before the one it wraps. The consumer adds
/// it only when [`Faults::around`] finds a fault to inject, so a production consumer runs its
/// handler bare.
pub(crate) struct FaultLayer<H> {
    faults: Faults,
    inner: H,
}

impl Faults {
    /// `handler` wrapped in a [`FaultLayer`] if any fault is to be injected before it, else
    /// `Err(handler)` unchanged. [`Faults::ack_before_commit`] is not the handler's business:
    /// the session decides how it acks.
    pub(crate) fn around<H: Handler>(&self, handler: H) -> Result<FaultLayer<H>, H> {
        let injects = Self {
            ack_before_commit: false,
            ..self.clone()
        }
        .is_active();
        if injects {
            Ok(FaultLayer {
                faults: self.clone(),
                inner: handler,
            })
        } else {
            Err(handler)
        }
    }
}

impl<H: Handler> Handler for FaultLayer<H> {
    async fn handle(
        &self,
        message: &IncomingMessage,
        tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        self.faults.apply(message).await?;
        self.inner.handle(message, tx).await
    }

    fn before_batch(
        &self,
        messages: &[&IncomingMessage],
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.inner.before_batch(messages, tx)
    }

    fn configure(&mut self, setup: &super::handler::ConsumerSetup<'_>) {
        self.inner.configure(setup);
    }

    fn handles_timers(&self) -> bool {
        self.inner.handles_timers()
    }

    fn key_order(&self) -> bool {
        self.inner.key_order()
    }

    fn late_event_types(&self) -> Vec<&'static str> {
        self.inner.late_event_types()
    }
}
