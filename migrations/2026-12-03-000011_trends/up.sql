-- Trends across sessions (`trends`), served from daily rollups that stay small as bugs reach
-- millions: one row per day, owner, project, site and priority/category (bugs) or status
-- (sessions). Materialized views, refreshed concurrently on a schedule by one replica at a time
-- (readers never wait), rather than rollups kept by triggers, which would add a write to every
-- `reportBugs` and a hot row per day that concurrent ingestion would queue on.
--
-- Owner and project are kept (as the nil uuid when absent: the unique indexes that concurrent
-- refreshes need must not meet NULLs) so `trends` can apply the caller's scope.

CREATE MATERIALIZED VIEW trend_bugs_daily AS
SELECT (b.created_at AT TIME ZONE 'UTC')::date AS day,
       coalesce(s.owner_id, '00000000-0000-0000-0000-000000000000') AS owner_key,
       coalesce(s.project_id, '00000000-0000-0000-0000-000000000000') AS project_key,
       s.base_url,
       b.priority,
       b.category,
       count(*)::bigint AS bugs
FROM bugs b JOIN crawl_sessions s ON s.id = b.session_id
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE UNIQUE INDEX idx_trend_bugs_key
    ON trend_bugs_daily (day, owner_key, project_key, base_url, priority, category);

CREATE MATERIALIZED VIEW trend_sessions_daily AS
SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
       coalesce(owner_id, '00000000-0000-0000-0000-000000000000') AS owner_key,
       coalesce(project_id, '00000000-0000-0000-0000-000000000000') AS project_key,
       base_url,
       status,
       count(*)::bigint AS sessions,
       sum(total_cost)::numeric(14, 4) AS cost
FROM crawl_sessions
GROUP BY 1, 2, 3, 4, 5;

CREATE UNIQUE INDEX idx_trend_sessions_key
    ON trend_sessions_daily (day, owner_key, project_key, base_url, status);

-- When each view was last refreshed: `trends.refreshedAt`, the answer's freshness.
CREATE TABLE trend_refreshes (
    view_name    text PRIMARY KEY,
    refreshed_at timestamptz NOT NULL
);
INSERT INTO trend_refreshes VALUES ('trends', now());
