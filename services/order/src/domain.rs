//! Orders as the API accepts them: values that can only be constructed valid, so the rest of
//! the service never holds a bad one.

use serde::{Deserialize, Serialize};

/// Longest accepted customer id or SKU.
const MAX_ID_LEN: usize = 64;
/// Longest accepted location: room for a city and its region, not for a document.
pub const MAX_LOCATION_LEN: usize = 100;
/// Most lines in one order.
pub const MAX_LINES: usize = 100;
/// Largest quantity of one line.
pub const MAX_QUANTITY: i64 = 10_000;

/// A field that failed validation, and why. Serialised into the 422 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// Path of the field in the request, e.g. `items[0].quantity`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidField {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The body of `POST /orders`, as sent. Unknown fields are rejected: a misspelt field is a
/// client bug better reported than ignored.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// Who orders.
    pub customer_id: String,
    /// What is ordered.
    pub items: Vec<OrderLineRequest>,
    /// Where the order is placed (e.g. a city), optional: the risk rules compare it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// One line of [`PlaceOrderRequest`]. The quantity is read as a signed integer so that zero
/// and negative values get a validation error naming them, not a type error.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLineRequest {
    /// Stock keeping unit.
    pub sku: String,
    /// How many.
    pub quantity: i64,
}

/// A customer id: 1 to 64 printable characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerId(String);

impl CustomerId {
    /// Validate `value`, reporting problems against `field`.
    pub fn parse(value: &str, field: &str) -> Result<Self, InvalidField> {
        printable_text(value, field, MAX_ID_LEN).map(Self)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an order was placed: 1 to [`MAX_LOCATION_LEN`] printable characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(String);

impl Location {
    /// Validate `value`, reporting problems against `field`.
    pub fn parse(value: &str, field: &str) -> Result<Self, InvalidField> {
        printable_text(value, field, MAX_LOCATION_LEN).map(Self)
    }

    /// The location.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `value` trimmed, if it is 1 to `max_len` characters without control characters.
fn printable_text(value: &str, field: &str, max_len: usize) -> Result<String, InvalidField> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > max_len {
        return Err(InvalidField::new(
            field,
            format!("must be at most {max_len} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidField::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A SKU: 1 to 64 of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    /// Validate `value`, reporting problems against `field`.
    pub fn parse(value: &str, field: &str) -> Result<Self, InvalidField> {
        if value.is_empty() {
            return Err(InvalidField::new(field, "must not be empty"));
        }
        if value.len() > MAX_ID_LEN {
            return Err(InvalidField::new(
                field,
                format!("must be at most {MAX_ID_LEN} characters"),
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(InvalidField::new(
                field,
                "may contain only letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The SKU.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A quantity from 1 to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    /// Validate `value`, reporting problems against `field`.
    pub fn parse(value: i64, field: &str) -> Result<Self, InvalidField> {
        if value < 1 {
            return Err(InvalidField::new(field, "must be at least 1"));
        }
        if value > MAX_QUANTITY {
            return Err(InvalidField::new(
                field,
                format!("must be at most {MAX_QUANTITY}"),
            ));
        }
        u32::try_from(value)
            .map(Self)
            .map_err(|_| InvalidField::new(field, "out of range"))
    }

    /// The quantity.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// One valid order line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// What.
    pub sku: Sku,
    /// How many.
    pub quantity: Quantity,
}

/// A valid order, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Who.
    pub customer_id: CustomerId,
    /// What: 1 to [`MAX_LINES`] lines, each SKU at most once.
    pub lines: Vec<OrderLine>,
    /// Where, if the client said.
    pub location: Option<Location>,
}

impl TryFrom<&PlaceOrderRequest> for NewOrder {
    type Error = InvalidField;

    fn try_from(request: &PlaceOrderRequest) -> Result<Self, Self::Error> {
        let customer_id = CustomerId::parse(&request.customer_id, "customer_id")?;
        if request.items.is_empty() {
            return Err(InvalidField::new("items", "must contain at least one item"));
        }
        if request.items.len() > MAX_LINES {
            return Err(InvalidField::new(
                "items",
                format!("must contain at most {MAX_LINES} items"),
            ));
        }
        let mut lines: Vec<OrderLine> = Vec::with_capacity(request.items.len());
        for (i, item) in request.items.iter().enumerate() {
            let sku = Sku::parse(&item.sku, &format!("items[{i}].sku"))?;
            if lines.iter().any(|line| line.sku == sku) {
                return Err(InvalidField::new(
                    format!("items[{i}].sku"),
                    "appears more than once; put the total quantity on one line",
                ));
            }
            let quantity = Quantity::parse(item.quantity, &format!("items[{i}].quantity"))?;
            lines.push(OrderLine { sku, quantity });
        }
        let location = request
            .location
            .as_deref()
            .map(|location| Location::parse(location, "location"))
            .transpose()?;
        Ok(Self {
            customer_id,
            lines,
            location,
        })
    }
}

/// Longest accepted reason for a cancellation: a sentence or two, not a letter.
pub const MAX_CANCEL_REASON_LEN: usize = 500;

/// The body of `POST /orders/{id}/cancel`, as sent (the body itself is optional).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CancelOrderRequest {
    /// Why the customer cancels, if they say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a customer cancels: 1 to [`MAX_CANCEL_REASON_LEN`] printable characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReason(String);

impl CancelReason {
    /// Validate `value`, reporting problems against `field`.
    pub fn parse(value: &str, field: &str) -> Result<Self, InvalidField> {
        printable_text(value, field, MAX_CANCEL_REASON_LEN).map(Self)
    }

    /// The reason.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an order cannot be cancelled now: only a confirmed order whose cancellation was not
/// requested yet can be. Each is a 409 with its own code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelRefusal {
    /// Still waiting for stock and payment: nothing to refund yet.
    #[error("the order is still pending; only a confirmed order can be cancelled")]
    Pending,
    /// Never went through: nothing was charged.
    #[error("the order was rejected; there is nothing to cancel")]
    Rejected,
    /// A cancellation is already under way (its refund may still be running).
    #[error("cancellation of the order was already requested at {0}")]
    AlreadyRequested(chrono::DateTime<chrono::Utc>),
    /// Cancelled already: by the customer (refunded), or when its payment was declined.
    #[error("the order is already cancelled")]
    AlreadyCancelled,
}

impl CancelRefusal {
    /// Why an order in `status` (as stored), whose cancellation was requested at
    /// `requested_at` if ever, cannot be cancelled; `None` when it can (confirmed, no request).
    pub fn of(status: &str, requested_at: Option<chrono::DateTime<chrono::Utc>>) -> Option<Self> {
        match (status, requested_at) {
            ("cancelled", _) => Some(Self::AlreadyCancelled),
            (_, Some(at)) => Some(Self::AlreadyRequested(at)),
            ("pending", None) => Some(Self::Pending),
            ("rejected", None) => Some(Self::Rejected),
            _ => None,
        }
    }

    /// The machine-readable code of the 409.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Pending => "order_not_confirmed",
            Self::Rejected => "order_rejected",
            Self::AlreadyRequested(_) => "cancellation_already_requested",
            Self::AlreadyCancelled => "order_already_cancelled",
        }
    }
}

/// Where an order is in its life. Only `pending` is set by this service's API; the others come
/// from the saga's events (a customer's cancellation too: the order stays `confirmed` until
/// payment has refunded it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Accepted, waiting for stock and payment.
    Pending,
    /// Stock reserved and payment taken.
    Confirmed,
    /// Could not be fulfilled (out of stock).
    Rejected,
    /// Payment declined (reservation released), or cancelled by the customer after it was
    /// confirmed (charge refunded, stock put back).
    Cancelled,
}

impl OrderStatus {
    /// The database and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(customer: &str, items: &[(&str, i64)]) -> PlaceOrderRequest {
        PlaceOrderRequest {
            customer_id: customer.into(),
            items: items
                .iter()
                .map(|(sku, quantity)| OrderLineRequest {
                    sku: (*sku).into(),
                    quantity: *quantity,
                })
                .collect(),
            location: None,
        }
    }

    fn field_of(request: PlaceOrderRequest) -> String {
        NewOrder::try_from(&request).unwrap_err().field
    }

    #[test]
    fn a_valid_request_becomes_an_order() {
        let order = NewOrder::try_from(&request(" c-1 ", &[("SKU-1", 2), ("SKU-2", 1)])).unwrap();
        assert_eq!(order.customer_id.as_str(), "c-1");
        assert_eq!(order.lines.len(), 2);
        assert_eq!(order.lines[0].quantity.get(), 2);
    }

    #[test]
    fn only_a_confirmed_order_without_a_request_can_be_cancelled() {
        let at = chrono::DateTime::UNIX_EPOCH;
        assert_eq!(CancelRefusal::of("confirmed", None), None);
        assert_eq!(
            CancelRefusal::of("confirmed", Some(at)),
            Some(CancelRefusal::AlreadyRequested(at))
        );
        assert_eq!(
            CancelRefusal::of("cancelled", Some(at)),
            Some(CancelRefusal::AlreadyCancelled)
        );
        assert_eq!(
            CancelRefusal::of("cancelled", None),
            Some(CancelRefusal::AlreadyCancelled),
            "cancelled when its payment was declined"
        );
        assert_eq!(
            CancelRefusal::of("pending", None),
            Some(CancelRefusal::Pending)
        );
        assert_eq!(
            CancelRefusal::of("rejected", None),
            Some(CancelRefusal::Rejected)
        );
    }

    #[test]
    fn each_invalid_field_is_named() {
        assert_eq!(field_of(request("", &[("SKU-1", 1)])), "customer_id");
        assert_eq!(field_of(request("c", &[])), "items");
        assert_eq!(field_of(request("c", &[("SKU-1", 0)])), "items[0].quantity");
        assert_eq!(
            field_of(request("c", &[("SKU-1", 1), ("S", -3)])),
            "items[1].quantity"
        );
        assert_eq!(field_of(request("c", &[("bad sku", 1)])), "items[0].sku");
        assert_eq!(
            field_of(request("c", &[("A", 1), ("A", 1)])),
            "items[1].sku"
        );
        assert_eq!(
            field_of(request("c", &[("A", MAX_QUANTITY + 1)])),
            "items[0].quantity"
        );
        let too_many: Vec<(String, i64)> = (0..=MAX_LINES).map(|i| (format!("S{i}"), 1)).collect();
        let too_many: Vec<(&str, i64)> = too_many.iter().map(|(s, q)| (s.as_str(), *q)).collect();
        assert_eq!(field_of(request("c", &too_many)), "items");
        let mut blank_location = request("c", &[("A", 1)]);
        blank_location.location = Some("  ".into());
        assert_eq!(field_of(blank_location), "location");
        let mut long_location = request("c", &[("A", 1)]);
        long_location.location = Some("x".repeat(MAX_LOCATION_LEN + 1));
        assert_eq!(field_of(long_location), "location");
    }
}
