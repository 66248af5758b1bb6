use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::model::{EventFilter, EventRow, Position};
use crate::error::AppResult;
use crate::store::enums::DbEnum;

/// How far a reader may go: the oldest transaction still running. Every transaction with a
/// smaller id has ended, and every later one gets a larger id.
#[derive(Debug, Clone, Copy)]
pub struct Horizon {
    /// Events at or past this transaction id are not handed out yet.
    pub txid: i64,
    /// Committed events wait behind the horizon (a transaction that started earlier is still
    /// running), so the reader should look again soon.
    pub held_back: bool,
}

impl Horizon {
    /// The position just below the horizon: a reader that has read everything up to here has
    /// seen every event that can ever appear at or before it.
    pub fn position(&self) -> Position {
        Position {
            txid: self.txid - 1,
            id: i64::MAX,
        }
    }
}

pub async fn horizon(conn: &mut AsyncPgConnection) -> AppResult<Horizon> {
    #[derive(diesel::QueryableByName)]
    struct H {
        #[diesel(sql_type = BigInt)]
        x: i64,
        #[diesel(sql_type = Bool)]
        held: bool,
    }
    let h: H = diesel::sql_query(
        "SELECT h.x, EXISTS (SELECT 1 FROM events WHERE txid >= h.x) AS held \
         FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS x) h",
    )
    .get_result(conn)
    .await?;
    Ok(Horizon {
        txid: h.x,
        held_back: h.held,
    })
}

/// Up to `limit` events after `after` (and at most `upto`) that match `filter`, below the
/// horizon, in log order.
pub async fn read(
    conn: &mut AsyncPgConnection,
    after: Position,
    upto: Position,
    filter: &EventFilter,
    limit: i64,
) -> AppResult<Vec<EventRow>> {
    let kinds: Vec<String> = filter
        .kinds
        .iter()
        .map(|k| k.db_name().to_owned())
        .collect();
    let rows = diesel::sql_query(
        "SELECT id, txid, session_id, project_id, entity, entity_id, kind, payload, created_at \
         FROM events \
         WHERE (txid, id) > ($1, $2) AND (txid, id) <= ($3, $4) \
           AND ($5::uuid IS NULL OR session_id = $5) \
           AND ($6::uuid IS NULL OR project_id = $6) \
           AND (cardinality($7::text[]) = 0 OR kind = ANY ($7)) \
         ORDER BY txid, id LIMIT $8",
    )
    .bind::<BigInt, _>(after.txid)
    .bind::<BigInt, _>(after.id)
    .bind::<BigInt, _>(upto.txid)
    .bind::<BigInt, _>(upto.id)
    .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(filter.session)
    .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(filter.project)
    .bind::<Array<Text>, _>(&kinds)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows)
}

/// The newest position retention has deleted; a cursor before it may have missed events.
pub async fn pruned(conn: &mut AsyncPgConnection) -> AppResult<Position> {
    #[derive(diesel::QueryableByName)]
    struct P {
        #[diesel(sql_type = BigInt)]
        txid: i64,
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let p: P = diesel::sql_query("SELECT txid, id FROM event_log_pruned")
        .get_result(conn)
        .await?;
    Ok(Position {
        txid: p.txid,
        id: p.id,
    })
}

/// Deletes the events created before `before` among the `batch` oldest positions (transaction
/// ids grow with time, so old events are at the start of the key, and a pass reads at most
/// `batch` index entries however long the log is), and records the newest position deleted. Replicas prune in parallel: each takes rows the others have not locked, and the
/// recorded position only moves forward.
pub async fn prune(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    batch: i64,
) -> AppResult<i64> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query(
        "WITH gone AS ( \
             DELETE FROM events WHERE (txid, id) IN ( \
                 SELECT txid, id FROM ( \
                     SELECT txid, id, created_at FROM events \
                     ORDER BY txid, id LIMIT $2 FOR UPDATE SKIP LOCKED) oldest \
                 WHERE created_at < $1) \
             RETURNING txid, id), \
         newest AS (SELECT txid, id FROM gone ORDER BY txid DESC, id DESC LIMIT 1), \
         moved AS ( \
             UPDATE event_log_pruned p SET txid = newest.txid, id = newest.id FROM newest \
             WHERE (newest.txid, newest.id) > (p.txid, p.id) RETURNING 1) \
         SELECT count(*) AS n FROM gone",
    )
    .bind::<Timestamptz, _>(before)
    .bind::<BigInt, _>(batch)
    .get_result(conn)
    .await?;
    Ok(n.n)
}
