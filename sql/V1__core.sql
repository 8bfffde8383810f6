-- Core tables: the raw event log and the state tables derived from it.
-- Instants are timestamptz; durations are seconds (integer when they come from
-- TaskRouter's whole-second TaskAge, double precision when computed from ms instants).
-- Each state table keeps `state` (jsonb): the registers the rules merge events into,
-- which is what makes applying events order-independent and idempotent.

CREATE TABLE events (
    sid             text PRIMARY KEY,          -- callback Sid (EV...), or digest:<sha256> of the params
    event_type      text NOT NULL,
    account_sid     text,
    workspace_sid   text,
    task_sid        text,
    worker_sid      text,
    reservation_sid text,
    resource_type   text,
    resource_sid    text,
    occurred_at     timestamptz NOT NULL,      -- TimestampMs, else Timestamp, else receipt
    received_at     timestamptz NOT NULL,
    data            jsonb NOT NULL             -- all params as received
);
CREATE INDEX events_task_sid_idx ON events (task_sid) WHERE task_sid IS NOT NULL;
CREATE INDEX events_worker_sid_idx ON events (worker_sid) WHERE worker_sid IS NOT NULL;
CREATE INDEX events_occurred_at_idx ON events (occurred_at);
CREATE INDEX events_type_occurred_idx ON events (event_type, occurred_at);

CREATE TABLE tasks (
    sid                           text PRIMARY KEY,
    account_sid                   text,
    workspace_sid                 text,
    worker_sid                    text,
    worker_name                   text,
    task_queue_sid                text,
    task_queue_name               text,
    task_queue_target_expression  text,
    task_channel_unique_name      text,
    task_channel_sid              text,
    task_assignment_status        text,
    age                           integer,
    task_created                  timestamptz,
    task_priority                 integer,
    task_attributes               jsonb,
    answered_in                   integer,
    acw_start                     integer,
    total_time                    integer,
    within_sla                    boolean,
    sla_threshold                 integer,
    created_at                    timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now(),
    direction                     text NOT NULL DEFAULT 'inbound',
    reservation_count             integer NOT NULL DEFAULT 0,
    agent_message_count           integer NOT NULL DEFAULT 0,
    client_message_count          integer NOT NULL DEFAULT 0,
    agent_total_response_time     double precision,
    client_total_response_time    double precision,
    uc_processing_time            double precision,
    twilio_routing_time           double precision,
    agent_acceptance_time         double precision,
    agent_first_response_time     double precision,
    total_acceptance_time         double precision,
    last_reservation_created      timestamptz,
    last_reservation_accepted     timestamptz,
    channel_type                  text,
    canceled_reason               text,
    completed_reason              text,
    first_accepted_at             timestamptz,
    wrapup_at                     timestamptz,
    ended_at                      timestamptz,
    canceled_at                   timestamptz,
    last_event_at                 timestamptz,
    state                         jsonb NOT NULL DEFAULT '{}'
);
-- Open tasks are few; summaries scan them constantly.
CREATE INDEX tasks_open_idx ON tasks (task_assignment_status, task_channel_unique_name)
    WHERE task_assignment_status IN ('pending', 'reserved', 'assigned', 'wrapping');
CREATE INDEX tasks_created_idx ON tasks (task_created);
CREATE INDEX tasks_ended_idx ON tasks (ended_at);
CREATE INDEX tasks_first_accepted_idx ON tasks (first_accepted_at);
CREATE INDEX tasks_queue_created_idx ON tasks (task_queue_sid, task_created);
CREATE INDEX tasks_worker_idx ON tasks (worker_sid);

CREATE TABLE reservations (
    sid             text PRIMARY KEY,
    task_sid        text,
    worker_sid      text,
    worker_name     text,
    task_queue_sid  text,
    status          text,
    created_at      timestamptz,    -- when TaskRouter created the reservation
    accepted_at     timestamptz,
    rejected_at     timestamptz,
    timed_out_at    timestamptz,
    canceled_at     timestamptz,
    rescinded_at    timestamptz,
    wrapup_at       timestamptz,
    completed_at    timestamptz,
    failed_at       timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    state           jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX reservations_task_idx ON reservations (task_sid);
CREATE INDEX reservations_worker_idx ON reservations (worker_sid, created_at);

CREATE TABLE activities (
    sid         text PRIMARY KEY,
    name        text,
    available   boolean,
    deleted     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    state       jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE workers (
    worker_sid                  text PRIMARY KEY,
    account_sid                 text,
    workspace_sid               text,
    worker_name                 text,
    current_activity            text,
    current_activity_sid        text,
    current_activity_available  boolean,
    previous_activity           text,
    previous_activity_sid       text,
    time_in_previous_activity   integer,
    worker_attributes           jsonb,
    activity_changed_at         timestamptz,
    deleted                     boolean NOT NULL DEFAULT false,
    deleted_at                  timestamptz,
    last_event_at               timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    state                       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX workers_activity_idx ON workers (current_activity_sid);

CREATE TABLE worker_channels (
    worker_sid                text NOT NULL,
    task_channel_unique_name  text NOT NULL,
    task_channel_sid          text,
    configured_capacity       integer,
    available                 boolean,
    available_capacity        integer,
    task_count                integer,
    last_event_at             timestamptz,
    updated_at                timestamptz NOT NULL DEFAULT now(),
    state                     jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (worker_sid, task_channel_unique_name)
);
CREATE INDEX worker_channels_channel_idx ON worker_channels (task_channel_unique_name);
