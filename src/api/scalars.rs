//! The `Decimal` scalar: money travels as an exact decimal string, never as a float.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use bigdecimal::BigDecimal;
use std::str::FromStr;

/// An exact decimal carried as a string such as `"0.0500"`; money is NUMERIC(10,4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal(pub BigDecimal);

#[Scalar(name = "Decimal")]
impl ScalarType for Decimal {
    fn parse(value: Value) -> InputValueResult<Self> {
        let s = match &value {
            Value::String(s) => s.clone(),
            // Integers are exact; floats are refused because they already lost precision.
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => {
                return Err(InputValueError::custom(
                    "Decimal must be a string such as \"0.0500\"",
                ));
            }
        };
        let trimmed = s.trim();
        if trimmed.is_empty() || trimmed.len() > 64 || trimmed.contains(['e', 'E']) {
            return Err(InputValueError::custom(format!("invalid Decimal {s:?}")));
        }
        BigDecimal::from_str(trimmed)
            .map(Decimal)
            .map_err(|_| InputValueError::custom(format!("invalid Decimal {s:?}")))
    }

    fn to_value(&self) -> Value {
        // The column's scale, always: `"0.0000"`, never `"0"` (bigdecimal prints zero bare).
        let scaled = self.0.with_scale(4);
        let (digits, _) = scaled.as_bigint_and_exponent();
        let negative = digits.sign() == bigdecimal::num_bigint::Sign::Minus;
        let digits = format!("{:05}", digits.magnitude());
        let (int, frac) = digits.split_at(digits.len() - 4);
        Value::String(format!("{}{int}.{frac}", if negative { "-" } else { "" }))
    }
}

impl Decimal {
    /// Checks an amount of money for a NUMERIC(10,4) column: not negative, at most 4
    /// decimals, at most 999999.9999. `field` names the input in the error.
    pub fn check_money(&self, field: &str) -> crate::error::AppResult<()> {
        use crate::error::AppError;
        let name = field.rsplit('.').next().unwrap_or(field);
        if self.0.sign() == bigdecimal::num_bigint::Sign::Minus {
            return Err(AppError::bad_field(
                field,
                format!("{name} must not be negative"),
            ));
        }
        if self.0.with_scale(4) != self.0 {
            return Err(AppError::bad_field(
                field,
                format!("{name} has more than 4 decimals"),
            ));
        }
        if self.0 > crate::store::sessions::repo::max_cost() {
            return Err(AppError::bad_field(
                field,
                format!("{name} exceeds 999999.9999"),
            ));
        }
        Ok(())
    }
}

/// A JSON input that must be an object: `None` when absent or null, `BAD_USER_INPUT` naming
/// `field` when it is any other JSON value.
pub fn json_object(
    field: &str,
    value: Option<async_graphql::Json<serde_json::Value>>,
) -> crate::error::AppResult<Option<serde_json::Value>> {
    match value.map(|j| j.0) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v @ serde_json::Value::Object(_)) => Ok(Some(v)),
        Some(_) => {
            let name = field.rsplit('.').next().unwrap_or(field);
            Err(crate::error::AppError::bad_field(
                field,
                format!("{name} must be a JSON object"),
            ))
        }
    }
}

/// Declares stored enums (`store::enums::DbEnum`) as GraphQL enums: values in upper case, in
/// declaration order, described by the enum's doc comment. What `#[derive(Enum)]` would
/// generate, without the store naming async-graphql.
macro_rules! graphql_enum {
    ($($ty:ty),+ $(,)?) => {$(
        impl async_graphql::resolver_utils::EnumType for $ty {
            fn items() -> &'static [async_graphql::resolver_utils::EnumItem<Self>] {
                static ITEMS: std::sync::LazyLock<Vec<async_graphql::resolver_utils::EnumItem<$ty>>> =
                    std::sync::LazyLock::new($crate::api::scalars::enum_items::<$ty>);
                &ITEMS
            }
        }

        impl async_graphql::InputType for $ty {
            type RawValueType = Self;

            fn type_name() -> std::borrow::Cow<'static, str> {
                $crate::api::scalars::enum_type_name::<$ty>()
            }

            fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
                $crate::api::scalars::register_enum::<$ty>(registry)
            }

            fn parse(value: Option<async_graphql::Value>) -> async_graphql::InputValueResult<Self> {
                async_graphql::resolver_utils::parse_enum(value.unwrap_or_default())
            }

            fn to_value(&self) -> async_graphql::Value {
                async_graphql::resolver_utils::enum_value(*self)
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }
        }

        impl async_graphql::OutputType for $ty {
            fn type_name() -> std::borrow::Cow<'static, str> {
                $crate::api::scalars::enum_type_name::<$ty>()
            }

            fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
                $crate::api::scalars::register_enum::<$ty>(registry)
            }

            async fn resolve(
                &self,
                _: &async_graphql::ContextSelectionSet<'_>,
                _: &async_graphql::Positioned<async_graphql::parser::types::Field>,
            ) -> async_graphql::ServerResult<async_graphql::Value> {
                Ok(async_graphql::resolver_utils::enum_value(*self))
            }
        }
    )+};
}

pub(crate) use graphql_enum;

use crate::store::enums::DbEnum;

/// A stored enum's GraphQL name: its Rust name.
pub fn enum_type_name<T: DbEnum>() -> std::borrow::Cow<'static, str> {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full).into()
}

/// The values of a stored enum as GraphQL names, built once per type.
pub fn enum_items<T: DbEnum>() -> Vec<async_graphql::resolver_utils::EnumItem<T>> {
    T::ALL
        .iter()
        .map(|v| async_graphql::resolver_utils::EnumItem {
            // Leaked once per value, for the life of the process: the trait wants `'static`.
            name: String::leak(v.graphql_name()),
            value: *v,
        })
        .collect()
}

/// Registers a stored enum as a GraphQL enum type.
pub fn register_enum<T: DbEnum + async_graphql::InputType>(
    registry: &mut async_graphql::registry::Registry,
) -> String {
    use async_graphql::registry::{MetaEnumValue, MetaType, MetaTypeId};
    registry.create_input_type::<T, _>(MetaTypeId::Enum, |_| {
        let description = (!T::DOC.is_empty()).then(|| {
            T::DOC
                .iter()
                .map(|line| line.trim())
                .collect::<Vec<_>>()
                .join("\n")
        });
        MetaType::Enum {
            name: enum_type_name::<T>().into_owned(),
            description,
            enum_values: T::ALL
                .iter()
                .map(|v| {
                    let name = v.graphql_name();
                    let value = MetaEnumValue {
                        name: name.clone(),
                        description: None,
                        deprecation: Default::default(),
                        visible: None,
                        inaccessible: false,
                        tags: Vec::new(),
                        directive_invocations: Vec::new(),
                    };
                    (name, value)
                })
                .collect(),
            visible: None,
            inaccessible: false,
            tags: Vec::new(),
            rust_typename: Some(std::any::type_name::<T>()),
            directive_invocations: Vec::new(),
            requires_scopes: Vec::new(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_four_places() {
        for (input, shown) in [
            ("0", "0.0000"),
            ("0.25", "0.2500"),
            ("12.5", "12.5000"),
            ("999999.9999", "999999.9999"),
            ("-1.5", "-1.5000"),
        ] {
            let d = Decimal(BigDecimal::from_str(input).expect("decimal"));
            assert_eq!(
                ScalarType::to_value(&d),
                Value::String(shown.into()),
                "{input}"
            );
        }
    }
}
