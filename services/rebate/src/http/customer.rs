//! A customer id as the API takes it: order's rule (1 to 64 characters, no control
//! characters), so that nothing longer reaches a query or a notification.

use super::ApiError;

/// Longest customer id (order accepts no longer).
pub const MAX_CUSTOMER_CHARS: usize = 64;

/// A customer id that passed [`CustomerId::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerId(String);

impl CustomerId {
    /// The id from the path, or 422 naming the field `customer`.
    pub fn parse(raw: String) -> Result<Self, ApiError> {
        let chars = raw.chars().count();
        if chars == 0 || chars > MAX_CUSTOMER_CHARS || raw.chars().any(char::is_control) {
            return Err(ApiError::Invalid {
                field: "customer",
                reason: format!(
                    "must be 1 to {MAX_CUSTOMER_CHARS} characters, none a control character"
                ),
            });
        }
        Ok(Self(raw))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
