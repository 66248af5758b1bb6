//! Automatic persisted queries: documents registered under their SHA-256, in a table every
//! replica shares. Bounded: once it holds more than its limit, the least recently used go.

use diesel::QueryableByName;
use diesel::prelude::OptionalExtension;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;

use crate::error::AppResult;
use crate::store::Conn;
use crate::store::sql::{Bind, Sql};

#[derive(QueryableByName)]
struct Document {
    #[diesel(sql_type = Text)]
    document: String,
}

/// The document registered under `hash`, marking it used.
pub async fn get(conn: &mut Conn, hash: &str) -> AppResult<Option<String>> {
    let mut q = Sql::new("UPDATE persisted_queries SET last_used_at = now() WHERE hash = ");
    q.bind(Bind::Text(hash.to_owned()))
        .push(" RETURNING document");
    let row: Option<Document> = q.get_result(conn).await.optional()?;
    Ok(row.map(|r| r.document))
}

/// Registers a document under its hash (checked by the caller); registering it again only marks
/// it used. Then trims the table to `keep` documents, least recently used first.
pub async fn put(conn: &mut Conn, hash: &str, document: &str, keep: i64) -> AppResult<()> {
    let mut q = Sql::new("INSERT INTO persisted_queries (hash, document) VALUES (");
    q.bind(Bind::Text(hash.to_owned()))
        .push(", ")
        .bind(Bind::Text(document.to_owned()))
        .push(") ON CONFLICT (hash) DO UPDATE SET last_used_at = now()");
    q.execute(conn).await?;
    // Replicas may trim at the same time: each deletes what it sees beyond the bound, and a
    // document deleted twice is simply gone.
    let mut q = Sql::new(
        "DELETE FROM persisted_queries WHERE hash IN (SELECT hash FROM persisted_queries \
         ORDER BY last_used_at DESC OFFSET ",
    );
    q.bind(Bind::BigInt(keep)).push(")");
    q.execute(conn).await?;
    Ok(())
}
