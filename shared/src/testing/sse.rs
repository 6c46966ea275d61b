//! A Server-Sent Events client for tests: frames parsed from a streaming response, as a
//! browser's `EventSource` would see them (the risk, rebate and stock streams are tested with it).

use std::time::Duration;

use serde_json::Value;

/// One SSE frame (comments left out).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// `id:`, if the frame has one.
    pub id: Option<String>,
    /// `event:`, if the frame has one.
    pub event: Option<String>,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

impl Frame {
    /// The frame's id as a number.
    pub fn seq(&self) -> i64 {
        self.id
            .as_deref()
            .expect("an id")
            .parse()
            .expect("a numeric id")
    }

    /// The frame's data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("JSON data")
    }
}

/// A response read frame by frame.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    /// Read `response`, which must be a 200 `text/event-stream`.
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200, "the stream opens");
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("a textual content type")
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next frame, or `None` once the server ended the stream; panics after `deadline`.
    pub async fn next(&mut self, deadline: Duration) -> Option<Frame> {
        tokio::time::timeout(deadline, self.next_frame())
            .await
            .expect("a frame (or the stream's end) within the deadline")
    }

    /// Whether a frame arrives within `wait` (a negative check: `wait` bounds it).
    pub async fn nothing_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.next_frame()).await.is_err()
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(frame) = parse(&block) {
                    return Some(frame);
                }
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => {
                    self.buffer
                        .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
                    // Normalise line endings so that frames split on "\n\n" only.
                    self.buffer = self.buffer.replace("\r\n", "\n");
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// A frame from its lines; `None` for a block of comments only (keep-alives).
fn parse(block: &str) -> Option<Frame> {
    let mut frame = Frame {
        id: None,
        event: None,
        data: String::new(),
    };
    let mut any = false;
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "id" => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "data" => {
                if !frame.data.is_empty() {
                    frame.data.push('\n');
                }
                frame.data.push_str(value);
            }
            _ => {}
        }
    }
    any.then_some(frame)
}
