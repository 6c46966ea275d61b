//! Turning the firehose on and off: `rabbitmqctl -q trace_on|trace_off -p <vhost>`. It needs
//! the node's Erlang cookie, so root or the `rabbitmq` user (the scripts call it as root, or
//! through `runuser -u rabbitmq --` for the cluster nodes): the caller passes the program and
//! its leading arguments.

use super::GenericError;

fn split_command(words: &[String]) -> (&str, &[String]) {
    match words.split_first() {
        Some((program, leading)) => (program.as_str(), leading),
        None => ("rabbitmqctl", &[]),
    }
}

/// `rabbitmqctl -q <action> -p <vhost>`.
pub(super) async fn trace(words: &[String], action: &str, vhost: &str) -> Result<(), GenericError> {
    let (program, leading) = split_command(words);
    let command = format!("{} -q {action} -p {vhost}", words.join(" "));
    let output = tokio::process::Command::new(program)
        .args(leading)
        .args(["-q", action, "-p", vhost])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|error| GenericError::Rabbitmqctl {
            command: command.clone(),
            reason: error.to_string(),
        })?;
    checked(command, &output)
}

/// [`trace`] from a place that cannot await (a `Drop`).
pub(super) fn trace_blocking(
    words: &[String],
    action: &str,
    vhost: &str,
) -> Result<(), GenericError> {
    let (program, leading) = split_command(words);
    let command = format!("{} -q {action} -p {vhost}", words.join(" "));
    let output = std::process::Command::new(program)
        .args(leading)
        .args(["-q", action, "-p", vhost])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| GenericError::Rabbitmqctl {
            command: command.clone(),
            reason: error.to_string(),
        })?;
    checked(command, &output)
}

fn checked(command: String, output: &std::process::Output) -> Result<(), GenericError> {
    if output.status.success() {
        return Ok(());
    }
    Err(GenericError::Rabbitmqctl {
        command,
        reason: format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}
