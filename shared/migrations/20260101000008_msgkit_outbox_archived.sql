-- When the event archive took the row's copy (see msgkit::topology::Archive): a row the
-- broker refused (no work queue bound) is retried for as long as it is refused, and without
-- this each retry would write another copy to the archive.
ALTER TABLE msgkit_outbox ADD COLUMN IF NOT EXISTS archived_at timestamptz;
