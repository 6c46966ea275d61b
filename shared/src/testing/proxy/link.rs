//! One proxied connection: two directions, each a delay queue between a reader and a writer.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::control::{Connectivity, Direction, Faults, Shared};

/// The most read in one go; also the unit the latency and the bandwidth cap apply to.
const CHUNK: usize = 16 * 1024;

/// Chunks in flight per direction (4 MiB): with latency `L` a direction carries at most
/// `4 MiB / L` per second, far above anything a test sends.
const QUEUE: usize = 256;

/// A chunk and when it may be written.
type Delayed = (Instant, Vec<u8>);

/// Forward `client` to `upstream` under the proxy's faults until either side closes, the
/// proxy is cut, or `stop` is cancelled.
pub(super) async fn forward(
    mut client: TcpStream,
    upstream: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(Arc::clone(&shared));
    let mut cut = shared.faults.subscribe();
    let server = tokio::select! {
        server = connect(&upstream, shared.faults.subscribe()) => server,
        _ = cut.wait_for(|f| f.connectivity == Connectivity::Cut) => None,
        () = stop.cancelled() => None,
    };
    let Some(mut server) = server else {
        reset(&client);
        return;
    };
    let finished = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let to_upstream = pump(
            client_read,
            server_write,
            &shared.to_upstream,
            shared.faults.subscribe(),
        );
        let to_client = pump(
            server_read,
            client_write,
            &shared.to_client,
            shared.faults.subscribe(),
        );
        tokio::select! {
            done = async { tokio::try_join!(to_upstream, to_client) } => done.is_ok(),
            _ = cut.wait_for(|f| f.connectivity == Connectivity::Cut) => false,
            () = stop.cancelled() => false,
        }
    };
    if !finished {
        reset(&client);
        reset(&server);
    }
}

/// Connect to `upstream` once the proxy is not black-holed: in a real partition the
/// connection attempt itself would not get through. `None` if it fails.
async fn connect(upstream: &str, mut faults: watch::Receiver<Faults>) -> Option<TcpStream> {
    wait_while_blackholed(&mut faults).await;
    match TcpStream::connect(upstream).await {
        Ok(server) => Some(server),
        Err(error) => {
            tracing::debug!(%error, upstream, "proxy cannot reach its upstream");
            None
        }
    }
}

/// Make the next close of `stream` a reset (RST) rather than an orderly FIN, as a crashed or
/// unreachable peer would look.
pub(super) fn reset(stream: &TcpStream) {
    // Should it fail, the peer sees an orderly close instead: still a lost connection.
    let _ = stream.set_zero_linger();
}

/// Copy one direction: the reader stamps each chunk with the time it may be written, the
/// writer waits for that time. Reading goes on while earlier chunks wait, so latency delays
/// the bytes without lowering the throughput, and one queue keeps them in order.
async fn pump<R, W>(
    from: R,
    to: W,
    direction: &Direction,
    faults: watch::Receiver<Faults>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (queue, delayed) = mpsc::channel(QUEUE);
    tokio::try_join!(
        read_side(from, queue, direction, faults.clone()),
        write_side(delayed, to, direction, faults),
    )?;
    Ok(())
}

/// Read chunks under the bandwidth cap and queue them with their due time. Ends (closing the
/// queue) at end of stream.
async fn read_side<R: AsyncRead + Unpin>(
    mut from: R,
    queue: mpsc::Sender<Delayed>,
    direction: &Direction,
    mut faults: watch::Receiver<Faults>,
) -> io::Result<()> {
    let mut buffer = vec![0; CHUNK];
    loop {
        // Not reading while black-holed makes the sender's TCP window fill, as it would.
        wait_while_blackholed(&mut faults).await;
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        // The chunk leaves the link's bottleneck now and arrives one latency later.
        direction.bucket.take(read, &mut faults).await;
        let due = Instant::now() + faults.borrow().latency;
        if queue.send((due, buffer[..read].to_vec())).await.is_err() {
            return Ok(());
        }
    }
}

/// Write each queued chunk at its due time; at the end of the queue, close the write side so
/// the peer sees the end of stream the other side sent.
async fn write_side<W: AsyncWrite + Unpin>(
    mut delayed: mpsc::Receiver<Delayed>,
    mut to: W,
    direction: &Direction,
    mut faults: watch::Receiver<Faults>,
) -> io::Result<()> {
    while let Some((due, chunk)) = delayed.recv().await {
        tokio::time::sleep_until(due).await;
        wait_while_blackholed(&mut faults).await;
        to.write_all(&chunk).await?;
        direction
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    to.shutdown().await
}

async fn wait_while_blackholed(faults: &mut watch::Receiver<Faults>) {
    // An error means the proxy's state is gone, and with it the black hole.
    let _ = faults
        .wait_for(|f| f.connectivity != Connectivity::Blackhole)
        .await;
}

/// Counts the connection as open for as long as its task runs, however it ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
