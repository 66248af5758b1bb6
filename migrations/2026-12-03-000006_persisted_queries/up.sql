-- Automatic persisted queries: documents registered by hash, shared by every replica.
-- Bounded: the least recently used are evicted (see store::persisted).
CREATE TABLE persisted_queries (
    hash         TEXT PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
    document     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX persisted_queries_last_used_idx ON persisted_queries (last_used_at);
