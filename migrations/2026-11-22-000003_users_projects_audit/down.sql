DROP TABLE audit_logs;
DROP FUNCTION bughive_audit_immutable();
ALTER TABLE crawl_sessions DROP COLUMN project_id, DROP COLUMN owner_id;
DROP TABLE projects;
DROP TABLE users;
