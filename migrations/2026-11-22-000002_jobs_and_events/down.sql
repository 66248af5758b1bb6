DROP TRIGGER crawl_sessions_notify ON crawl_sessions;
DROP FUNCTION bughive_notify_session();
DROP TABLE jobs;
DROP FUNCTION bughive_notify_job();
