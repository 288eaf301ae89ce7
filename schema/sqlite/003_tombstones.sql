-- Deletion that sticks: a late save_info from a process that still held a deleted agent must not
-- bring it back. An info created before the agent's deletion is refused; a newer one re-creates it.
CREATE TABLE deleted_agents (
    agent_id       TEXT PRIMARY KEY,
    deleted_at_ms  INTEGER NOT NULL
) WITHOUT ROWID;
