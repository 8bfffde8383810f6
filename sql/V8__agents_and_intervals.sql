-- Agents and interval reports (design §5b). Both survive event retention: they are kept
-- here, not recomputed from raw events.

-- Each worker's time in each activity, one row per `worker.activity.update`: the
-- activity it left, from (update time − WorkerTimeInPreviousActivityMs) to the update.
-- The activity it is in now is open-ended and lives in `workers`. The event sid makes
-- a redelivered or replayed update change nothing.
CREATE TABLE worker_activities (
    event_sid      text PRIMARY KEY,
    worker_sid     text NOT NULL,
    activity_sid   text,
    activity_name  text,
    started_at     timestamptz NOT NULL,
    ended_at       timestamptz NOT NULL
);
CREATE INDEX worker_activities_ended_idx ON worker_activities (ended_at);
CREATE INDEX worker_activities_worker_idx ON worker_activities (worker_sid, ended_at);

-- Per-queue, per-channel counters of the tasks created in each 15-minute bucket (UTC;
-- every time zone's offset is a multiple of 15 minutes, so buckets add up to any
-- local 15/30/60-minute or daily interval). Recomputed from `tasks` for every bucket
-- marked in `rollup_dirty`; sums and counts, so reports derive averages exactly.
CREATE TABLE task_rollups (
    bucket                     timestamptz NOT NULL,
    task_queue_sid             text NOT NULL,     -- '' when unknown
    channel                    text NOT NULL,     -- '' when unknown
    task_queue_name            text,
    tasks_created              integer NOT NULL,
    tasks_accepted             integer NOT NULL,
    tasks_accepted_within_sla  integer NOT NULL,
    tasks_abandoned            integer NOT NULL,
    tasks_short_abandoned      integer NOT NULL,
    tasks_completed            integer NOT NULL,
    answered_in_sum            bigint NOT NULL,   -- seconds, over accepted tasks
    handle_time_sum            bigint NOT NULL,   -- seconds, over completed tasks
    wrapup_time_sum            bigint NOT NULL,   -- seconds, over completed tasks with wrap-up
    wrapup_count               integer NOT NULL,
    max_wait                   integer,           -- seconds: answer, or end without one
    PRIMARY KEY (bucket, task_queue_sid, channel)
);

-- Buckets whose rollups must be recomputed. Append-only (like dirty_conversations), so
-- applying transactions never wait on each other for a mark.
CREATE TABLE rollup_dirty (
    id      bigserial PRIMARY KEY,
    bucket  timestamptz NOT NULL
);

-- Reservations by creation time, for interval reports by worker.
CREATE INDEX reservations_created_idx ON reservations (created_at);
-- A worker's tasks by end time (today's completions); replaces the index on worker_sid.
DROP INDEX tasks_worker_idx;
CREATE INDEX tasks_worker_ended_idx ON tasks (worker_sid, ended_at);

-- Each worker's day so far (in `[sla] timezone`), recomputed from reservations, tasks
-- and worker_activities whenever one of them changes for the worker (marks in
-- worker_dirty), so `/api/agents` reads one row per worker. What is still open (the
-- current activity, accepted tasks not finished) runs on to "now": it is added when read,
-- from `busy_open_since` and the worker's current activity.
CREATE TABLE worker_today (
    worker_sid              text PRIMARY KEY,
    day_start               timestamptz NOT NULL,
    tasks_accepted          integer NOT NULL,
    tasks_completed         integer NOT NULL,
    handle_time             bigint NOT NULL,      -- seconds, over the tasks completed
    wrapup_time             bigint NOT NULL,
    wrapups                 integer NOT NULL,
    reservations_rejected   integer NOT NULL,
    reservations_timed_out  integer NOT NULL,
    seconds_by_activity     jsonb NOT NULL,       -- closed activity intervals, cut at day_start
    busy_open_since         timestamptz,          -- earliest accepted task still open
    busy_closed_seconds     double precision NOT NULL,  -- finished busy time before busy_open_since
    union_closed_seconds    double precision NOT NULL,  -- finished busy-or-available time before
                                                        -- the earliest open busy or available time
    computed_at             timestamptz NOT NULL
);
CREATE TABLE worker_dirty (
    id          bigserial PRIMARY KEY,
    worker_sid  text NOT NULL
);

-- Every bucket that already has tasks (an upgraded database) is computed once, and so is
-- every worker's day.
INSERT INTO worker_dirty (worker_sid) SELECT worker_sid FROM workers WHERE NOT deleted;
INSERT INTO rollup_dirty (bucket)
SELECT DISTINCT date_bin('15 minutes', task_created, timestamptz '2000-01-01 00:00:00+00')
FROM tasks WHERE task_created IS NOT NULL;
