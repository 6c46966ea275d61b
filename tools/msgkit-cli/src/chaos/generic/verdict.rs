//! The verdict: every event published during the run accounted for in every queue bound to
//! it, and nothing left behind in queues, delay tiers, outboxes or timers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use lapin::Connection;

use super::broker_state::{self, Binding};
use super::expected::{Delivery, expected_deliveries};
use super::store::Store;
use super::{Gap, GenericError, Recording, ServiceStore, SystemUnderTest};

/// What kind of rule a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ViolationKind {
    /// An event published to the events exchange reached no queue.
    Unroutable,
    /// An event (or fired timer) reached a queue whose consumer has no inbox row for it, and it
    /// is not in the queue's dead-letter queue with a reason either.
    NotHandled,
    /// A published event without a `message_id`: it cannot be followed.
    NoMessageId,
    /// Messages still in a work queue after the drain.
    LeftInWorkQueue,
    /// Messages still in a retry delay tier after the drain.
    LeftInDelayTier,
    /// An outbox row never published.
    OutboxPending,
    /// A timer past its instant (and the grace) still waiting to fire.
    TimerOverdue,
    /// One timer instance fired more than once.
    TimerFiredTwice,
}

impl ViolationKind {
    /// A short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unroutable => "unroutable",
            Self::NotHandled => "not handled",
            Self::NoMessageId => "no message id",
            Self::LeftInWorkQueue => "left in work queue",
            Self::LeftInDelayTier => "left in delay tier",
            Self::OutboxPending => "outbox pending",
            Self::TimerOverdue => "timer overdue",
            Self::TimerFiredTwice => "timer fired twice",
        }
    }
}

/// One broken rule, with what is needed to find the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub kind: ViolationKind,
    /// The message's type, when it is about one message.
    pub message_type: Option<String>,
    /// The message's id, when it is about one message.
    pub message_id: Option<String>,
    /// The queue concerned, if any.
    pub queue: Option<String>,
    /// What is missing or left over.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind.label())?;
        if let Some(message_type) = &self.message_type {
            write!(f, ": {message_type}")?;
        }
        if let Some(id) = &self.message_id {
            write!(f, " {id}")?;
        }
        if let Some(queue) = &self.queue {
            write!(f, " in queue {queue}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The outcome of [`verdict`].
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Distinct events (message ids) published to the events exchange during the recording.
    pub events: usize,
    /// (message, queue) pairs checked against inboxes and dead-letter queues.
    pub deliveries_checked: usize,
    /// The first violations found (at most `SystemUnderTest::max_listed`).
    pub violations: Vec<Violation>,
    /// Every violation counted by kind, listed or not.
    pub counts: BTreeMap<ViolationKind, usize>,
    /// Queues bound to the events exchange that no [`super::ConsumerTarget`] describes (an
    /// archive stream, another team's queue): neither their deliveries nor their depth were
    /// checked.
    pub unchecked_queues: BTreeSet<String>,
    /// Times the recorder was not listening: events published then were not checked.
    pub recording_gaps: Vec<Gap>,
    /// Set when the recording ended early: events published after it were not checked.
    pub recording_interrupted: Option<String>,
}

impl Verdict {
    /// Violations of every kind.
    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }

    /// No violation, and the recording reached its end (it may have gaps: see
    /// [`Verdict::recording_gaps`]).
    pub fn holds(&self) -> bool {
        self.total() == 0 && self.recording_interrupted.is_none()
    }

    pub(super) fn add(&mut self, violation: Violation, max_listed: usize) {
        *self.counts.entry(violation.kind).or_default() += 1;
        if self.violations.len() < max_listed {
            self.violations.push(violation);
        }
    }
}

/// Check `recording` against the broker and the services' databases. Call it after the system
/// has drained (consumers may keep running: a delivery still in flight is reported as left in
/// its queue or not handled).
pub async fn verdict(
    system: &SystemUnderTest,
    recording: &Recording,
) -> Result<Verdict, GenericError> {
    let bindings = system
        .management
        .queue_bindings(&system.vhost, &system.events_exchange)
        .await?;
    let mut verdict = Verdict {
        recording_gaps: recording.gaps.clone(),
        recording_interrupted: recording.interrupted.clone(),
        ..Verdict::default()
    };
    let expected = expected_deliveries(system, recording, &bindings, &mut verdict);
    let connection = system
        .broker
        .connect()
        .await
        .map_err(|e| GenericError::broker("connecting for the verdict", e))?;
    let checked = async {
        check_deliveries(system, &connection, &expected, &mut verdict).await?;
        check_queues(system, &connection, &bindings, &mut verdict).await?;
        check_stores(system, &mut verdict).await
    }
    .await;
    let _ = connection.close(200, "done".into()).await;
    checked.map(|()| verdict)
}

/// Each expected delivery was handled (inbox row) or dead-lettered with a reason.
async fn check_deliveries(
    system: &SystemUnderTest,
    connection: &Connection,
    expected: &[Delivery],
    verdict: &mut Verdict,
) -> Result<(), GenericError> {
    let mut by_queue: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for delivery in expected {
        by_queue.entry(&delivery.queue).or_default().push(delivery);
    }
    for target in &system.consumers {
        let Some(deliveries) = by_queue.get(target.queue.as_str()) else {
            continue;
        };
        verdict.deliveries_checked += deliveries.len();
        let ids: Vec<String> = deliveries.iter().map(|d| d.message_id.clone()).collect();
        let store = Store::open(&target.store).await?;
        let handled = store.handled(&target.consumer, &ids).await;
        store.close().await;
        let handled = handled?;
        let missing: Vec<&&Delivery> = deliveries
            .iter()
            .filter(|d| !handled.contains(&d.message_id))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let dlq = format!("{}.dlq", target.queue);
        let dead = match broker_state::queue_depth(connection, &dlq).await? {
            Some(_) => broker_state::dead_letters(connection, &dlq).await?,
            None => BTreeMap::new(),
        };
        for delivery in missing {
            let detail = match dead.get(&delivery.message_id) {
                Some(reason) if !reason.is_empty() => continue,
                Some(_) => format!("in {dlq} without a failure reason"),
                None => format!(
                    "consumer {:?} has no inbox row for it and it is not in {dlq}",
                    target.consumer
                ),
            };
            let violation = Violation {
                kind: ViolationKind::NotHandled,
                message_type: Some(delivery.message_type.clone()),
                message_id: Some(delivery.message_id.clone()),
                queue: Some(target.queue.clone()),
                detail,
            };
            verdict.add(violation, system.max_listed);
        }
    }
    Ok(())
}

/// Work queues and delay tiers are empty.
async fn check_queues(
    system: &SystemUnderTest,
    connection: &Connection,
    bindings: &[Binding],
    verdict: &mut Verdict,
) -> Result<(), GenericError> {
    // Only the described work queues: a bound queue nobody described may be a stream (an
    // archive), which keeps its messages by design.
    let work: BTreeSet<&str> = system.consumers.iter().map(|c| c.queue.as_str()).collect();
    let undescribed = bindings
        .iter()
        .map(|b| b.destination.as_str())
        .filter(|queue| !work.contains(queue));
    verdict
        .unchecked_queues
        .extend(undescribed.map(str::to_owned));
    let names = system.management.queue_names(&system.vhost).await?;
    let tiers = names.iter().filter(|n| n.starts_with("msgkit.delay."));
    let queues = work
        .into_iter()
        .map(|q| (q, ViolationKind::LeftInWorkQueue))
        .chain(tiers.map(|q| (q.as_str(), ViolationKind::LeftInDelayTier)));
    for (queue, kind) in queues {
        let depth = broker_state::queue_depth(connection, queue).await?;
        if let Some(depth) = depth.filter(|d| *d > 0) {
            let violation = Violation {
                kind,
                message_type: None,
                message_id: None,
                queue: Some(queue.to_owned()),
                detail: format!("{depth} message(s) still ready after the drain"),
            };
            verdict.add(violation, system.max_listed);
        }
    }
    Ok(())
}

/// Outboxes are published, timers fired once or still pending.
async fn check_stores(system: &SystemUnderTest, verdict: &mut Verdict) -> Result<(), GenericError> {
    let stores: BTreeSet<&ServiceStore> = system
        .consumers
        .iter()
        .map(|c| &c.store)
        .chain(&system.publishers)
        .collect();
    for service in stores {
        let store = Store::open(service).await?;
        let checked = check_store(system, &store, verdict).await;
        store.close().await;
        checked?;
    }
    Ok(())
}

async fn check_store(
    system: &SystemUnderTest,
    store: &Store,
    verdict: &mut Verdict,
) -> Result<(), GenericError> {
    let max = system.max_listed;
    for row in store.pending_outbox().await? {
        let error = row.last_error.as_deref().unwrap_or("none");
        verdict.add(
            Violation {
                kind: ViolationKind::OutboxPending,
                message_type: Some(row.message_type),
                message_id: Some(row.id.to_string()),
                queue: None,
                detail: format!(
                    "outbox row to {:?} unpublished after {} attempt(s); last error: {error}",
                    row.routing_key, row.attempts
                ),
            },
            max,
        );
    }
    for timer in store.overdue_timers(system.timer_grace).await? {
        verdict.add(
            Violation {
                kind: ViolationKind::TimerOverdue,
                message_type: Some(format!(
                    "{}{}",
                    msgkit::timer::MESSAGE_TYPE_PREFIX,
                    timer.name
                )),
                message_id: None,
                queue: None,
                detail: format!(
                    "timer {:?} of consumer {:?} was due at {} and has not fired",
                    timer.key, timer.consumer, timer.due_at
                ),
            },
            max,
        );
    }
    for twice in store.timers_fired_twice().await? {
        let due = twice.due_at_ms.as_deref().unwrap_or("?");
        verdict.add(
            Violation {
                kind: ViolationKind::TimerFiredTwice,
                message_type: Some(twice.message_type),
                message_id: None,
                queue: None,
                detail: format!(
                    "timer {:?} due at {due} ms fired {} times",
                    twice.key, twice.firings
                ),
            },
            max,
        );
    }
    Ok(())
}
