-- Backfill runs from TaskRouter's REST Events: the window, where the run is (the slice
-- in progress and the next page of it), and what it found. A run interrupted at any
-- point resumes from its last stored page; pages are re-read at most once, and
-- re-applying an event changes nothing.
CREATE TABLE backfill_runs (
    id              bigserial PRIMARY KEY,
    source          text NOT NULL,              -- 'cli', 'catch-up' or 'reconcile'
    since           timestamptz NOT NULL,
    until           timestamptz NOT NULL,
    slice_seconds   integer NOT NULL,
    cursor_at       timestamptz NOT NULL,       -- start of the slice in progress
    next_page_url   text,                       -- within that slice; NULL: its first page
    slices_done     integer NOT NULL DEFAULT 0,
    events_fetched  bigint NOT NULL DEFAULT 0,
    events_new      bigint,                     -- known when applied directly (not queued)
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    error           text
);
CREATE INDEX backfill_runs_open_idx ON backfill_runs (source, id) WHERE finished_at IS NULL;

-- When each instance (host + queue directory) was last seen running: the start after a
-- downtime backfills the gap since then.
CREATE TABLE instance_heartbeats (
    instance  text PRIMARY KEY,
    seen_at   timestamptz NOT NULL
);

-- Raw events older than this were removed by retention; `rebuild` leaves alone the
-- tasks that started before it (their events are partly gone).
CREATE TABLE maintenance (
    key    text PRIMARY KEY,
    value  timestamptz NOT NULL
);
