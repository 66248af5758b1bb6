//! Storing and reading sealed credentials. Plaintext exists only in memory, on the way in
//! (`createSession`) and on the way out (`claimJob` by a service worker).

use std::collections::HashSet;
use std::sync::Arc;

use diesel::QueryableByName;
use diesel::prelude::OptionalExtension;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::cipher::{Keyring, Sealed};
use crate::error::{AppError, AppResult};
use crate::store::sql::{Bind, Sql};
use crate::store::{Conn, Db};

/// Seals `credentials` for `session` and stores them, replacing any earlier ones. Runs inside
/// the caller's transaction.
pub async fn store(
    c: &mut Conn,
    keyring: &Keyring,
    session: Uuid,
    credentials: &serde_json::Value,
) -> AppResult<()> {
    let plaintext = serde_json::to_vec(credentials).map_err(AppError::internal)?;
    let sealed = keyring.seal(session, &plaintext)?;
    let mut q = Sql::new(
        "INSERT INTO session_credentials (session_id, key_id, nonce, ciphertext) VALUES (",
    );
    q.bind(Bind::Uuid(session))
        .push(", ")
        .bind(Bind::Text(sealed.key_id))
        .push(", ")
        .bind(Bind::Bytes(sealed.nonce))
        .push(", ")
        .bind(Bind::Bytes(sealed.ciphertext))
        .push(
            ") ON CONFLICT (session_id) DO UPDATE SET key_id = EXCLUDED.key_id, \
             nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext",
        );
    q.execute(c).await?;
    Ok(())
}

#[derive(QueryableByName)]
struct SealedRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    session_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    key_id: String,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    nonce: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    ciphertext: Vec<u8>,
}

impl SealedRow {
    fn sealed(self) -> (Uuid, Sealed) {
        (
            self.session_id,
            Sealed {
                key_id: self.key_id,
                nonce: self.nonce,
                ciphertext: self.ciphertext,
            },
        )
    }
}

/// The session's credentials in plaintext, if it has any. Without a keyring they cannot be
/// opened: `UNAVAILABLE`, so the caller's transaction (a claim) rolls back instead of handing
/// out a job without what it needs.
pub async fn open(
    c: &mut Conn,
    keyring: Option<&Keyring>,
    session: Uuid,
) -> AppResult<Option<serde_json::Value>> {
    let mut q = Sql::new(
        "SELECT session_id, key_id, nonce, ciphertext FROM session_credentials WHERE session_id = ",
    );
    q.bind(Bind::Uuid(session));
    let Some(row) = q.get_result::<SealedRow>(c).await.optional()? else {
        return Ok(None);
    };
    let keyring = keyring.ok_or_else(|| {
        AppError::Unavailable(
            "the session has credentials but CREDENTIALS_KEY is not set on this gateway".into(),
        )
    })?;
    let (id, sealed) = row.sealed();
    let plaintext = keyring.open(id, &sealed)?;
    serde_json::from_slice(&plaintext)
        .map(Some)
        .map_err(AppError::internal)
}

#[derive(QueryableByName)]
struct SessionId {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    session_id: Uuid,
}

/// Which of these sessions have credentials: one statement.
pub async fn present(conn: &mut Conn, ids: &[Uuid]) -> AppResult<HashSet<Uuid>> {
    let mut q = Sql::new("SELECT session_id FROM session_credentials WHERE session_id = ANY(");
    q.bind(Bind::Uuids(ids.to_vec())).push(")");
    let rows: Vec<SessionId> = q.load(conn).await?;
    Ok(rows.into_iter().map(|r| r.session_id).collect())
}

/// Re-seals, under the current key, every credential an older key sealed, in transactions of
/// 500; returns how many.
pub async fn reseal_all(db: &Db, keyring: Arc<Keyring>) -> AppResult<usize> {
    const BATCH: i64 = 500;
    let mut total = 0;
    loop {
        let n = crate::store::run_detached({
            let db = db.clone();
            let keyring = keyring.clone();
            async move {
                let mut conn = db.conn().await?;
                conn.transaction::<usize, AppError, _>(async move |c| {
                    reseal_batch(c, &keyring, BATCH).await
                })
                .await
            }
        })
        .await?;
        total += n;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// Re-seals, under the current key, up to `limit` credentials that an older key sealed;
/// returns how many. Rows are taken with `FOR UPDATE SKIP LOCKED`, so several runs split them.
async fn reseal_batch(c: &mut Conn, keyring: &Keyring, limit: i64) -> AppResult<usize> {
    let mut q = Sql::new(
        "SELECT session_id, key_id, nonce, ciphertext FROM session_credentials WHERE key_id <> ",
    );
    q.bind(Bind::Text(keyring.current_id().into()))
        .push(" ORDER BY session_id LIMIT ")
        .bind(Bind::BigInt(limit))
        .push(" FOR UPDATE SKIP LOCKED");
    let rows: Vec<SealedRow> = q.load(c).await?;
    let n = rows.len();
    for row in rows {
        let (session, sealed) = row.sealed();
        let plaintext = keyring.open(session, &sealed)?;
        let fresh = keyring.seal(session, &plaintext)?;
        let mut q = Sql::new("UPDATE session_credentials SET key_id = ");
        q.bind(Bind::Text(fresh.key_id))
            .push(", nonce = ")
            .bind(Bind::Bytes(fresh.nonce))
            .push(", ciphertext = ")
            .bind(Bind::Bytes(fresh.ciphertext))
            .push(" WHERE session_id = ")
            .bind(Bind::Uuid(session));
        q.execute(c).await?;
    }
    Ok(n)
}
