-- AI agents and their executions (seed 003). An agent's success rate and average duration are
-- computed from its executions when read, so they cannot drift from them.

CREATE TABLE agents (
    id              uuid PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (length(btrim(name)) > 0 AND length(name) <= 200),
    agent_type      text NOT NULL CHECK (length(btrim(agent_type)) > 0 AND length(agent_type) <= 100),
    model_provider  text CHECK (model_provider IS NULL OR length(model_provider) <= 100),
    model_name      text CHECK (model_name IS NULL OR length(model_name) <= 200),
    capabilities    jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active       boolean NOT NULL DEFAULT true,
    is_experimental boolean NOT NULL DEFAULT false,
    tags            text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_agent_type ON agents (agent_type);
CREATE INDEX idx_agent_active ON agents (is_active);
CREATE INDEX idx_agent_provider ON agents (model_provider);
CREATE INDEX idx_agent_tags ON agents USING gin (tags);
-- Keyset pagination of `agents` (oldest first).
CREATE INDEX idx_agent_created_id ON agents (created_at, id);

CREATE TRIGGER agents_touch_updated_at BEFORE UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION bughive_touch_updated_at();

CREATE TABLE agent_executions (
    id            uuid PRIMARY KEY,
    -- An agent with executions is deactivated, never deleted: its history stays.
    agent_id      uuid NOT NULL REFERENCES agents (id) ON DELETE RESTRICT,
    session_id    uuid NOT NULL REFERENCES crawl_sessions (id) ON DELETE CASCADE,
    page_id       uuid REFERENCES pages (id) ON DELETE SET NULL,
    bug_id        uuid REFERENCES bugs (id) ON DELETE SET NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CONSTRAINT agent_executions_status_check
                  CHECK (status IN ('pending', 'running', 'success', 'failure', 'timeout')),
    input         jsonb NOT NULL DEFAULT '{}'::jsonb,
    input_tokens  bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cost          numeric(10, 4) NOT NULL DEFAULT 0 CHECK (cost >= 0),
    -- How long a RUNNING execution may take before the reaper moves it to TIMEOUT.
    timeout_seconds integer NOT NULL CHECK (timeout_seconds BETWEEN 1 AND 86400),
    deadline_at   timestamptz,
    duration_ms   bigint CHECK (duration_ms IS NULL OR duration_ms >= 0),
    result        jsonb,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    -- A finished execution has its duration; a running one its deadline.
    CONSTRAINT agent_executions_finished_check CHECK (
        (status IN ('success', 'failure', 'timeout')) = (finished_at IS NOT NULL)
    ),
    CONSTRAINT agent_executions_running_check CHECK (
        status <> 'running' OR (started_at IS NOT NULL AND deadline_at IS NOT NULL)
    )
);

-- Per-agent and per-session keyset pagination (LATERAL … ORDER BY created_at, id LIMIT n); the
-- same indexes serve the grouped statistics of each.
CREATE INDEX idx_execution_agent_created_id ON agent_executions (agent_id, created_at, id);
CREATE INDEX idx_execution_session_created_id ON agent_executions (session_id, created_at, id);
CREATE INDEX idx_execution_status ON agent_executions (status);
CREATE INDEX idx_execution_created ON agent_executions (created_at);
CREATE INDEX idx_execution_page ON agent_executions (page_id) WHERE page_id IS NOT NULL;
CREATE INDEX idx_execution_bug ON agent_executions (bug_id) WHERE bug_id IS NOT NULL;
-- What the reaper scans: running executions by deadline.
CREATE INDEX idx_execution_running_deadline ON agent_executions (deadline_at)
    WHERE status = 'running';

CREATE TRIGGER agent_executions_touch_updated_at BEFORE UPDATE ON agent_executions
    FOR EACH ROW EXECUTE FUNCTION bughive_touch_updated_at();
