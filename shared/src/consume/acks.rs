//! Acknowledging deliveries in batches.
//!
//! One `basic.ack` per delivery costs a frame, a syscall and a wake-up of the connection's
//! I/O task each; at a few thousand messages a second that is most of what a consumer does.
//! AMQP lets one `basic.ack` with `multiple` settle every unacked delivery up to a tag, so
//! the runtime records which deliveries are settled and a single task sends one ack for the
//! longest settled run at the front. Under light load that run is one delivery and the ack
//! goes out at once; under load the acks that pile up while one is being written go out
//! together, without a timer.
//!
//! Deliveries finish out of order (the consumer runs several at once). A slow one at the front
//! holds back the acks behind it; were they held until it finishes, the broker would stop
//! delivering once `prefetch` deliveries are unacked and the consumer would idle behind one
//! message. So once half the prefetch window is settled behind an unsettled delivery, those
//! are acked one by one.
//!
//! RabbitMQ closes the channel (`PRECONDITION_FAILED - unknown delivery tag`) when an ack
//! names a tag that is no longer unacked, even with `multiple`; so the tag a multiple ack
//! names is always one that has not been acked on its own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use lapin::Channel;
use lapin::options::BasicAckOptions;
use tokio::sync::Notify;

use crate::broker::BrokerError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Delivered, not settled yet.
    Pending,
    /// Settled, its ack not sent yet.
    Settled,
    /// Acked on its own while something before it was pending.
    Acked,
}

/// Which acks to send now.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// `basic.ack` with `multiple` up to this tag.
    through: Option<u64>,
    /// `basic.ack` for each of these tags alone.
    single: Vec<u64>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.through.is_none() && self.single.is_empty()
    }
}

/// The channel's unacked deliveries in delivery order (tags only grow on a channel).
#[derive(Debug)]
struct Ledger {
    deliveries: VecDeque<(u64, State)>,
    /// Entries in `State::Settled` (kept, so that a plan does not count them per ack).
    settled: usize,
    /// How many settled-behind entries are acked one by one.
    spill_at: usize,
}

impl Ledger {
    fn new(prefetch: u16) -> Self {
        Self {
            deliveries: VecDeque::with_capacity(usize::from(prefetch)),
            settled: 0,
            spill_at: usize::from(prefetch / 2).max(1),
        }
    }

    fn delivered(&mut self, tag: u64) {
        debug_assert!(self.deliveries.back().is_none_or(|&(last, _)| last < tag));
        self.deliveries.push_back((tag, State::Pending));
    }

    fn settled(&mut self, tag: u64) {
        if let Ok(index) = self.deliveries.binary_search_by_key(&tag, |&(t, _)| t)
            && self.deliveries[index].1 == State::Pending
        {
            self.deliveries[index].1 = State::Settled;
            self.settled += 1;
        }
    }

    /// Take the acks that can go out. With `everything`, settled deliveries behind a pending
    /// one go out one by one however few they are (the session is ending).
    fn plan(&mut self, everything: bool) -> Plan {
        let mut plan = Plan::default();
        while let Some(&(tag, state)) = self.deliveries.front() {
            match state {
                State::Pending => break,
                State::Settled => {
                    plan.through = Some(tag);
                    self.settled -= 1;
                }
                State::Acked => {}
            }
            self.deliveries.pop_front();
        }
        // The front is pending now (or nothing is left): what is settled is behind it.
        if self.settled > 0 && (everything || self.settled >= self.spill_at) {
            for (tag, state) in self.deliveries.iter_mut() {
                if *state == State::Settled {
                    *state = State::Acked;
                    plan.single.push(*tag);
                }
            }
            self.settled = 0;
        }
        plan
    }
}

/// A channel's acks: deliveries are registered in the order they arrive, marked settled when
/// their outcome is final, and acked by [`Acks::run`].
#[derive(Debug, Clone)]
pub(super) struct Acks {
    ledger: Arc<Mutex<Ledger>>,
    wake: Arc<Notify>,
}

impl Acks {
    pub(super) fn new(prefetch: u16) -> Self {
        Self {
            ledger: Arc::new(Mutex::new(Ledger::new(prefetch))),
            wake: Arc::new(Notify::new()),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger's invariants hold between statements; a panic elsewhere cannot break them.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A delivery arrived; call in delivery order, before it can be settled.
    pub(super) fn delivered(&self, tag: u64) {
        self.ledger().delivered(tag);
    }

    /// The delivery's outcome is final (committed, or handed on to a retry or dead letter).
    pub(super) fn settled(&self, tag: u64) {
        self.ledger().settled(tag);
        self.wake.notify_one();
    }

    /// Send acks as deliveries are settled; returns only when an ack could not be sent (the
    /// channel is gone: the session is over).
    pub(super) async fn run(&self, channel: &Channel) -> BrokerError {
        loop {
            self.wake.notified().await;
            // Take the plan out before sending: acks settled meanwhile wake the loop again
            // (`Notify` keeps the permit) and go out in the next batch.
            let plan = self.ledger().plan(false);
            if let Err(error) = send(channel, plan).await {
                return error;
            }
        }
    }

    /// Ack everything settled, however it lies (the session is ending; the channel closes next
    /// and the broker returns whatever is left unacked to the queue).
    pub(super) async fn flush(&self, channel: &Channel) -> Result<(), BrokerError> {
        let plan = self.ledger().plan(true);
        send(channel, plan).await
    }
}

async fn send(channel: &Channel, plan: Plan) -> Result<(), BrokerError> {
    if plan.is_empty() {
        return Ok(());
    }
    if let Some(tag) = plan.through {
        channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
            .map_err(BrokerError::operation("basic.ack"))?;
    }
    for tag in plan.single {
        channel
            .basic_ack(tag, BasicAckOptions { multiple: false })
            .await
            .map_err(BrokerError::operation("basic.ack"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(prefetch: u16, tags: std::ops::RangeInclusive<u64>) -> Ledger {
        let mut ledger = Ledger::new(prefetch);
        for tag in tags {
            ledger.delivered(tag);
        }
        ledger
    }

    #[test]
    fn a_settled_run_at_the_front_is_acked_with_one_multiple_ack() {
        let mut ledger = ledger(32, 1..=5);
        for tag in [3, 1, 2] {
            ledger.settled(tag);
        }
        assert_eq!(
            ledger.plan(false),
            Plan {
                through: Some(3),
                single: vec![]
            }
        );
        assert!(ledger.plan(false).is_empty());
    }

    #[test]
    fn deliveries_settled_behind_a_pending_one_wait_until_it_is_settled() {
        let mut ledger = ledger(32, 1..=5);
        ledger.settled(2);
        ledger.settled(3);
        assert!(ledger.plan(false).is_empty());
        ledger.settled(1);
        assert_eq!(ledger.plan(false).through, Some(3));
    }

    #[test]
    fn half_a_prefetch_window_behind_a_slow_delivery_is_acked_one_by_one() {
        let mut ledger = ledger(8, 1..=8);
        for tag in 2..=4 {
            ledger.settled(tag);
        }
        assert!(ledger.plan(false).is_empty());
        ledger.settled(5);
        assert_eq!(
            ledger.plan(false),
            Plan {
                through: None,
                single: vec![2, 3, 4, 5]
            }
        );
        // The multiple ack that follows must not name an already acked tag.
        ledger.settled(1);
        ledger.settled(6);
        assert_eq!(
            ledger.plan(false),
            Plan {
                through: Some(6),
                single: vec![]
            }
        );
    }

    #[test]
    fn a_multiple_ack_never_names_a_tag_acked_alone() {
        let mut ledger = ledger(2, 1..=3);
        ledger.settled(2);
        assert_eq!(ledger.plan(false).single, vec![2]);
        ledger.settled(1);
        assert_eq!(ledger.plan(false).through, Some(1));
        ledger.settled(3);
        assert_eq!(ledger.plan(false).through, Some(3));
    }

    #[test]
    fn flushing_acks_every_settled_delivery_and_leaves_pending_ones_unacked() {
        let mut ledger = ledger(32, 1..=6);
        for tag in [1, 2, 4, 6] {
            ledger.settled(tag);
        }
        assert_eq!(
            ledger.plan(true),
            Plan {
                through: Some(2),
                single: vec![4, 6]
            }
        );
        assert!(ledger.plan(true).is_empty());
    }

    #[test]
    fn settling_an_unknown_or_settled_tag_changes_nothing() {
        let mut ledger = ledger(32, 1..=2);
        ledger.settled(7);
        ledger.settled(2);
        ledger.settled(2);
        assert!(ledger.plan(false).is_empty());
        assert_eq!(ledger.plan(true).single, vec![2]);
    }
}
