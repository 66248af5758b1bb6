//! Lower-case text enums guarded by CHECK constraints in PostgreSQL. Clients see them as
//! SCREAMING_CASE enums (the API declares them from [`DbEnum`]); errors spell them that way too.

/// What generic code (lifecycles, filters, the API's enum types) needs to know of a stored enum.
pub trait DbEnum: Copy + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The enum's doc comment, one line each.
    const DOC: &'static [&'static str];
    /// The value stored in PostgreSQL.
    fn db_name(self) -> &'static str;
    /// The spelling clients see: the stored value in upper case.
    fn graphql_name(self) -> String {
        self.db_name().to_ascii_uppercase()
    }
    /// The variant stored as `s`.
    fn parse_db(s: &str) -> Option<Self>;
}

/// Declares an enum stored as lower-case `text`.
/// Hand-written `ToSql`/`FromSql` on `Text` avoid custom PostgreSQL types and their OID lookups.
macro_rules! db_enum {
    ($(#[doc = $doc:literal])* $name:ident { $($variant:ident => $db:literal),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            diesel::expression::AsExpression, diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }

        /// The first value: what a row holds in place of a column its list left out
        /// (`store::row::Slim`), never shown to anyone.
        impl Default for $name {
            fn default() -> Self {
                $name::ALL[0]
            }
        }

        impl $name {

            /// The value stored in PostgreSQL.
            pub fn as_db(self) -> &'static str {
                match self { $($name::$variant => $db),+ }
            }

            pub fn from_db(s: &str) -> Option<Self> {
                match s { $($db => Some($name::$variant),)+ _ => None }
            }

            /// The spelling clients see, used in error extensions.
            pub fn as_graphql(self) -> String {
                $crate::store::enums::DbEnum::graphql_name(self)
            }
        }

        impl $crate::store::enums::DbEnum for $name {
            const ALL: &'static [Self] = $name::ALL;
            const DOC: &'static [&'static str] = &[$($doc),*];
            fn db_name(self) -> &'static str {
                self.as_db()
            }
            fn parse_db(s: &str) -> Option<Self> {
                Self::from_db(s)
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                use std::io::Write;
                out.write_all(self.as_db().as_bytes())?;
                Ok(diesel::serialize::IsNull::No)
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                let s = std::str::from_utf8(bytes.as_bytes())?;
                Self::from_db(s).ok_or_else(|| {
                    format!("unknown {} value {s:?}", stringify!($name)).into()
                })
            }
        }
    };
}

pub(crate) use db_enum;
