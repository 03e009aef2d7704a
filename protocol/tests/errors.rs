//! Unit tests of the errors users and peers see: manifest validation names the
//! field, expression validation names the argument, job tokens and rosters admit
//! exactly what they should.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{args, key, Fixtures, GROUP_OWNER, REQUESTER, RUNNER, T0, WORKER};
use oda_protocol::attest::TokenError;
use oda_protocol::fact::FactError;
use oda_protocol::keys::SignError;
use oda_protocol::manifest::{parse_arg, ArgPart, DEFAULT_TIMEOUT_SECS};
use oda_protocol::{
    ArgError, BlobId, Executor, ExprId, Expression, InputType, JobToken, Manifest, ManifestError,
    Signed, TokenScope, Value, VerifyError, Workflow, WorkflowId,
};

const MINIMAL: &str = r#"
name = "t"
version = "1"
[outputs.out]
path = "out.txt"
[executor]
kind = "command"
argv = ["prog"]
"#;

/// `MINIMAL` with `extra` inserted before `[outputs.out]` (top-level keys and
/// input tables go there).
fn with(extra: &str) -> String {
    MINIMAL.replace("[outputs.out]", &format!("{extra}\n[outputs.out]"))
}

/// `MINIMAL` with the executor's argv replaced.
fn argv(inputs: &str, argv: &str) -> String {
    with(inputs).replace(r#"argv = ["prog"]"#, &format!("argv = {argv}"))
}

/// The field a manifest error names.
fn field_of(text: &str) -> String {
    match Manifest::from_toml(text) {
        Err(ManifestError::Field { field, .. }) => field,
        other => panic!("expected a field error, got {other:?} for\n{text}"),
    }
}

fn problem_of(text: &str) -> String {
    match Manifest::from_toml(text) {
        Err(e @ ManifestError::Field { .. }) => e.to_string(),
        other => panic!("expected a field error, got {other:?} for\n{text}"),
    }
}

#[test]
fn minimal_manifest_gets_defaults() {
    let m = Manifest::from_toml(MINIMAL).unwrap();
    assert_eq!(m.description, "");
    assert!(m.inputs.is_empty());
    assert_eq!(m.timeout_secs, DEFAULT_TIMEOUT_SECS);
    assert_eq!(m.timeout_secs, 3600);
    assert_eq!(
        (m.resources.cpus, m.resources.memory_mb, m.resources.gpus),
        (1, 512, 0)
    );
    assert!(m.deterministic);
    assert!(m.files.is_empty());
    assert_eq!(
        m.executor,
        Executor::Command {
            argv: vec!["prog".into()],
            env: BTreeMap::new()
        }
    );
}

#[test]
fn unknown_field_gives_the_toml_line() {
    let text = with("colour = \"blue\"");
    let err = Manifest::from_toml(&text).unwrap_err();
    let ManifestError::Toml(msg) = &err else {
        panic!("expected a TOML error, got {err:?}")
    };
    let line = text.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
    assert!(msg.contains(&format!("line {line}")), "{msg}");
    assert!(msg.contains("colour"), "{msg}");
    // Also inside nested tables.
    let text = with("[inputs.x]\ntype = \"int\"\nmaximum = 3");
    let msg = Manifest::from_toml(&text).unwrap_err().to_string();
    let line = text.lines().position(|l| l.starts_with("maximum")).unwrap() + 1;
    assert!(
        msg.contains(&format!("line {line}")) && msg.contains("maximum"),
        "{msg}"
    );
    // A field of the wrong TOML type is a TOML error with a line too.
    let msg = Manifest::from_toml(&with("timeout_secs = \"long\""))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line ") && msg.contains("timeout_secs"),
        "{msg}"
    );
    // Missing required fields.
    let msg = Manifest::from_toml("version = \"1\"")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("name"), "{msg}");
}

#[test]
fn bad_type_name_names_the_field() {
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"integer\"")),
        "inputs.x.type"
    );
    assert!(problem_of(&with("[inputs.x]\ntype = \"integer\"")).contains("\"integer\""));
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"list\"\nitems = \"list\"")),
        "inputs.x.items"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"list\"\nitems = \"complex\"")),
        "inputs.x.items"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"list\"")),
        "inputs.x.items"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"int\"\nitems = \"int\"")),
        "inputs.x.items"
    );
}

#[test]
fn min_above_max_names_min() {
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"int\"\nmin = 5\nmax = 4")),
        "inputs.x.min"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"float\"\nmin = 5.5\nmax = 5")),
        "inputs.x.min"
    );
    // Equal bounds are fine.
    Manifest::from_toml(&with("[inputs.x]\ntype = \"int\"\nmin = 5\nmax = 5")).unwrap();
    // Bounds of the wrong type or on the wrong input type.
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"int\"\nmin = 1.5")),
        "inputs.x.min"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"float\"\nmax = \"big\"")),
        "inputs.x.max"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"float\"\nmax = nan")),
        "inputs.x.max"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"string\"\nmin = 1")),
        "inputs.x.min"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"bool\"\nmax = 1")),
        "inputs.x.max"
    );
    // Float bounds are normalised: -0.0 becomes 0.0, integers become floats.
    let m =
        Manifest::from_toml(&with("[inputs.x]\ntype = \"float\"\nmin = -0.0\nmax = 3")).unwrap();
    let InputType::Float { min, max } = m.inputs["x"].ty else {
        panic!()
    };
    assert_eq!(min.unwrap().to_bits(), 0.0f64.to_bits());
    assert_eq!(max, Some(3.0));
}

#[test]
fn string_constraints() {
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"string\"\npattern = \"(\"")),
        "inputs.x.pattern"
    );
    // Valid alone, but its comment would swallow the anchoring `)$`.
    assert_eq!(
        field_of(&with(
            "[inputs.x]\ntype = \"string\"\npattern = \"(?x)a #\""
        )),
        "inputs.x.pattern"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"string\"\nenum = []")),
        "inputs.x.enum"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"int\"\nenum = [\"a\"]")),
        "inputs.x.enum"
    );
    assert_eq!(
        field_of(&with("[inputs.x]\ntype = \"blob\"\npattern = \"a\"")),
        "inputs.x.pattern"
    );
    // A list of strings carries its items' constraints.
    let m = Manifest::from_toml(&with(
        "[inputs.x]\ntype = \"list\"\nitems = \"string\"\nenum = [\"a\", \"b\"]\ndefault = [\"b\"]",
    ))
    .unwrap();
    assert_eq!(
        m.inputs["x"].ty,
        InputType::List {
            items: Box::new(InputType::Str {
                pattern: None,
                choices: vec!["a".into(), "b".into()]
            })
        }
    );
}

#[test]
fn defaults_are_checked_against_their_type() {
    for (input, field) in [
        ("type = \"int\"\ndefault = \"3\"", "inputs.x.default"),
        ("type = \"int\"\nmin = 5\ndefault = 4", "inputs.x.default"),
        (
            "type = \"string\"\nenum = [\"a\"]\ndefault = \"b\"",
            "inputs.x.default",
        ),
        (
            "type = \"string\"\npattern = \"[a-z]+\"\ndefault = \"B\"",
            "inputs.x.default",
        ),
        ("type = \"blob\"\ndefault = \"bl:zz\"", "inputs.x.default"),
        ("type = \"blob\"\ndefault = \"hello\"", "inputs.x.default"),
        ("type = \"output\"\ndefault = \"x\"", "inputs.x.default"),
        ("type = \"float\"\ndefault = inf", "inputs.x.default"),
        ("type = \"bool\"\ndefault = 1979-05-27", "inputs.x.default"),
        (
            "type = \"list\"\nitems = \"int\"\ndefault = [1, \"2\"]",
            "inputs.x.default",
        ),
    ] {
        let text = with(&format!("[inputs.x]\n{input}"));
        assert_eq!(field_of(&text), field, "{input}");
    }
    let msg = problem_of(&with(
        "[inputs.x]\ntype = \"list\"\nitems = \"int\"\ndefault = [1, \"2\"]",
    ));
    assert!(msg.contains("item 1"), "{msg}");
    // Defaults are normalised like arguments.
    let m = Manifest::from_toml(&with(
        "[inputs.f]\ntype = \"float\"\ndefault = -0.0\n[inputs.g]\ntype = \"float\"\ndefault = 2\n\
         [inputs.b]\ntype = \"blob\"\ndefault = \"bl:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\"",
    ))
    .unwrap();
    assert_eq!(
        m.inputs["f"].default.as_ref().map(crate_canonical),
        Some(crate_canonical(&Value::Float(0.0)))
    );
    assert_eq!(m.inputs["g"].default, Some(Value::Float(2.0)));
    assert_eq!(m.inputs["b"].default, Some(Value::Blob(BlobId::of(b""))));
}

fn crate_canonical(v: &Value) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, oda_protocol::codec::config()).unwrap()
}

#[test]
fn names_and_paths() {
    assert_eq!(field_of(&MINIMAL.replace("\"t\"", "\"Big\"")), "name");
    assert_eq!(field_of(&MINIMAL.replace("\"t\"", "\"-t\"")), "name");
    assert_eq!(
        field_of(&MINIMAL.replace("\"t\"", &format!("\"{}\"", "a".repeat(65)))),
        "name"
    );
    Manifest::from_toml(&MINIMAL.replace("\"t\"", &format!("\"{}\"", "a".repeat(64)))).unwrap();
    assert_eq!(
        field_of(&MINIMAL.replace("version = \"1\"", "version = \" \"")),
        "version"
    );
    assert_eq!(field_of(&with("[inputs.1x]\ntype = \"int\"")), "inputs.1x");
    assert_eq!(
        field_of(&with("[inputs.bundle]\ntype = \"int\"")),
        "inputs.bundle"
    );
    assert_eq!(
        field_of(&with("[inputs.workdir]\ntype = \"int\"")),
        "inputs.workdir"
    );
    assert_eq!(field_of(&with("timeout_secs = 0")), "timeout_secs");
    assert_eq!(field_of(&with("timeout_secs = 2592001")), "timeout_secs");
    Manifest::from_toml(&with("timeout_secs = 2592000")).unwrap();
    assert_eq!(field_of(&with("[resources]\ncpus = 0")), "resources.cpus");
    assert_eq!(field_of(&with("files = [\"a\", \"../b\"]")), "files[1]");
    assert_eq!(field_of(&with("files = [\"a\", \"a\"]")), "files[1]");
    let no_outputs = "name = \"t\"\nversion = \"1\"\noutputs = {}\n[executor]\nkind = \"command\"\nargv = [\"p\"]";
    assert_eq!(field_of(no_outputs), "outputs");
}

#[test]
fn unsafe_output_paths_are_refused() {
    for path in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "./a",
        "a\\\\b",
        "",
        "a/",
    ] {
        let text = MINIMAL.replace("\"out.txt\"", &format!("\"{path}\""));
        assert_eq!(field_of(&text), "outputs.out.path", "{path:?}");
    }
    for path in ["a", "out/x.fits", ".hidden", "a..b"] {
        let text = MINIMAL.replace("\"out.txt\"", &format!("\"{path}\""));
        Manifest::from_toml(&text).unwrap();
    }
    let two = MINIMAL.replace(
        "[executor]",
        "[outputs.again]\npath = \"out.txt\"\n[executor]",
    );
    assert_eq!(field_of(&two), "outputs.out.path");
}

#[test]
fn placeholder_must_be_an_input() {
    let text = argv("[inputs.x]\ntype = \"int\"", r#"["prog", "--x={y}"]"#);
    assert_eq!(field_of(&text), "executor.argv[1]");
    assert!(problem_of(&text).contains("{y}"), "{}", problem_of(&text));
    // Inputs and the two built-in placeholders are fine; `{{`/`}}` are literal braces.
    Manifest::from_toml(&argv(
        "[inputs.x]\ntype = \"int\"",
        r#"["{bundle}/prog", "--x={x}", "{workdir}", "{{y}}"]"#,
    ))
    .unwrap();
    assert_eq!(field_of(&argv("", r#"["prog", "{"]"#)), "executor.argv[1]");
    assert_eq!(field_of(&argv("", r#"["prog", "}"]"#)), "executor.argv[1]");
    assert_eq!(field_of(&argv("", r#"[]"#)), "executor.argv");
}

#[test]
fn list_placeholder_must_be_a_whole_argument() {
    let inputs = "[inputs.xs]\ntype = \"list\"\nitems = \"int\"";
    assert_eq!(
        field_of(&argv(inputs, r#"["prog", "--xs={xs}"]"#)),
        "executor.argv[1]"
    );
    assert_eq!(
        field_of(&argv(inputs, r#"["prog", "{xs}{xs}"]"#)),
        "executor.argv[1]"
    );
    Manifest::from_toml(&argv(inputs, r#"["prog", "--xs", "{xs}"]"#)).unwrap();
}

#[test]
fn argv_templates_parse() {
    assert_eq!(
        parse_arg("--range={emin}-{emax}").unwrap(),
        vec![
            ArgPart::Literal("--range=".into()),
            ArgPart::Placeholder("emin"),
            ArgPart::Literal("-".into()),
            ArgPart::Placeholder("emax"),
        ]
    );
    assert_eq!(
        parse_arg("{{a}}").unwrap(),
        vec![ArgPart::Literal("{a}".into())]
    );
    assert_eq!(parse_arg("").unwrap(), vec![]);
    assert!(parse_arg("{a").is_err());
    assert!(parse_arg("a}").is_err());
}

#[test]
fn executor_fields_belong_to_their_kind() {
    let text = MINIMAL.replace("kind = \"command\"", "kind = \"command\"\nimage = \"x\"");
    assert_eq!(field_of(&text), "executor.image");
    let text = MINIMAL.replace("kind = \"command\"", "kind = \"shell\"");
    assert_eq!(field_of(&text), "executor.kind");
    let text = MINIMAL.replace("argv = [\"prog\"]", "");
    assert_eq!(field_of(&text), "executor.argv");
    let text = MINIMAL.replace("kind = \"command\"", "kind = \"container\"");
    assert_eq!(field_of(&text), "executor.image");
    let text = MINIMAL.replace("kind = \"command\"", "kind = \"container\"\nimage = \" \"");
    assert_eq!(field_of(&text), "executor.image");
    let cwl = MINIMAL.replace(
        "kind = \"command\"\nargv = [\"prog\"]",
        "kind = \"cwl\"\ndocument = \"tool.cwl\"",
    );
    assert_eq!(field_of(&cwl), "executor.document");
    let cwl_ok = cwl.replace("version = \"1\"", "version = \"1\"\nfiles = [\"tool.cwl\"]");
    assert_eq!(
        Manifest::from_toml(&cwl_ok).unwrap().executor,
        Executor::Cwl {
            document: "tool.cwl".into()
        }
    );
    let slurm = MINIMAL.replace(
        "kind = \"command\"",
        "kind = \"slurm\"\npartition = \"short\"\nsbatch_args = [\"--qos=low\"]",
    );
    assert_eq!(
        Manifest::from_toml(&slurm).unwrap().executor,
        Executor::Slurm {
            argv: vec!["prog".into()],
            partition: Some("short".into()),
            account: None,
            sbatch_args: vec!["--qos=low".into()],
        }
    );
}

#[test]
fn workflow_files_must_match_the_manifest() {
    let m = Manifest::from_toml(&with("files = [\"a\", \"b\"]")).unwrap();
    let a = ("a".to_string(), BlobId::of(b"a"));
    let b = ("b".to_string(), BlobId::of(b"b"));
    let c = ("c".to_string(), BlobId::of(b"c"));
    Workflow::new(m.clone(), [a.clone(), b.clone()].into()).unwrap();
    let e = Workflow::new(m.clone(), [a.clone()].into()).unwrap_err();
    assert!(e.to_string().contains("\"b\" is declared"), "{e}");
    let e = Workflow::new(m, [a, b, c].into()).unwrap_err();
    assert!(e.to_string().contains("\"c\" was provided"), "{e}");
}

// ---------------------------------------------------------------------------
// Expressions.

fn full() -> Workflow {
    common::workflow("spectrum-fit")
}

fn region() -> Value {
    Value::Output {
        expr: ExprId([9; 32]),
        name: "region".into(),
    }
}

/// `spectrum-fit` with the required args plus `extra`.
fn try_expr(extra: Vec<(&str, Value)>) -> Result<Expression, ArgError> {
    let wf = full();
    let mut a = args(vec![
        ("source", Value::Str("Crab".into())),
        ("region", region()),
    ]);
    a.extend(args(extra));
    Expression::new(wf.id(), &wf.manifest, a)
}

fn invalid(extra: Vec<(&str, Value)>) -> (String, String) {
    match try_expr(extra) {
        Err(ArgError::Invalid { name, problem }) => (name, problem),
        other => panic!("expected an invalid argument, got {other:?}"),
    }
}

#[test]
fn unknown_argument() {
    let e = try_expr(vec![("colour", Value::Str("blue".into()))]).unwrap_err();
    assert!(
        matches!(&e, ArgError::Unknown { name, .. } if name == "colour"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("emin"),
        "lists the known inputs: {e}"
    );
}

#[test]
fn missing_required_argument() {
    let wf = full();
    let e = Expression::new(wf.id(), &wf.manifest, args(vec![("region", region())])).unwrap_err();
    assert_eq!(e, ArgError::Missing("source".into()));
    assert_eq!(e.to_string(), "missing required argument `source`");
}

#[test]
fn wrong_type() {
    let (name, problem) = invalid(vec![("scw_count", Value::Str("many".into()))]);
    assert_eq!(name, "scw_count");
    assert!(problem.contains("expected int"), "{problem}");
    // A float where an int belongs is not silently truncated.
    assert_eq!(
        invalid(vec![("scw_count", Value::Float(3.0))]).0,
        "scw_count"
    );
    assert_eq!(
        invalid(vec![("with_background", Value::Int(1))]).0,
        "with_background"
    );
    assert_eq!(
        invalid(vec![("region", Value::Blob(BlobId::of(b"")))]).0,
        "region"
    );
    assert_eq!(
        invalid(vec![("thresholds", Value::Float(1.0))]).0,
        "thresholds"
    );
    assert_eq!(invalid(vec![("source", Value::Null)]).0, "source");
    let (name, problem) = invalid(vec![(
        "spectra",
        Value::List(vec![region(), Value::Str("x".into())]),
    )]);
    assert_eq!(name, "spectra");
    assert!(problem.starts_with("item 1:"), "{problem}");
}

#[test]
fn out_of_range() {
    let (name, problem) = invalid(vec![("scw_count", Value::Int(0))]);
    assert_eq!(name, "scw_count");
    assert!(problem.contains("below the minimum 1"), "{problem}");
    let (_, problem) = invalid(vec![("scw_count", Value::Int(10_001))]);
    assert!(problem.contains("above the maximum 10000"), "{problem}");
    assert_eq!(invalid(vec![("emin", Value::Float(14.999))]).0, "emin");
    assert_eq!(invalid(vec![("emax", Value::Int(1001))]).0, "emax");
    assert_eq!(
        invalid(vec![("thresholds", Value::List(vec![Value::Float(-1.0)]))]).0,
        "thresholds"
    );
    // Bounds are inclusive.
    try_expr(vec![
        ("scw_count", Value::Int(1)),
        ("emin", Value::Int(15)),
        ("emax", Value::Float(1000.0)),
    ])
    .unwrap();
}

#[test]
fn pattern_and_enum_mismatch() {
    let (name, problem) = invalid(vec![("source", Value::Str("Crab;rm".into()))]);
    assert_eq!(name, "source");
    assert!(problem.contains("does not match the pattern"), "{problem}");
    // The pattern must match the whole string, not a part of it.
    assert_eq!(
        invalid(vec![("source", Value::Str("Crab\n".into()))]).0,
        "source"
    );
    assert_eq!(
        invalid(vec![("source", Value::Str(String::new()))]).0,
        "source"
    );
    let (name, problem) = invalid(vec![("instrument", Value::Str("ISGRI".into()))]);
    assert_eq!(name, "instrument");
    assert!(
        problem.contains("is not one of isgri, jemx, spi"),
        "{problem}"
    );
}

#[test]
fn non_finite_floats_are_refused() {
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(Value::float(x).is_err());
        let (name, problem) = invalid(vec![("emin", Value::Float(x))]);
        assert_eq!(name, "emin");
        assert!(problem.contains("not a finite number"), "{problem}");
        assert_eq!(
            invalid(vec![("thresholds", Value::List(vec![Value::Float(x)]))]).0,
            "thresholds"
        );
    }
    assert_eq!(Value::float(-0.0).unwrap(), Value::Float(0.0));
    let Value::Float(z) = Value::float(-0.0).unwrap() else {
        panic!()
    };
    assert!(z.is_sign_positive());
}

#[test]
fn blob_arguments() {
    let e = try_expr(vec![(
        "calibration",
        Value::Str(format!("{:#}", BlobId::of(b"x"))),
    )])
    .unwrap();
    assert_eq!(e.args["calibration"], Value::Blob(BlobId::of(b"x")));
    // An output may stand for a blob.
    try_expr(vec![("calibration", region())]).unwrap();
    assert_eq!(
        invalid(vec![("calibration", Value::Str("bl:12".into()))]).0,
        "calibration"
    );
    assert_eq!(
        invalid(vec![(
            "calibration",
            Value::Str(BlobId::of(b"x").to_string())
        )])
        .0,
        "calibration"
    );
    let empty_name = Value::Output {
        expr: ExprId([1; 32]),
        name: String::new(),
    };
    assert_eq!(invalid(vec![("region", empty_name)]).0, "region");
}

#[test]
fn dependencies_and_output_refs() {
    let a = ExprId([1; 32]);
    let b = ExprId([2; 32]);
    let out = |expr, name: &str| Value::Output {
        expr,
        name: name.into(),
    };
    let e = try_expr(vec![(
        "spectra",
        Value::List(vec![out(a, "fit"), out(b, "fit"), out(a, "log")]),
    )])
    .unwrap();
    assert_eq!(e.dependencies(), [a, b, ExprId([9; 32])].into());
    assert_eq!(e.output_refs().len(), 4);
}

// ---------------------------------------------------------------------------
// Signed objects.

#[test]
fn signing_requires_the_named_signer() {
    let f = Fixtures::new();
    let e = key(RUNNER).sign(f.fact.body.clone()).unwrap_err();
    assert_eq!(
        e,
        SignError::SignerMismatch {
            declared: key(WORKER).public(),
            key: key(RUNNER).public()
        }
    );
}

#[test]
fn job_token_checks() {
    let f = Fixtures::new();
    let t = &f.token_exprs; // covers ex_crab and ex_fanin, runner RUNNER, expires T0+1h
    let wf = f.wf_full.id();
    let runner = key(RUNNER).public();
    let now = T0 + 1000;
    t.allows(&f.ex_crab.id(), &wf, &runner, now).unwrap();
    t.allows(&f.ex_fanin.id(), &wf, &runner, now).unwrap();
    // Expiry is exclusive.
    t.allows(&f.ex_crab.id(), &wf, &runner, T0 + 3_600_000 - 1)
        .unwrap();
    assert_eq!(
        t.allows(&f.ex_crab.id(), &wf, &runner, T0 + 3_600_000)
            .unwrap_err(),
        TokenError::Expired {
            expires_at: T0 + 3_600_000,
            now: T0 + 3_600_000
        }
    );
    assert_eq!(
        t.allows(&f.ex_cyg.id(), &wf, &runner, now).unwrap_err(),
        TokenError::ExprNotInScope(f.ex_cyg.id())
    );
    assert_eq!(
        t.allows(&f.ex_crab.id(), &wf, &key(WORKER).public(), now)
            .unwrap_err(),
        TokenError::WrongRunner {
            allowed: runner,
            asked: key(WORKER).public()
        }
    );
    // Workflow scope; no runner binding.
    let t = &f.token_workflow;
    let hello = f.wf_hello.id();
    t.allows(&f.ex_hello.id(), &hello, &key(WORKER).public(), T0)
        .unwrap();
    t.allows(&ExprId([7; 32]), &hello, &runner, T0).unwrap();
    assert_eq!(
        t.allows(&f.ex_crab.id(), &wf, &runner, T0).unwrap_err(),
        TokenError::WorkflowNotInScope {
            allowed: hello,
            asked: wf
        }
    );
    // A token with a changed scope no longer verifies, whatever is asked.
    let mut forged = t.clone();
    forged.body.scope = TokenScope::Workflow(wf);
    assert!(matches!(
        forged.allows(&f.ex_crab.id(), &wf, &runner, T0),
        Err(TokenError::Signature(VerifyError::BadSignature { .. }))
    ));
    // The signature is checked before anything else.
    let mut forged = f.token_exprs.clone();
    forged.body.expires_at = u64::MAX;
    assert!(matches!(
        forged.allows(&f.ex_crab.id(), &wf, &runner, u64::MAX - 1),
        Err(TokenError::Signature(_))
    ));
}

#[test]
fn token_signed_by_someone_else_is_refused() {
    let requester = key(REQUESTER);
    let body = JobToken {
        issuer: requester.public(),
        scope: TokenScope::Exprs(common::set(&[ExprId([1; 32])])),
        expires_at: u64::MAX,
        runner: None,
        nonce: 1,
    };
    let good = requester.sign(body.clone()).unwrap();
    let by_other = key(WORKER)
        .sign(JobToken {
            issuer: key(WORKER).public(),
            ..body.clone()
        })
        .unwrap();
    // Claiming the requester as issuer with another key's signature.
    let forged = Signed {
        body,
        signature: by_other.signature,
    };
    assert!(good
        .allows(
            &ExprId([1; 32]),
            &WorkflowId([0; 32]),
            &key(RUNNER).public(),
            0
        )
        .is_ok());
    assert!(matches!(
        forged.allows(
            &ExprId([1; 32]),
            &WorkflowId([0; 32]),
            &key(RUNNER).public(),
            0
        ),
        Err(TokenError::Signature(_))
    ));
}

#[test]
fn group_roster_admits_owner_and_members_only() {
    let f = Fixtures::new();
    let r = &f.roster;
    assert!(r.admits(&key(GROUP_OWNER).public()).unwrap());
    assert!(r.admits(&key(WORKER).public()).unwrap());
    assert!(r.admits(&key(RUNNER).public()).unwrap());
    assert!(!r.admits(&key(REQUESTER).public()).unwrap());
    // A roster with an added member no longer verifies.
    let mut forged = r.clone();
    forged.body.members.insert(key(REQUESTER).public());
    assert!(matches!(
        forged.admits(&key(REQUESTER).public()),
        Err(VerifyError::BadSignature { .. })
    ));
    // A roster naming an invalid key as owner.
    let mut bad_owner = r.clone();
    bad_owner.body.owner = oda_protocol::PublicKey([0xff; 32]);
    assert!(bad_owner.admits(&key(WORKER).public()).is_err());
}

#[test]
fn fact_verification() {
    let f = Fixtures::new();
    f.fact.verify_for(&f.ex_crab.id()).unwrap();
    assert_eq!(
        f.fact.verify_for(&f.ex_cyg.id()).unwrap_err(),
        FactError::WrongExpression {
            expected: f.ex_cyg.id(),
            found: f.ex_crab.id()
        }
    );
    let mut backwards = f.fact.clone();
    backwards.body.finished_at = backwards.body.started_at - 1;
    assert!(matches!(
        backwards.verify_for(&f.ex_crab.id()),
        Err(FactError::BadTimes { .. })
    ));
    // A fact whose signature is another fact's.
    let mut swapped = f.fact.clone();
    swapped.signature = f.fact_error.signature;
    assert!(matches!(
        swapped.verify_for(&f.ex_crab.id()),
        Err(FactError::Signature(VerifyError::BadSignature { .. }))
    ));
    // A signature over a fact is not an endorsement: contexts differ.
    let endorsement_sig_on_fact = Signed {
        body: f.fact.body.clone(),
        signature: f.endorse_workflow.signature,
    };
    assert!(endorsement_sig_on_fact.verify().is_err());
    assert_eq!(f.fact.body.output_blobs().len(), 2);
    assert!(f.fact_error.body.output_blobs().is_empty());
}

#[test]
fn an_input_is_checked_against_the_fact_it_names() {
    use oda_protocol::{InputError, ResolvedInput};
    let fx = Fixtures::new();
    let input = ResolvedInput::from_fact(&fx.fact, "fit").unwrap();
    assert_eq!(input.fact, fx.fact.id());
    assert_eq!(input.signer, fx.fact.body.worker);
    assert_eq!(input.expr, fx.fact.body.expr);
    input.check(&fx.fact).unwrap();

    // Another fact, even a valid one, is not the input.
    assert!(matches!(
        input.check(&fx.fact_error),
        Err(InputError::OtherFact { .. })
    ));
    // The bytes claimed must be the ones the fact gives.
    let forged = ResolvedInput {
        blob: BlobId::of(b"the attacker's events"),
        ..input.clone()
    };
    let err = forged.check(&fx.fact).unwrap_err();
    assert!(matches!(err, InputError::OtherBlob { .. }), "{err}");
    assert!(err.to_string().contains("\"fit\""), "{err}");
    // The signer named must be the fact's.
    let other_signer = ResolvedInput {
        signer: key(REQUESTER).public(),
        ..input.clone()
    };
    assert_eq!(
        other_signer.check(&fx.fact),
        Err(InputError::OtherSigner(fx.fact.id()))
    );
    // A bad signature on the right body (the id covers the body only).
    let mut bad_sig = fx.fact.clone();
    bad_sig.signature.0[0] ^= 1;
    assert!(matches!(
        input.check(&bad_sig),
        Err(InputError::Invalid(_, FactError::Signature(_)))
    ));
    // Outputs that do not exist, and analysis errors, name no bytes.
    assert!(matches!(
        ResolvedInput::from_fact(&fx.fact, "nope"),
        Err(InputError::NoSuchOutput { .. })
    ));
    assert_eq!(
        ResolvedInput::from_fact(&fx.fact_error, "fit"),
        Err(InputError::NotASuccess(fx.fact_error.id()))
    );
}
