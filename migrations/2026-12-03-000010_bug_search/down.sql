DROP INDEX idx_bug_title_trgm;
DROP INDEX idx_bug_search;
ALTER TABLE bugs DROP COLUMN search;
-- pg_trgm stays: other objects of the database may use it, and keeping it is harmless.
