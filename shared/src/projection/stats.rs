//! What a projection's replica says about itself: whether it leads, catches up or fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What a projection's replica says about itself, for `/readyz`.
#[derive(Debug)]
pub(crate) struct ProjectionStats {
    name: String,
    pub(super) active: AtomicBool,
    pub(super) catching_up: AtomicBool,
    /// Lag in milliseconds.
    pub(super) lag: AtomicU64,
    failing: std::sync::Mutex<Option<String>>,
}

impl ProjectionStats {
    pub(super) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            active: AtomicBool::new(false),
            catching_up: AtomicBool::new(false),
            lag: AtomicU64::new(0),
            failing: std::sync::Mutex::new(None),
        }
    }

    /// Why this replica is not ready, if it is not: it applies the projection and is still
    /// catching up, or its batches keep failing. A standby is ready (it serves reads).
    pub(crate) fn not_ready_reason(&self) -> Option<String> {
        if let Some(error) = self.failing.lock().ok().and_then(|failing| failing.clone()) {
            return Some(format!("projection {}: failing: {error}", self.name));
        }
        if self.active.load(Ordering::Relaxed) && self.catching_up.load(Ordering::Relaxed) {
            let lag = self.lag.load(Ordering::Relaxed) as f64 / 1000.0;
            return Some(format!(
                "projection {}: catching up with the archive, {lag:.1} s behind",
                self.name
            ));
        }
        None
    }

    pub(super) fn set_failing(&self, error: Option<String>) {
        if let Ok(mut failing) = self.failing.lock() {
            *failing = error;
        }
    }
}
