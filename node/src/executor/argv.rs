//! Filling a manifest's argv template with a job's arguments.
//!
//! Every template argument is split by [`oda_protocol::manifest::parse_arg`] into
//! literal text and `{name}` placeholders. A placeholder is replaced by:
//!
//! - `{bundle}` / `{workdir}`: the absolute path of the bundle directory / the job
//!   directory;
//! - a string: its text, verbatim (no shell ever sees it);
//! - an int: decimal; a float: Rust's `Display` of `f64` (`20`, `0.5`, `1e-7` is
//!   `0.0000001`); a bool: `true` / `false`; null: the empty string;
//! - a blob, or the output of another expression: the path of a file holding its
//!   bytes (an output is looked up in `outputs_of`, then in `blob_paths`);
//! - a list, when the placeholder is the whole argument: one argument per item,
//!   each rendered as above (an empty list gives no argument at all).
//!
//! The result is a list of `OsString`s, so file paths that are not UTF-8 pass
//! through unchanged.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use oda_protocol::manifest::{parse_arg, placeholders, ArgPart};
use oda_protocol::{BlobId, ExprId, Value};

/// What placeholders are filled from.
pub(super) struct Context<'a> {
    /// Normalised arguments by input name.
    pub args: &'a BTreeMap<String, Value>,
    /// How each `Output` argument resolved.
    pub outputs_of: &'a HashMap<(ExprId, String), BlobId>,
    /// Where each blob's bytes are.
    pub blob_paths: &'a HashMap<BlobId, PathBuf>,
    /// Absolute bundle directory.
    pub bundle: &'a Path,
    /// Absolute job directory.
    pub workdir: &'a Path,
}

/// Fill `template`; the error says which argument or input could not be filled.
pub(super) fn fill(template: &[String], ctx: &Context<'_>) -> Result<Vec<OsString>, String> {
    let mut argv = Vec::with_capacity(template.len());
    for (i, arg) in template.iter().enumerate() {
        let parts = parse_arg(arg).map_err(|e| format!("executor.argv[{i}]: {e}"))?;
        if let [ArgPart::Placeholder(name)] = parts.as_slice() {
            if let Some(Value::List(items)) = ctx.args.get(*name) {
                for (j, item) in items.iter().enumerate() {
                    argv.push(render(&format!("{name}[{j}]"), item, ctx)?);
                }
                continue;
            }
        }
        let mut out = OsString::new();
        for part in &parts {
            match part {
                ArgPart::Literal(text) => out.push(text),
                ArgPart::Placeholder(name) => out.push(placeholder(name, ctx)?),
            }
        }
        argv.push(out);
    }
    Ok(argv)
}

fn placeholder(name: &str, ctx: &Context<'_>) -> Result<OsString, String> {
    if name == placeholders::BUNDLE {
        return Ok(ctx.bundle.as_os_str().to_owned());
    }
    if name == placeholders::WORKDIR {
        return Ok(ctx.workdir.as_os_str().to_owned());
    }
    let value = ctx.args.get(name).ok_or_else(|| {
        format!("argv placeholder {{{name}}} has no value: the expression has no argument `{name}`")
    })?;
    if let Value::List(_) = value {
        return Err(format!(
            "input `{name}` is a list: its placeholder must be a whole argv argument"
        ));
    }
    render(name, value, ctx)
}

/// Render one non-list value; `what` names it in errors (`files[2]`).
fn render(what: &str, value: &Value, ctx: &Context<'_>) -> Result<OsString, String> {
    Ok(match value {
        Value::Null => OsString::new(),
        Value::Bool(b) => b.to_string().into(),
        Value::Int(i) => i.to_string().into(),
        Value::Float(x) => format!("{x}").into(),
        Value::Str(s) => s.into(),
        Value::Blob(_) | Value::Output { .. } => file_of(what, value, ctx)?.unwrap_or_default(),
        Value::List(_) => {
            return Err(format!(
                "input `{what}`: lists inside lists cannot be passed on a command line"
            ))
        }
    })
}

/// The path of the file holding a blob or output argument's bytes (`None`
/// for other values); an error names the input.
pub(super) fn file_of(
    what: &str,
    value: &Value,
    ctx: &Context<'_>,
) -> Result<Option<OsString>, String> {
    let id = match value {
        Value::Blob(id) => id,
        Value::Output { expr, name } => ctx.outputs_of.get(&(*expr, name.clone())).ok_or_else(|| {
            format!("input `{what}`: output `{name}` of expression {expr:#} was not resolved to a blob")
        })?,
        _ => return Ok(None),
    };
    blob_path(what, id, ctx).map(Some)
}

fn blob_path(what: &str, id: &BlobId, ctx: &Context<'_>) -> Result<OsString, String> {
    ctx.blob_paths
        .get(id)
        .map(|p| p.as_os_str().to_owned())
        .ok_or_else(|| format!("input `{what}`: blob {id:#} is not available on this worker"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_with<'a>(
        args: &'a BTreeMap<String, Value>,
        outputs_of: &'a HashMap<(ExprId, String), BlobId>,
        blob_paths: &'a HashMap<BlobId, PathBuf>,
    ) -> Context<'a> {
        Context {
            args,
            outputs_of,
            blob_paths,
            bundle: Path::new("/b"),
            workdir: Path::new("/w"),
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_renders_every_value_kind() {
        let blob = BlobId::of(b"data");
        let up = BlobId::of(b"upstream");
        let expr = ExprId([7; 32]);
        let mut args = BTreeMap::new();
        args.insert("s".into(), Value::Str("a b;$x".into()));
        args.insert("i".into(), Value::Int(-3));
        args.insert("f".into(), Value::Float(20.0));
        args.insert("g".into(), Value::Float(0.125));
        args.insert("t".into(), Value::Bool(true));
        args.insert("n".into(), Value::Null);
        args.insert("d".into(), Value::Blob(blob));
        args.insert(
            "o".into(),
            Value::Output {
                expr,
                name: "fit".into(),
            },
        );
        args.insert(
            "xs".into(),
            Value::List(vec![Value::Int(1), Value::Str("two 2".into())]),
        );
        args.insert("empty".into(), Value::List(vec![]));
        let mut outputs_of = HashMap::new();
        outputs_of.insert((expr, "fit".to_string()), up);
        let mut blob_paths = HashMap::new();
        blob_paths.insert(blob, PathBuf::from("/s/data"));
        blob_paths.insert(up, PathBuf::from("/s/up"));
        let ctx = ctx_with(&args, &outputs_of, &blob_paths);
        let argv = fill(
            &strs(&[
                "{bundle}/run",
                "--s={s}",
                "{i}",
                "{f}",
                "{g}",
                "{t}",
                "[{n}]",
                "{d}",
                "{o}",
                "{xs}",
                "{empty}",
                "{{{workdir}}}",
            ]),
            &ctx,
        )
        .unwrap();
        let expected: Vec<OsString> = [
            "/b/run",
            "--s=a b;$x",
            "-3",
            "20",
            "0.125",
            "true",
            "[]",
            "/s/data",
            "/s/up",
            "1",
            "two 2",
            "{/w}",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(argv, expected);
    }

    #[test]
    fn argv_errors_name_the_input() {
        let expr = ExprId([1; 32]);
        let mut args = BTreeMap::new();
        args.insert("d".into(), Value::Blob(BlobId::of(b"x")));
        args.insert(
            "o".into(),
            Value::Output {
                expr,
                name: "r".into(),
            },
        );
        args.insert("xs".into(), Value::List(vec![]));
        let (outputs_of, blob_paths) = (HashMap::new(), HashMap::new());
        let ctx = ctx_with(&args, &outputs_of, &blob_paths);
        let e = fill(&strs(&["{d}"]), &ctx).unwrap_err();
        assert!(
            e.contains("input `d`") && e.contains("not available"),
            "{e}"
        );
        let e = fill(&strs(&["{o}"]), &ctx).unwrap_err();
        assert!(
            e.contains("output `r`") && e.contains("not resolved"),
            "{e}"
        );
        let e = fill(&strs(&["{missing}"]), &ctx).unwrap_err();
        assert!(e.contains("no argument `missing`"), "{e}");
        let e = fill(&strs(&["--xs={xs}"]), &ctx).unwrap_err();
        assert!(e.contains("whole argv argument"), "{e}");
        let e = fill(&strs(&["ok", "{oops"]), &ctx).unwrap_err();
        assert!(e.starts_with("executor.argv[1]"), "{e}");
    }
}
