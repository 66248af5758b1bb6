-- The event log behind resumable subscriptions (`sessionEvents`, `bugReported`, SSE's
-- Last-Event-ID): every change a subscriber can see appends a row here, in the transaction that
-- makes the change, from triggers, so no write path (nor a hand-written SQL statement) can skip it.
--
-- Position: (txid, id). `txid` is the writing transaction's id (`pg_current_xact_id()`, 64-bit, so
-- it never wraps); `id` orders a transaction's own events. Readers only take events whose txid is
-- below the oldest transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`): every
-- transaction below that horizon has ended, and every later one gets a larger txid, so once a
-- reader has passed a position nothing can appear behind it. A plain sequence would not do: a
-- transaction that drew a lower number can commit after one that drew a higher number, and a
-- reader that already moved past the higher one would never see it.
CREATE TABLE events (
    id         bigint GENERATED ALWAYS AS IDENTITY,
    txid       bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    session_id uuid,
    project_id uuid,
    entity     text NOT NULL CHECK (entity IN ('session', 'page', 'bug', 'job')),
    entity_id  uuid,
    kind       text NOT NULL CHECK (kind IN (
                   'session_created', 'session_status', 'session_cost', 'session_deleted',
                   'pages_recorded', 'bug_reported', 'bug_status',
                   'job_created', 'job_status', 'job_progress')),
    payload    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The position is the key, and the order of every read. Every write path pays for each index
    -- here, so there are three: retention walks the key too (transaction ids grow with time).
    PRIMARY KEY (txid, id)
);

CREATE INDEX idx_event_session_position ON events (session_id, txid, id);
CREATE INDEX idx_event_project_position ON events (project_id, txid, id)
    WHERE project_id IS NOT NULL;

-- The newest position retention has deleted: a cursor at or before it may have missed events.
CREATE TABLE event_log_pruned (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    txid     bigint NOT NULL DEFAULT 0,
    id       bigint NOT NULL DEFAULT 0
);
INSERT INTO event_log_pruned DEFAULT VALUES;

-- Readers are woken by a notification once per statement that logged something (NOTIFY folds
-- identical payloads of one transaction into one, sent at commit).
CREATE FUNCTION bughive_events_appended() RETURNS void
LANGUAGE sql AS $$ SELECT pg_notify('bughive_events', '{"e":"events","k":"appended"}') $$;

CREATE FUNCTION bughive_log_session_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (session_id, project_id, entity, entity_id, kind, payload)
    SELECT n.id, n.project_id, 'session', n.id, 'session_created',
           jsonb_build_object('baseUrl', n.base_url, 'status', n.status)
    FROM new_rows n;
    IF FOUND THEN PERFORM bughive_events_appended(); END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION bughive_log_session_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (session_id, project_id, entity, entity_id, kind, payload)
    SELECT n.id, n.project_id, 'session', n.id, 'session_status',
           jsonb_build_object('from', o.status, 'to', n.status)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status
    UNION ALL
    SELECT n.id, n.project_id, 'session', n.id, 'session_cost',
           jsonb_build_object('added', (n.total_cost - o.total_cost)::text,
                              'total', n.total_cost::text)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.total_cost IS DISTINCT FROM o.total_cost;
    IF FOUND THEN PERFORM bughive_events_appended(); END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION bughive_log_session_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (session_id, project_id, entity, entity_id, kind)
    SELECT o.id, o.project_id, 'session', o.id, 'session_deleted' FROM old_rows o;
    IF FOUND THEN PERFORM bughive_events_appended(); END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER crawl_sessions_log_insert AFTER INSERT ON crawl_sessions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bughive_log_session_insert();
CREATE TRIGGER crawl_sessions_log_update AFTER UPDATE ON crawl_sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bughive_log_session_update();
CREATE TRIGGER crawl_sessions_log_delete AFTER DELETE ON crawl_sessions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bughive_log_session_delete();

-- One event per batch and session, with its count.
CREATE FUNCTION bughive_log_pages_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (session_id, project_id, entity, kind, payload)
    SELECT r.session_id, s.project_id, 'page', 'pages_recorded',
           jsonb_build_object('count', count(*))
    FROM new_rows r JOIN crawl_sessions s ON s.id = r.session_id
    GROUP BY r.session_id, s.project_id;
    IF FOUND THEN PERFORM bughive_events_appended(); END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER pages_log_insert AFTER INSERT ON pages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bughive_log_pages_insert();

CREATE FUNCTION bughive_log_bug_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (session_id, project_id, entity, entity_id, kind, payload)
    SELECT r.session_id, s.project_id, 'bug', r.id, 'bug_reported',
           jsonb_build_object('title', r.title, 'priority', r.priority,
                              'category', r.category, 'pageId', r.page_id)
    FROM new_rows r JOIN crawl_sessions s ON s.id = r.session_id;
    IF FOUND THEN PERFORM bughive_events_appended(); END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION bughive_log_bug_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (session_id, project_id, entity, entity_id, kind, payload)
    SELECT n.session_id, s.project_id, 'bug', n.id, 'bug_status',
           jsonb_build_object('from', o.status, 'to', n.status)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    JOIN crawl_sessions s ON s.id = n.session_id
    WHERE n.status IS DISTINCT FROM o.status;
    IF FOUND THEN PERFORM bughive_events_appended(); END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER bugs_log_insert AFTER INSERT ON bugs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bughive_log_bug_insert();
CREATE TRIGGER bugs_log_update AFTER UPDATE ON bugs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bughive_log_bug_update();

CREATE FUNCTION bughive_log_job_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (session_id, project_id, entity, entity_id, kind, payload)
    SELECT r.session_id, s.project_id, 'job', r.id, 'job_created',
           jsonb_build_object('kind', r.kind, 'status', r.status)
    FROM new_rows r LEFT JOIN crawl_sessions s ON s.id = r.session_id;
    IF FOUND THEN PERFORM bughive_events_appended(); END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION bughive_log_job_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (session_id, project_id, entity, entity_id, kind, payload)
    SELECT n.session_id, s.project_id, 'job', n.id, 'job_status',
           jsonb_build_object('from', o.status, 'to', n.status, 'kind', n.kind)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    LEFT JOIN crawl_sessions s ON s.id = n.session_id
    WHERE n.status IS DISTINCT FROM o.status
    UNION ALL
    SELECT n.session_id, s.project_id, 'job', n.id, 'job_progress',
           jsonb_build_object('progress', n.progress, 'message', n.message)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    LEFT JOIN crawl_sessions s ON s.id = n.session_id
    WHERE n.status IS NOT DISTINCT FROM o.status
      AND (n.progress IS DISTINCT FROM o.progress OR n.message IS DISTINCT FROM o.message);
    IF FOUND THEN PERFORM bughive_events_appended(); END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_log_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bughive_log_job_insert();
CREATE TRIGGER jobs_log_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bughive_log_job_update();
