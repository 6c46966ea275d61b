//! Graceful shutdown as a value: one token that announces it, one tracker that knows when every
//! background task has finished.
//!
//! A service creates one [`Shutdown`], hands clones to each task it spawns (through
//! [`Shutdown::spawn`]) and, on SIGTERM or Ctrl-C, calls [`Shutdown::trigger`] and then
//! [`Shutdown::wait_for_tasks`], so nothing is dropped mid-flight.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Cancellation signal plus the set of tasks that must finish before the process exits.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    /// A fresh, untriggered shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Announce shutdown to every holder of a clone.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has been announced.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has been announced.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// A child: triggered with this one, or on its own (to stop one component), with its own
    /// set of tasks, so that waiting for a component's tasks does not wait for its siblings'.
    pub fn child(&self) -> Self {
        Self {
            token: self.token.child_token(),
            tasks: TaskTracker::new(),
        }
    }

    /// Spawn a task owned by this shutdown: [`Shutdown::wait_for_tasks`] waits for it.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(future)
    }

    /// Wait until every task spawned through this shutdown has finished (not its children's:
    /// each child tracks its own, and whoever made it waits for them).
    pub async fn wait_for_tasks(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Resolves on SIGTERM or Ctrl-C (SIGINT), whichever comes first.
    pub async fn os_signal() {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
    }
}
