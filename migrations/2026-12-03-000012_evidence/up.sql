-- The evidence registry (seed 003): evidence rows attached to bugs, optionally produced by an
-- agent execution, with a credibility score, verification, and links to related and
-- contradicting evidence. A bug's `evidence` JSON array stays as it is.

CREATE TABLE evidence (
    id           uuid PRIMARY KEY,
    bug_id       uuid NOT NULL REFERENCES bugs (id) ON DELETE CASCADE,
    -- The bug's session, kept here so visibility is checked without a join.
    session_id   uuid NOT NULL REFERENCES crawl_sessions (id) ON DELETE CASCADE,
    execution_id uuid REFERENCES agent_executions (id) ON DELETE SET NULL,
    source_type  text NOT NULL
                 CONSTRAINT evidence_source_type_check
                 CHECK (source_type IN ('screenshot', 'dom_snapshot', 'console_log',
                                        'network_trace', 'test_result', 'ai_analysis',
                                        'human_report', 'other')),
    summary      text NOT NULL CHECK (length(btrim(summary)) > 0 AND length(summary) <= 2000),
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    credibility  double precision NOT NULL CHECK (credibility >= 0 AND credibility <= 1),
    is_verified  boolean NOT NULL DEFAULT false,
    verified_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    verified_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT evidence_verified_check CHECK (is_verified = (verified_at IS NOT NULL))
);

-- Per-bug keyset pagination and the per-bug credibility aggregate.
CREATE INDEX idx_evidence_bug_created_id ON evidence (bug_id, created_at, id);
CREATE INDEX idx_evidence_execution_created_id ON evidence (execution_id, created_at, id)
    WHERE execution_id IS NOT NULL;
CREATE INDEX idx_evidence_session ON evidence (session_id);
CREATE INDEX idx_evidence_source_type ON evidence (source_type);
CREATE INDEX idx_evidence_credibility ON evidence (credibility);
CREATE INDEX idx_evidence_verified ON evidence (is_verified);

CREATE TRIGGER evidence_touch_updated_at BEFORE UPDATE ON evidence
    FOR EACH ROW EXECUTE FUNCTION bughive_touch_updated_at();

-- Links between evidence rows, stored in both directions (a link is symmetric).
CREATE TABLE evidence_links (
    evidence_id uuid NOT NULL REFERENCES evidence (id) ON DELETE CASCADE,
    other_id    uuid NOT NULL REFERENCES evidence (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('related', 'contradicts')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (evidence_id, kind, other_id),
    CHECK (evidence_id <> other_id)
);
CREATE INDEX idx_evidence_links_other ON evidence_links (other_id);
