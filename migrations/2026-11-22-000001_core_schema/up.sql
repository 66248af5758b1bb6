-- Core model of seed 000: crawl sessions -> pages -> bugs.
-- Statuses, priorities and categories are lower-case text guarded by CHECK constraints, so the
-- database rejects any value the API does not know, whichever client writes it.

CREATE FUNCTION bughive_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE crawl_sessions (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    base_url         text NOT NULL CHECK (length(base_url) BETWEEN 1 AND 2048),
    status           text NOT NULL DEFAULT 'pending'
                     CONSTRAINT crawl_sessions_status_check
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    config           jsonb NOT NULL DEFAULT '{}'::jsonb,
    pages_discovered integer NOT NULL DEFAULT 0 CHECK (pages_discovered >= 0),
    pages_crawled    integer NOT NULL DEFAULT 0 CHECK (pages_crawled >= 0),
    bugs_found       integer NOT NULL DEFAULT 0 CHECK (bugs_found >= 0),
    total_cost       numeric(10, 4) NOT NULL DEFAULT 0 CHECK (total_cost >= 0),
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz
);

CREATE INDEX idx_session_status_created ON crawl_sessions (status, created_at);
CREATE INDEX idx_session_base_url_status ON crawl_sessions (base_url, status);
-- Keyset pagination of `sessions` (newest first) without a sort.
CREATE INDEX idx_session_created_id ON crawl_sessions (created_at DESC, id DESC);

CREATE TRIGGER crawl_sessions_touch_updated_at BEFORE UPDATE ON crawl_sessions
    FOR EACH ROW EXECUTE FUNCTION bughive_touch_updated_at();

CREATE TABLE pages (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id      uuid NOT NULL REFERENCES crawl_sessions (id) ON DELETE CASCADE,
    url             text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    title           text,
    status          text NOT NULL DEFAULT 'discovered'
                    CONSTRAINT pages_status_check
                    CHECK (status IN ('discovered', 'crawling', 'analyzed', 'failed', 'skipped')),
    depth           integer NOT NULL DEFAULT 0 CHECK (depth >= 0),
    -- A deleted parent must not take its subtree with it: the pages still exist in the session.
    parent_page_id  uuid REFERENCES pages (id) ON DELETE SET NULL,
    analysis_result jsonb,
    crawled_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pages_session_url_key UNIQUE (session_id, url)
);

CREATE INDEX idx_page_session_status ON pages (session_id, status);
CREATE INDEX idx_page_session_depth ON pages (session_id, depth);
-- Per-session keyset pagination (LATERAL ... ORDER BY created_at, id LIMIT n).
CREATE INDEX idx_page_session_created_id ON pages (session_id, created_at, id);
-- The parent_page_id index: serves the foreign key (ON DELETE SET NULL) and paginates
-- `children` in the same order. Entry pages (no parent) are left out, which keeps it small.
CREATE INDEX idx_page_parent ON pages (parent_page_id, created_at, id)
    WHERE parent_page_id IS NOT NULL;

CREATE TRIGGER pages_touch_updated_at BEFORE UPDATE ON pages
    FOR EACH ROW EXECUTE FUNCTION bughive_touch_updated_at();

CREATE TABLE bugs (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id         uuid NOT NULL REFERENCES crawl_sessions (id) ON DELETE CASCADE,
    page_id            uuid REFERENCES pages (id) ON DELETE CASCADE,
    title              text NOT NULL CHECK (length(btrim(title)) > 0),
    description        text NOT NULL DEFAULT '',
    category           text NOT NULL
                       CONSTRAINT bugs_category_check
                       CHECK (category IN ('ui_ux', 'functional', 'performance', 'security',
                                           'accessibility', 'content', 'seo', 'other')),
    priority           text NOT NULL
                       CONSTRAINT bugs_priority_check
                       CHECK (priority IN ('critical', 'high', 'medium', 'low')),
    status             text NOT NULL DEFAULT 'detected'
                       CONSTRAINT bugs_status_check
                       CHECK (status IN ('detected', 'validated', 'reported', 'dismissed')),
    steps_to_reproduce jsonb NOT NULL DEFAULT '[]'::jsonb
                       CHECK (jsonb_typeof(steps_to_reproduce) = 'array'),
    evidence           jsonb NOT NULL DEFAULT '[]'::jsonb,
    confidence         double precision NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    expected_behavior  text,
    actual_behavior    text,
    affected_users     text,
    linear_issue_id    text,
    dismiss_reason     text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_bug_session_priority ON bugs (session_id, priority);
CREATE INDEX idx_bug_session_category ON bugs (session_id, category);
CREATE INDEX idx_bug_session_status ON bugs (session_id, status);
CREATE INDEX idx_bug_page_priority ON bugs (page_id, priority);
CREATE INDEX idx_bug_confidence ON bugs (confidence);
-- Per-session and per-page keyset pagination.
CREATE INDEX idx_bug_session_created_id ON bugs (session_id, created_at, id);
CREATE INDEX idx_bug_page_created_id ON bugs (page_id, created_at, id) WHERE page_id IS NOT NULL;

CREATE TRIGGER bugs_touch_updated_at BEFORE UPDATE ON bugs
    FOR EACH ROW EXECUTE FUNCTION bughive_touch_updated_at();
