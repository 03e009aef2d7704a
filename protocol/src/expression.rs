//! [`Expression`]: one invocation of a workflow, normalised against its manifest so
//! that equal requests get equal [`ExprId`]s.
//!
//! Normalisation: unknown arguments, missing required ones, wrong types, values out
//! of range, pattern or enum mismatches are [`ArgError`]s naming the argument;
//! defaults are filled in; ints given for float inputs become floats; floats must
//! be finite and `-0.0` becomes `0.0`; strings of the form `bl:<hex>` given for
//! blob inputs become blob ids.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::codec::{canonical, limits, Wire};
use crate::ids::{contexts, derive, BlobId, ExprId, WorkflowId};
use crate::manifest::{InputType, Manifest};
use crate::value::{normalise_float, Value};

/// A normalised invocation: workflow id and the full argument map.
///
/// Only build it with [`Expression::new`] (or decode one and call
/// [`Expression::check`]): the id of a non-normalised expression will not match
/// anybody else's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expression {
    /// The workflow to run.
    pub workflow: WorkflowId,
    /// Every input of the manifest, with defaults filled in.
    pub args: BTreeMap<String, Value>,
}

/// An argument that does not fit the manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// No such input in the manifest.
    #[error("unknown argument `{name}` (this workflow's inputs: {known})")]
    Unknown {
        /// The argument given.
        name: String,
        /// Comma-separated input names.
        known: String,
    },
    /// A required input was not given.
    #[error("missing required argument `{0}`")]
    Missing(String),
    /// The value has the wrong type or violates a constraint.
    #[error("argument `{name}`: {problem}")]
    Invalid {
        /// The argument.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

impl Expression {
    /// Validate `args` against `manifest` and build the canonical expression.
    pub fn new(
        workflow: WorkflowId,
        manifest: &Manifest,
        args: BTreeMap<String, Value>,
    ) -> Result<Self, ArgError> {
        if let Some(name) = args.keys().find(|k| !manifest.inputs.contains_key(*k)) {
            return Err(ArgError::Unknown {
                name: name.clone(),
                known: manifest.input_names(),
            });
        }
        let mut given = args;
        let mut out = BTreeMap::new();
        for (name, spec) in &manifest.inputs {
            let value = match given.remove(name) {
                Some(v) => check_value(&spec.ty, v).map_err(|problem| ArgError::Invalid {
                    name: name.clone(),
                    problem,
                })?,
                None => spec
                    .default
                    .clone()
                    .ok_or_else(|| ArgError::Missing(name.clone()))?,
            };
            out.insert(name.clone(), value);
        }
        Ok(Self {
            workflow,
            args: out,
        })
    }

    /// Check that a received expression is already normalised for `manifest`
    /// (so its id is the one everybody else computes).
    pub fn check(&self, manifest: &Manifest) -> Result<(), ArgError> {
        let renormalised = Self::new(self.workflow, manifest, self.args.clone())?;
        // Compare encodings, not values: `-0.0 == 0.0` as floats, but the two
        // encode (and so hash) differently.
        if canonical(&renormalised.args) != canonical(&self.args) {
            return Err(ArgError::Invalid {
                name: "*".into(),
                problem: "expression is not in normal form".into(),
            });
        }
        Ok(())
    }

    /// `BLAKE3-derive("oda-mesh v1 expression-id", canonical(self))`.
    pub fn id(&self) -> ExprId {
        ExprId(derive(contexts::EXPRESSION, &canonical(self)))
    }

    /// The expressions whose outputs this one consumes (its direct DAG edges).
    pub fn dependencies(&self) -> BTreeSet<ExprId> {
        self.args
            .values()
            .flat_map(|v| v.outputs().into_iter().map(|(e, _)| e))
            .collect()
    }

    /// Every `(expression, output name)` this expression consumes.
    pub fn output_refs(&self) -> BTreeSet<(ExprId, String)> {
        self.args
            .values()
            .flat_map(|v| v.outputs().into_iter().map(|(e, n)| (e, n.to_string())))
            .collect()
    }
}

/// Compiled patterns kept per thread (most recently used manifests' patterns).
const PATTERN_CACHE: usize = 256;

thread_local! {
    static PATTERNS: std::cell::RefCell<std::collections::HashMap<String, regex::Regex>> =
        std::cell::RefCell::default();
}

/// Whether `s` matches the whole of `pattern`, compiling each pattern once
/// per thread rather than on every check.
fn matches_pattern(pattern: &str, s: &str) -> Result<bool, String> {
    PATTERNS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(pattern) {
            let re = regex::Regex::new(&anchored(pattern))
                .map_err(|e| format!("the manifest's pattern is invalid: {e}"))?;
            if cache.len() >= PATTERN_CACHE {
                cache.clear();
            }
            cache.insert(pattern.to_string(), re);
        }
        Ok(cache.get(pattern).is_some_and(|re| re.is_match(s)))
    })
}

/// Check one value against an input type, returning the normalised value or a
/// description of the problem.
pub fn check_value(ty: &InputType, value: Value) -> Result<Value, String> {
    match (ty, value) {
        (InputType::Str { pattern, choices }, Value::Str(s)) => {
            if !choices.is_empty() && !choices.contains(&s) {
                return Err(format!("{s:?} is not one of {}", choices.join(", ")));
            }
            if let Some(p) = pattern {
                // Patterns are validated when the manifest is parsed.
                if !matches_pattern(p, &s)? {
                    return Err(format!("{s:?} does not match the pattern {p:?}"));
                }
            }
            Ok(Value::Str(s))
        }
        (InputType::Int { min, max }, Value::Int(i)) => {
            check_bounds(i, *min, *max)?;
            Ok(Value::Int(i))
        }
        (InputType::Float { min, max }, Value::Float(x)) => float_in(x, *min, *max),
        (InputType::Float { min, max }, Value::Int(i)) => float_in(i as f64, *min, *max),
        (InputType::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
        (InputType::Blob, Value::Blob(b)) => Ok(Value::Blob(b)),
        (InputType::Blob, Value::Str(s)) if s.starts_with("bl:") => s
            .parse::<BlobId>()
            .map(Value::Blob)
            .map_err(|e| e.to_string()),
        (InputType::Blob | InputType::Output, v @ Value::Output { .. }) => {
            if let Value::Output { name, .. } = &v {
                if name.is_empty() || name.len() > 64 {
                    return Err("output names are 1-64 characters".into());
                }
            }
            Ok(v)
        }
        (InputType::List { items }, Value::List(values)) => values
            .into_iter()
            .enumerate()
            .map(|(i, v)| check_value(items, v).map_err(|e| format!("item {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        (ty, v) => Err(format!("expected {}, got {} {v}", ty.name(), v.type_name())),
    }
}

/// The regular expression a string input must match as a whole: `^(?:pattern)$`.
pub(crate) fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

fn check_bounds<T: PartialOrd + std::fmt::Display>(
    x: T,
    min: Option<T>,
    max: Option<T>,
) -> Result<(), String> {
    if let Some(lo) = min {
        if x < lo {
            return Err(format!("{x} is below the minimum {lo}"));
        }
    }
    if let Some(hi) = max {
        if x > hi {
            return Err(format!("{x} is above the maximum {hi}"));
        }
    }
    Ok(())
}

fn float_in(x: f64, min: Option<f64>, max: Option<f64>) -> Result<Value, String> {
    let x = normalise_float(x).map_err(|e| e.to_string())?;
    check_bounds(x, min, max)?;
    Ok(Value::Float(x))
}

impl Wire for Expression {
    const WHAT: &'static str = "expression";
    const MAX_SIZE: usize = limits::EXPRESSION;
}
