//! Workflow manifests: the TOML a workflow author writes, parsed and validated into
//! the canonical [`Manifest`], and the [`Workflow`] (manifest + file hashes) whose
//! hash is the [`WorkflowId`].
//!
//! Every validation error names the offending field as a dotted path
//! (`inputs.emin.min`); TOML syntax and type errors carry the line and column the
//! TOML parser reports.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::codec::{canonical, limits, Wire};
use crate::ids::{contexts, derive, BlobId, WorkflowId};
use crate::value::{normalise_float, Value};

/// Placeholders that every argv template may use besides input names.
pub mod placeholders {
    /// Absolute path of the directory holding the workflow's bundled files.
    pub const BUNDLE: &str = "bundle";
    /// Absolute path of the job's working directory (outputs are collected from here).
    pub const WORKDIR: &str = "workdir";
}

/// A validated workflow manifest in canonical form.
///
/// Wire note: this struct is hashed into the [`WorkflowId`]; adding, removing or
/// reordering a field changes every workflow id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Workflow name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
    pub name: String,
    /// Version string chosen by the author (non-empty, at most 64 characters).
    pub version: String,
    /// One-paragraph description for humans.
    pub description: String,
    /// Typed inputs by name.
    pub inputs: BTreeMap<String, InputSpec>,
    /// Named outputs: files the run produces.
    pub outputs: BTreeMap<String, OutputSpec>,
    /// How to run it.
    pub executor: Executor,
    /// Wall-clock limit of one run, in seconds.
    pub timeout_secs: u64,
    /// What a run needs.
    pub resources: Resources,
    /// Whether the same expression always gives the same output bytes.
    pub deterministic: bool,
    /// Files bundled with the manifest, as paths relative to the workflow folder.
    pub files: BTreeSet<String>,
}

/// One typed input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Its type and constraints.
    pub ty: InputType,
    /// Value used when the argument is omitted; `None` means required.
    pub default: Option<Value>,
    /// Text for humans.
    pub description: String,
}

/// The type of an input, with its constraints. Variants are encoded by index:
/// never reorder or delete, add new ones at the end. Decoding refuses list
/// types nested deeper than [`limits::MAX_NESTING`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum InputType {
    /// A string, optionally matching a regular expression and/or one of a set.
    Str {
        /// Regular expression the whole string must match.
        pattern: Option<String>,
        /// Allowed values; empty means any.
        choices: Vec<String>,
    },
    /// A signed 64-bit integer within optional bounds (inclusive).
    Int {
        /// Smallest allowed value.
        min: Option<i64>,
        /// Largest allowed value.
        max: Option<i64>,
    },
    /// A finite float within optional bounds (inclusive).
    Float {
        /// Smallest allowed value.
        min: Option<f64>,
        /// Largest allowed value.
        max: Option<f64>,
    },
    /// A boolean.
    Bool,
    /// Bytes: a blob id or the output of another expression.
    Blob,
    /// A list whose items all have one type.
    List {
        /// Type of every item.
        items: Box<InputType>,
    },
    /// The output of another expression (not a literal blob).
    Output,
}

impl<'de> Deserialize<'de> for InputType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _depth = crate::codec::NestingGuard::enter::<D::Error>("input type")?;
        InputTypeDef::deserialize(deserializer)
    }
}

/// The derived deserialiser of [`InputType`], wrapped by the nesting guard
/// above. Must list the same variants and fields in the same order.
#[derive(Deserialize)]
#[serde(remote = "InputType", rename = "InputType")]
enum InputTypeDef {
    Str {
        pattern: Option<String>,
        choices: Vec<String>,
    },
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
    Float {
        min: Option<f64>,
        max: Option<f64>,
    },
    Bool,
    Blob,
    List {
        items: Box<InputType>,
    },
    Output,
}

impl InputType {
    /// The name used in manifests and error messages.
    pub fn name(&self) -> String {
        match self {
            InputType::Str { .. } => "string".into(),
            InputType::Int { .. } => "int".into(),
            InputType::Float { .. } => "float".into(),
            InputType::Bool => "bool".into(),
            InputType::Blob => "blob".into(),
            InputType::List { items } => format!("list of {}", items.name()),
            InputType::Output => "output".into(),
        }
    }
}

/// One named output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// File path, relative to the job's working directory, that the run writes.
    pub path: String,
    /// Text for humans.
    pub description: String,
}

/// How a workflow is run. Variants are encoded by index: never reorder or delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Executor {
    /// A local process: argv template, never through a shell.
    Command {
        /// Program and arguments; `{name}` placeholders are filled from inputs.
        argv: Vec<String>,
        /// Extra environment variables.
        env: BTreeMap<String, String>,
    },
    /// A SLURM batch job wrapping an argv template.
    Slurm {
        /// Program and arguments run inside the allocation.
        argv: Vec<String>,
        /// Partition (`sbatch --partition`).
        partition: Option<String>,
        /// Account (`sbatch --account`).
        account: Option<String>,
        /// Further `sbatch` arguments.
        sbatch_args: Vec<String>,
    },
    /// An OCI container image run by podman, apptainer or docker.
    Container {
        /// Image reference, ideally pinned by digest.
        image: String,
        /// Arguments passed to the image's entry point.
        argv: Vec<String>,
        /// Preferred engine, if any.
        engine: Option<String>,
    },
    /// A CWL tool or workflow run by `cwltool`.
    Cwl {
        /// Path of the CWL document among the bundled files.
        document: String,
    },
}

impl Executor {
    /// The executor's kind name as written in manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            Executor::Command { .. } => "command",
            Executor::Slurm { .. } => "slurm",
            Executor::Container { .. } => "container",
            Executor::Cwl { .. } => "cwl",
        }
    }

    /// The argv template, if this executor has one.
    pub fn argv(&self) -> Option<&[String]> {
        match self {
            Executor::Command { argv, .. }
            | Executor::Slurm { argv, .. }
            | Executor::Container { argv, .. } => Some(argv),
            Executor::Cwl { .. } => None,
        }
    }
}

/// Resource hints for schedulers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU cores.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// GPUs.
    pub gpus: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpus: 1,
            memory_mb: 512,
            gpus: 0,
        }
    }
}

/// Default run timeout, seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;

/// A manifest that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// TOML syntax error or a field of the wrong TOML type; the message carries the
    /// line and column.
    #[error("manifest is not valid: {0}")]
    Toml(String),
    /// The manifest is larger than [`limits::MANIFEST_TOML`].
    #[error("manifest is {0} bytes, more than the limit of {limit}", limit = limits::MANIFEST_TOML)]
    TooLarge(usize),
    /// A field has a value that is not allowed.
    #[error("manifest field `{field}`: {problem}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn field_err(field: impl Into<String>, problem: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The TOML shape authors write. Converted to [`Manifest`] by [`Manifest::from_toml`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    inputs: BTreeMap<String, RawInput>,
    outputs: BTreeMap<String, RawOutput>,
    executor: RawExecutor,
    timeout_secs: Option<u64>,
    #[serde(default)]
    resources: RawResources,
    #[serde(default = "default_true")]
    deterministic: bool,
    #[serde(default)]
    files: Vec<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    #[serde(rename = "type")]
    ty: String,
    default: Option<toml::Value>,
    #[serde(default)]
    description: String,
    pattern: Option<String>,
    #[serde(rename = "enum")]
    choices: Option<Vec<String>>,
    min: Option<toml::Value>,
    max: Option<toml::Value>,
    items: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    path: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExecutor {
    kind: String,
    argv: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    partition: Option<String>,
    account: Option<String>,
    sbatch_args: Option<Vec<String>>,
    image: Option<String>,
    engine: Option<String>,
    document: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpus: Option<u32>,
    memory_mb: Option<u64>,
    gpus: Option<u32>,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && s.len() <= 64
}

fn is_input_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

/// A relative path inside a workflow folder or job directory: no `..`, not
/// absolute, no empty components, `/` separators.
pub fn is_safe_relative_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 255
        && !p.starts_with('/')
        && !p.contains('\\')
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Manifest {
    /// The input names, comma-separated (for errors naming what is accepted).
    pub fn input_names(&self) -> String {
        self.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Parse and validate a manifest from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ManifestError> {
        if text.len() > limits::MANIFEST_TOML {
            return Err(ManifestError::TooLarge(text.len()));
        }
        let raw: RawManifest = toml::from_str(text)
            .map_err(|e| ManifestError::Toml(e.to_string().trim().to_string()))?;
        raw.validate()
    }

    /// Names of inputs that have no default.
    pub fn required_inputs(&self) -> impl Iterator<Item = &str> {
        self.inputs
            .iter()
            .filter(|(_, s)| s.default.is_none())
            .map(|(n, _)| n.as_str())
    }
}

impl RawManifest {
    fn validate(self) -> Result<Manifest, ManifestError> {
        if !is_identifier(&self.name) {
            return Err(field_err(
                "name",
                format!(
                    "{:?} is not a workflow name: use 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit",
                    self.name
                ),
            ));
        }
        if self.version.trim().is_empty() || self.version.len() > 64 {
            return Err(field_err("version", "must be 1-64 characters"));
        }
        let mut inputs = BTreeMap::new();
        for (name, raw) in self.inputs {
            let path = format!("inputs.{name}");
            if !is_input_name(&name) {
                return Err(field_err(
                    path,
                    "input names are 1-64 of A-Z, a-z, 0-9 and '_', not starting with a digit",
                ));
            }
            if name == placeholders::BUNDLE || name == placeholders::WORKDIR {
                return Err(field_err(
                    path,
                    "this name is reserved for an argv placeholder",
                ));
            }
            inputs.insert(name, raw.validate(&path)?);
        }
        if self.outputs.is_empty() {
            return Err(field_err(
                "outputs",
                "a workflow must declare at least one output",
            ));
        }
        let mut outputs = BTreeMap::new();
        let mut output_paths = BTreeSet::new();
        for (name, raw) in self.outputs {
            let path = format!("outputs.{name}");
            if !is_input_name(&name) {
                return Err(field_err(
                    path,
                    "output names are 1-64 of A-Z, a-z, 0-9 and '_', not starting with a digit",
                ));
            }
            if !is_safe_relative_path(&raw.path) {
                return Err(field_err(
                    format!("{path}.path"),
                    format!("{:?} must be a relative path without '..'", raw.path),
                ));
            }
            if !output_paths.insert(raw.path.clone()) {
                return Err(field_err(
                    format!("{path}.path"),
                    format!("{:?} is already the path of another output", raw.path),
                ));
            }
            outputs.insert(
                name,
                OutputSpec {
                    path: raw.path,
                    description: raw.description,
                },
            );
        }
        let mut files = BTreeSet::new();
        for (i, f) in self.files.into_iter().enumerate() {
            if !is_safe_relative_path(&f) {
                return Err(field_err(
                    format!("files[{i}]"),
                    format!(
                        "{f:?} must be a relative path inside the workflow folder, without '..'"
                    ),
                ));
            }
            if !files.insert(f.clone()) {
                return Err(field_err(
                    format!("files[{i}]"),
                    format!("{f:?} is listed twice"),
                ));
            }
        }
        let executor = self.executor.validate(&inputs, &files)?;
        let timeout_secs = self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout_secs == 0 || timeout_secs > 30 * 24 * 3600 {
            return Err(field_err(
                "timeout_secs",
                "must be between 1 and 2592000 (30 days)",
            ));
        }
        let defaults = Resources::default();
        let resources = Resources {
            cpus: self.resources.cpus.unwrap_or(defaults.cpus),
            memory_mb: self.resources.memory_mb.unwrap_or(defaults.memory_mb),
            gpus: self.resources.gpus.unwrap_or(defaults.gpus),
        };
        if resources.cpus == 0 {
            return Err(field_err("resources.cpus", "must be at least 1"));
        }
        Ok(Manifest {
            name: self.name,
            version: self.version,
            description: self.description,
            inputs,
            outputs,
            executor,
            timeout_secs,
            resources,
            deterministic: self.deterministic,
            files,
        })
    }
}

fn toml_int(path: &str, v: &toml::Value) -> Result<i64, ManifestError> {
    v.as_integer()
        .ok_or_else(|| field_err(path, format!("expected an integer, got {v}")))
}

fn toml_float(path: &str, v: &toml::Value) -> Result<f64, ManifestError> {
    let x = match v {
        toml::Value::Float(x) => *x,
        toml::Value::Integer(i) => *i as f64,
        other => return Err(field_err(path, format!("expected a number, got {other}"))),
    };
    normalise_float(x).map_err(|e| field_err(path, e.to_string()))
}

fn parse_type(path: &str, ty: &str) -> Result<InputType, ManifestError> {
    Ok(match ty {
        "string" => InputType::Str {
            pattern: None,
            choices: Vec::new(),
        },
        "int" => InputType::Int { min: None, max: None },
        "float" => InputType::Float { min: None, max: None },
        "bool" => InputType::Bool,
        "blob" => InputType::Blob,
        "output" => InputType::Output,
        "list" => {
            return Err(field_err(path, "lists of lists are not supported"));
        }
        other => {
            return Err(field_err(
                path,
                format!("unknown type {other:?}; expected one of string, int, float, bool, blob, list, output"),
            ))
        }
    })
}

impl RawInput {
    fn validate(self, path: &str) -> Result<InputSpec, ManifestError> {
        let type_path = format!("{path}.type");
        let mut ty = if self.ty == "list" {
            let items = self.items.as_deref().ok_or_else(|| {
                field_err(
                    format!("{path}.items"),
                    "a list input must name its item type",
                )
            })?;
            InputType::List {
                items: Box::new(parse_type(&format!("{path}.items"), items)?),
            }
        } else {
            if self.items.is_some() {
                return Err(field_err(
                    format!("{path}.items"),
                    "only list inputs have `items`",
                ));
            }
            parse_type(&type_path, &self.ty)?
        };
        // Constraints apply to the scalar type (or a list's item type).
        let scalar = match &mut ty {
            InputType::List { items } => items.as_mut(),
            other => other,
        };
        match scalar {
            InputType::Str { pattern, choices } => {
                if let Some(p) = self.pattern {
                    // Check the anchored form that values are matched with: a
                    // pattern can be valid alone but not inside `^(?:…)$` (for
                    // example `(?x)a #`, whose comment swallows the `)$`).
                    regex::Regex::new(&crate::expression::anchored(&p)).map_err(|e| {
                        field_err(
                            format!("{path}.pattern"),
                            format!("not a valid regular expression: {e}"),
                        )
                    })?;
                    *pattern = Some(p);
                }
                if let Some(c) = self.choices {
                    if c.is_empty() {
                        return Err(field_err(
                            format!("{path}.enum"),
                            "must list at least one value",
                        ));
                    }
                    *choices = c;
                }
                reject_bounds(path, &self.min, &self.max)?;
            }
            InputType::Int { min, max } => {
                reject_string_constraints(path, &self.pattern, &self.choices)?;
                *min = self
                    .min
                    .as_ref()
                    .map(|v| toml_int(&format!("{path}.min"), v))
                    .transpose()?;
                *max = self
                    .max
                    .as_ref()
                    .map(|v| toml_int(&format!("{path}.max"), v))
                    .transpose()?;
                if let (Some(lo), Some(hi)) = (*min, *max) {
                    if lo > hi {
                        return Err(field_err(
                            format!("{path}.min"),
                            format!("{lo} is above max {hi}"),
                        ));
                    }
                }
            }
            InputType::Float { min, max } => {
                reject_string_constraints(path, &self.pattern, &self.choices)?;
                *min = self
                    .min
                    .as_ref()
                    .map(|v| toml_float(&format!("{path}.min"), v))
                    .transpose()?;
                *max = self
                    .max
                    .as_ref()
                    .map(|v| toml_float(&format!("{path}.max"), v))
                    .transpose()?;
                if let (Some(lo), Some(hi)) = (*min, *max) {
                    if lo > hi {
                        return Err(field_err(
                            format!("{path}.min"),
                            format!("{lo} is above max {hi}"),
                        ));
                    }
                }
            }
            InputType::Bool | InputType::Blob | InputType::Output | InputType::List { .. } => {
                reject_string_constraints(path, &self.pattern, &self.choices)?;
                reject_bounds(path, &self.min, &self.max)?;
            }
        }
        let default = match self.default {
            None => None,
            Some(v) => {
                let dpath = format!("{path}.default");
                let value = toml_to_value(&dpath, &v)?;
                let value =
                    crate::expression::check_value(&ty, value).map_err(|e| field_err(dpath, e))?;
                Some(value)
            }
        };
        Ok(InputSpec {
            ty,
            default,
            description: self.description,
        })
    }
}

fn reject_string_constraints(
    path: &str,
    pattern: &Option<String>,
    choices: &Option<Vec<String>>,
) -> Result<(), ManifestError> {
    if pattern.is_some() {
        return Err(field_err(
            format!("{path}.pattern"),
            "only string inputs have a pattern",
        ));
    }
    if choices.is_some() {
        return Err(field_err(
            format!("{path}.enum"),
            "only string inputs have an enum",
        ));
    }
    Ok(())
}

fn reject_bounds(
    path: &str,
    min: &Option<toml::Value>,
    max: &Option<toml::Value>,
) -> Result<(), ManifestError> {
    if min.is_some() {
        return Err(field_err(
            format!("{path}.min"),
            "only int and float inputs have bounds",
        ));
    }
    if max.is_some() {
        return Err(field_err(
            format!("{path}.max"),
            "only int and float inputs have bounds",
        ));
    }
    Ok(())
}

/// A TOML default value as a [`Value`]. Blob ids are written as `"bl:<hex>"` strings
/// and converted when the input type is `blob` (in [`crate::expression::check_value`]).
fn toml_to_value(path: &str, v: &toml::Value) -> Result<Value, ManifestError> {
    Ok(match v {
        toml::Value::String(s) => Value::Str(s.clone()),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(x) => Value::float(*x).map_err(|e| field_err(path, e.to_string()))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(items) => Value::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| toml_to_value(&format!("{path}[{i}]"), item))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(field_err(
                path,
                format!(
                    "a default must be a string, number, bool or array, got {}",
                    other.type_str()
                ),
            ))
        }
    })
}

impl RawExecutor {
    fn validate(
        self,
        inputs: &BTreeMap<String, InputSpec>,
        files: &BTreeSet<String>,
    ) -> Result<Executor, ManifestError> {
        let allowed: &[&str] = match self.kind.as_str() {
            "command" => &["argv", "env"],
            "slurm" => &["argv", "partition", "account", "sbatch_args"],
            "container" => &["argv", "image", "engine"],
            "cwl" => &["document"],
            other => {
                return Err(field_err(
                    "executor.kind",
                    format!(
                    "unknown executor {other:?}; expected one of command, slurm, container, cwl"
                ),
                ))
            }
        };
        let present = [
            ("argv", self.argv.is_some()),
            ("env", self.env.is_some()),
            ("partition", self.partition.is_some()),
            ("account", self.account.is_some()),
            ("sbatch_args", self.sbatch_args.is_some()),
            ("image", self.image.is_some()),
            ("engine", self.engine.is_some()),
            ("document", self.document.is_some()),
        ];
        if let Some((field, _)) = present.iter().find(|(f, p)| *p && !allowed.contains(f)) {
            return Err(field_err(
                format!("executor.{field}"),
                format!("not a field of the {} executor", self.kind),
            ));
        }
        let argv = match &self.argv {
            Some(argv) => {
                check_argv(argv, inputs)?;
                argv.clone()
            }
            None if self.kind == "cwl" => Vec::new(),
            None => return Err(field_err("executor.argv", "is required for this executor")),
        };
        Ok(match self.kind.as_str() {
            "command" => Executor::Command {
                argv,
                env: self.env.unwrap_or_default(),
            },
            "slurm" => Executor::Slurm {
                argv,
                partition: self.partition,
                account: self.account,
                sbatch_args: self.sbatch_args.unwrap_or_default(),
            },
            "container" => Executor::Container {
                image: self.image.filter(|i| !i.trim().is_empty()).ok_or_else(|| {
                    field_err("executor.image", "is required for the container executor")
                })?,
                argv,
                engine: self.engine,
            },
            _ => {
                let document = self.document.ok_or_else(|| {
                    field_err("executor.document", "is required for the cwl executor")
                })?;
                if !files.contains(&document) {
                    return Err(field_err(
                        "executor.document",
                        format!("{document:?} is not among the bundled `files`"),
                    ));
                }
                Executor::Cwl { document }
            }
        })
    }
}

/// One piece of an argv template argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgPart<'a> {
    /// Literal text (with `{{`/`}}` unescaped).
    Literal(String),
    /// A `{name}` placeholder.
    Placeholder(&'a str),
}

/// Split one argv template argument into literal text and `{name}` placeholders.
/// `{{` and `}}` stand for literal braces.
pub fn parse_arg(arg: &str) -> Result<Vec<ArgPart<'_>>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find(['{', '}']) {
        literal.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            literal.push(tail.as_bytes()[0] as char);
            rest = &tail[2..];
        } else if tail.starts_with('}') {
            return Err(format!(
                "unmatched '}}' in {arg:?} (write '}}}}' for a literal brace)"
            ));
        } else {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {arg:?}"))?;
            if !literal.is_empty() {
                parts.push(ArgPart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(ArgPart::Placeholder(&tail[1..end]));
            rest = &tail[end + 1..];
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(ArgPart::Literal(literal));
    }
    Ok(parts)
}

fn check_argv(argv: &[String], inputs: &BTreeMap<String, InputSpec>) -> Result<(), ManifestError> {
    if argv.is_empty() {
        return Err(field_err("executor.argv", "must name at least the program"));
    }
    for (i, arg) in argv.iter().enumerate() {
        let path = format!("executor.argv[{i}]");
        let parts = parse_arg(arg).map_err(|e| field_err(&path, e))?;
        for part in &parts {
            let ArgPart::Placeholder(name) = part else {
                continue;
            };
            if *name == placeholders::BUNDLE || *name == placeholders::WORKDIR {
                continue;
            }
            let spec = inputs.get(*name).ok_or_else(|| {
                field_err(
                    &path,
                    format!("placeholder {{{name}}} is not an input, `bundle` or `workdir`"),
                )
            })?;
            if matches!(spec.ty, InputType::List { .. }) && parts.len() != 1 {
                return Err(field_err(
                    &path,
                    format!("list input {{{name}}} must be a whole argument (it expands to one argument per item)"),
                ));
            }
        }
    }
    Ok(())
}

/// A workflow: canonical manifest plus the BLAKE3 hash of every bundled file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// The manifest.
    pub manifest: Manifest,
    /// `files` path → content id. Keys equal `manifest.files`.
    pub files: BTreeMap<String, BlobId>,
}

impl Workflow {
    /// Combine a manifest with the hashes of its files; every declared file must be
    /// hashed and no other.
    pub fn new(manifest: Manifest, files: BTreeMap<String, BlobId>) -> Result<Self, ManifestError> {
        if let Some(missing) = manifest.files.iter().find(|f| !files.contains_key(*f)) {
            return Err(field_err(
                "files",
                format!("{missing:?} is declared but was not provided"),
            ));
        }
        if let Some(extra) = files.keys().find(|f| !manifest.files.contains(*f)) {
            return Err(field_err(
                "files",
                format!("{extra:?} was provided but is not declared"),
            ));
        }
        Ok(Self { manifest, files })
    }

    /// `BLAKE3-derive("oda-mesh v1 workflow-id", canonical(self))`.
    pub fn id(&self) -> WorkflowId {
        WorkflowId(derive(contexts::WORKFLOW, &canonical(self)))
    }
}

impl Wire for Workflow {
    const WHAT: &'static str = "workflow";
    const MAX_SIZE: usize = limits::WORKFLOW;
}
