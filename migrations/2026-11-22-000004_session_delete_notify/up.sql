-- Subscribers of a session learn when it is deleted (the live hub then ends their subscription
-- with NOT_FOUND); like every change notification, it is sent only if the delete commits.
CREATE FUNCTION bughive_notify_session_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bughive_events',
        json_build_object('e', 'session', 'id', OLD.id, 'k', 'deleted')::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER crawl_sessions_notify_delete AFTER DELETE ON crawl_sessions
    FOR EACH ROW EXECUTE FUNCTION bughive_notify_session_deleted();
