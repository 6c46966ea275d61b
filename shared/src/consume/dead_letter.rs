//! The headers the kit adds when it dead-letters a message: what an operator reads in the
//! management UI to understand a failure without logs.

use chrono::Utc;

use super::handler::HandlerError;

/// Why the message was dead-lettered: `retries-exhausted`, `poison`.
pub const FAILURE_REASON: &str = "x-failure-reason";
/// The failing error's type.
pub const EXCEPTION_TYPE: &str = "x-exception-type";
/// The failing error's message (bounded).
pub const EXCEPTION_MESSAGE: &str = "x-exception-message";
/// The error with its causes (bounded to [`MAX_DETAIL_BYTES`], far below `frame_max`).
pub const EXCEPTION_DETAIL: &str = "x-exception-detail";
/// The service whose consumer gave up.
pub const FAILED_SERVICE: &str = "x-failed-service";
/// When (RFC 3339).
pub const FAILED_AT: &str = "x-failed-at";
/// The exchange the message was first delivered through.
pub const ORIGINAL_EXCHANGE: &str = "x-original-exchange";
/// The routing key it was first delivered with.
pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
/// The work queue it failed in.
pub const ORIGINAL_QUEUE: &str = "x-original-queue";

/// Longest `x-exception-message`.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest `x-exception-detail`. Headers travel in one frame (`frame_max`, 128 KiB by
/// default); the body and other headers need the rest.
pub const MAX_DETAIL_BYTES: usize = 4096;

/// Why the kit dead-letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// A transient failure persisted through every attempt.
    RetriesExhausted,
    /// The message can never be handled.
    Poison,
}

impl FailureReason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "retries-exhausted",
            Self::Poison => "poison",
        }
    }
}

/// The failure headers for `error`.
pub(crate) fn failure_headers(
    reason: FailureReason,
    error: &HandlerError,
    service: &str,
) -> [(&'static str, String); 6] {
    [
        (FAILURE_REASON, reason.as_str().to_owned()),
        (
            EXCEPTION_TYPE,
            truncate(error.error_type(), MAX_MESSAGE_BYTES),
        ),
        (
            EXCEPTION_MESSAGE,
            truncate(error.message(), MAX_MESSAGE_BYTES),
        ),
        (EXCEPTION_DETAIL, truncate(error.detail(), MAX_DETAIL_BYTES)),
        (FAILED_SERVICE, service.to_owned()),
        (FAILED_AT, Utc::now().to_rfc3339()),
    ]
}

/// At most `max` bytes of `text`, cut at a character boundary, marked when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const MARK: &str = "…[truncated]";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let text = "é".repeat(5000);
        let cut = truncate(&text, MAX_DETAIL_BYTES);
        assert!(cut.len() <= MAX_DETAIL_BYTES);
        assert!(cut.ends_with("[truncated]"));
        assert_eq!(truncate("short", 10), "short");
    }
}
