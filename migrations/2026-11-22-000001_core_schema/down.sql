DROP TABLE bugs;
DROP TABLE pages;
DROP TABLE crawl_sessions;
DROP FUNCTION bughive_touch_updated_at();
