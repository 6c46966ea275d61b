//! The join of one order's two sides, pure: no I/O and no clock. The handlers load an order's
//! [`Pair`] from the kit's keyed state, call [`Pair::arrive`] or [`Pair::window_ended`] with
//! the consumer's time, store the pair and act on the [`Step`] they get back.

use chrono::{DateTime, Utc};
use contracts::GatewayOutcome;
use serde::{Deserialize, Serialize};

/// What our side says happened to the charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppOutcome {
    /// `payment.succeeded`.
    Succeeded,
    /// `payment.failed`.
    Failed,
}

impl AppOutcome {
    /// The name stored and shown: `succeeded` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// The gateway outcome that agrees with this one.
    fn agreeing(self) -> GatewayOutcome {
        match self {
            Self::Succeeded => GatewayOutcome::Success,
            Self::Failed => GatewayOutcome::Declined,
        }
    }
}

/// The name of a gateway outcome as stored and shown: `success` or `declined`.
pub fn gateway_outcome_name(outcome: GatewayOutcome) -> &'static str {
    match outcome {
        GatewayOutcome::Success => "success",
        GatewayOutcome::Declined => "declined",
    }
}

/// Our side of a payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSide {
    /// Succeeded or failed.
    pub outcome: AppOutcome,
    /// The amount, when the message carried it (a `payment.failed` from before the field
    /// existed does not: then only the outcomes are compared).
    pub amount_cents: Option<i64>,
}

/// The gateway's side: its callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySide {
    /// The gateway's id of the callback (the same on a duplicate).
    pub callback_id: String,
    /// Success or declined.
    pub outcome: GatewayOutcome,
    /// The amount the gateway reports.
    pub amount_cents: i64,
}

/// One side arriving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// `payment.succeeded` or `payment.failed`.
    App(AppSide),
    /// `payment.callback`.
    Gateway(GatewaySide),
}

/// How an order's reconciliation ended (so far).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Both sides agree, the second within the window.
    Matched,
    /// The window ended with only our side.
    ThirdPartyMissing,
    /// The window ended with only the gateway's side.
    AppMissing,
    /// Both sides, different amounts.
    AmountMismatch,
    /// Both sides, one charged and the other declined.
    StatusMismatch,
    /// A missing side arrived after the window and agrees: the mismatch is resolved.
    LateMatch,
}

impl Outcome {
    /// Every outcome, in the order reports list them.
    pub const ALL: [Outcome; 6] = [
        Self::Matched,
        Self::LateMatch,
        Self::ThirdPartyMissing,
        Self::AppMissing,
        Self::AmountMismatch,
        Self::StatusMismatch,
    ];

    /// The name in the payload, the table and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matched => "matched",
            Self::ThirdPartyMissing => "third-party-missing",
            Self::AppMissing => "app-missing",
            Self::AmountMismatch => "amount-mismatch",
            Self::StatusMismatch => "status-mismatch",
            Self::LateMatch => "late-match",
        }
    }

    /// Whether this is a mismatch (an operator should look).
    pub fn is_mismatch(self) -> bool {
        !matches!(self, Self::Matched | Self::LateMatch)
    }

    /// Whether a side still missing may resolve it.
    fn awaits_a_side(self) -> bool {
        matches!(self, Self::ThirdPartyMissing | Self::AppMissing)
    }
}

/// What to do after a side arrived or the window ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The first side: start the window (set the timer), nothing to publish.
    Opened,
    /// This side was here already (a duplicate callback, our side twice): nothing changes.
    Duplicate,
    /// A decision to record and publish. `cancel_window` when the window was still open.
    Decided {
        /// The new outcome.
        outcome: Outcome,
        /// The outcome it replaces, when it resolves or changes a mismatch.
        previous: Option<Outcome>,
        /// The window's timer is pending and must be cancelled.
        cancel_window: bool,
    },
    /// A timer for an order already decided (cancelled too late, or replayed): ignored.
    Stale,
}

/// One order's join state, kept in the kit's keyed state under the order id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// Our side, once it came.
    pub app: Option<AppSide>,
    /// The gateway's side, once it came.
    pub gateway: Option<GatewaySide>,
    /// When the first side was handled (the consumer's clock): the window starts here.
    pub first_at: DateTime<Utc>,
    /// The latest decision, if any.
    pub outcome: Option<Outcome>,
}

impl Pair {
    /// A pair with its first side, handled at `now`.
    pub fn open(side: Side, now: DateTime<Utc>) -> (Self, Step) {
        let mut pair = Self {
            app: None,
            gateway: None,
            first_at: now,
            outcome: None,
        };
        pair.fill(side);
        (pair, Step::Opened)
    }

    /// `side` arrives for an order already seen.
    ///
    /// The same side again changes nothing, whatever it says (the first one stands; the
    /// handler logs a disagreeing copy). The other side decides: within the window, matched or
    /// a mismatch; after a missing-side mismatch, `late-match` when it agrees, else the
    /// disagreement it shows. State is never cleared here: a decided pair still recognises
    /// duplicates.
    pub fn arrive(&mut self, side: Side) -> Step {
        let already = match &side {
            Side::App(_) => self.app.is_some(),
            Side::Gateway(_) => self.gateway.is_some(),
        };
        if already {
            return Step::Duplicate;
        }
        self.fill(side);
        let compared = self.compare();
        match self.outcome {
            None => {
                self.outcome = Some(compared);
                Step::Decided {
                    outcome: compared,
                    previous: None,
                    cancel_window: true,
                }
            }
            Some(previous) if previous.awaits_a_side() => {
                let outcome = if compared == Outcome::Matched {
                    Outcome::LateMatch
                } else {
                    compared
                };
                self.outcome = Some(outcome);
                Step::Decided {
                    outcome,
                    previous: Some(previous),
                    cancel_window: false,
                }
            }
            // Both sides were here already, so `already` returned above: unreachable in
            // practice, and harmless.
            Some(_) => Step::Duplicate,
        }
    }

    /// The window's timer fired. With one side and no decision: the missing side's mismatch.
    /// Anything else (decided already) is [`Step::Stale`]. The sides are kept, so that a late
    /// side can still resolve the mismatch.
    pub fn window_ended(&mut self) -> Step {
        if self.outcome.is_some() {
            return Step::Stale;
        }
        let outcome = match (&self.app, &self.gateway) {
            (Some(_), None) => Outcome::ThirdPartyMissing,
            (None, Some(_)) => Outcome::AppMissing,
            _ => return Step::Stale,
        };
        self.outcome = Some(outcome);
        Step::Decided {
            outcome,
            previous: None,
            cancel_window: false,
        }
    }

    fn fill(&mut self, side: Side) {
        match side {
            Side::App(app) => self.app = Some(app),
            Side::Gateway(gateway) => self.gateway = Some(gateway),
        }
    }

    /// Both sides present: the outcome first (a charge against a decline is the graver
    /// disagreement), then the amount when ours is known.
    fn compare(&self) -> Outcome {
        let (Some(app), Some(gateway)) = (&self.app, &self.gateway) else {
            return Outcome::Matched;
        };
        if app.outcome.agreeing() != gateway.outcome {
            Outcome::StatusMismatch
        } else if app
            .amount_cents
            .is_some_and(|amount| amount != gateway.amount_cents)
        {
            Outcome::AmountMismatch
        } else {
            Outcome::Matched
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(outcome: AppOutcome, amount: i64) -> Side {
        Side::App(AppSide {
            outcome,
            amount_cents: Some(amount),
        })
    }

    fn theirs(id: &str, outcome: GatewayOutcome, amount: i64) -> Side {
        Side::Gateway(GatewaySide {
            callback_id: id.into(),
            outcome,
            amount_cents: amount,
        })
    }

    fn decided(step: &Step) -> Option<Outcome> {
        match step {
            Step::Decided { outcome, .. } => Some(*outcome),
            _ => None,
        }
    }

    #[test]
    fn agreeing_sides_match_and_cancel_the_window() {
        let (mut pair, step) = Pair::open(ours(AppOutcome::Succeeded, 500), Utc::now());
        assert_eq!(step, Step::Opened);
        let step = pair.arrive(theirs("cb-1", GatewayOutcome::Success, 500));
        assert_eq!(
            step,
            Step::Decided {
                outcome: Outcome::Matched,
                previous: None,
                cancel_window: true
            }
        );
        assert_eq!(pair.window_ended(), Step::Stale);
    }

    #[test]
    fn a_decline_on_both_sides_matches() {
        let (mut pair, _) = Pair::open(theirs("cb", GatewayOutcome::Declined, 7), Utc::now());
        assert_eq!(
            decided(&pair.arrive(ours(AppOutcome::Failed, 7))),
            Some(Outcome::Matched)
        );
    }

    #[test]
    fn disagreements_are_named() {
        let (mut pair, _) = Pair::open(ours(AppOutcome::Succeeded, 500), Utc::now());
        let step = pair.arrive(theirs("cb", GatewayOutcome::Success, 499));
        assert_eq!(decided(&step), Some(Outcome::AmountMismatch));
        let (mut pair, _) = Pair::open(ours(AppOutcome::Succeeded, 500), Utc::now());
        let step = pair.arrive(theirs("cb", GatewayOutcome::Declined, 499));
        assert_eq!(decided(&step), Some(Outcome::StatusMismatch));
    }

    #[test]
    fn an_unknown_amount_of_ours_compares_outcomes_only() {
        let side = Side::App(AppSide {
            outcome: AppOutcome::Failed,
            amount_cents: None,
        });
        let (mut pair, _) = Pair::open(side, Utc::now());
        let step = pair.arrive(theirs("cb", GatewayOutcome::Declined, 12));
        assert_eq!(decided(&step), Some(Outcome::Matched));
    }

    #[test]
    fn the_window_ending_names_the_missing_side_and_keeps_the_state_for_a_late_match() {
        let (mut pair, _) = Pair::open(ours(AppOutcome::Succeeded, 500), Utc::now());
        assert_eq!(
            decided(&pair.window_ended()),
            Some(Outcome::ThirdPartyMissing)
        );
        assert_eq!(pair.window_ended(), Step::Stale, "fires once");
        let step = pair.arrive(theirs("cb", GatewayOutcome::Success, 500));
        assert_eq!(
            step,
            Step::Decided {
                outcome: Outcome::LateMatch,
                previous: Some(Outcome::ThirdPartyMissing),
                cancel_window: false
            }
        );
        assert_eq!(
            pair.arrive(theirs("cb", GatewayOutcome::Success, 500)),
            Step::Duplicate
        );

        let (mut pair, _) = Pair::open(theirs("cb", GatewayOutcome::Success, 1), Utc::now());
        assert_eq!(decided(&pair.window_ended()), Some(Outcome::AppMissing));
    }

    #[test]
    fn a_late_side_that_disagrees_is_that_disagreement() {
        let (mut pair, _) = Pair::open(ours(AppOutcome::Succeeded, 500), Utc::now());
        pair.window_ended();
        let step = pair.arrive(theirs("cb", GatewayOutcome::Success, 1));
        assert_eq!(decided(&step), Some(Outcome::AmountMismatch));
    }

    #[test]
    fn the_same_side_again_changes_nothing() {
        let (mut pair, _) = Pair::open(theirs("cb-1", GatewayOutcome::Success, 500), Utc::now());
        let before = pair.clone();
        assert_eq!(
            pair.arrive(theirs("cb-2", GatewayOutcome::Declined, 1)),
            Step::Duplicate
        );
        assert_eq!(pair, before);
        pair.arrive(ours(AppOutcome::Succeeded, 500));
        assert_eq!(
            pair.arrive(ours(AppOutcome::Succeeded, 500)),
            Step::Duplicate
        );
        assert_eq!(pair.outcome, Some(Outcome::Matched));
    }
}
