//! The faults a proxy applies and its counters, behind a handle a chaos runner can clone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::bucket::TokenBucket;

/// Whether bytes get through the proxy at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Connectivity {
    /// Traffic flows.
    #[default]
    Open,
    /// Open connections are reset and new ones are reset as soon as they are accepted: what a
    /// client sees when the peer's host is down or a firewall rejects it.
    Cut,
    /// Connections stay open (new ones are accepted) but no byte moves either way until the
    /// proxy is restored; bytes held meanwhile are delivered then, in order. What a client sees
    /// when packets are silently dropped: only its own timeouts and heartbeats notice.
    Blackhole,
}

/// The faults a proxy applies; [`Faults::default`] is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Whether bytes get through.
    pub connectivity: Connectivity,
    /// Added to every chunk in each direction: a round trip takes twice this longer.
    pub latency: Duration,
    /// Bytes per second in each direction, shared by all the proxy's connections (as on one
    /// network link); `None` is unlimited and `Some(0)` stalls every transfer.
    pub bandwidth: Option<u64>,
}

/// What the proxy has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Connections accepted and forwarded (or held, while black-holed).
    pub accepted: u64,
    /// Connections reset on arrival because the proxy was cut.
    pub refused: u64,
    /// Connections open right now.
    pub open: u64,
    /// Bytes delivered from clients to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes delivered from the upstream to clients.
    pub bytes_to_client: u64,
}

/// State shared by the proxy, its connections and every [`ProxyControl`].
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) faults: watch::Sender<Faults>,
    pub(super) accepted: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) open: AtomicU64,
    pub(super) to_upstream: Direction,
    pub(super) to_client: Direction,
}

/// One direction of the link: its byte count and its bandwidth budget.
#[derive(Debug, Default)]
pub(super) struct Direction {
    pub(super) bytes: AtomicU64,
    pub(super) bucket: TokenBucket,
}

/// A cheap, cloneable handle that changes a [`super::TcpProxy`]'s faults while it runs and
/// reads its counters, so that a chaos runner can apply a schedule from its own task. Changes
/// apply at once to open connections as well as new ones. Once the proxy is dropped the
/// handle still works but affects nothing.
#[derive(Clone, Debug)]
pub struct ProxyControl {
    shared: Arc<Shared>,
}

impl ProxyControl {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Reset every open connection and every new one until [`ProxyControl::restore`]: a
    /// partition the client notices at once.
    pub fn cut(&self) {
        self.set_connectivity(Connectivity::Cut);
    }

    /// Hold every byte, on open connections and new ones, until [`ProxyControl::restore`]: a
    /// partition the client notices only through its own timeouts.
    pub fn blackhole(&self) {
        self.set_connectivity(Connectivity::Blackhole);
    }

    /// End a cut or a black hole; latency and the bandwidth cap stay as they are.
    pub fn restore(&self) {
        self.set_connectivity(Connectivity::Open);
    }

    /// Delay every chunk by `latency` in each direction (zero for none). Chunks already
    /// waiting keep the delay they had, so bytes never overtake each other.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults.send_modify(|f| f.latency = latency);
    }

    /// Cap each direction at `bytes_per_second` (`None` for unlimited).
    pub fn set_bandwidth(&self, bytes_per_second: Option<u64>) {
        self.shared
            .faults
            .send_modify(|f| f.bandwidth = bytes_per_second);
    }

    /// Apply `faults` as a whole (a chaos schedule's step).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.send_replace(faults);
    }

    /// Remove every fault.
    pub fn clear(&self) {
        self.set_faults(Faults::default());
    }

    /// The faults applied now.
    pub fn faults(&self) -> Faults {
        *self.shared.faults.borrow()
    }

    /// What the proxy has done so far.
    pub fn counters(&self) -> ProxyCounters {
        let shared = &self.shared;
        ProxyCounters {
            accepted: shared.accepted.load(Ordering::Relaxed),
            refused: shared.refused.load(Ordering::Relaxed),
            open: shared.open.load(Ordering::Relaxed),
            bytes_to_upstream: shared.to_upstream.bytes.load(Ordering::Relaxed),
            bytes_to_client: shared.to_client.bytes.load(Ordering::Relaxed),
        }
    }

    fn set_connectivity(&self, connectivity: Connectivity) {
        self.shared
            .faults
            .send_modify(|f| f.connectivity = connectivity);
    }
}

impl Shared {
    pub(super) fn new() -> Self {
        Self {
            faults: watch::Sender::new(Faults::default()),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            open: AtomicU64::new(0),
            to_upstream: Direction::default(),
            to_client: Direction::default(),
        }
    }
}
