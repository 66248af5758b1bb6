//! Lower-case text enums guarded by CHECK constraints in PostgreSQL, exposed as GraphQL enums.

/// What generic code (lifecycles, filters) needs to know of a stored enum.
pub trait DbEnum: Copy + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// The value stored in PostgreSQL.
    fn db_name(self) -> &'static str;
    /// The GraphQL spelling, as clients see it in errors.
    fn graphql_name(self) -> String;
    /// The variant stored as `s`.
    fn parse_db(s: &str) -> Option<Self>;
}

/// Declares an enum stored as lower-case `text` and exposed as a SCREAMING_CASE GraphQL enum.
/// Hand-written `ToSql`/`FromSql` on `Text` avoid custom PostgreSQL types and their OID lookups.
macro_rules! db_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $db:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            async_graphql::Enum, diesel::expression::AsExpression, diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value stored in PostgreSQL.
            pub fn as_db(self) -> &'static str {
                match self { $($name::$variant => $db),+ }
            }

            pub fn from_db(s: &str) -> Option<Self> {
                match s { $($db => Some($name::$variant),)+ _ => None }
            }

            /// The GraphQL spelling, used in error extensions.
            pub fn as_graphql(self) -> String {
                async_graphql::InputType::to_value(&self).to_string()
            }
        }

        impl $crate::db::enums::DbEnum for $name {
            fn db_name(self) -> &'static str {
                self.as_db()
            }
            fn graphql_name(self) -> String {
                self.as_graphql()
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
