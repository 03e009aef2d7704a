//! Typed arguments: JSON values (or text, as the `oda` command line sends them)
//! turned into [`Value`]s by the types the workflow's manifest declares. This
//! is the only place text like `"21"` becomes an `int`; the command line sends
//! every `-a name=value` as a JSON string and lets the node decide.
//!
//! Accepted forms, per input type:
//!
//! | type | JSON | text |
//! | --- | --- | --- |
//! | string | `"x"` | `x` |
//! | int | `21` | `21` |
//! | float | `0.5`, `2` | `0.5`, `2`, `1e-3` |
//! | bool | `true` | `true`/`false`, `yes`/`no`, `1`/`0` |
//! | blob | `{"blob": "bl:…"}`, `{"output": {"expr": "ex:…", "name": "…"}}` | `bl:<hex>`, `ex:<hex>/<output name>` |
//! | output | `{"output": {"expr": "ex:…", "name": "…"}}` | `ex:<hex>/<output name>` |
//! | list of T | `[…]` (each item as T) | a JSON array `[…]`, or items separated by commas |
//!
//! After conversion, [`Expression::new`] checks bounds, patterns and choices
//! and fills in defaults; every error names the argument and the expected type.

use std::collections::BTreeMap;

use oda_protocol::{BlobId, ExprId, InputType, Manifest, Value};
use serde_json::Value as Json;

/// An argument that cannot be converted to its input's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// The workflow has no input of this name.
    #[error("unknown argument `{name}` (this workflow's inputs: {known})")]
    Unknown {
        /// The argument given.
        name: String,
        /// The workflow's inputs, comma-separated.
        known: String,
    },
    /// The value does not fit the input's type.
    #[error("argument `{name}`: expected {expected}, got {got}")]
    Type {
        /// The argument.
        name: String,
        /// The input's type name (with the accepted forms).
        expected: String,
        /// What was given (and why it does not parse).
        got: String,
    },
}

/// Convert every argument in `args` to the type its manifest input declares.
/// Inputs that are not given are left out (defaults come from
/// [`oda_protocol::Expression::new`]).
pub fn parse_args(
    manifest: &Manifest,
    args: &serde_json::Map<String, Json>,
) -> Result<BTreeMap<String, Value>, ArgsError> {
    let mut out = BTreeMap::new();
    for (name, value) in args {
        let Some(spec) = manifest.inputs.get(name) else {
            return Err(ArgsError::Unknown {
                name: name.clone(),
                known: manifest.input_names(),
            });
        };
        let converted = convert(&spec.ty, value).map_err(|got| ArgsError::Type {
            name: name.clone(),
            expected: expected(&spec.ty),
            got,
        })?;
        out.insert(name.clone(), converted);
    }
    Ok(out)
}

/// The type name with the forms accepted for it, for error messages.
fn expected(ty: &InputType) -> String {
    match ty {
        InputType::Str { choices, .. } if !choices.is_empty() => {
            format!("string (one of {})", choices.join(", "))
        }
        InputType::Int { .. } => "int (a whole number like 21)".into(),
        InputType::Float { .. } => "float (a number like 0.5)".into(),
        InputType::Bool => "bool (true or false)".into(),
        InputType::Blob => "blob (bl:<64 hex digits>, or ex:<64 hex digits>/<output name>)".into(),
        InputType::Output => "output (ex:<64 hex digits>/<output name>)".into(),
        InputType::List { items } => format!(
            "list of {} (a JSON array, or items separated by commas)",
            items.name()
        ),
        other => other.name(),
    }
}

/// Short description of a JSON value for error messages.
fn describe(v: &Json) -> String {
    let text = v.to_string();
    let short = if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    };
    let kind = match v {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    };
    format!("{kind} {short}")
}

/// Convert one value; the error says what was given and why it does not fit.
fn convert(ty: &InputType, v: &Json) -> Result<Value, String> {
    match (ty, v) {
        (InputType::Str { .. }, Json::String(s)) => Ok(Value::Str(s.clone())),
        (InputType::Int { .. }, Json::Number(n)) => {
            n.as_i64().map(Value::Int).ok_or_else(|| describe(v))
        }
        (InputType::Int { .. }, Json::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| describe(v)),
        (InputType::Float { .. }, Json::Number(n)) => match n.as_i64() {
            // Exact for integers; Expression::new turns them into floats.
            Some(i) => Ok(Value::Int(i)),
            None => n.as_f64().map(Value::Float).ok_or_else(|| describe(v)),
        },
        (InputType::Float { .. }, Json::String(s)) => {
            let t = s.trim();
            let x = t.parse::<f64>().map_err(|_| describe(v))?;
            if !x.is_finite() {
                return Err(format!("{}, which is not a finite number", describe(v)));
            }
            Ok(Value::Float(x))
        }
        (InputType::Bool, Json::Bool(b)) => Ok(Value::Bool(*b)),
        (InputType::Bool, Json::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(describe(v)),
        },
        (InputType::Blob | InputType::Output, Json::Object(map)) => reference(ty, map, v),
        (InputType::Blob | InputType::Output, Json::String(s)) => reference_text(ty, s.trim(), v),
        (InputType::List { items }, Json::Array(values)) => values
            .iter()
            .enumerate()
            .map(|(i, item)| convert(items, item).map_err(|e| format!("item {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        (InputType::List { items }, Json::String(s)) => {
            let t = s.trim();
            if t.starts_with('[') {
                let parsed: Json = serde_json::from_str(t)
                    .map_err(|e| format!("{}, which is not a JSON array: {e}", describe(v)))?;
                return convert(ty, &parsed);
            }
            if t.is_empty() {
                return Ok(Value::List(Vec::new()));
            }
            t.split(',')
                .enumerate()
                .map(|(i, item)| {
                    convert(items, &Json::String(item.trim().to_string()))
                        .map_err(|e| format!("item {i}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List)
        }
        _ => Err(describe(v)),
    }
}

/// `{"blob": "bl:…"}` or `{"output": {"expr": "ex:…", "name": "…"}}`.
fn reference(
    ty: &InputType,
    map: &serde_json::Map<String, Json>,
    v: &Json,
) -> Result<Value, String> {
    if map.len() != 1 {
        return Err(format!(
            "{}; a reference object has exactly one key, \"blob\" or \"output\"",
            describe(v)
        ));
    }
    if let (InputType::Blob, Some(Json::String(b))) = (ty, map.get("blob")) {
        return b
            .parse::<BlobId>()
            .map(Value::Blob)
            .map_err(|e| format!("{}: {e}", describe(v)));
    }
    if let Some(Json::Object(o)) = map.get("output") {
        let (Some(Json::String(expr)), Some(Json::String(name)), 2) =
            (o.get("expr"), o.get("name"), o.len())
        else {
            return Err(format!(
                "{}; an output reference is {{\"output\": {{\"expr\": \"ex:…\", \"name\": \"…\"}}}}",
                describe(v)
            ));
        };
        return output(expr, name).map_err(|e| format!("{}: {e}", describe(v)));
    }
    Err(describe(v))
}

/// `bl:<hex>` (blob inputs only) or `ex:<hex>/<name>`.
fn reference_text(ty: &InputType, s: &str, v: &Json) -> Result<Value, String> {
    if let Some((expr, name)) = s.split_once('/') {
        return output(expr, name).map_err(|e| format!("{}: {e}", describe(v)));
    }
    if matches!(ty, InputType::Blob) {
        return s
            .parse::<BlobId>()
            .map(Value::Blob)
            .map_err(|e| format!("{}: {e}", describe(v)));
    }
    Err(describe(v))
}

fn output(expr: &str, name: &str) -> Result<Value, String> {
    let expr = expr.trim().parse::<ExprId>().map_err(|e| e.to_string())?;
    let name = name.trim();
    if name.is_empty() {
        return Err("the output name after `/` is empty".into());
    }
    Ok(Value::Output {
        expr,
        name: name.to_string(),
    })
}

/// A value as JSON, in the same forms [`parse_args`] accepts.
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Str(s) => Json::String(s.clone()),
        Value::List(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Blob(b) => serde_json::json!({ "blob": format!("{b:#}") }),
        Value::Output { expr, name } => {
            serde_json::json!({ "output": { "expr": format!("{expr:#}"), "name": name } })
        }
    }
}

/// An input type as JSON: `{"type": "float", "min": …, "max": …}` and so on.
pub fn type_to_json(ty: &InputType) -> Json {
    match ty {
        InputType::Str { pattern, choices } => {
            serde_json::json!({ "type": "string", "pattern": pattern, "choices": choices })
        }
        InputType::Int { min, max } => serde_json::json!({ "type": "int", "min": min, "max": max }),
        InputType::Float { min, max } => {
            serde_json::json!({ "type": "float", "min": min, "max": max })
        }
        InputType::Bool => serde_json::json!({ "type": "bool" }),
        InputType::Blob => serde_json::json!({ "type": "blob" }),
        InputType::Output => serde_json::json!({ "type": "output" }),
        InputType::List { items } => {
            serde_json::json!({ "type": "list", "items": type_to_json(items) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oda_protocol::{Expression, WorkflowId};
    use serde_json::json;

    const MANIFEST: &str = r#"
name = "t"
version = "1"
[inputs.x]
type = "int"
min = 0
[inputs.f]
type = "float"
default = 0.5
[inputs.b]
type = "bool"
default = false
[inputs.s]
type = "string"
default = "a"
enum = ["a", "b"]
[inputs.data]
type = "blob"
default = "bl:0000000000000000000000000000000000000000000000000000000000000000"
[inputs.many]
type = "list"
items = "float"
default = []
[outputs.o]
path = "o.json"
[executor]
kind = "command"
argv = ["true"]
"#;

    fn manifest() -> Manifest {
        Manifest::from_toml(MANIFEST).unwrap()
    }

    fn parse(args: Json) -> Result<BTreeMap<String, Value>, ArgsError> {
        parse_args(&manifest(), args.as_object().unwrap())
    }

    #[test]
    fn text_and_native_json_give_the_same_expression() {
        let m = manifest();
        let wf = WorkflowId([1; 32]);
        let a =
            parse(json!({"x": "21", "f": "2", "b": "yes", "s": "b", "many": "1, 2.5"})).unwrap();
        let b = parse(json!({"x": 21, "f": 2, "b": true, "s": "b", "many": [1, 2.5]})).unwrap();
        let c = parse(json!({"x": 21, "f": 2.0, "b": true, "s": "b", "many": "[1, 2.5]"})).unwrap();
        let ea = Expression::new(wf, &m, a).unwrap();
        assert_eq!(ea.id(), Expression::new(wf, &m, b).unwrap().id());
        assert_eq!(ea.id(), Expression::new(wf, &m, c).unwrap().id());
        assert_eq!(ea.args["x"], Value::Int(21));
        assert_eq!(ea.args["f"], Value::Float(2.0));
    }

    #[test]
    fn references() {
        let hex = "ab".repeat(32);
        let got = parse(json!({"data": format!("bl:{hex}")})).unwrap();
        assert!(matches!(got["data"], Value::Blob(_)));
        let got = parse(json!({"data": {"blob": hex.clone()}})).unwrap();
        assert!(matches!(got["data"], Value::Blob(_)));
        let got = parse(json!({"data": format!("ex:{hex}/events")})).unwrap();
        assert_eq!(
            got["data"],
            Value::Output {
                expr: hex.parse().unwrap(),
                name: "events".into()
            }
        );
        let got =
            parse(json!({"data": {"output": {"expr": format!("ex:{hex}"), "name": "events"}}}))
                .unwrap();
        assert!(matches!(got["data"], Value::Output { .. }));
        assert_eq!(
            parse(json!({"data": value_to_json(&got["data"])})).unwrap(),
            got
        );
    }

    #[test]
    fn errors_name_the_argument_and_the_type() {
        let e = parse(json!({"x": "abc"})).unwrap_err().to_string();
        assert!(
            e.contains("`x`") && e.contains("expected int") && e.contains("abc"),
            "{e}"
        );
        let e = parse(json!({"x": 2.5})).unwrap_err().to_string();
        assert!(e.contains("`x`") && e.contains("expected int"), "{e}");
        let e = parse(json!({"f": "NaN"})).unwrap_err().to_string();
        assert!(e.contains("`f`") && e.contains("finite"), "{e}");
        let e = parse(json!({"b": "maybe"})).unwrap_err().to_string();
        assert!(e.contains("`b`") && e.contains("bool"), "{e}");
        let e = parse(json!({"data": "not-an-id"})).unwrap_err().to_string();
        assert!(e.contains("`data`") && e.contains("blob"), "{e}");
        let e = parse(json!({"many": "1,x"})).unwrap_err().to_string();
        assert!(e.contains("`many`") && e.contains("item 1"), "{e}");
        let e = parse(json!({"nope": 1})).unwrap_err().to_string();
        assert!(e.contains("`nope`") && e.contains("x"), "{e}");
        let e = parse(json!({"s": 3})).unwrap_err().to_string();
        assert!(e.contains("`s`") && e.contains("one of a, b"), "{e}");
    }
}
