//! What the reconcile stage sends: for each order, our side (`payment.succeeded`) and the
//! gateway's (`payment.callback`, success, the same amount), published to the `events`
//! exchange as the payment service's relay publishes them. Every order should match.

use chrono::Utc;
use msgkit::message::OutgoingMessage;
use serde_json::json;
use uuid::Uuid;

use crate::CliError;

/// Every n-th order has the gateway's callback first, as when the callback overtakes our
/// outbox (a quarter of them).
pub const CALLBACK_FIRST_EVERY: usize = 4;

/// One side of an order's payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `payment.succeeded`.
    Ours,
    /// `payment.callback`.
    Gateway,
}

/// The stage's k-th order: its id, and which side is published first.
#[derive(Clone, Copy, Debug)]
pub struct Order {
    pub id: Uuid,
    pub amount_cents: i64,
    pub first: Side,
}

impl Order {
    pub fn new(k: usize) -> Self {
        Self {
            id: Uuid::new_v4(),
            amount_cents: 1_000 + (k % 50_000) as i64,
            first: if k % CALLBACK_FIRST_EVERY == CALLBACK_FIRST_EVERY - 1 {
                Side::Gateway
            } else {
                Side::Ours
            },
        }
    }

    /// The side published after a gap.
    pub fn second(&self) -> Side {
        match self.first {
            Side::Ours => Side::Gateway,
            Side::Gateway => Side::Ours,
        }
    }

    /// The message of `side`, correlated by the order, from `payment`.
    pub fn message(&self, side: Side) -> Result<OutgoingMessage, CliError> {
        let (message_type, payload) = match side {
            Side::Ours => ("payment.succeeded", self.succeeded()),
            Side::Gateway => ("payment.callback", self.callback()),
        };
        OutgoingMessage::event(message_type, &self.id.to_string(), "payment", &payload)
            .map_err(|e| CliError::Other(e.into()))
    }

    fn succeeded(&self) -> serde_json::Value {
        json!({
            "order_id": self.id,
            "charge_id": format!("ch-{}", self.id),
            "amount_cents": self.amount_cents,
            "customer_id": "bench",
            "occurred_at": Utc::now(),
        })
    }

    fn callback(&self) -> serde_json::Value {
        json!({
            "callback_id": format!("cb-{}", self.id),
            "order_id": self.id,
            "charge_id": format!("ch-{}", self.id),
            "outcome": "success",
            "amount_cents": self.amount_cents,
            "known_order": true,
            "received_at": Utc::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_decode_as_the_contracts_and_agree() {
        let order = Order::new(7);
        let ours = order.message(Side::Ours).unwrap();
        let gateway = order.message(Side::Gateway).unwrap();
        assert_eq!(ours.routing_key, "payment.succeeded");
        assert_eq!(gateway.routing_key, "payment.callback");
        assert_eq!(ours.correlation_id, order.id.to_string());
        let paid: contracts::PaymentSucceeded = serde_json::from_slice(&ours.body).unwrap();
        let called: contracts::PaymentCallback = serde_json::from_slice(&gateway.body).unwrap();
        assert_eq!((paid.order_id, called.order_id), (order.id, order.id));
        assert_eq!(paid.amount_cents, called.amount_cents);
        assert_eq!(called.outcome, contracts::GatewayOutcome::Success);
        assert_eq!(
            contracts::event_type::PAYMENT_CALLBACK.name(),
            gateway.message_type
        );
    }

    #[test]
    fn a_quarter_of_the_orders_have_the_callback_first() {
        let orders: Vec<Order> = (0..100).map(Order::new).collect();
        let callback_first = orders.iter().filter(|o| o.first == Side::Gateway).count();
        assert_eq!(callback_first, 25);
        assert!(orders.iter().all(|o| o.second() != o.first));
    }
}
