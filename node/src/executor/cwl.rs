//! The `cwl` executor: a CWL `CommandLineTool` or `Workflow` (the manifest's
//! `document`, a bundled file) run by `cwltool` as the job's main process.
//!
//! **The job object.** Each argument of the expression becomes the CWL input
//! of the same name in a JSON job file (`.oda/cwl-job.json`): ints and
//! floats as numbers, strings and bools as themselves, null as null, lists
//! as arrays, and a blob or another expression's output as a CWL `File`
//! whose `path` is the file holding its bytes.
//!
//! **The run.** `cwltool --outdir .oda/cwl-out --tmpdir-prefix .oda/cwl-tmp/in-
//! --tmp-outdir-prefix .oda/cwl-tmp/out- DOCUMENT JOB`, in the job directory,
//! with the job's environment; cwltool's log goes to the job's stderr, its
//! output object (JSON) to its stdout.
//!
//! **The outputs.** On exit 0, each output the manifest declares is the CWL
//! output of the same name, a `File` inside cwltool's output directory; it is
//! moved to the output's `path` in the job directory and collected like any
//! other executor's. A missing or misplaced output fails the run, naming it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use oda_protocol::{Manifest, Value};
use serde_json::{json, Map, Value as Json};

use super::argv;

/// The job file, in the executor's `.oda` directory.
pub(super) const JOB_FILE: &str = "cwl-job.json";
/// cwltool's output directory, in `.oda`.
pub(super) const OUT_DIR: &str = "cwl-out";
/// cwltool's temporary directories' parent, in `.oda`.
pub(super) const TMP_DIR: &str = "cwl-tmp";
/// The program run.
pub(super) const CWLTOOL: &str = "cwltool";

/// The CWL job object of the expression's arguments.
pub(super) fn job_object(ctx: &argv::Context<'_>) -> Result<Json, String> {
    let mut object = Map::new();
    for (name, value) in ctx.args {
        object.insert(name.clone(), to_json(name, value, ctx)?);
    }
    Ok(Json::Object(object))
}

fn to_json(what: &str, value: &Value, ctx: &argv::Context<'_>) -> Result<Json, String> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => json!(i),
        Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(Json::Number)
            .ok_or_else(|| format!("input `{what}`: {x} has no JSON form"))?,
        Value::Str(s) => Json::String(s.clone()),
        Value::List(items) => Json::Array(
            items
                .iter()
                .map(|v| to_json(what, v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Blob(_) | Value::Output { .. } => {
            let path = argv::file_of(what, value, ctx)?.unwrap_or_default();
            let path = path.into_string().map_err(|p| {
                format!("input `{what}`: the path {p:?} is not UTF-8, which a CWL job file needs")
            })?;
            json!({ "class": "File", "path": path })
        }
    })
}

/// cwltool's arguments after the program name, for `document` and the job
/// file in `oda_dir` (the job's `.oda`).
pub(super) fn args(document: &Path, oda_dir: &Path) -> Vec<OsString> {
    let tmp = oda_dir.join(TMP_DIR);
    let prefixed = |p: &str| {
        let mut s = tmp.join(p).into_os_string();
        s.push("-");
        s
    };
    vec![
        "--outdir".into(),
        oda_dir.join(OUT_DIR).into(),
        "--tmpdir-prefix".into(),
        prefixed("in"),
        "--tmp-outdir-prefix".into(),
        prefixed("out"),
        document.into(),
        oda_dir.join(JOB_FILE).into(),
    ]
}

/// Move each declared output from cwltool's output object (`stdout`) out of
/// its output directory `out_dir` to the output's path in `workdir`.
pub(super) fn place_outputs(
    manifest: &Manifest,
    stdout: &str,
    out_dir: &Path,
    workdir: &Path,
) -> Result<(), String> {
    let object: Json = serde_json::from_str(stdout)
        .map_err(|e| format!("cwltool did not print an output object: {e}"))?;
    let out_dir = out_dir
        .canonicalize()
        .map_err(|e| format!("cwltool's output directory {}: {e}", out_dir.display()))?;
    for (name, output) in &manifest.outputs {
        let from = object
            .get(name)
            .filter(|o| o.get("class").and_then(Json::as_str) == Some("File"))
            .and_then(|o| o.get("path"))
            .and_then(Json::as_str)
            .map(PathBuf::from)
            .ok_or_else(|| format!("cwltool's output object has no File `{name}`"))?;
        let real = from
            .canonicalize()
            .map_err(|e| format!("output `{name}` ({}): {e}", from.display()))?;
        if !real.starts_with(&out_dir) {
            return Err(format!(
                "output `{name}` is {}, outside cwltool's output directory",
                real.display()
            ));
        }
        let to = workdir.join(&output.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("output `{name}`: cannot create {}: {e}", parent.display()))?;
        }
        std::fs::rename(&real, &to)
            .map_err(|e| format!("output `{name}`: cannot move it to {}: {e}", to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use oda_protocol::{BlobId, ExprId};

    use super::*;

    #[test]
    fn arguments_become_a_cwl_job_object_with_files_for_blobs() {
        let blob = BlobId::of(b"data");
        let up = BlobId::of(b"upstream");
        let expr = ExprId([3; 32]);
        let mut args = BTreeMap::new();
        args.insert("n".into(), Value::Int(7));
        args.insert("x".into(), Value::Float(0.5));
        args.insert("s".into(), Value::Str("a b".into()));
        args.insert("flag".into(), Value::Bool(true));
        args.insert("none".into(), Value::Null);
        args.insert("data".into(), Value::Blob(blob));
        args.insert(
            "prev".into(),
            Value::Output {
                expr,
                name: "lc".into(),
            },
        );
        args.insert("xs".into(), Value::List(vec![Value::Int(1), Value::Int(2)]));
        let outputs_of = HashMap::from([((expr, "lc".to_string()), up)]);
        let blob_paths = HashMap::from([
            (blob, PathBuf::from("/s/data")),
            (up, PathBuf::from("/s/up")),
        ]);
        let ctx = argv::Context {
            args: &args,
            outputs_of: &outputs_of,
            blob_paths: &blob_paths,
            bundle: Path::new("/b"),
            workdir: Path::new("/w"),
        };
        assert_eq!(
            job_object(&ctx).unwrap(),
            json!({
                "n": 7, "x": 0.5, "s": "a b", "flag": true, "none": null,
                "data": {"class": "File", "path": "/s/data"},
                "prev": {"class": "File", "path": "/s/up"},
                "xs": [1, 2],
            })
        );
        let missing = HashMap::new();
        let ctx = argv::Context {
            blob_paths: &missing,
            ..ctx
        };
        let e = job_object(&ctx).unwrap_err();
        assert!(e.contains("input `data`"), "{e}");
    }

    #[test]
    fn outputs_are_taken_from_the_output_object_and_only_from_the_output_directory() {
        let root = tempfile::tempdir().unwrap();
        let (out_dir, work) = (root.path().join("out"), root.path().join("work"));
        std::fs::create_dir_all(&out_dir).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(out_dir.join("count.txt"), "12\n").unwrap();
        let m = Manifest::from_toml(
            "name = \"c\"\nversion = \"1\"\nfiles = [\"c.cwl\"]\n[outputs.count]\npath = \"result/count.txt\"\n[executor]\nkind = \"cwl\"\ndocument = \"c.cwl\"\n",
        )
        .unwrap();
        let object = |path: &Path| json!({"count": {"class": "File", "path": path}}).to_string();
        place_outputs(&m, &object(&out_dir.join("count.txt")), &out_dir, &work).unwrap();
        assert_eq!(
            std::fs::read_to_string(work.join("result/count.txt")).unwrap(),
            "12\n"
        );

        let elsewhere = root.path().join("secret");
        std::fs::write(&elsewhere, "no").unwrap();
        let e = place_outputs(&m, &object(&elsewhere), &out_dir, &work).unwrap_err();
        assert!(e.contains("outside cwltool's output directory"), "{e}");
        let e = place_outputs(&m, "{}", &out_dir, &work).unwrap_err();
        assert!(e.contains("no File `count`"), "{e}");
        let e = place_outputs(&m, "not json", &out_dir, &work).unwrap_err();
        assert!(e.contains("output object"), "{e}");
    }
}
