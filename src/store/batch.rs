//! The request's batched reads: a [`Reader`] (the request's database handle and what its caller
//! may see) answers every key of a level at once ([`Fetch`]). Two generic loaders serve every
//! entity: rows by id ([`Id`], for any [`ById`] row), and the one child-list loader, which
//! answers every "children of these parents" list with one LATERAL statement per level
//! ([`ListKey`], [`CountKey`], for any [`Parent`] declared with [`parents!`]).
//!
//! Nothing here knows GraphQL: the API adapts [`Fetch`] to its DataLoader in one place.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use diesel::QueryableByName;
use diesel::deserialize;
use diesel::pg::Pg;
use diesel::row::NamedRow;
use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use futures_util::TryStreamExt;
use uuid::Uuid;

use crate::error::AppResult;
use crate::store::page::{Direction, Keyed, Window};
use crate::store::row::{Cols, Slim};
use crate::store::scope::Scope;
use crate::store::sql::{Bind, Sql};
use crate::store::{Conn, Db};

/// What a request reads with: its database handle (which counts its statements) and the scope
/// of its caller, which every by-id read filters by.
#[derive(Clone)]
pub struct Reader {
    pub db: Db,
    pub scope: Scope,
}

/// One kind of batched read: the values of many keys at once. A key with no rows is absent (a
/// by-id miss) or maps to an empty list (a list), never an error.
pub trait Fetch<K>: Send + Sync {
    type Value: Send + Sync + Clone + 'static;

    fn fetch(&self, keys: &[K]) -> impl Future<Output = AppResult<HashMap<K, Self::Value>>> + Send;
}

/// A row that can be looked up by id.
pub trait ById: Send + Sync + Sized + 'static {
    fn id(&self) -> Uuid;

    /// The rows of these ids that the scope may see, in any order, with at least the optional
    /// columns `cols` (a row type without optional columns reads them all).
    fn by_ids(
        conn: &mut Conn,
        scope: &Scope,
        ids: &[Uuid],
        cols: Cols,
    ) -> impl Future<Output = AppResult<Vec<Self>>> + Send;
}

/// A [`Slim`] row's table, for reading rows by id with only the columns asked for.
pub trait SlimTable: Slim + Keyed + QueryableByName<Pg> + Send + Sync + 'static {
    const TABLE: &'static str;
    /// The column that holds the row's session id, which visibility is checked against.
    const SESSION: &'static str;
}

impl<R: SlimTable> ById for R {
    fn id(&self) -> Uuid {
        self.cursor().id
    }

    async fn by_ids(conn: &mut Conn, scope: &Scope, ids: &[Uuid], cols: Cols) -> AppResult<Vec<R>> {
        let mut q = Sql::new("SELECT ");
        q.push(&cols.select_list::<R>())
            .push(" FROM ")
            .push(R::TABLE)
            .push(" WHERE id = ANY(")
            .bind(Bind::Uuids(ids.to_vec()))
            .push(")");
        // Qualified: inside the visibility check's subquery a bare `id` is the subquery's own.
        let session = format!("{}.{}", R::TABLE, R::SESSION);
        if let Some(v) = scope.visible(diesel::dsl::sql::<SqlUuid>(&session)) {
            q.push(" AND ").push_fragment(v);
        }
        Ok(q.load(conn).await?)
    }
}

/// The key of a row of type `R` looked up by id (`page(id)`, `Bug.session`, `Page.parent`),
/// with the optional columns the operation reads there. Keys of one level with different
/// columns still share one statement, which reads the union of their columns.
pub struct Id<R> {
    pub id: Uuid,
    pub cols: Cols,
    row: PhantomData<fn() -> R>,
}

impl<R> Id<R> {
    /// The whole row.
    pub fn new(id: Uuid) -> Self {
        Id::with_cols(id, Cols::ALL)
    }

    pub fn with_cols(id: Uuid, cols: Cols) -> Self {
        Id {
            id,
            cols,
            row: PhantomData,
        }
    }
}

// Derives would require `R` itself to be `Clone`, `Eq`, `Hash`.
impl<R> Clone for Id<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Id<R> {}

impl<R> PartialEq for Id<R> {
    fn eq(&self, other: &Self) -> bool {
        (self.id, self.cols) == (other.id, other.cols)
    }
}

impl<R> Eq for Id<R> {}

// By id alone, which agrees with `Eq` (see `ListKey`'s hash).
impl<R> Hash for Id<R> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.id.as_u128());
    }
}

impl<R> Debug for Id<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Id({}, {:?})", self.id, self.cols)
    }
}

impl<R: ById> Fetch<Id<R>> for Reader {
    type Value = Arc<R>;

    async fn fetch(&self, keys: &[Id<R>]) -> AppResult<HashMap<Id<R>, Arc<R>>> {
        let cols = keys.iter().fold(Cols::NONE, |all, k| all.union(k.cols));
        let mut ids: Vec<Uuid> = keys.iter().map(|k| k.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut conn = self.db.conn().await?;
        let rows: HashMap<Uuid, Arc<R>> = R::by_ids(&mut conn, &self.scope, &ids, cols)
            .await?
            .into_iter()
            .map(|r| (r.id(), Arc::new(r)))
            .collect();
        Ok(keys
            .iter()
            .filter_map(|k| Some((*k, rows.get(&k.id)?.clone())))
            .collect())
    }
}

/// Splits keys into groups that can share one statement: same parent kind and same arguments.
pub fn group_by<K: Copy, G: PartialEq>(keys: &[K], sig: impl Fn(&K) -> G) -> Vec<(G, Vec<K>)> {
    let mut groups: Vec<(G, Vec<K>)> = Vec::new();
    for k in keys {
        let s = sig(k);
        match groups.iter_mut().find(|(g, _)| *g == s) {
            Some((_, v)) => v.push(*k),
            None => groups.push((s, vec![*k])),
        }
    }
    groups
}

/// A kind of parent whose children are listed: an enum over the relations that lead to one
/// child table (a session's pages, a page's children), each naming its foreign-key column.
pub trait Parent: Copy + Eq + Hash + Debug + Send + Sync + 'static {
    /// The child rows, decoded from `x.*` of the child table.
    type Row: QueryableByName<Pg> + Keyed + Slim + Send + Sync + 'static;
    /// The list's filter arguments.
    type Filter: Filter;
    /// The child table.
    const TABLE: &'static str;

    fn id(&self) -> Uuid;
    /// The child table's column that holds this kind of parent's id.
    fn column(&self) -> &'static str;
    /// The same kind of parent with another id.
    fn with_id(self, id: Uuid) -> Self;
    /// Which way the lists run through `(created_at, id)`: oldest first unless declared
    /// otherwise (comments are newest first).
    const DIRECTION: Direction = Direction::Ascending;
}

/// Declares a [`Parent`]: an enum with a variant per relation to the child table, each naming
/// the child table's column (in `store::schema`) that holds that kind of parent's id.
macro_rules! parents {
    (
        $(#[doc = $doc:literal])*
        $name:ident of $table:ident as $row:ty, filtered by $filter:ty $(, order $order:ident)? {
            $($(#[doc = $vdoc:literal])* $variant:ident => $col:ident),+ $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[doc = $vdoc])* $variant(uuid::Uuid)),+
        }

        impl $crate::store::batch::Parent for $name {
            type Row = $row;
            type Filter = $filter;
            const TABLE: &'static str = stringify!($table);
            $(const DIRECTION: $crate::store::page::Direction = $crate::store::page::Direction::$order;)?

            fn id(&self) -> uuid::Uuid {
                match self {
                    $($name::$variant(id))|+ => *id,
                }
            }

            fn column(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => {
                        <$crate::store::schema::$table::$col as diesel::Column>::NAME
                    })+
                }
            }

            fn with_id(self, id: uuid::Uuid) -> Self {
                match self {
                    $($name::$variant(_) => $name::$variant(id)),+
                }
            }
        }
    };
}

pub(crate) use parents;

/// A list's filter arguments, as `AND …` conditions on the child table.
pub trait Filter: Copy + Eq + Hash + Debug + Default + Send + Sync + 'static {
    fn push(&self, q: &mut Sql);
}

/// One parent's page of children. Keys that differ only in the parent id share one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListKey<P: Parent> {
    pub parent: P,
    pub filter: P::Filter,
    pub window: Window,
    /// The optional columns the operation selects; keys that differ here are separate
    /// statements (in practice a level selects one set).
    pub cols: Cols,
}

/// One parent's `totalCount` of children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountKey<P: Parent> {
    pub parent: P,
    pub filter: P::Filter,
}

// Keys are hashed by parent id alone (equal keys have equal ids, so this agrees with `Eq`): a
// loader hashes each key about six times with SipHash, and the whole key with its filter and
// window took three times as long as its id, 8% of the gateway's CPU under the Q1 load.
impl<P: Parent> Hash for ListKey<P> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.parent.id().as_u128());
    }
}

impl<P: Parent> Hash for CountKey<P> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.parent.id().as_u128());
    }
}

/// A child row with the parent it was listed for (`SELECT k.parent_key, x.*`).
struct WithParent<R>(Uuid, R);

impl<R: QueryableByName<Pg>> QueryableByName<Pg> for WithParent<R> {
    fn build<'a>(row: &impl NamedRow<'a, Pg>) -> deserialize::Result<Self> {
        let parent = NamedRow::get::<SqlUuid, Uuid>(row, "parent_key")?;
        Ok(WithParent(parent, R::build(row)?))
    }
}

#[derive(QueryableByName)]
struct KeyedCount {
    #[diesel(sql_type = SqlUuid)]
    parent_key: Uuid,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Up to `window.limit()` children of each parent, in `(created_at, id)` order (or its
/// reverse, for a newest-first parent): one statement
/// for all parents of a group.
fn list_sql<P: Parent>(
    parent: P,
    ids: Vec<Uuid>,
    filter: &P::Filter,
    window: &Window,
    cols: Cols,
) -> Sql {
    let mut q = Sql::new("SELECT k.parent_key, x.* FROM unnest(");
    q.bind(Bind::Uuids(ids))
        .push(") AS k(parent_key) CROSS JOIN LATERAL (SELECT ")
        .push(&cols.select_list::<P::Row>())
        .push(" FROM ")
        .push(P::TABLE)
        .push(" WHERE ")
        .push(parent.column())
        .push(" = k.parent_key");
    filter.push(&mut q);
    if let Some(after) = window.after(P::DIRECTION) {
        q.push(" AND ").push_fragment(after);
    }
    q.push(match P::DIRECTION {
        Direction::Ascending => " ORDER BY created_at, id LIMIT ",
        Direction::Descending => " ORDER BY created_at DESC, id DESC LIMIT ",
    })
    .bind(Bind::BigInt(window.limit()))
    .push(") x");
    q
}

/// Each parent's count of children, in one grouped statement.
fn count_sql<P: Parent>(parent: P, ids: Vec<Uuid>, filter: &P::Filter) -> Sql {
    let col = parent.column();
    let mut q = Sql::new("SELECT ");
    q.push(col)
        .push(" AS parent_key, count(*) AS n FROM ")
        .push(P::TABLE)
        .push(" WHERE ")
        .push(col)
        .push(" = ANY(")
        .bind(Bind::Uuids(ids))
        .push(")");
    filter.push(&mut q);
    q.push(" GROUP BY 1");
    q
}

/// Each parent's rows come in list order, `(created_at, id)`: the API relies on it. A list is
/// shared (`Arc<[…]>`): the DataLoader clones every value it hands out, and cloning a `Vec`
/// of rows per parent was an allocation and a reference-count walk per row.
impl<P: Parent> Fetch<ListKey<P>> for Reader {
    type Value = Arc<[Arc<P::Row>]>;

    async fn fetch(&self, keys: &[ListKey<P>]) -> AppResult<HashMap<ListKey<P>, Self::Value>> {
        let empty: Arc<[Arc<P::Row>]> = Arc::from(Vec::new());
        let mut out: HashMap<ListKey<P>, Self::Value> =
            keys.iter().map(|k| (*k, empty.clone())).collect();
        let mut conn = self.db.conn().await?;
        for ((_, filter, window, cols), group) in group_by(keys, |k| {
            (
                std::mem::discriminant(&k.parent),
                k.filter,
                k.window,
                k.cols,
            )
        }) {
            let parent = group[0].parent;
            let ids = group.iter().map(|k| k.parent.id()).collect();
            let mut runs = Runs::new(&mut out, |id| ListKey {
                parent: parent.with_id(id),
                filter,
                window,
                cols,
            });
            let q = list_sql(parent, ids, &filter, &window, cols);
            let mut rows = q.load_stream::<WithParent<P::Row>>(&mut conn).await?;
            while let Some(WithParent(id, row)) = rows.try_next().await? {
                runs.push(id, row);
            }
            runs.finish();
        }
        Ok(out)
    }
}

impl<P: Parent> Fetch<CountKey<P>> for Reader {
    type Value = i64;

    async fn fetch(&self, keys: &[CountKey<P>]) -> AppResult<HashMap<CountKey<P>, i64>> {
        let mut out: HashMap<CountKey<P>, i64> = keys.iter().map(|k| (*k, 0)).collect();
        let mut conn = self.db.conn().await?;
        for ((_, filter), group) in
            group_by(keys, |k| (std::mem::discriminant(&k.parent), k.filter))
        {
            let parent = group[0].parent;
            let ids = group.iter().map(|k| k.parent.id()).collect();
            let rows: Vec<KeyedCount> = count_sql(parent, ids, &filter).load(&mut conn).await?;
            for r in rows {
                let key = CountKey {
                    parent: parent.with_id(r.parent_key),
                    filter,
                };
                out.insert(key, r.n);
            }
        }
        Ok(out)
    }
}

/// Sorts streamed `(parent id, row)` pairs into the lists of a loader's answer, which holds an
/// entry for every requested key; rows of keys that were not requested are dropped.
///
/// LATERAL lists return rows parent by parent, so a key is hashed once per run of rows rather
/// than once per row (hashing was 5% of the Q1 profile). Rows arrive from a stream, so no
/// statement-sized buffer of decoded rows is ever built.
struct Runs<'m, K, T, F> {
    out: &'m mut HashMap<K, Arc<[Arc<T>]>>,
    key: F,
    current: Option<(Uuid, Vec<Arc<T>>)>,
}

impl<'m, K: Eq + Hash, T, F: Fn(Uuid) -> K> Runs<'m, K, T, F> {
    fn new(out: &'m mut HashMap<K, Arc<[Arc<T>]>>, key: F) -> Self {
        Runs {
            out,
            key,
            current: None,
        }
    }

    fn push(&mut self, parent: Uuid, row: T) {
        match &mut self.current {
            Some((p, run)) if *p == parent => run.push(Arc::new(row)),
            _ => {
                if let Some((p, run)) = self.current.replace((parent, vec![Arc::new(row)])) {
                    self.flush(p, run);
                }
            }
        }
    }

    /// Stores the last run.
    fn finish(mut self) {
        if let Some((p, run)) = self.current.take() {
            self.flush(p, run);
        }
    }

    fn flush(&mut self, parent: Uuid, run: Vec<Arc<T>>) {
        if let Some(list) = self.out.get_mut(&(self.key)(parent)) {
            *list = if list.is_empty() {
                Arc::from(run)
            } else {
                list.iter().cloned().chain(run).collect()
            };
        }
    }
}
