//! What the broker holds after the run: the events exchange's bindings, queue depths, and the
//! dead letters of each work queue (read without removing them).

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, message::BasicGetMessage};
use serde::Deserialize;

use crate::broker::encode;

use super::{GenericError, ManagementApi};

/// A binding of the events exchange to a queue.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Binding {
    pub(super) destination: String,
    pub(super) destination_type: String,
    pub(super) routing_key: String,
}

#[derive(Debug, Deserialize)]
struct QueueName {
    name: String,
}

impl ManagementApi {
    /// The queue bindings whose source is `exchange` (exchange-to-exchange bindings are left
    /// out: the kit declares none).
    pub(super) async fn queue_bindings(
        &self,
        vhost: &str,
        exchange: &str,
    ) -> Result<Vec<Binding>, GenericError> {
        let path = format!(
            "exchanges/{}/{}/bindings/source",
            encode(vhost),
            encode(exchange)
        );
        let bindings: Vec<Binding> = self.get(&path).await?;
        Ok(bindings
            .into_iter()
            .filter(|b| b.destination_type == "queue")
            .collect())
    }

    /// The names of every queue of `vhost`.
    pub(super) async fn queue_names(&self, vhost: &str) -> Result<Vec<String>, GenericError> {
        let path = format!("queues/{}?columns=name", encode(vhost));
        let queues: Vec<QueueName> = self.get(&path).await?;
        Ok(queues.into_iter().map(|q| q.name).collect())
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, GenericError> {
        let url = format!("{}/api/{path}", self.url.trim_end_matches('/'));
        let failed = |reason: String| GenericError::Management {
            url: url.clone(),
            reason,
        };
        let response = reqwest::Client::new()
            .get(&url)
            .basic_auth(&self.user, Some(&self.password))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(failed(format!("{status}: {body}")));
        }
        response.json().await.map_err(|e| failed(e.to_string()))
    }
}

/// Ready messages in `queue` now (a passive declare: unlike the management API's statistics
/// it does not lag), or `None` if there is no such queue.
pub(super) async fn queue_depth(
    connection: &Connection,
    queue: &str,
) -> Result<Option<u32>, GenericError> {
    // A passive declare of a missing queue closes the channel: one channel per queue.
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| GenericError::broker("opening a channel for queue depths", e))?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let depth = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = channel.close(200, "done".into()).await;
    Ok(depth)
}

/// The dead letters in `dlq`: message id -> the reason it carries (`x-failure-reason` set by
/// the kit, else `x-first-death-reason` set by the broker, e.g. `delivery_limit`; empty when
/// it has neither). Read with `basic.get` and left unacknowledged until the channel closes,
/// which puts every one back. The queue must exist (see [`queue_depth`]).
pub(super) async fn dead_letters(
    connection: &Connection,
    dlq: &str,
) -> Result<BTreeMap<String, String>, GenericError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| GenericError::broker(format!("opening a channel to read {dlq}"), e))?;
    let mut seen = BTreeMap::new();
    loop {
        let got = channel
            .basic_get(dlq.into(), BasicGetOptions { no_ack: false })
            .await;
        match got {
            Ok(Some(message)) => {
                let (id, reason) = id_and_reason(&message);
                seen.insert(id, reason);
            }
            Ok(None) => break,
            Err(error) => return Err(GenericError::broker(format!("reading {dlq}"), error)),
        }
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(seen)
}

fn id_and_reason(message: &BasicGetMessage) -> (String, String) {
    let props = &message.delivery.properties;
    let id = props
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default();
    let reason = msgkit::message::header_str(props, msgkit::consume::FAILURE_REASON)
        .or_else(|| msgkit::message::header_str(props, "x-first-death-reason"))
        .unwrap_or_default()
        .to_owned();
    (id, reason)
}
