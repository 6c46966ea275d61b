//! The gateway's callbacks, as the simulator plans them: after each charge or decline it owes
//! the merchant a signed `POST` of a [`CallbackBody`], after a delay with jitter. The plan of
//! each callback (its body, when it is due, and the faults drawn for it) is stored with the
//! charge, in the same statement ([`crate::gateway`]); [`crate::callback_sender`] sends it.
//!
//! | variable | default | effect |
//! | --- | --- | --- |
//! | `GATEWAY_CALLBACK_SECRET` | unset | HMAC-SHA256 secret, at least 32 bytes; unset: no callbacks are planned and `/payments/callback` answers 503 |
//! | `GATEWAY_CALLBACK_URL` | the service's own `http://<addr>/payments/callback` | where callbacks are sent |
//! | `GATEWAY_CALLBACK_DELAY_MS` | 500 | time from the charge to its callback |
//! | `GATEWAY_CALLBACK_JITTER_MS` | 250 | the delay varies uniformly by ± this |
//! | `GATEWAY_CALLBACK_RETRY_MS` | 200 | first wait after a failed send; doubles up to 30 s, forever |
//! | `GATEWAY_CALLBACK_LOSS_RATE` | 0 | fault: fraction of callbacks never sent (stored with `lost = true`) |
//! | `GATEWAY_CALLBACK_DUPLICATE_RATE` | 0 | fault: fraction of callbacks sent twice (same id and body) |
//! | `GATEWAY_CALLBACK_REORDER_MS` | 0 | fault: hold callbacks until the next multiple of this many ms and send each held batch newest charge first |
//! | `GATEWAY_CALLBACK_REORDER` | false | fault: `true` is `GATEWAY_CALLBACK_REORDER_MS` of twice the longest delay (at least 1000) |
//! | `GATEWAY_CALLBACK_WRONG_AMOUNT_RATE` | 0 | fault: fraction of callbacks reporting 1 to 100 cents more than was charged |

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::GatewayOutcome;
use msgkit::clock::Clock;
use msgkit::config::{ConfigError, Lookup};
use msgkit::consume::random_unit;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::metrics::PaymentMetrics;
use crate::signature::CallbackKey;

/// What the gateway posts: the body its signature covers. Fields it may add later are
/// ignored by the receiver, as a merchant must.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackBody {
    /// Unique per callback; the same on a duplicate.
    pub callback_id: String,
    /// The merchant's reference the charge was made with.
    pub order_id: Uuid,
    /// The gateway's charge id, when it took one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_id: Option<String>,
    /// Charged or declined.
    pub outcome: GatewayOutcome,
    /// The amount, in cents.
    pub amount_cents: i64,
}

/// The injectable callback faults, all off by default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallbackFaults {
    /// Fraction of callbacks never sent.
    pub loss_rate: f64,
    /// Fraction of callbacks sent twice.
    pub duplicate_rate: f64,
    /// Hold callbacks to the next multiple of this and send each batch newest first; zero: off.
    pub reorder: Duration,
    /// Fraction of callbacks reporting a wrong amount.
    pub wrong_amount_rate: f64,
}

impl CallbackFaults {
    /// Whether any fault is on.
    pub fn is_active(&self) -> bool {
        self.loss_rate > 0.0
            || self.duplicate_rate > 0.0
            || !self.reorder.is_zero()
            || self.wrong_amount_rate > 0.0
    }
}

/// How the gateway calls back.
#[derive(Clone, Debug)]
pub struct CallbackSettings {
    /// The signing secret; `None`: callbacks off.
    pub key: Option<CallbackKey>,
    /// Where to send them; `None`: the service's own address.
    pub url: Option<String>,
    /// Time from the charge to its callback.
    pub delay: Duration,
    /// ± spread of the delay.
    pub jitter: Duration,
    /// First wait after a failed send (doubling up to [`MAX_RETRY_DELAY`]).
    pub retry: Duration,
    /// Injected faults.
    pub faults: CallbackFaults,
}

/// The longest wait between two attempts to send one callback.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

impl Default for CallbackSettings {
    fn default() -> Self {
        Self {
            key: None,
            url: None,
            delay: Duration::from_millis(500),
            jitter: Duration::from_millis(250),
            retry: Duration::from_millis(200),
            faults: CallbackFaults::default(),
        }
    }
}

/// The reorder fault's window: `GATEWAY_CALLBACK_REORDER_MS`, else, when
/// `GATEWAY_CALLBACK_REORDER` is `true` or `1`, twice the longest delay (at least 1 s), so
/// that callbacks of charges within it come due together.
fn reorder_window(
    config: &impl Lookup,
    delay: Duration,
    jitter: Duration,
) -> Result<Duration, ConfigError> {
    if let Some(window) = config.millis_opt("GATEWAY_CALLBACK_REORDER_MS")? {
        return Ok(window);
    }
    let on = match config.get("GATEWAY_CALLBACK_REORDER").map(str::trim) {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(ConfigError {
                name: "GATEWAY_CALLBACK_REORDER".to_owned(),
                value: other.to_owned(),
                reason: "must be true, false, 1 or 0".to_owned(),
            });
        }
    };
    Ok(if on {
        ((delay + jitter) * 2).max(Duration::from_secs(1))
    } else {
        Duration::ZERO
    })
}

/// A rate setting: a fraction from 0 to 1.
fn rate(config: &impl Lookup, name: &str) -> Result<f64, ConfigError> {
    Ok(config.parse(name, 0.0_f64)?.clamp(0.0, 1.0))
}

impl CallbackSettings {
    /// From `GATEWAY_CALLBACK_*` (see the module docs); warns when faults are on.
    pub fn from_config(config: &impl Lookup) -> Result<Self, ConfigError> {
        let d = Self::default();
        let key = config
            .get("GATEWAY_CALLBACK_SECRET")
            .map(|secret| {
                CallbackKey::new(secret).map_err(|error| ConfigError {
                    name: "GATEWAY_CALLBACK_SECRET".to_owned(),
                    value: "<redacted>".to_owned(),
                    reason: error.to_string(),
                })
            })
            .transpose()?;
        let delay = config.millis("GATEWAY_CALLBACK_DELAY_MS", d.delay)?;
        let jitter = config.millis("GATEWAY_CALLBACK_JITTER_MS", d.jitter)?;
        let settings = Self {
            key,
            url: config.get("GATEWAY_CALLBACK_URL").map(str::to_owned),
            delay,
            jitter,
            retry: config.millis("GATEWAY_CALLBACK_RETRY_MS", d.retry)?,
            faults: CallbackFaults {
                loss_rate: rate(config, "GATEWAY_CALLBACK_LOSS_RATE")?,
                duplicate_rate: rate(config, "GATEWAY_CALLBACK_DUPLICATE_RATE")?,
                reorder: reorder_window(config, delay, jitter)?,
                wrong_amount_rate: rate(config, "GATEWAY_CALLBACK_WRONG_AMOUNT_RATE")?,
            },
        };
        if settings.key.is_none() {
            tracing::warn!(
                "GATEWAY_CALLBACK_SECRET is not set: the gateway simulator sends no callbacks \
                 and /payments/callback refuses every request"
            );
        }
        if settings.faults.is_active() {
            tracing::warn!(faults = ?settings.faults, "GATEWAY CALLBACK FAULT INJECTION IS ON");
        }
        Ok(settings)
    }
}

/// One callback as planned when its charge is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedCallback {
    /// What is sent, and its exact bytes.
    pub body: CallbackBody,
    /// `body` serialised: the bytes signed and sent.
    pub json: String,
    /// When it is first due.
    pub due_at: DateTime<Utc>,
    /// Sends per attempt (2 when duplicated).
    pub copies: i32,
    /// Never sent (the loss fault).
    pub lost: bool,
}

/// What the simulator needs to plan callbacks, and to wake their sender.
#[derive(Clone, Debug)]
pub struct CallbackPlanner {
    settings: CallbackSettings,
    clock: Clock,
    wake: Arc<Notify>,
    metrics: PaymentMetrics,
}

impl CallbackPlanner {
    /// Plans with `settings` by `clock`; `wake` is notified of each planned callback.
    pub fn new(
        settings: CallbackSettings,
        clock: Clock,
        wake: Arc<Notify>,
        metrics: PaymentMetrics,
    ) -> Self {
        Self {
            settings,
            clock,
            wake,
            metrics,
        }
    }

    /// `planned` was stored with its charge: count a loss, or wake the sender.
    pub fn stored(&self, planned: &PlannedCallback) {
        if planned.lost {
            self.metrics.lost();
            tracing::warn!(order_id = %planned.body.order_id, callback_id = %planned.body.callback_id,
                "callback lost (GATEWAY_CALLBACK_LOSS_RATE): it will never be sent");
        } else {
            self.wake.notify_one();
        }
    }

    /// The callback owed for a charge of `amount_cents` for `order_id`, faults drawn.
    pub fn plan(
        &self,
        order_id: Uuid,
        charge_id: Option<String>,
        outcome: GatewayOutcome,
        amount_cents: i64,
    ) -> Result<PlannedCallback, serde_json::Error> {
        let faults = &self.settings.faults;
        let drawn = |rate: f64| rate > 0.0 && random_unit() < rate;
        let amount_cents = if drawn(faults.wrong_amount_rate) {
            amount_cents.saturating_add(1 + (random_unit() * 100.0) as i64 % 100)
        } else {
            amount_cents
        };
        let body = CallbackBody {
            callback_id: format!("cb_{}", Uuid::new_v4().simple()),
            order_id,
            charge_id,
            outcome,
            amount_cents,
        };
        Ok(PlannedCallback {
            json: serde_json::to_string(&body)?,
            body,
            due_at: due_at(
                self.clock.now(),
                self.settings.delay,
                self.settings.jitter,
                faults.reorder,
                random_unit(),
            ),
            copies: if drawn(faults.duplicate_rate) { 2 } else { 1 },
            lost: drawn(faults.loss_rate),
        })
    }
}

/// `now + delay ± jitter` (`draw` uniform in [0, 1) picks where in the spread), held to the
/// next multiple of `reorder` when that fault is on, so that callbacks of charges close
/// together come due at one instant and are sent newest first.
pub fn due_at(
    now: DateTime<Utc>,
    delay: Duration,
    jitter: Duration,
    reorder: Duration,
    draw: f64,
) -> DateTime<Utc> {
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let spread = ((draw * 2.0 - 1.0) * millis(jitter) as f64) as i64;
    let mut due = now.timestamp_millis() + millis(delay).saturating_add(spread).max(0);
    let window = millis(reorder);
    if window > 0 {
        due = (due / window + 1).saturating_mul(window);
    }
    DateTime::from_timestamp_millis(due).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(millis).unwrap()
    }

    #[test]
    fn the_delay_is_spread_by_the_jitter_either_way() {
        let (delay, jitter) = (Duration::from_millis(500), Duration::from_millis(250));
        let due = |draw| due_at(at(10_000), delay, jitter, Duration::ZERO, draw);
        assert_eq!(due(0.0), at(10_250));
        assert_eq!(due(0.5), at(10_500));
        assert_eq!(due(0.999_999), at(10_749));
        let late_jitter = due_at(at(10_000), Duration::ZERO, jitter, Duration::ZERO, 0.0);
        assert_eq!(late_jitter, at(10_000), "never before the charge");
    }

    #[test]
    fn reordering_holds_charges_close_together_to_one_instant() {
        let window = Duration::from_millis(1_000);
        let due = |now| due_at(at(now), Duration::ZERO, Duration::ZERO, window, 0.5);
        assert_eq!(due(10_100), at(11_000));
        assert_eq!(due(10_900), at(11_000));
        assert_eq!(due(11_000), at(12_000));
    }

    #[test]
    fn faults_are_off_unless_set() {
        let settings = CallbackSettings::from_config(&msgkit::config::ConfigSource::default());
        let settings = settings.unwrap();
        assert!(!settings.faults.is_active());
        assert!(settings.key.is_none());
        let short = msgkit::config::ConfigSource::from_pairs([("GATEWAY_CALLBACK_SECRET", "x")]);
        let error = CallbackSettings::from_config(&short).unwrap_err();
        assert!(!error.to_string().contains("\"x\""), "{error}");
    }

    #[test]
    fn reorder_on_holds_for_twice_the_longest_delay_unless_a_window_is_given() {
        use msgkit::config::ConfigSource;
        let window = |pairs: &[(&str, &str)]| {
            let source = ConfigSource::from_pairs(pairs.iter().copied());
            CallbackSettings::from_config(&source)
                .unwrap()
                .faults
                .reorder
        };
        assert_eq!(
            window(&[("GATEWAY_CALLBACK_REORDER", "true")]),
            Duration::from_millis(1_500)
        );
        assert_eq!(window(&[("GATEWAY_CALLBACK_REORDER", "0")]), Duration::ZERO);
        let both = [
            ("GATEWAY_CALLBACK_REORDER", "1"),
            ("GATEWAY_CALLBACK_REORDER_MS", "300"),
        ];
        assert_eq!(window(&both), Duration::from_millis(300));
        let bad = ConfigSource::from_pairs([("GATEWAY_CALLBACK_REORDER", "often")]);
        assert!(CallbackSettings::from_config(&bad).is_err());
    }
}
