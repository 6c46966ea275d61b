//! The event archive: a stream queue of every event, written by the outbox relays, read by
//! projections.

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

use super::long_string;
use crate::broker::BrokerError;
use crate::config::{ConfigError, Lookup};

/// Name of the event archive's stream queue.
pub const ARCHIVE_STREAM: &str = "events.archive";

/// The event archive: a stream queue (append-only, replayable, read with an offset) that
/// keeps every event published to the events exchange for a while, for projections that
/// start from history (see [`crate::projection`]).
///
/// It is not bound to the exchange: a binding would route every event somewhere, and an event
/// that reaches no work queue would then look delivered instead of staying in its outbox with
/// the broker's refusal. The outbox relay writes the archive copy itself, as a second
/// confirmed publish of the same message through the default exchange, and marks a row
/// published only when both copies are confirmed. Retention (`x-max-age`,
/// `x-max-length-bytes`) removes whole segments only, so the segment size bounds how much
/// more than the limit is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    /// The stream's name ([`ARCHIVE_STREAM`]).
    pub name: String,
    /// Keep events at least this long, as RabbitMQ writes it (`7D`, `12h`, `30m`, `90s`).
    pub max_age: String,
    /// Keep at most about this many bytes (whole segments are removed).
    pub max_bytes: u64,
    /// Size of one segment file: the unit retention removes.
    pub segment_bytes: u64,
}

impl Default for Archive {
    /// Seven days, at most 1 GB, in 50 MB segments.
    fn default() -> Self {
        Self {
            name: ARCHIVE_STREAM.to_owned(),
            max_age: "7D".to_owned(),
            max_bytes: 1_000_000_000,
            segment_bytes: 50_000_000,
        }
    }
}

impl Archive {
    /// The archive when `ARCHIVE_ENABLED` is true (it is opt-in), with `ARCHIVE_MAX_AGE`,
    /// `ARCHIVE_MAX_BYTES` and `ARCHIVE_SEGMENT_BYTES` over the defaults. Every service of a
    /// system must read the same values: the broker refuses a stream redeclared with other
    /// retention, and a service without the archive would leave its events out of the history.
    pub fn from_config(config: &impl Lookup) -> Result<Option<Self>, ConfigError> {
        if !config.parse("ARCHIVE_ENABLED", false)? {
            return Ok(None);
        }
        let defaults = Self::default();
        let max_age = config.string("ARCHIVE_MAX_AGE", &defaults.max_age);
        let valid_age = max_age.len() > 1
            && max_age[..max_age.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_digit())
            && max_age.ends_with(['Y', 'M', 'D', 'h', 'm', 's']);
        if !valid_age {
            return Err(ConfigError {
                name: "ARCHIVE_MAX_AGE".to_owned(),
                value: max_age,
                reason: "a number followed by one of Y, M, D, h, m, s (RabbitMQ's x-max-age)"
                    .to_owned(),
            });
        }
        Ok(Some(Self {
            max_age,
            max_bytes: config.parse("ARCHIVE_MAX_BYTES", defaults.max_bytes)?,
            segment_bytes: config.parse("ARCHIVE_SEGMENT_BYTES", defaults.segment_bytes)?,
            ..defaults
        }))
    }

    /// The stream's declare arguments. Every process declares the same ones: the broker
    /// refuses a redeclaration with different retention (`PRECONDITION_FAILED`).
    pub fn arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("stream"));
        args.insert("x-max-age".into(), long_string(&self.max_age));
        args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(i64::try_from(self.max_bytes).unwrap_or(i64::MAX)),
        );
        args.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(i64::try_from(self.segment_bytes).unwrap_or(i64::MAX)),
        );
        args
    }

    pub(super) async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        channel
            .queue_declare(
                self.name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                self.arguments(),
            )
            .await
            .map_err(BrokerError::operation(format!(
                "queue.declare {} (stream)",
                self.name
            )))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_opt_in_and_its_age_is_checked() {
        use crate::config::ConfigSource;
        let source = |pairs: &[(&str, &str)]| {
            ConfigSource::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        };
        assert_eq!(Archive::from_config(&source(&[])).unwrap(), None);
        let archive = Archive::from_config(&source(&[
            ("ARCHIVE_ENABLED", "true"),
            ("ARCHIVE_MAX_AGE", "12h"),
            ("ARCHIVE_MAX_BYTES", "5000000"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(archive.max_age, "12h");
        assert_eq!(archive.max_bytes, 5_000_000);
        assert_eq!(archive.name, ARCHIVE_STREAM);
        for bad in ["12", "h", "12 hours", "-1D"] {
            let error = Archive::from_config(&source(&[
                ("ARCHIVE_ENABLED", "true"),
                ("ARCHIVE_MAX_AGE", bad),
            ]))
            .unwrap_err();
            assert_eq!(error.name, "ARCHIVE_MAX_AGE", "{bad}");
        }
    }
}
