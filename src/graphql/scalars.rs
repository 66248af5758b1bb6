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
        Value::String(self.0.with_scale(4).to_string())
    }
}
