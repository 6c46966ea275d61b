//! Broker resource alarms: the memory alarm (`set_vm_memory_high_watermark 0`) and the disk
//! alarm (a disk free limit above any disk). While one is on, RabbitMQ blocks every connection
//! of the node that publishes (`connection.blocked`); consumers keep going. Raising one reads
//! the node's current setting first and [`AlarmGuard`] puts it back, so the node ends as it
//! began whatever happens in between.

use std::time::Duration;

use serde_json::Value;

use super::{FaultError, run, run_blocking, wait_for};

/// A disk free limit no disk here has free (1 PB): the disk alarm goes on at once.
const HUGE_DISK_FREE_LIMIT: &str = "1000000000000000";
/// How long the management API may take to show an alarm going on or off: it refreshes node
/// statistics every 5 s (`collect_statistics_interval`).
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);

/// Which resource alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmKind {
    Memory,
    Disk,
}

impl AlarmKind {
    /// The field of `/api/nodes/<node>` that shows this alarm.
    fn api_field(self) -> &'static str {
        match self {
            Self::Memory => "mem_alarm",
            Self::Disk => "disk_free_alarm",
        }
    }

    /// The Erlang call that gives the node's current setting.
    fn read_setting(self) -> &'static str {
        match self {
            Self::Memory => "vm_memory_monitor:get_vm_memory_high_watermark().",
            Self::Disk => "rabbit_disk_monitor:get_disk_free_limit().",
        }
    }

    /// The `rabbitmqctl` arguments that set `value` (as [`AlarmKind::parse_setting`] gives it).
    fn set_args(self, value: &[String]) -> Vec<&str> {
        let command = match self {
            Self::Memory => "set_vm_memory_high_watermark",
            Self::Disk => "set_disk_free_limit",
        };
        std::iter::once(command)
            .chain(value.iter().map(String::as_str))
            .collect()
    }

    /// The setting that raises the alarm.
    fn alarm_setting(self) -> Vec<String> {
        match self {
            Self::Memory => vec!["0".to_owned()],
            Self::Disk => vec![HUGE_DISK_FREE_LIMIT.to_owned()],
        }
    }

    /// The node's answer to [`AlarmKind::read_setting`] as `rabbitmqctl set_...` arguments:
    /// a watermark is a fraction (`0.4`) or `{absolute,Bytes}`; the disk limit is in bytes
    /// (a relative limit is reported as its current absolute value, which is what returns).
    pub(super) fn parse_setting(self, answer: &str) -> Option<Vec<String>> {
        let answer = answer.trim();
        let number = |text: &str| text.parse::<f64>().is_ok().then(|| text.to_owned());
        match self {
            Self::Memory => {
                if let Some(bytes) = answer
                    .strip_prefix("{absolute,")
                    .and_then(|rest| rest.strip_suffix('}'))
                {
                    let bytes = bytes.trim();
                    bytes.parse::<u64>().ok()?;
                    return Some(vec!["absolute".to_owned(), bytes.to_owned()]);
                }
                let fraction = answer
                    .strip_prefix("{relative,")
                    .and_then(|rest| rest.strip_suffix('}'))
                    .unwrap_or(answer);
                number(fraction.trim()).map(|f| vec![f])
            }
            Self::Disk => answer.parse::<u64>().ok().map(|b| vec![b.to_string()]),
        }
    }
}

/// A RabbitMQ node as the faults reach it: by name for `rabbitmqctl -n`, and its management
/// API for checking what the node shows.
#[derive(Debug, Clone)]
pub struct BrokerNode {
    /// e.g. `rabbit@localhost`.
    pub name: String,
    /// e.g. `http://127.0.0.1:15672`.
    pub management_url: String,
    pub user: String,
    pub password: String,
}

impl BrokerNode {
    /// The local node with the management API on `management_port`, as guest.
    pub fn local(name: &str, management_port: u16) -> Self {
        Self {
            name: name.to_owned(),
            management_url: format!("http://127.0.0.1:{management_port}"),
            user: "guest".to_owned(),
            password: "guest".to_owned(),
        }
    }

    async fn ctl(&self, args: &[&str]) -> Result<String, FaultError> {
        let mut all = vec!["-q", "-n", &self.name];
        all.extend_from_slice(args);
        run("rabbitmqctl", &all).await
    }

    fn ctl_blocking(&self, args: &[&str]) -> Result<String, FaultError> {
        let mut all = vec!["-q", "-n", &self.name];
        all.extend_from_slice(args);
        run_blocking("rabbitmqctl", &all)
    }

    /// Whether the management API shows `kind`'s alarm on this node; `None` while the node's
    /// statistics are not in yet (the first seconds after the node started).
    pub async fn alarm_shown(&self, kind: AlarmKind) -> Result<Option<bool>, FaultError> {
        let url = format!(
            "{}/api/nodes/{}",
            self.management_url,
            urlencode(&self.name)
        );
        let fail = |reason: String| FaultError::Management {
            url: url.clone(),
            reason,
        };
        let response = reqwest::Client::new()
            .get(&url)
            .basic_auth(&self.user, Some(&self.password))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| fail(e.to_string()))?;
        let node: Value = response.json().await.map_err(|e| fail(e.to_string()))?;
        Ok(node[kind.api_field()].as_bool())
    }

    async fn wait_alarm_shown(&self, kind: AlarmKind, on: bool) -> Result<(), FaultError> {
        let what = format!(
            "{} = {on} for {} in the management API",
            kind.api_field(),
            self.name
        );
        wait_for(&what, VISIBLE_WITHIN, || async {
            Ok((self.alarm_shown(kind).await? == Some(on)).then_some(()))
        })
        .await
    }
}

/// Raise `kind`'s alarm on `node` and wait until its management API shows it. The node's
/// current setting is read first; without it nothing is changed (there would be nothing
/// known to restore). If the alarm does not show, the setting is restored before returning
/// the error.
pub async fn raise_alarm(node: &BrokerNode, kind: AlarmKind) -> Result<AlarmGuard, FaultError> {
    let answer = node.ctl(&["eval", kind.read_setting()]).await?;
    let previous = kind
        .parse_setting(&answer)
        .ok_or_else(|| FaultError::Unexpected {
            source_name: format!("{} on {}", kind.read_setting(), node.name),
            answer: answer.trim().to_owned(),
        })?;
    // The guard exists before the alarm does: from here on every path restores.
    let guard = AlarmGuard {
        node: node.clone(),
        kind,
        previous,
        restored: false,
    };
    node.ctl(&kind.set_args(&kind.alarm_setting())).await?;
    match node.wait_alarm_shown(kind, true).await {
        Ok(()) => Ok(guard),
        Err(error) => {
            // The alarm did not show: put the setting back (and check) before reporting.
            guard.restore().await?;
            Err(error)
        }
    }
}

/// An alarm raised by [`raise_alarm`]. [`AlarmGuard::restore`] puts the node's setting back
/// and waits until the management API shows the alarm cleared; dropping the guard without
/// that restores the setting too (blocking the thread for one `rabbitmqctl`), without the
/// check.
#[must_use = "dropping the guard ends the alarm at once"]
pub struct AlarmGuard {
    node: BrokerNode,
    kind: AlarmKind,
    /// The `rabbitmqctl set_...` arguments of the setting before the alarm.
    previous: Vec<String>,
    restored: bool,
}

impl AlarmGuard {
    /// The setting that is restored, as `rabbitmqctl` arguments (e.g. `["0.4"]`).
    #[cfg(test)]
    pub fn previous_setting(&self) -> &[String] {
        &self.previous
    }

    /// Put the previous setting back and wait until the node shows the alarm cleared.
    pub async fn restore(mut self) -> Result<(), FaultError> {
        let set = self.kind.set_args(&self.previous);
        self.node.ctl(&set).await?;
        self.restored = true;
        self.node.wait_alarm_shown(self.kind, false).await
    }
}

impl Drop for AlarmGuard {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        let set = self.kind.set_args(&self.previous);
        if let Err(error) = self.node.ctl_blocking(&set) {
            // Nobody is left to return the error to: say loudly what the operator must do.
            eprintln!(
                "chaos: could not end the {:?} alarm on {}: {error}; run: rabbitmqctl -n {} {}",
                self.kind,
                self.node.name,
                self.node.name,
                set.join(" ")
            );
        }
    }
}

/// Percent-encode a node name for a URL path (`@` is safe in a path, but be strict).
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
