//! A fault-injecting TCP proxy in front of the broker or the database: partitions (reset or
//! silent), added latency and a bandwidth cap, changed at runtime, without `tc netem`.

mod bucket;
mod control;
mod link;

pub use control::{Connectivity, Faults, ProxyControl, ProxyCounters};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use control::{Connectivity as Mode, Shared};

/// A TCP proxy in front of the broker (or the database) that a test or a chaos run can break.
/// [`TcpProxy::cut`] resets every open connection and new ones, as a network partition or a
/// dead broker would look to the client; [`TcpProxy::blackhole`] holds every byte instead;
/// [`TcpProxy::restore`] lets traffic through again. Latency and a bandwidth cap are set
/// through [`TcpProxy::control`], which also gives the counters.
///
/// The proxy owns its tasks (the listener and one per connection): dropping it stops them
/// all, and [`TcpProxy::shutdown`] also waits until they have ended.
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use std::time::Duration;
/// use msgkit::testing::TcpProxy;
///
/// let proxy = TcpProxy::start("127.0.0.1:5672").await?;
/// let control = proxy.control();
/// control.set_latency(Duration::from_millis(150));
/// control.set_bandwidth(Some(200 * 1024));
/// // ... connect through `proxy.addr()` ...
/// control.cut();
/// control.clear();
/// proxy.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    control: ProxyControl,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl TcpProxy {
    /// Listen on a free loopback port and forward to `upstream` (`host:port`), with no faults.
    pub async fn start(upstream: &str) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(accept_loop(
            listener,
            upstream.to_owned(),
            Arc::clone(&shared),
            stop.clone(),
            tasks.clone(),
        ));
        Ok(Self {
            addr,
            control: ProxyControl::new(shared),
            stop,
            tasks,
        })
    }

    /// The proxy's address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// A handle that changes the faults and reads the counters, for another task to keep.
    pub fn control(&self) -> ProxyControl {
        self.control.clone()
    }

    /// Reset every connection and refuse new ones until [`TcpProxy::restore`]
    /// (see [`ProxyControl::cut`]).
    pub fn cut(&self) {
        self.control.cut();
    }

    /// Hold every byte until [`TcpProxy::restore`] (see [`ProxyControl::blackhole`]).
    pub fn blackhole(&self) {
        self.control.blackhole();
    }

    /// Connection attempts refused while cut: lets a test wait until a client has tried.
    pub fn refused(&self) -> u64 {
        self.control.counters().refused
    }

    /// Let connections through again (latency and the bandwidth cap stay).
    pub fn restore(&self) {
        self.control.restore();
    }

    /// Stop listening, close every connection and wait until all the proxy's tasks ended.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Every task watches `stop`: they end on their own, promptly, without being awaited.
        self.stop.cancel();
        self.tasks.close();
    }
}

/// Accept clients until `stop`, forwarding each in a task of `tasks`.
async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(error) => {
                // Per-connection failures (the client gave up while queued): the listener
                // itself is fine.
                tracing::debug!(%error, "proxy accept failed");
                continue;
            }
        };
        if shared.faults.borrow().connectivity == Mode::Cut {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            link::reset(&client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(link::forward(
            client,
            upstream.clone(),
            Arc::clone(&shared),
            stop.clone(),
        ));
    }
}
