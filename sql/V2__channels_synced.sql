-- When the worker's channels were last read from TaskRouter's REST API. Workers whose
-- channels were never read get them on the next REST sync, even if some channel events
-- arrived (events only tell about the channels that changed).
ALTER TABLE workers ADD COLUMN channels_synced_at timestamptz;
