-- The async job queue (seed 002's jobs table, with leases and retries) and the change
-- notifications that feed live subscriptions.

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL CHECK (kind <> '' AND length(kind) <= 100),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    -- A crawl job drives its session; a deleted session leaves its jobs as history.
    session_id       uuid REFERENCES crawl_sessions (id) ON DELETE SET NULL,
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
    progress         double precision NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    message          text,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    -- A pending job is not claimed before this time (retry backoff).
    run_after        timestamptz NOT NULL DEFAULT now(),
    lease_seconds    integer NOT NULL DEFAULT 60 CHECK (lease_seconds BETWEEN 1 AND 86400),
    lease_expires_at timestamptz,
    claimed_by       text,
    result           jsonb,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CHECK (status <> 'running' OR lease_expires_at IS NOT NULL),
    CHECK (attempts <= max_attempts)
);

-- Claiming: pending jobs of some kinds, oldest first.
CREATE INDEX idx_job_claim ON jobs (kind, created_at, id) WHERE status = 'pending';
-- Clean-up of old jobs by status.
CREATE INDEX idx_job_status_updated ON jobs (status, updated_at);
-- The reaper: running jobs whose lease expired.
CREATE INDEX idx_job_lease ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX idx_job_session ON jobs (session_id) WHERE session_id IS NOT NULL;

CREATE TRIGGER jobs_touch_updated_at BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION bughive_touch_updated_at();

-- Change notifications. They are sent from triggers, so every change path (the gateway, a
-- migration, psql) publishes them in the same transaction as the change: PostgreSQL delivers them
-- only on commit, in commit order. The payload stays small (entity, ids, kind); listeners load
-- the current row themselves.
CREATE FUNCTION bughive_notify_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bughive_events', json_build_object(
        'e', 'job',
        'id', NEW.id,
        's', NEW.session_id,
        'k', CASE
                 WHEN TG_OP = 'INSERT' THEN 'created'
                 WHEN NEW.status IS DISTINCT FROM OLD.status THEN 'status'
                 ELSE 'progress'
             END)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION bughive_notify_job();

CREATE FUNCTION bughive_notify_session() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bughive_events', json_build_object(
        'e', 'session',
        'id', NEW.id,
        'k', CASE
                 WHEN NEW.status IS DISTINCT FROM OLD.status THEN 'status'
                 WHEN NEW.bugs_found IS DISTINCT FROM OLD.bugs_found THEN 'bugs'
                 WHEN NEW.pages_discovered IS DISTINCT FROM OLD.pages_discovered
                   OR NEW.pages_crawled IS DISTINCT FROM OLD.pages_crawled THEN 'pages'
                 WHEN NEW.total_cost IS DISTINCT FROM OLD.total_cost THEN 'cost'
                 ELSE 'updated'
             END)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER crawl_sessions_notify AFTER UPDATE ON crawl_sessions
    FOR EACH ROW EXECUTE FUNCTION bughive_notify_session();
