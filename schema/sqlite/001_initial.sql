-- kodestore core schema (SQLite). Timestamps are epoch milliseconds; JSON columns hold UTF-8 text.

CREATE TABLE agents (
    agent_id          TEXT PRIMARY KEY,
    template_id       TEXT NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    message_count     INTEGER NOT NULL DEFAULT 0,
    -- random tokens changed by every history / tool-call save: lets a writer trust its cache of hashes
    messages_version  INTEGER NOT NULL DEFAULT 0,
    tool_calls_version INTEGER NOT NULL DEFAULT 0,
    metadata          TEXT,
    lineage           TEXT NOT NULL DEFAULT '[]',
    info              TEXT NOT NULL
);
CREATE INDEX agents_template_created ON agents (template_id, created_at_ms DESC, agent_id DESC);
CREATE INDEX agents_created ON agents (created_at_ms DESC, agent_id DESC);
CREATE INDEX agents_updated ON agents (updated_at_ms DESC, agent_id DESC);

CREATE TABLE messages (
    agent_id    TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    role        TEXT NOT NULL,
    content     TEXT NOT NULL,
    metadata    TEXT,
    extra       TEXT,
    hash        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE INDEX messages_created ON messages (created_at DESC, agent_id DESC, seq DESC);
CREATE INDEX messages_role_created ON messages (role, created_at DESC, agent_id DESC, seq DESC);

CREATE TABLE tool_calls (
    agent_id          TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    id                TEXT NOT NULL,
    position          INTEGER NOT NULL,
    name              TEXT NOT NULL,
    state             TEXT NOT NULL,
    is_error          INTEGER NOT NULL,
    approval_required INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    record            TEXT NOT NULL,
    hash              BLOB NOT NULL,
    PRIMARY KEY (agent_id, id)
) WITHOUT ROWID;
CREATE INDEX tool_calls_name_state ON tool_calls (name, state, created_at DESC, agent_id DESC, id DESC);
CREATE INDEX tool_calls_state ON tool_calls (state, created_at DESC, agent_id DESC, id DESC);
CREATE INDEX tool_calls_created ON tool_calls (created_at DESC, agent_id DESC, id DESC);

CREATE TABLE snapshots (
    row_id       INTEGER PRIMARY KEY,
    agent_id     TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    snapshot_id  TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (agent_id, snapshot_id)
);
