-- Human-in-the-loop data (kodestore/hitl.py); the same tables as schema/sqlite/004_human_loop.sql.
-- Both belong to an agent and go with it (store.delete, prune) through ON DELETE CASCADE.

-- A suspended run's state, readable until expires_at_ms (epoch ms); reads skip expired rows, so
-- cleanup_expired_states only reclaims space.
CREATE TABLE suspended_states (
    agent_id       TEXT COLLATE "C" NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    state_id       TEXT COLLATE "C" NOT NULL,
    payload        JSONB NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (agent_id, state_id)
);
CREATE INDEX suspended_states_expires ON suspended_states (expires_at_ms);
CREATE INDEX suspended_states_created ON suspended_states (created_at_ms DESC, agent_id DESC, state_id DESC);

-- One rating of an agent's work; correction and metadata are JSON.
CREATE TABLE feedback (
    feedback_id    TEXT COLLATE "C" PRIMARY KEY,
    agent_id       TEXT COLLATE "C" NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    rating         SMALLINT NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment        TEXT COLLATE "C",
    message_seq    BIGINT,
    correction     JSONB,
    metadata       JSONB,
    created_at_ms  BIGINT NOT NULL
);
CREATE INDEX feedback_agent_created ON feedback (agent_id, created_at_ms DESC, feedback_id DESC);
CREATE INDEX feedback_created ON feedback (created_at_ms DESC, feedback_id DESC);
