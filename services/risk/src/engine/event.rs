//! The transaction event the rules look at.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One transaction of a user, as the engine sees it.
///
/// `occurred_at` is the event time: windows, ordering and lateness are all measured on it,
/// never on the time the event reached the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per transaction; the engine never counts the same id twice for a key.
    pub transaction_id: String,
    /// The user the transaction belongs to (the only rule key for now).
    pub user_id: String,
    /// Amount in minor units (cents).
    pub amount_cents: i64,
    /// ISO currency code, e.g. `CNY`.
    pub currency: String,
    /// Where the transaction happened, e.g. a city.
    pub location: String,
    /// When the transaction happened (event time).
    pub occurred_at: DateTime<Utc>,
}
