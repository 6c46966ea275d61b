use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A TCP proxy in front of the broker (or the database) that a test can cut: [`TcpProxy::cut`]
/// drops every open connection and refuses new ones, as a network partition or a dead broker
/// would look to the client; [`TcpProxy::restore`] lets traffic through again.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    refused: Arc<AtomicU64>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl TcpProxy {
    /// Listen on a free loopback port and forward to `upstream`.
    pub async fn start(upstream: &str) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = upstream.to_owned();
        let (open, _) = watch::channel(true);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let refused = Arc::new(AtomicU64::new(0));
        let (open_tx, stop_token, tracker, refusals) = (
            open.clone(),
            stop.clone(),
            tasks.clone(),
            Arc::clone(&refused),
        );
        tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = stop_token.cancelled() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                if !*open_tx.borrow() {
                    refusals.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                let mut state = open_tx.subscribe();
                let (upstream, stop_token) = (upstream.clone(), stop_token.clone());
                tracker.spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {},
                        _ = state.wait_for(|open| !*open) => {},
                        () = stop_token.cancelled() => {},
                    }
                });
            }
        });
        Ok(Self {
            addr,
            open,
            refused,
            stop,
            tasks,
        })
    }

    /// The proxy's address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Drop every connection and refuse new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Connection attempts dropped while cut: lets a test wait until a client has tried.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Let connections through again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.tasks.close();
    }
}
