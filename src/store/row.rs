//! Reading `sql_query` rows by position.
//!
//! diesel's derived `QueryableByName` looks every column up by name, a linear scan of the row's
//! column names per field: for a 19-column bug row that is about 190 string compares per row,
//! which was 9% of the gateway's CPU under the Q1 load. Lists select `x.*` as the last columns
//! of their statements, so [`by_position!`] reads each field at its expected position, checks
//! that column's name (one compare), and only falls back to the lookup by name when the
//! statement is shaped differently. Field types come from `schema.rs`, as with the derive.

use diesel::deserialize::{self, FromSql};
use diesel::pg::Pg;
use diesel::row::{Field, NamedRow, Row};

/// Walks a row's trailing `n` columns in order.
pub struct Columns<'r, R> {
    row: &'r R,
    next: Option<usize>,
}

impl<'r, 'a, R: NamedRow<'a, Pg>> Columns<'r, R> {
    /// The struct's columns are expected to be the row's last `n`.
    pub fn trailing(row: &'r R, n: usize) -> Self {
        Columns {
            row,
            next: row.field_count().checked_sub(n),
        }
    }

    /// The next field, which must be named `name`; found by name if it is not where expected.
    /// A NULL where `T` is not nullable is a column the list left out (see [`Slim`]): it reads
    /// as `T`'s default, which no resolver reads.
    pub fn read<ST, T: FromSql<ST, Pg> + Default>(&mut self, name: &str) -> deserialize::Result<T> {
        if let Some(at) = self.next {
            self.next = Some(at + 1);
            if let Some(field) = Row::get(self.row, at)
                && field.field_name() == Some(name)
            {
                return match field.value() {
                    None => Ok(T::default()),
                    value => T::from_nullable_sql(value),
                };
            }
        }
        NamedRow::get::<ST, T>(self.row, name)
    }
}

/// Implements `QueryableByName<Pg>` for a row struct of `$table`, reading the listed fields
/// (every field, named like its column) by position; see the module docs.
macro_rules! by_position {
    ($ty:ident, $table:ident, [$($field:ident),* $(,)?]) => {
        impl $crate::store::row::Positional for $ty {
            const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        impl diesel::deserialize::QueryableByName<diesel::pg::Pg> for $ty {
            fn build<'a>(
                row: &impl diesel::row::NamedRow<'a, diesel::pg::Pg>,
            ) -> diesel::deserialize::Result<Self> {
                const N: usize = [$(stringify!($field)),*].len();
                let mut cols = $crate::store::row::Columns::trailing(row, N);
                Ok($ty {
                    $($field: cols.read::<
                        <$table::$field as diesel::expression::Expression>::SqlType,
                        _,
                    >(stringify!($field))?,)*
                })
            }
        }
    };
}
pub(crate) use by_position;

/// A row decoded by position: its columns, in order.
pub trait Positional {
    const COLUMNS: &'static [&'static str];
}

/// A row whose lists may leave out columns no field asks for. A column left out is selected as
/// `NULL` under its own name, so the row decodes by position either way (as the field type's
/// default, see [`Columns::read`]); PostgreSQL neither reads (detoasts) nor converts nor sends
/// the value, and the gateway decodes nothing. Only the key and cursor columns (`id`,
/// `created_at`) are always read.
pub trait Slim: Positional {
    /// Each column that may be left out. Bit `i` of a [`Cols`] set is `OPTIONAL[i]`.
    const OPTIONAL: &'static [&'static str];
}

/// Which of a row's optional columns a list fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cols(pub u32);

impl Cols {
    pub const ALL: Cols = Cols(u32::MAX);
    pub const NONE: Cols = Cols(0);

    pub fn with(self, i: usize) -> Cols {
        Cols(self.0 | (1 << i))
    }

    pub fn union(self, other: Cols) -> Cols {
        Cols(self.0 | other.0)
    }

    pub fn has(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }

    /// The select list of `R` with these optional columns (comma-separated).
    pub fn select_list<R: Slim>(self) -> String {
        let mut out = String::new();
        for (n, col) in R::COLUMNS.iter().enumerate() {
            if n > 0 {
                out.push_str(", ");
            }
            match R::OPTIONAL.iter().position(|c| c == col) {
                Some(i) if !self.has(i) => {
                    out.push_str("NULL AS ");
                    out.push_str(col);
                }
                _ => out.push_str(col),
            }
        }
        out
    }
}
