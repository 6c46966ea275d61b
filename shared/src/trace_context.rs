//! W3C Trace Context (`traceparent`), the one piece of trace state that travels with every
//! message: stored in the outbox row by the request that wrote it, copied to the AMQP headers
//! by the relay, continued by every consumer.
//!
//! Format (<https://www.w3.org/TR/trace-context/#traceparent-header>):
//! `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.

use std::fmt;
use std::str::FromStr;

/// Header name, in HTTP and in AMQP headers alike.
pub const TRACEPARENT: &str = "traceparent";
/// Companion header carrying vendor state; passed through unchanged.
pub const TRACESTATE: &str = "tracestate";

/// A parsed, valid `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// Why a `traceparent` value was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid traceparent: {0}")]
pub struct InvalidTraceParent(&'static str);

impl TraceParent {
    /// Start a new trace (sampled), for work that no caller is tracing yet.
    pub fn new_root() -> Self {
        let trace = uuid::Uuid::new_v4();
        Self {
            trace_id: *trace.as_bytes(),
            span_id: random_span_id(),
            flags: 0x01,
        }
    }

    /// The same trace with a fresh span id: what a hop that continues the trace sends on.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_span_id(),
            ..*self
        }
    }

    /// Continue an incoming header when it is valid, otherwise start a new trace. Invalid
    /// headers are dropped (as the W3C spec requires), never propagated.
    pub fn continue_or_start(header: Option<&str>) -> Self {
        header
            .and_then(|value| value.parse::<Self>().ok())
            .map(|parent| parent.child())
            .unwrap_or_else(Self::new_root)
    }

    /// A context from its raw parts (ids as bytes, W3C flags).
    pub(crate) fn from_parts(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Self {
        Self {
            trace_id,
            span_id,
            flags,
        }
    }

    /// The trace id's bytes.
    pub(crate) fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The span id's bytes.
    pub(crate) fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// Whether the sampled flag is set.
    pub(crate) fn sampled(&self) -> bool {
        self.flags & 0x01 == 0x01
    }
}

fn random_span_id() -> [u8; 8] {
    let random = uuid::Uuid::new_v4();
    let mut span = [0u8; 8];
    span.copy_from_slice(&random.as_bytes()[8..16]);
    // An all-zero span id is invalid; v4 randomness makes it astronomically unlikely, but
    // the invariant is cheap to keep.
    if span == [0u8; 8] {
        span[7] = 1;
    }
    span
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], InvalidTraceParent> {
    if text.len() != N * 2 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(InvalidTraceParent(
            "expected lowercase hex of the right length",
        ));
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16)
            .map_err(|_| InvalidTraceParent("not hex"))?;
    }
    Ok(out)
}

impl FromStr for TraceParent {
    type Err = InvalidTraceParent;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut parts = value.trim().split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidTraceParent("expected four dash-separated fields"));
        };
        let [version] = parse_hex::<1>(version)?;
        if version == 0xff {
            return Err(InvalidTraceParent("version ff is forbidden"));
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == 0 && parts.next().is_some() {
            return Err(InvalidTraceParent("version 00 has exactly four fields"));
        }
        let trace_id = parse_hex::<16>(trace)?;
        let span_id = parse_hex::<8>(span)?;
        let [flags] = parse_hex::<1>(flags)?;
        if trace_id == [0; 16] {
            return Err(InvalidTraceParent("all-zero trace id"));
        }
        if span_id == [0; 8] {
            return Err(InvalidTraceParent("all-zero parent id"));
        }
        Ok(Self {
            trace_id,
            span_id,
            flags,
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips() {
        let parsed: TraceParent = SAMPLE.parse().unwrap();
        assert_eq!(parsed.to_string(), SAMPLE);
        assert!(parsed.sampled());
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let parent: TraceParent = SAMPLE.parse().unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
    }

    #[test]
    fn invalid_headers_are_rejected() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn an_invalid_incoming_header_starts_a_new_trace() {
        let started = TraceParent::continue_or_start(Some("garbage"));
        assert_ne!(started.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let continued = TraceParent::continue_or_start(Some(SAMPLE));
        assert_eq!(continued.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
