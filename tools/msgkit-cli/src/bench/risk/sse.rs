//! A minimal Server-Sent Events reader for `GET /alerts/stream`: enough of the format
//! (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
//! to take `id`, `event` and `data` fields from frames split anywhere across chunks.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    /// `message` when the frame names none.
    pub event: String,
    /// The data lines joined with `\n`.
    pub data: String,
}

/// Bytes in, frames out.
#[derive(Debug, Default)]
pub struct FrameReader {
    buffer: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

impl FrameReader {
    /// Feed a chunk as it came off the wire; returns the frames it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Frame> {
        self.buffer.extend_from_slice(chunk);
        let mut frames = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    frames.push(Frame {
                        id: self.id.clone(),
                        event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                self.event = None;
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment: keep-alive
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.id = Some(value.to_owned()),
                "event" => self.event = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks_are_put_back_together() {
        let mut reader = FrameReader::default();
        let wire = b": keep-alive\n\nid: 7\nevent: alert\ndata: {\"seq\": 7,\ndata: \"x\": 1}\n\nid: 8\r\ndata: plain\r\n\r\n";
        let mut frames = Vec::new();
        for chunk in wire.chunks(5) {
            frames.extend(reader.push(chunk));
        }
        assert_eq!(
            frames,
            vec![
                Frame {
                    id: Some("7".into()),
                    event: "alert".into(),
                    data: "{\"seq\": 7,\n\"x\": 1}".into(),
                },
                Frame {
                    id: Some("8".into()),
                    event: "message".into(),
                    data: "plain".into(),
                },
            ]
        );
    }

    #[test]
    fn a_frame_without_its_blank_line_is_not_dispatched_yet() {
        let mut reader = FrameReader::default();
        assert!(reader.push(b"event: alert\ndata: {}\n").is_empty());
        assert_eq!(reader.push(b"\n").len(), 1);
    }
}
