//! The kit's Server-Sent Events test client.

pub use msgkit::testing::sse::{Frame, SseClient};
