//! [`Value`]: the typed argument values of an expression.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{BlobId, ExprId};

/// An argument value. Floats are always finite; `-0.0` is stored as `0.0`
/// (see [`Value::float`]).
///
/// Wire note: variants are encoded by index; never reorder or delete them, add
/// new ones at the end.
///
/// Decoding refuses lists nested deeper than
/// [`crate::codec::limits::MAX_NESTING`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Value {
    /// No value (only valid where a manifest input allows `null` as its default).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A finite 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// A list of values.
    List(Vec<Value>),
    /// Bytes, by content id.
    Blob(BlobId),
    /// A named output of another expression: the edge of the expression DAG.
    Output {
        /// The expression whose output this is.
        expr: ExprId,
        /// The output's name in that expression's workflow manifest.
        name: String,
    },
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _depth = crate::codec::NestingGuard::enter::<D::Error>("value")?;
        ValueDef::deserialize(deserializer)
    }
}

/// The derived deserialiser of [`Value`], wrapped by the nesting guard above.
/// Must list the same variants in the same order as [`Value`].
#[derive(Deserialize)]
#[serde(remote = "Value", rename = "Value")]
enum ValueDef {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Blob(BlobId),
    Output { expr: ExprId, name: String },
}

/// A float that is NaN or infinite was given where a value is required.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("{0} is not a finite number")]
pub struct NonFinite(pub f64);

impl Value {
    /// A float value: refuses NaN and infinities, turns `-0.0` into `0.0`.
    pub fn float(x: f64) -> Result<Self, NonFinite> {
        normalise_float(x).map(Value::Float)
    }

    /// The type name used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Blob(_) => "blob",
            Value::Output { .. } => "output",
        }
    }

    /// Every `Output` reference in this value, depth first.
    pub fn outputs(&self) -> Vec<(ExprId, &str)> {
        let mut out = Vec::new();
        self.collect_outputs(&mut out);
        out
    }

    fn collect_outputs<'a>(&'a self, out: &mut Vec<(ExprId, &'a str)>) {
        match self {
            Value::Output { expr, name } => out.push((*expr, name)),
            Value::List(items) => items.iter().for_each(|v| v.collect_outputs(out)),
            _ => {}
        }
    }
}

/// Finite check and `-0.0` → `0.0`.
pub fn normalise_float(x: f64) -> Result<f64, NonFinite> {
    if !x.is_finite() {
        return Err(NonFinite(x));
    }
    Ok(if x == 0.0 { 0.0 } else { x })
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Blob(b) => write!(f, "{b:#}"),
            Value::Output { expr, name } => write!(f, "{expr:#}/{name}"),
        }
    }
}
