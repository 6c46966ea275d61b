//! A paused process: SIGSTOP, and SIGCONT after a while. The process keeps its sockets but
//! answers nothing, like a process stuck in a long GC pause or a frozen VM. The broker only
//! notices through the AMQP heartbeat: give the service a short one (`AMQP_HEARTBEAT_SECS`)
//! and a pause longer than about twice that closes its connections.

use std::time::Duration;

use super::{FaultError, run, run_blocking, wait_for};

/// How long a signal may take to act: the target stops or continues when it is next
/// scheduled, not when kill(2) returns.
const SIGNAL_ACTS_WITHIN: Duration = Duration::from_secs(5);

/// Stop `pid` and return the guard that continues it. The process is checked to be stopped
/// (`T` in `/proc/<pid>/stat`) before this returns.
pub async fn pause(pid: u32) -> Result<PausedProcess, FaultError> {
    let guard = PausedProcess {
        pid,
        resumed: false,
    };
    run("kill", &["-STOP", &pid.to_string()]).await?;
    wait_state(pid, "stopped after SIGSTOP", |state| {
        matches!(state, 'T' | 't')
    })
    .await?;
    Ok(guard)
}

/// Pause `pid` for `duration`, then continue it. The wait is the fault itself, not a
/// synchronisation; if the future is dropped meanwhile, the guard continues the process.
#[cfg(test)]
pub async fn pause_for(pid: u32, duration: Duration) -> Result<(), FaultError> {
    let paused = pause(pid).await?;
    tokio::time::sleep(duration).await;
    paused.resume().await
}

/// A process stopped by [`pause`]. [`PausedProcess::resume`] continues it and checks that it
/// runs; dropping the guard continues it too (best effort, blocking for one `kill`).
#[must_use = "dropping the guard continues the process at once"]
pub struct PausedProcess {
    pid: u32,
    resumed: bool,
}

impl PausedProcess {
    #[cfg(test)]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGCONT, then check that the process is no longer stopped.
    pub async fn resume(mut self) -> Result<(), FaultError> {
        run("kill", &["-CONT", &self.pid.to_string()]).await?;
        self.resumed = true;
        wait_state(self.pid, "running after SIGCONT", |state| {
            !matches!(state, 'T' | 't')
        })
        .await
    }
}

impl Drop for PausedProcess {
    fn drop(&mut self) {
        if self.resumed {
            return;
        }
        if let Err(error) = run_blocking("kill", &["-CONT", &self.pid.to_string()]) {
            eprintln!(
                "chaos: could not continue process {}: {error}; run: kill -CONT {}",
                self.pid, self.pid
            );
        }
    }
}

/// The one-letter state of `pid` from `/proc/<pid>/stat` (`R`, `S`, `T`, ...), `None` when it
/// is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Wait until `pid`'s state satisfies `wanted`; a process that is gone is an error at once.
async fn wait_state(pid: u32, what: &str, wanted: impl Fn(char) -> bool) -> Result<(), FaultError> {
    let what = format!("process {pid} {what}");
    wait_for(&what, SIGNAL_ACTS_WITHIN, || async {
        match process_state(pid) {
            None | Some('Z' | 'X') => Err(FaultError::Target(format!("process {pid} is gone"))),
            Some(state) => Ok(wanted(state).then_some(())),
        }
    })
    .await
}
