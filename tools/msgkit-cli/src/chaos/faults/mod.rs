//! Faults that act on a running system, for the chaos runner: a broker resource alarm
//! ([`alarm`]) and a paused process ([`pause`]). Each one undoes itself: a guard restores the
//! system on every path (an error, a panic, a cancelled run), and the explicit way out checks
//! that the system is back. (A killed cluster node is `msgkit cluster-test`'s fault.)
//!
//! Broker alarms are node-wide: every client of the node is blocked, not only the run's vhost.
//! The runner raises them only in the serial phase of `make test`; their tests raise them on a
//! node of their own.
pub(crate) mod alarm;
pub(crate) mod pause;
#[cfg(test)]
mod tests;

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::CliError;

/// Why a fault could not be applied or undone.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// A command could not be started at all.
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A command or a condition took longer than allowed.
    #[error("timed out after {limit:?} waiting for {what}")]
    Timeout { what: String, limit: Duration },
    /// The broker answered something this code does not understand.
    #[error("unexpected answer from {source_name}: {answer}")]
    Unexpected { source_name: String, answer: String },
    /// The management API could not be asked.
    #[error("management API {url}: {reason}")]
    Management { url: String, reason: String },
    /// The fault's target is not what it should be (a dead pid, a queue without a leader).
    #[error("{0}")]
    Target(String),
}

impl From<FaultError> for CliError {
    fn from(error: FaultError) -> Self {
        match error {
            FaultError::Management { .. } => CliError::Unavailable(error.to_string()),
            other => CliError::Other(other.into()),
        }
    }
}

/// How long one command (rabbitmqctl, kill) may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How often a condition is checked while waiting for it.
const POLL: Duration = Duration::from_millis(250);

/// Run `program args` and return its stdout; a non-zero exit is an error carrying stderr.
pub(crate) async fn run(program: &str, args: &[&str]) -> Result<String, FaultError> {
    let command = format!("{program} {}", args.join(" "));
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| FaultError::Spawn {
            command: command.clone(),
            source,
        })?;
    let output = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| FaultError::Timeout {
            what: command.clone(),
            limit: COMMAND_LIMIT,
        })?
        .map_err(|source| FaultError::Spawn {
            command: command.clone(),
            source,
        })?;
    check_output(command, &output)
}

/// [`run`] for `Drop` impls, which cannot await: blocks the calling thread.
pub(crate) fn run_blocking(program: &str, args: &[&str]) -> Result<String, FaultError> {
    let command = format!("{program} {}", args.join(" "));
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| FaultError::Spawn {
            command: command.clone(),
            source,
        })?;
    check_output(command, &output)
}

fn check_output(command: String, output: &std::process::Output) -> Result<String, FaultError> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(FaultError::Command {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Check `condition` every [`POLL`] until it gives a value, at most for `limit`. An error of
/// the condition ends the wait only when the time is up (a management API that is briefly
/// away is not a reason to give up).
pub(crate) async fn wait_for<T, F, Fut>(
    what: &str,
    limit: Duration,
    mut condition: F,
) -> Result<T, FaultError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, FaultError>>,
{
    let started = Instant::now();
    loop {
        let last_error = match condition().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => None,
            Err(error) => Some(error),
        };
        if started.elapsed() >= limit {
            let what = match last_error {
                Some(error) => format!("{what} (last error: {error})"),
                None => what.to_owned(),
            };
            return Err(FaultError::Timeout { what, limit });
        }
        tokio::time::sleep(POLL).await;
    }
}
