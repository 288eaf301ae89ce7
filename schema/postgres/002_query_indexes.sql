-- Indexes for the analyst queries (kodestore/db/queries.py); the same as schema/sqlite/002. Each ends
-- in the query's sort key, so a filtered page is an index range read in order, and keyset pages
-- (a row-value comparison) start where the last one ended. user_id and metadata filters use the GIN
-- index agents_metadata_gin through containment (@>), so they need no index here.

CREATE INDEX messages_agent_created ON messages (agent_id, created_at DESC, seq DESC);
CREATE INDEX tool_calls_agent_created ON tool_calls (agent_id, created_at DESC, id DESC);
CREATE INDEX tool_calls_name_created ON tool_calls (name, created_at DESC, agent_id DESC, id DESC);
CREATE INDEX agents_message_count ON agents (message_count DESC, agent_id DESC);
