-- Comments on bugs (seed 003's task comments), by a user or by an agent (posted through a
-- user or service account), with an AI-generated flag and its metadata. Deleting a comment only
-- marks it: lists hide it, the row and its audit trail stay.

CREATE TABLE bug_comments (
    id              uuid PRIMARY KEY,
    bug_id          uuid NOT NULL REFERENCES bugs (id) ON DELETE CASCADE,
    -- The bug's session, kept here so visibility is checked without a join.
    session_id      uuid NOT NULL REFERENCES crawl_sessions (id) ON DELETE CASCADE,
    -- Who posted it: the only one who may edit or delete it.
    author_id       uuid REFERENCES users (id) ON DELETE SET NULL,
    -- The agent that wrote it, when an agent did.
    agent_id        uuid REFERENCES agents (id) ON DELETE RESTRICT,
    body            text NOT NULL CHECK (length(btrim(body)) > 0 AND length(body) <= 10000),
    is_ai_generated boolean NOT NULL DEFAULT false,
    ai_metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    edited_at       timestamptz,
    deleted_at      timestamptz
);

-- Newest-first keyset pagination per bug, live comments only.
CREATE INDEX idx_comment_bug_created_id ON bug_comments (bug_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX idx_comment_author ON bug_comments (author_id, created_at);
CREATE INDEX idx_comment_agent ON bug_comments (agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX idx_comment_session ON bug_comments (session_id);

CREATE TRIGGER bug_comments_touch_updated_at BEFORE UPDATE ON bug_comments
    FOR EACH ROW EXECUTE FUNCTION bughive_touch_updated_at();
