DROP TABLE trend_refreshes;
DROP MATERIALIZED VIEW trend_sessions_daily;
DROP MATERIALIZED VIEW trend_bugs_daily;
