-- Indexes for the analyst queries (kodestore/db/queries.py). Each ends in the query's sort key, so a
-- filtered page is an index range read in order: no sort, and keyset pages start where the last ended.

-- one agent's messages / tool calls, newest first (the primary keys order by seq / id instead)
CREATE INDEX messages_agent_created ON messages (agent_id, created_at DESC, seq DESC);
CREATE INDEX tool_calls_agent_created ON tool_calls (agent_id, created_at DESC, id DESC);
-- one tool's calls in any state (tool_calls_name_state needs the state to keep the order)
CREATE INDEX tool_calls_name_created ON tool_calls (name, created_at DESC, agent_id DESC, id DESC);
-- sessions sorted by size
CREATE INDEX agents_message_count ON agents (message_count DESC, agent_id DESC);
-- user_id: the exact expressions SqliteDialect.json_key_is compares (SQLite >= 3.38 for '->')
CREATE INDEX agents_user_id ON agents (metadata -> '$."userId"');
CREATE INDEX agents_user ON agents (metadata -> '$."user"');
