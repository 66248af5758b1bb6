-- Users (provisioned from the identity provider's subject), projects, session ownership and the
-- immutable audit log.

CREATE TABLE users (
    id           uuid PRIMARY KEY,
    -- The identity provider's `sub`.
    subject      text NOT NULL UNIQUE CHECK (subject <> '' AND length(subject) <= 255),
    email        text UNIQUE CHECK (email IS NULL OR length(email) <= 320),
    display_name text CHECK (display_name IS NULL OR length(display_name) <= 200),
    role         text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'manager', 'user', 'service')),
    is_active    boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz
);

CREATE TABLE projects (
    id         uuid PRIMARY KEY,
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name       text NOT NULL CHECK (name <> '' AND length(name) <= 200),
    owner_id   uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_project_owner ON projects (owner_id);

-- Existing sessions keep no owner: only admins and managers see them.
ALTER TABLE crawl_sessions
    ADD COLUMN owner_id uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN project_id uuid REFERENCES projects (id) ON DELETE SET NULL;
CREATE INDEX idx_session_owner_created_id ON crawl_sessions (owner_id, created_at DESC, id DESC);
CREATE INDEX idx_session_project_created_id ON crawl_sessions (project_id, created_at DESC, id DESC);

CREATE TABLE audit_logs (
    id            uuid PRIMARY KEY,
    -- Kept when the user goes: the log outlives what it describes.
    actor_id      uuid,
    actor_subject text NOT NULL,
    actor_role    text NOT NULL,
    action        text NOT NULL,
    resource_type text NOT NULL,
    resource_id   uuid,
    old_value     jsonb,
    new_value     jsonb,
    request_id    text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_audit_created_id ON audit_logs (created_at DESC, id DESC);
CREATE INDEX idx_audit_resource ON audit_logs (resource_type, resource_id, created_at DESC, id DESC);
CREATE INDEX idx_audit_actor ON audit_logs (actor_id, created_at DESC, id DESC);

-- The log is append-only for everyone, the gateway's own role included.
CREATE FUNCTION bughive_audit_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_logs_no_update BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION bughive_audit_immutable();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION bughive_audit_immutable();
