-- Dirty marks become an append-only log: with a unique key, two transactions marking
-- the same conversation (a task event and a message, applied by different workers)
-- waited for each other's commit. Duplicates are merged by the refresher.
ALTER TABLE dirty_conversations DROP CONSTRAINT dirty_conversations_pkey;
DROP INDEX dirty_conversations_marked_idx;
ALTER TABLE dirty_conversations ADD COLUMN id bigserial PRIMARY KEY;
