//! The rule that keeps routes and bindings from disagreeing.
//!
//! Bindings stay in one table, the [`Topology`] that every process declares (so that every
//! queue with its bindings exists before the first event routed to it is published, whichever
//! service starts first). A consumer's routes are checked against its queue's bindings before
//! the service starts, and a service whose routes and bindings disagree refuses to start:
//! - every routed event type must be delivered by some binding of the queue (else the route
//!   never runs);
//! - every binding must deliver some routed event type (else everything it delivers is
//!   unrouted and dead-lettered);
//! - no event type is routed twice.

use crate::topology::Topology;

/// A consumer's routes disagree with its queue's bindings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindingsMismatch {
    /// The queue is not in the topology.
    #[error("queue {queue:?} is not declared in the topology, so nothing is bound to it")]
    UnknownQueue {
        /// The queue.
        queue: String,
    },
    /// Routes and bindings differ.
    #[error(
        "the routes of queue {queue:?} disagree with its bindings: {}",
        describe(unbound, unrouted, duplicated)
    )]
    Disagree {
        /// The queue.
        queue: String,
        /// Routed event types that no binding delivers.
        unbound: Vec<String>,
        /// Binding patterns that deliver no routed event type.
        unrouted: Vec<String>,
        /// Event types routed more than once.
        duplicated: Vec<String>,
    },
}

fn describe(unbound: &[String], unrouted: &[String], duplicated: &[String]) -> String {
    let mut parts = Vec::new();
    if !unbound.is_empty() {
        parts.push(format!(
            "routed but not bound (add a binding in the topology): {}",
            unbound.join(", ")
        ));
    }
    if !unrouted.is_empty() {
        parts.push(format!(
            "bound but not routed (add a route or remove the binding): {}",
            unrouted.join(", ")
        ));
    }
    if !duplicated.is_empty() {
        parts.push(format!("routed twice: {}", duplicated.join(", ")));
    }
    parts.join("; ")
}

/// Check `event_types` (a consumer's routes) against the bindings of `queue` in `topology`.
pub fn check(
    topology: &Topology,
    queue: &str,
    event_types: &[&str],
    duplicated: &[&str],
) -> Result<(), BindingsMismatch> {
    let Some(work_queue) = topology.queue(queue) else {
        return Err(BindingsMismatch::UnknownQueue {
            queue: queue.to_owned(),
        });
    };
    let bindings = work_queue.bindings();
    let unbound: Vec<String> = event_types
        .iter()
        .filter(|event| !bindings.iter().any(|pattern| topic_matches(pattern, event)))
        .map(|event| (*event).to_owned())
        .collect();
    let unrouted: Vec<String> = bindings
        .iter()
        .filter(|pattern| {
            !event_types
                .iter()
                .any(|event| topic_matches(pattern, event))
        })
        .cloned()
        .collect();
    if unbound.is_empty() && unrouted.is_empty() && duplicated.is_empty() {
        return Ok(());
    }
    Err(BindingsMismatch::Disagree {
        queue: queue.to_owned(),
        unbound,
        unrouted,
        duplicated: duplicated.iter().map(|event| (*event).to_owned()).collect(),
    })
}

/// Whether a topic exchange delivers `routing_key` to a binding with `pattern`: words are
/// separated by `.`, `*` stands for exactly one word and `#` for zero or more.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    matches_words(&pattern, &key)
}

fn matches_words(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| matches_words(rest, &key[skip..])),
        Some((word, rest)) => match key.split_first() {
            Some((first, key_rest)) if *word == "*" || word == first => {
                matches_words(rest, key_rest)
            }
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::WorkQueue;

    #[test]
    fn topic_patterns_match_as_rabbitmq_does() {
        assert!(topic_matches("order.placed", "order.placed"));
        assert!(!topic_matches("order.placed", "order.placed.v2"));
        assert!(topic_matches("inventory.*", "inventory.reserved"));
        assert!(!topic_matches("inventory.*", "inventory"));
        assert!(!topic_matches("inventory.*", "inventory.a.b"));
        assert!(topic_matches("inventory.#", "inventory"));
        assert!(topic_matches("inventory.#", "inventory.a.b"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("*.failed", "payment.failed"));
        assert!(!topic_matches("*.failed", "payment.succeeded"));
    }

    fn topology() -> Topology {
        Topology::default().with_queue(
            WorkQueue::new("order")
                .bind("inventory.*")
                .bind("payment.failed"),
        )
    }

    #[test]
    fn routes_that_match_the_bindings_are_accepted() {
        let routes = ["inventory.reserved", "inventory.rejected", "payment.failed"];
        assert_eq!(check(&topology(), "order", &routes, &[]), Ok(()));
    }

    #[test]
    fn a_route_without_a_binding_and_a_binding_without_a_route_are_refused() {
        let error = check(
            &topology(),
            "order",
            &["inventory.reserved", "payment.succeeded"],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            error,
            BindingsMismatch::Disagree {
                queue: "order".into(),
                unbound: vec!["payment.succeeded".into()],
                unrouted: vec!["payment.failed".into()],
                duplicated: vec![],
            }
        );
        let text = error.to_string();
        assert!(
            text.contains(
                "routed but not bound (add a binding in the topology): payment.succeeded"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "bound but not routed (add a route or remove the binding): payment.failed"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_queue_missing_from_the_topology_is_refused() {
        assert_eq!(
            check(&topology(), "notify", &["order.confirmed"], &[]),
            Err(BindingsMismatch::UnknownQueue {
                queue: "notify".into()
            })
        );
    }

    #[test]
    fn an_event_routed_twice_is_refused() {
        let routes = ["inventory.reserved", "payment.failed", "payment.failed"];
        let error = check(&topology(), "order", &routes, &["payment.failed"]).unwrap_err();
        assert!(error.to_string().contains("routed twice: payment.failed"));
    }
}
