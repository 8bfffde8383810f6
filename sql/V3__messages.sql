-- Conversations messages (from onMessageAdded webhooks or the Conversations REST API;
-- the message sid dedupes both) and the per-task message metrics derived from them.
CREATE TABLE messages (
    sid               text PRIMARY KEY,        -- IM...
    conversation_sid  text NOT NULL,           -- CH...
    index             integer,
    author            text,
    participant_sid   text,
    created_at        timestamptz NOT NULL,
    source            text NOT NULL,           -- 'webhook' or 'rest'
    received_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation_idx ON messages (conversation_sid, created_at);

-- The conversation of a messaging task: attribute conversationSid, else channelSid.
ALTER TABLE tasks ADD COLUMN conversation_sid text;
-- Replies counted in agent_/client_total_response_time (averages divide by these).
ALTER TABLE tasks ADD COLUMN agent_reply_count integer NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN client_reply_count integer NOT NULL DEFAULT 0;
-- When the conversation's messages were read over REST after the task ended.
ALTER TABLE tasks ADD COLUMN messages_fetched_at timestamptz;
CREATE INDEX tasks_conversation_idx ON tasks (conversation_sid) WHERE conversation_sid IS NOT NULL;
