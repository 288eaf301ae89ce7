-- LangGraph checkpoints (kodestore/langgraph). A thread is an agent: its rows go with the agent
-- (store.delete, prune) through ON DELETE CASCADE. Names carry a langgraph_ prefix so LangGraph's
-- own savers (tables "checkpoints", "checkpoint_blobs", ...) can share the database.

-- One checkpoint without its channel values; checkpoint is the serializer's (type, bytes).
-- run_id is metadata["run_id"], kept in a column so delete_for_runs is an index lookup.
CREATE TABLE langgraph_checkpoints (
    thread_id             TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    checkpoint_ns         TEXT NOT NULL,
    checkpoint_id         TEXT NOT NULL,
    parent_checkpoint_id  TEXT,
    run_id                TEXT,
    checkpoint_type       TEXT NOT NULL,
    checkpoint            BLOB NOT NULL,
    metadata              TEXT NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
) WITHOUT ROWID;
CREATE INDEX langgraph_checkpoints_run ON langgraph_checkpoints (run_id) WHERE run_id IS NOT NULL;

-- A channel's value at one version, stored once however many checkpoints share it.
-- value_type 'empty' (value NULL) marks a version whose channel held no value.
CREATE TABLE langgraph_blobs (
    thread_id      TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    checkpoint_ns  TEXT NOT NULL,
    channel        TEXT NOT NULL,
    version        TEXT NOT NULL,
    value_type     TEXT NOT NULL,
    value          BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
) WITHOUT ROWID;

-- Which version of each channel a checkpoint holds: loads join it to the blobs, and a blob no row
-- points at any more is garbage.
CREATE TABLE langgraph_checkpoint_channels (
    thread_id      TEXT NOT NULL,
    checkpoint_ns  TEXT NOT NULL,
    checkpoint_id  TEXT NOT NULL,
    channel        TEXT NOT NULL,
    version        TEXT NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, channel),
    FOREIGN KEY (thread_id, checkpoint_ns, checkpoint_id)
        REFERENCES langgraph_checkpoints (thread_id, checkpoint_ns, checkpoint_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX langgraph_checkpoint_channels_blob
    ON langgraph_checkpoint_channels (thread_id, checkpoint_ns, channel, version);

-- Pending writes of a checkpoint's tasks; idx < 0 marks the special channels (error, interrupt, ...).
CREATE TABLE langgraph_writes (
    thread_id      TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    checkpoint_ns  TEXT NOT NULL,
    checkpoint_id  TEXT NOT NULL,
    task_id        TEXT NOT NULL,
    idx            INTEGER NOT NULL,
    channel        TEXT NOT NULL,
    value_type     TEXT NOT NULL,
    value          BLOB,
    task_path      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
) WITHOUT ROWID;
