//! From the recording and the events exchange's bindings to the deliveries that must be
//! accounted for: (message, queue) for every queue an event's routing key is bound to, and
//! for every fired timer its consumer's queue.

use std::collections::{BTreeMap, BTreeSet};

use msgkit::bindings::topic_matches;

use super::broker_state::Binding;
use super::verdict::{Verdict, Violation, ViolationKind};
use super::{PublishKind, Recording, SystemUnderTest};

/// A message that must have been handled by, or dead-lettered from, `queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Delivery {
    pub(super) message_id: String,
    pub(super) message_type: String,
    pub(super) queue: String,
}

/// One event, over all its publishes (the relay publishes a row again after a return or a
/// missing confirm, with the same message id).
#[derive(Debug, Default)]
struct EventSeen {
    message_type: String,
    routing_keys: BTreeSet<String>,
    /// Whether any publish reached a queue, when the broker said (`routed_queues`).
    routed: Option<bool>,
    first_seen: Option<chrono::DateTime<chrono::Utc>>,
}

/// The deliveries to check; unroutable events, events without an id and queues without a
/// target go into `verdict`.
pub(super) fn expected_deliveries(
    system: &SystemUnderTest,
    recording: &Recording,
    bindings: &[Binding],
    verdict: &mut Verdict,
) -> Vec<Delivery> {
    let targets: BTreeSet<&str> = system.consumers.iter().map(|c| c.queue.as_str()).collect();
    let mut events: BTreeMap<String, EventSeen> = BTreeMap::new();
    let mut deliveries = Vec::new();
    for publish in &recording.publishes {
        let message_type = publish.message_type.clone().unwrap_or_default();
        match (publish.kind(&system.events_exchange), &publish.message_id) {
            (PublishKind::Event, None) => verdict.add(
                Violation {
                    kind: ViolationKind::NoMessageId,
                    message_type: Some(message_type),
                    message_id: None,
                    queue: None,
                    detail: format!("published with routing key {:?}", publish.routing_key()),
                },
                system.max_listed,
            ),
            (PublishKind::Event, Some(id)) => {
                let seen = events.entry(id.clone()).or_default();
                seen.message_type = message_type;
                seen.first_seen.get_or_insert(publish.seen_at);
                seen.routing_keys
                    .extend(publish.routing_keys.iter().cloned());
                if let Some(queues) = &publish.routed_queues {
                    seen.routed = Some(seen.routed.unwrap_or(false) || !queues.is_empty());
                }
            }
            (PublishKind::TimerFired, Some(id)) if targets.contains(publish.routing_key()) => {
                let delivery = Delivery {
                    message_id: id.clone(),
                    message_type,
                    queue: publish.routing_key().to_owned(),
                };
                // A firing published twice (a lost confirm) is still one delivery to check.
                if !deliveries.contains(&delivery) {
                    deliveries.push(delivery);
                }
            }
            _ => {}
        }
    }
    verdict.events = events.len();
    for (id, seen) in events {
        let bound: BTreeSet<&str> = bindings
            .iter()
            .filter(|b| {
                seen.routing_keys
                    .iter()
                    .any(|k| topic_matches(&b.routing_key, k))
            })
            .map(|b| b.destination.as_str())
            .collect();
        if !seen.routed.unwrap_or(!bound.is_empty()) {
            let keys: Vec<&str> = seen.routing_keys.iter().map(String::as_str).collect();
            verdict.add(
                Violation {
                    kind: ViolationKind::Unroutable,
                    message_type: Some(seen.message_type),
                    message_id: Some(id),
                    queue: None,
                    detail: format!(
                        "published to {:?} with routing key {} at {}; no queue is bound to it",
                        system.events_exchange,
                        keys.join(", "),
                        seen.first_seen.map(|t| t.to_rfc3339()).unwrap_or_default()
                    ),
                },
                system.max_listed,
            );
            continue;
        }
        for queue in bound {
            if targets.contains(queue) {
                deliveries.push(Delivery {
                    message_id: id.clone(),
                    message_type: seen.message_type.clone(),
                    queue: queue.to_owned(),
                });
            } else {
                verdict.unchecked_queues.insert(queue.to_owned());
            }
        }
    }
    deliveries
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::super::{ConsumerTarget, ManagementApi, ServiceStore, TracedPublish};
    use super::*;

    fn system() -> SystemUnderTest {
        let target = |queue: &str| ConsumerTarget {
            queue: queue.to_owned(),
            consumer: queue.to_owned(),
            store: ServiceStore {
                database_url: "postgres://localhost/db".to_owned(),
                schema: Some(queue.to_owned()),
            },
        };
        SystemUnderTest {
            vhost: "v".to_owned(),
            broker: msgkit::BrokerSettings::new("amqp://localhost/v", "test"),
            management: ManagementApi {
                url: "http://localhost:15672".to_owned(),
                user: "guest".to_owned(),
                password: "guest".to_owned(),
            },
            events_exchange: "events".to_owned(),
            consumers: vec![target("inventory"), target("reconcile")],
            publishers: Vec::new(),
            timer_grace: std::time::Duration::from_secs(5),
            max_listed: 2,
        }
    }

    fn binding(queue: &str, pattern: &str) -> Binding {
        Binding {
            destination: queue.to_owned(),
            destination_type: "queue".to_owned(),
            routing_key: pattern.to_owned(),
        }
    }

    fn publish(exchange: &str, key: &str, id: &str, routed: Option<&[&str]>) -> TracedPublish {
        TracedPublish {
            exchange: exchange.to_owned(),
            routing_keys: vec![key.to_owned()],
            message_id: Some(id.to_owned()),
            message_type: Some(key.to_owned()),
            routed_queues: routed.map(|q| q.iter().map(|s| (*s).to_owned()).collect()),
            seen_at: Utc::now(),
        }
    }

    fn expect(publishes: Vec<TracedPublish>, bindings: &[Binding]) -> (Vec<Delivery>, Verdict) {
        let recording = Recording {
            publishes,
            ..Recording::default()
        };
        let mut verdict = Verdict::default();
        let deliveries = expected_deliveries(&system(), &recording, bindings, &mut verdict);
        (deliveries, verdict)
    }

    #[test]
    fn an_event_is_expected_in_every_target_queue_its_key_is_bound_to() {
        let bindings = [
            binding("inventory", "order.*"),
            binding("reconcile", "payment.#"),
            binding("events.archive", "#"),
        ];
        let (deliveries, verdict) = expect(
            vec![publish("events", "order.placed", "m1", None)],
            &bindings,
        );
        let queues: Vec<&str> = deliveries.iter().map(|d| d.queue.as_str()).collect();
        assert_eq!(queues, ["inventory"]);
        assert_eq!(verdict.events, 1);
        assert!(verdict.unchecked_queues.contains("events.archive"));
        assert_eq!(verdict.total(), 0);
    }

    #[test]
    fn an_event_no_queue_received_is_unroutable_unless_a_later_publish_was_routed() {
        let bindings = [binding("inventory", "order.*")];
        let (deliveries, verdict) = expect(
            vec![
                publish("events", "order.placed", "m1", Some(&[])),
                publish("events", "order.placed", "m1", Some(&["inventory"])),
                publish("events", "order.lost", "m2", Some(&[])),
                publish("events", "nobody.binds", "m3", None),
            ],
            &bindings,
        );
        assert_eq!(
            deliveries.len(),
            1,
            "m1 reached inventory on its second publish"
        );
        assert_eq!(verdict.counts.get(&ViolationKind::Unroutable), Some(&2));
        let ids: Vec<_> = verdict
            .violations
            .iter()
            .map(|v| v.message_id.clone())
            .collect();
        assert_eq!(ids, [Some("m2".to_owned()), Some("m3".to_owned())]);
    }

    #[test]
    fn retries_dead_letters_and_foreign_publishes_are_not_events_but_fired_timers_are_checked() {
        let bindings = [binding("inventory", "order.*")];
        let mut timer = publish("", "reconcile", "t1", None);
        timer.message_type = Some("msgkit.timer.callback-due".to_owned());
        let (deliveries, verdict) = expect(
            vec![
                publish("msgkit.delay.100ms", "inventory", "m1", None),
                publish("", "inventory.dlq", "m1", None),
                publish("other", "order.placed", "m4", None),
                timer,
            ],
            &bindings,
        );
        assert_eq!(verdict.events, 0);
        assert_eq!(
            deliveries,
            [Delivery {
                message_id: "t1".to_owned(),
                message_type: "msgkit.timer.callback-due".to_owned(),
                queue: "reconcile".to_owned(),
            }]
        );
    }

    #[test]
    fn violations_are_listed_up_to_the_limit_and_all_counted() {
        let publishes = (0..5)
            .map(|i| publish("events", "nobody.binds", &format!("m{i}"), None))
            .collect();
        let (_, verdict) = expect(publishes, &[]);
        assert_eq!(verdict.violations.len(), 2);
        assert_eq!(verdict.total(), 5);
        assert!(!verdict.holds());
    }
}
