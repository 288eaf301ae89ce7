-- kodestore core schema (Postgres). Same tables and columns as schema/sqlite/001_initial.sql.
-- Timestamps are epoch milliseconds in BIGINT; JSON columns are JSONB; text is COLLATE "C" so that
-- ordering and prefix ranges compare code points, as on SQLite, whatever the database's locale.
-- Names are unqualified: the driver sets search_path to the configured schema.

CREATE TABLE agents (
    agent_id           TEXT COLLATE "C" PRIMARY KEY,
    template_id        TEXT COLLATE "C" NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL,
    message_count      INTEGER NOT NULL DEFAULT 0,
    -- random tokens changed by every history / tool-call save: lets a writer trust its cache of hashes
    messages_version   BIGINT NOT NULL DEFAULT 0,
    tool_calls_version BIGINT NOT NULL DEFAULT 0,
    metadata           JSONB,
    lineage            JSONB NOT NULL DEFAULT '[]',
    info               JSONB NOT NULL
);
CREATE INDEX agents_template_created ON agents (template_id, created_at_ms DESC, agent_id DESC);
CREATE INDEX agents_created ON agents (created_at_ms DESC, agent_id DESC);
CREATE INDEX agents_updated ON agents (updated_at_ms DESC, agent_id DESC);
CREATE INDEX agents_metadata_gin ON agents USING GIN (metadata jsonb_path_ops);
CREATE INDEX agents_lineage_gin ON agents USING GIN (lineage jsonb_path_ops);

CREATE TABLE messages (
    agent_id    TEXT COLLATE "C" NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    role        TEXT COLLATE "C" NOT NULL,
    content     JSONB NOT NULL,
    metadata    JSONB,
    extra       JSONB,
    hash        BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX messages_created ON messages (created_at DESC, agent_id DESC, seq DESC);
CREATE INDEX messages_role_created ON messages (role, created_at DESC, agent_id DESC, seq DESC);
CREATE INDEX messages_content_gin ON messages USING GIN (content jsonb_path_ops);

CREATE TABLE tool_calls (
    agent_id          TEXT COLLATE "C" NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    id                TEXT COLLATE "C" NOT NULL,
    position          INTEGER NOT NULL,
    name              TEXT COLLATE "C" NOT NULL,
    state             TEXT COLLATE "C" NOT NULL,
    is_error          BOOLEAN NOT NULL,
    approval_required BOOLEAN NOT NULL,
    created_at        BIGINT NOT NULL,
    -- the whole record; the tool's input is record->'input'
    record            JSONB NOT NULL,
    hash              BYTEA NOT NULL,
    PRIMARY KEY (agent_id, id)
);
CREATE INDEX tool_calls_name_state ON tool_calls (name, state, created_at DESC, agent_id DESC, id DESC);
CREATE INDEX tool_calls_state ON tool_calls (state, created_at DESC, agent_id DESC, id DESC);
CREATE INDEX tool_calls_created ON tool_calls (created_at DESC, agent_id DESC, id DESC);
CREATE INDEX tool_calls_record_gin ON tool_calls USING GIN (record jsonb_path_ops);

CREATE TABLE snapshots (
    row_id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id     TEXT COLLATE "C" NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    snapshot_id  TEXT COLLATE "C" NOT NULL,
    body         JSONB NOT NULL,
    UNIQUE (agent_id, snapshot_id)
);
