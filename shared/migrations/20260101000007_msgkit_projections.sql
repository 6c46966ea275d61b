-- Projections of the event archive (see msgkit::projection).
--
-- One row per projection: where it is in the archive, committed in the same transaction as
-- the effects of the events up to there (exactly once in effect). The active replica updates
-- it with a compare-and-set on `position`, so a replica that lost its lead without noticing
-- (and a rebuild's switch) fences it off.
CREATE TABLE IF NOT EXISTS msgkit_projections (
    name              text PRIMARY KEY,
    -- Archive offset of the last event applied; NULL before the first.
    position          bigint,
    -- Offset and time of the first event applied: the projection's history starts there, and
    -- a rebuild refuses when the archive no longer reaches back that far.
    started_from      bigint,
    started_from_time timestamptz,
    -- Creation time of the last event applied.
    last_event_at     timestamptz,
    applied           bigint           NOT NULL DEFAULT 0,
    lag_seconds       double precision NOT NULL DEFAULT 0,
    -- The replica applying it (host/pid), and when it last said so.
    active_instance   text,
    updated_at        timestamptz      NOT NULL DEFAULT now()
);

-- Rebuilds asked for by an operator (`msgkit projection rebuild NAME`) and done by the
-- projection's active replica into new tables, then switched in.
CREATE TABLE IF NOT EXISTS msgkit_projection_rebuilds (
    name              text PRIMARY KEY,
    -- requested, running, done, refused or failed
    state             text        NOT NULL,
    detail            text,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    -- The rebuild's own progress: offset applied into the new tables.
    position          bigint,
    started_from      bigint,
    started_from_time timestamptz,
    applied           bigint      NOT NULL DEFAULT 0
);
