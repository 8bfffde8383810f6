-- Conversations whose tasks' message metrics must be recomputed. Applying events only
-- marks them here; a separate loop recomputes in short transactions of its own, so
-- message and task events (applied by different workers) never wait on each other's
-- row locks.
CREATE TABLE dirty_conversations (
    conversation_sid  text PRIMARY KEY,
    marked_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dirty_conversations_marked_idx ON dirty_conversations (marked_at);
