DROP TRIGGER crawl_sessions_notify_delete ON crawl_sessions;
DROP FUNCTION bughive_notify_session_deleted();
