-- Conversations live in a Conversation Service (IS...); only the account's default one
-- is reachable without naming it. Webhooks carry ChatServiceSid: kept per message, so
-- the REST fallback reads each conversation from its own service.
ALTER TABLE messages ADD COLUMN chat_service_sid text;
-- The REST fallback retries a conversation it could not read (a 404 included: it never
-- means "no messages") with a growing delay, and records why it gave up, if it does.
ALTER TABLE tasks ADD COLUMN messages_fetch_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN messages_fetch_after timestamptz;
ALTER TABLE tasks ADD COLUMN messages_fetch_error text;
