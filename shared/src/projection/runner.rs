//! Running a projection: take the lead, follow the archive from the checkpoint, apply in
//! batches with the checkpoint in the same transaction, hand over when the lead is lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Mutex;

use super::reader::{ArchiveReader, StartAt};
use super::rebuild::Rebuild;
use super::stats::ProjectionStats;
use super::store::{self, Advance};
use super::{ArchivedEvent, Projection, ProjectionConfig, ProjectionError};
use crate::backoff;
use crate::broker::{BrokerError, BrokerSettings};
use crate::metrics::ProjectionMetrics;
use crate::shutdown::Shutdown;
use crate::topology::Archive;

/// How long the runner looks for the archive's last chunk when it takes the lead (an empty
/// archive sends nothing).
const TAIL_PROBE: Duration = Duration::from_millis(500);

/// Why a replica stopped leading.
enum LeadEnd {
    /// Shutdown.
    Stopped,
    /// The lock's connection died: take the lead again (or let another replica have it).
    LostLead(String),
    /// The checkpoint moved under this replica (a rebuild switched the tables): lead again
    /// from the new checkpoint.
    Fenced,
    /// The broker or the database failed: back off, then lead again from the checkpoint.
    Failed(String),
}

/// One projection in one service: see the module docs.
#[derive(Clone)]
pub(crate) struct ProjectionRunner {
    pub(super) projection: Arc<Projection>,
    pub(super) pool: PgPool,
    pub(super) broker: BrokerSettings,
    pub(super) archive: Archive,
    pub(super) config: ProjectionConfig,
    pub(super) metrics: ProjectionMetrics,
    pub(super) stats: Arc<ProjectionStats>,
    /// Who this replica is, in the checkpoint row.
    pub(super) instance: String,
    /// Held by the live loop for each batch and by a rebuild's switch, so that the two never
    /// write the projection's tables at once within this replica.
    pub(super) gate: Arc<Mutex<()>>,
}

impl ProjectionRunner {
    pub(crate) fn new(
        projection: Projection,
        pool: PgPool,
        broker: BrokerSettings,
        archive: Archive,
        config: ProjectionConfig,
        metrics: ProjectionMetrics,
    ) -> Self {
        let stats = Arc::new(ProjectionStats::new(projection.name()));
        let instance = format!(
            "{}/{}",
            hostname().unwrap_or_else(|| "unknown-host".to_owned()),
            std::process::id()
        );
        Self {
            projection: Arc::new(projection),
            pool,
            broker,
            archive,
            config,
            metrics,
            stats,
            instance,
            gate: Arc::new(Mutex::new(())),
        }
    }

    pub(crate) fn stats(&self) -> Arc<ProjectionStats> {
        self.stats.clone()
    }

    fn name(&self) -> &str {
        self.projection.name()
    }

    /// Run until `shutdown`: wait for the lead, apply while leading, start over when it is lost.
    pub(crate) async fn run(self, shutdown: Shutdown) {
        let mut delays = self.broker.reconnect_backoff();
        let mut lock: Option<PgConnection> = None;
        tracing::info!(projection = %self.name(), instance = %self.instance, "projection started");
        while !shutdown.is_triggered() {
            let Some(connection) = self.acquire_lead(lock.take(), &shutdown).await else {
                break;
            };
            lock = Some(connection);
            tracing::info!(projection = %self.name(), instance = %self.instance, "leading the projection");
            self.metrics.active.set(1);
            self.stats.active.store(true, Ordering::Relaxed);
            let end = match lock.as_mut() {
                Some(connection) => self.lead(connection, &shutdown).await,
                None => LeadEnd::Stopped,
            };
            self.metrics.active.set(0);
            self.stats.active.store(false, Ordering::Relaxed);
            match end {
                LeadEnd::Stopped => break,
                LeadEnd::Fenced => {
                    tracing::info!(projection = %self.name(), "the checkpoint moved (a rebuild switched the tables); following from there");
                }
                LeadEnd::LostLead(reason) => {
                    tracing::warn!(projection = %self.name(), %reason, "lost the lead of the projection");
                    // A new session, so that the lock (if still held) is released.
                    if let Some(connection) = lock.take() {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), connection.close()).await;
                    }
                }
                LeadEnd::Failed(error) => {
                    self.metrics.failures.inc();
                    self.stats.set_failing(Some(error.clone()));
                    let delay = delays.next().unwrap_or(self.broker.reconnect_max);
                    tracing::warn!(projection = %self.name(), %error, retry_in = ?delay, "projection failed; starting again from its checkpoint");
                    backoff::wait(delay, &shutdown).await;
                    continue;
                }
            }
            delays = self.broker.reconnect_backoff();
        }
        if let Some(connection) = lock {
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.close()).await;
        }
        tracing::info!(projection = %self.name(), "projection stopped");
    }

    /// A connection holding the projection's lead, once this replica gets it; `None` on
    /// shutdown. `held` is the connection that held it before, when it is still usable.
    async fn acquire_lead(
        &self,
        held: Option<PgConnection>,
        shutdown: &Shutdown,
    ) -> Option<PgConnection> {
        let mut connection = held;
        let mut delays = self.broker.reconnect_backoff();
        loop {
            if shutdown.is_triggered() {
                return None;
            }
            if connection.is_none() {
                match PgConnection::connect_with(&self.pool.connect_options()).await {
                    Ok(fresh) => connection = Some(fresh),
                    Err(error) => {
                        let delay = delays.next().unwrap_or(self.broker.reconnect_max);
                        tracing::warn!(projection = %self.name(), %error, retry_in = ?delay, "cannot open the projection's lock connection");
                        backoff::wait(delay, shutdown).await;
                        continue;
                    }
                }
            }
            if let Some(mut held) = connection.take() {
                match store::try_lead(&mut held, self.name()).await {
                    Ok(true) => return Some(held),
                    Ok(false) => connection = Some(held),
                    Err(error) => {
                        tracing::warn!(projection = %self.name(), %error, "cannot ask for the projection's lead");
                    }
                }
            }
            if !backoff::wait(self.config.takeover_poll, shutdown).await {
                return None;
            }
        }
    }

    /// Apply the archive from the checkpoint while this replica holds the lead on `lock`.
    async fn lead(&self, lock: &mut PgConnection, shutdown: &Shutdown) -> LeadEnd {
        let checkpoint = match store::checkpoint(&self.pool, self.name()).await {
            Ok(checkpoint) => checkpoint,
            Err(error) => return LeadEnd::Failed(format!("reading the checkpoint: {error}")),
        };
        let tail = match self.last_chunk(shutdown).await {
            Ok(tail) => tail,
            Err(error) => return LeadEnd::Failed(error.to_string()),
        };
        let start = match checkpoint.position {
            Some(position) => StartAt::After(offset_u64(position)),
            None => StartAt::First,
        };
        let mut reader = match self.open_reader(start, shutdown).await {
            Ok(reader) => reader,
            Err(error) => return LeadEnd::Failed(error.to_string()),
        };
        let mut follow = Follow {
            position: checkpoint.position,
            tail,
            lag: 0.0,
        };
        self.stats
            .catching_up
            .store(follow.behind_tail(), Ordering::Relaxed);
        let rebuild = Rebuild::new(self.clone(), shutdown);
        let end = self
            .follow(lock, &mut reader, &mut follow, &rebuild, shutdown)
            .await;
        rebuild.stop().await;
        reader.close().await;
        end
    }

    async fn follow(
        &self,
        lock: &mut PgConnection,
        reader: &mut ArchiveReader,
        follow: &mut Follow,
        rebuild: &Rebuild,
        shutdown: &Shutdown,
    ) -> LeadEnd {
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats = 0u32;
        loop {
            tokio::select! {
                () = shutdown.triggered() => return LeadEnd::Stopped,
                _ = heartbeat.tick() => {
                    if let Some(end) = self.on_heartbeat(lock, reader, follow, rebuild).await {
                        return end;
                    }
                    // A whole heartbeat without a failure (the first tick is immediate): a
                    // failure reported before (a broker restart, say) is over, even when no
                    // event has come since to prove it.
                    beats = beats.saturating_add(1);
                    if beats >= 2 {
                        self.stats.set_failing(None);
                    }
                }
                next = reader.next() => {
                    let first = match next {
                        Some(Ok(event)) => event,
                        Some(Err(error)) => return LeadEnd::Failed(error.to_string()),
                        None => return LeadEnd::Failed("the archive consumer ended".to_owned()),
                    };
                    if let Some(end) = self.apply_batch(first, reader, follow).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Check the lead and the broker, report, start a requested rebuild.
    async fn on_heartbeat(
        &self,
        lock: &mut PgConnection,
        reader: &ArchiveReader,
        follow: &Follow,
        rebuild: &Rebuild,
    ) -> Option<LeadEnd> {
        let alive = tokio::time::timeout(Duration::from_secs(5), lock.ping()).await;
        if !matches!(alive, Ok(Ok(()))) {
            return Some(LeadEnd::LostLead(
                "the connection holding the lock is gone".to_owned(),
            ));
        }
        if !reader.is_connected() {
            return Some(LeadEnd::Failed(
                "the archive consumer's connection is closed".to_owned(),
            ));
        }
        if let Err(error) =
            store::heartbeat(&self.pool, self.name(), follow.lag, &self.instance).await
        {
            tracing::warn!(projection = %self.name(), %error, "cannot record the projection's heartbeat");
        }
        rebuild.poll().await;
        None
    }

    /// Apply `first` and whatever else the broker has sent, up to a batch, in one transaction
    /// with the checkpoint; then acknowledge them.
    async fn apply_batch(
        &self,
        first: ArchivedEvent,
        reader: &mut ArchiveReader,
        follow: &mut Follow,
    ) -> Option<LeadEnd> {
        let mut events = vec![first];
        while events.len() < self.config.batch_size {
            match reader.next_ready() {
                Some(Ok(event)) => events.push(event),
                Some(Err(error)) => return Some(LeadEnd::Failed(error.to_string())),
                None => break,
            }
        }
        // Offsets at or before the checkpoint: the broker starts a consumer at the chunk that
        // holds the requested offset.
        events.retain(|event| follow.position.is_none_or(|p| offset_i64(event.offset) > p));
        if events.is_empty() {
            return reader
                .ack_read()
                .await
                .err()
                .map(|e| LeadEnd::Failed(e.to_string()));
        }
        // A full batch means the broker had more waiting: still behind.
        let full = events.len() >= self.config.batch_size;
        let guard = self.gate.lock().await;
        let outcome = self.commit_batch(&events, full, follow).await;
        drop(guard);
        match outcome {
            Ok(true) => {}
            // Only this replica writes the checkpoint while it holds the lock, except a
            // rebuild's switch; a replica that lost its lock unknowingly finds out on its next
            // heartbeat, or here again.
            Ok(false) => return Some(LeadEnd::Fenced),
            Err(error) => return Some(LeadEnd::Failed(error.to_string())),
        }
        self.stats.set_failing(None);
        if let Err(error) = reader.ack_read().await {
            return Some(LeadEnd::Failed(error.to_string()));
        }
        None
    }

    /// The batch's effects and the checkpoint, committed together. `Ok(false)`: fenced off.
    async fn commit_batch(
        &self,
        events: &[ArchivedEvent],
        full: bool,
        follow: &mut Follow,
    ) -> Result<bool, ProjectionError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(true);
        };
        let mut tx = self.pool.begin().await?;
        for event in events {
            self.projection.apply_event(&mut tx, event).await?;
        }
        let advance = Advance {
            first: offset_i64(first.offset),
            first_time: first.created_at,
            last: offset_i64(last.offset),
            last_event_at: last.created_at,
            events: i64::try_from(events.len()).unwrap_or(i64::MAX),
        };
        let lag = (Utc::now() - last.created_at).as_seconds_f64().max(0.0);
        let moved = store::advance(
            &mut tx,
            self.name(),
            follow.position,
            &advance,
            lag,
            &self.instance,
        )
        .await?;
        if !moved {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        follow.position = Some(advance.last);
        self.metrics.applied.inc_by(events.len() as u64);
        self.metrics.position.set(advance.last);
        // Caught up once past where the archive ended when the lead was taken, and nothing
        // more was waiting: the lag is then 0, not the age of the last event.
        let caught_up = !follow.behind_tail() && !full;
        follow.lag = if caught_up { 0.0 } else { lag };
        self.metrics.lag.set(follow.lag);
        self.stats
            .lag
            .store((follow.lag * 1000.0) as u64, Ordering::Relaxed);
        self.stats.catching_up.store(!caught_up, Ordering::Relaxed);
        Ok(true)
    }

    /// The offset where the archive's last chunk starts (`None`: empty archive).
    pub(super) async fn last_chunk(&self, shutdown: &Shutdown) -> Result<Option<u64>, BrokerError> {
        let mut reader = self.open_reader(StartAt::LastChunk, shutdown).await?;
        let first = tokio::time::timeout(TAIL_PROBE, reader.next()).await;
        reader.close().await;
        match first {
            Ok(Some(Ok(event))) => Ok(Some(event.offset)),
            Ok(Some(Err(error))) => Err(error),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    pub(super) async fn open_reader(
        &self,
        start: StartAt,
        shutdown: &Shutdown,
    ) -> Result<ArchiveReader, BrokerError> {
        let connection = self.broker.connect_with_backoff(shutdown).await?;
        ArchiveReader::open(
            connection,
            &self.archive.name,
            start,
            self.config.prefetch,
            self.name(),
        )
        .await
    }
}

/// Where the live loop is.
struct Follow {
    position: Option<i64>,
    /// Where the archive's last chunk started when the lead was taken.
    tail: Option<u64>,
    lag: f64,
}

impl Follow {
    fn behind_tail(&self) -> bool {
        match (self.tail, self.position) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(tail), Some(position)) => offset_i64(tail) > position,
        }
    }
}

pub(super) fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

pub(super) fn offset_u64(offset: i64) -> u64 {
    u64::try_from(offset).unwrap_or(0)
}

fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
}
