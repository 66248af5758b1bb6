-- Full-text search over bugs (`searchBugs`) and near-duplicates by trigram similarity
-- (`Bug.similar`, `Bug.duplicateCandidates`).

-- Trusted since PostgreSQL 13: the database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Weighted: the title counts most, then the description, then the steps and behaviours.
-- Angle brackets become spaces first: bug reports quote markup, and PostgreSQL's parser drops
-- a `<script>` tag with every word after it.
ALTER TABLE bugs ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', translate(title, '<>', '  ')), 'A')
    || setweight(to_tsvector('english', translate(description, '<>', '  ')), 'B')
    || setweight(jsonb_to_tsvector('english', steps_to_reproduce, '["string"]'), 'C')
    || setweight(to_tsvector('english', translate(coalesce(expected_behavior, '') || ' '
                                        || coalesce(actual_behavior, ''), '<>', '  ')), 'C')
) STORED;

CREATE INDEX idx_bug_search ON bugs USING gin (search);
-- `title % other_title` (similarity above pg_trgm.similarity_threshold) by index.
CREATE INDEX idx_bug_title_trgm ON bugs USING gin (title gin_trgm_ops);
-- Candidates of the same site: sessions by base URL are indexed already
-- (idx_session_base_url_status); bugs by session too (idx_bug_session_*).
