-- Every replica learns when a user's role or active flag changes (the change listener then
-- drops the cached caller and closes its WebSockets), not only the replica that made the change.
CREATE FUNCTION bughive_notify_user_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bughive_events',
        json_build_object('e', 'user', 'id', NEW.id, 'k', 'changed')::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_notify_change AFTER UPDATE OF role, is_active ON users
    FOR EACH ROW
    WHEN (OLD.role IS DISTINCT FROM NEW.role OR OLD.is_active IS DISTINCT FROM NEW.is_active)
    EXECUTE FUNCTION bughive_notify_user_changed();
