//! Executor tests with real processes (python3 and coreutils). Each test has a
//! deadline; waiting for a condition polls it, never sleeps a fixed time.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oda_protocol::{BlobId, ExprId, Manifest, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;

/// Every test finishes within this, or fails.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

async fn with_deadline<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_DEADLINE, f)
        .await
        .expect("test exceeded its deadline")
}

/// Poll `cond` every 20 ms until it holds or `limit` passes.
async fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A manifest running `argv`, with `inputs` (TOML tables) and `outputs` (name → path).
fn manifest(inputs: &str, outputs: &[(&str, &str)], argv: &[&str], extra: &str) -> Manifest {
    let argv = argv
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let outputs: String = outputs
        .iter()
        .map(|(n, p)| format!("[outputs.{n}]\npath = {p:?}\n"))
        .collect();
    let text = format!(
        "name = \"t\"\nversion = \"1\"\n{extra}\n{inputs}\n{outputs}\n[executor]\nkind = \"command\"\nargv = [{argv}]\n"
    );
    Manifest::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A temporary bundle dir with `files`, and a job dir path inside another temp dir.
struct Dirs {
    _root: tempfile::TempDir,
    bundle: PathBuf,
    work: PathBuf,
}

fn dirs(files: &[(&str, &str)]) -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let bundle = root.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    for (name, text) in files {
        std::fs::write(bundle.join(name), text).unwrap();
    }
    let work = root.path().join("jobs/job-1");
    Dirs {
        _root: root,
        bundle,
        work,
    }
}

struct Inputs {
    args: BTreeMap<String, Value>,
    outputs_of: HashMap<(ExprId, String), BlobId>,
    blob_paths: HashMap<BlobId, PathBuf>,
}

impl Inputs {
    fn none() -> Self {
        Inputs {
            args: BTreeMap::new(),
            outputs_of: HashMap::new(),
            blob_paths: HashMap::new(),
        }
    }

    fn request<'a>(&'a self, m: &'a Manifest, d: &'a Dirs) -> RunRequest<'a> {
        RunRequest {
            manifest: m,
            args: &self.args,
            outputs_of: &self.outputs_of,
            blob_paths: &self.blob_paths,
            bundle_dir: &d.bundle,
            work_dir: &d.work,
            sandbox: None,
        }
    }
}

async fn run_simple(m: &Manifest, d: &Dirs) -> RunReport {
    let inputs = Inputs::none();
    with_deadline(run(inputs.request(m, d), CancellationToken::new(), None)).await
}

fn reason(r: &RunReport) -> &str {
    match &r.outcome {
        RunOutcome::Failed { reason } => reason,
        other => panic!("expected a failure, got {other:?}\nlog:\n{}", r.log_tail),
    }
}

const ECHO_ARGS: &str = r#"
import json, os, sys, time
print("hello from stdout")
print("hello from stderr", file=sys.stderr)
ballast = b"x" * (64 << 20)
# Held past the executor's first RSS sample after the start (every 0.5 s):
# `ru_maxrss` alone is the job's only when no other child of this test
# process (tests run in parallel) had a larger one.
time.sleep(0.7)
record = {
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "env": {k: os.environ.get(k) for k in ["GREETING", "ODA_WORKDIR", "ODA_BUNDLE", "CARGO_MANIFEST_DIR"]},
    "stdin": sys.stdin.read(),
}
os.makedirs("results", exist_ok=True)
with open("results/args.json", "w") as f:
    json.dump(record, f)
"#;

#[tokio::test]
async fn command_success_substitutes_arguments_verbatim() {
    let d = dirs(&[("echo_args.py", ECHO_ARGS)]);
    let m = manifest(
        r#"
[inputs.name]
type = "string"
[inputs.n]
type = "int"
[inputs.x]
type = "float"
[inputs.flag]
type = "bool"
[inputs.items]
type = "list"
items = "string"
[inputs.data]
type = "blob"
[inputs.prev]
type = "output"
[inputs.nothing]
type = "string"
"#,
        &[("args", "results/args.json")],
        &[
            "python3",
            "{bundle}/echo_args.py",
            "--name={name}",
            "{n}",
            "{x}",
            "{flag}",
            "{items}",
            "{data}",
            "in={prev}",
            "{{literal}}",
            "{workdir}",
            "[{nothing}]",
        ],
        "[executor.env]\nGREETING = \"hi there\"",
    );
    let nasty = "a b; echo $HOME `id` | cat > /tmp/x 'q' \"d\" * && $(rm -rf /) \\ ~";
    let blob = BlobId::of(b"input bytes");
    let upstream = BlobId::of(b"upstream bytes");
    let expr = ExprId([9; 32]);
    let mut inputs = Inputs::none();
    for (k, v) in [
        ("name", Value::Str(nasty.into())),
        ("n", Value::Int(-42)),
        ("x", Value::Float(20.0)),
        ("flag", Value::Bool(false)),
        (
            "items",
            Value::List(vec![
                Value::Str("one".into()),
                Value::Str("two words".into()),
                Value::Str("$(id)".into()),
            ]),
        ),
        ("data", Value::Blob(blob)),
        (
            "prev",
            Value::Output {
                expr,
                name: "spectrum".into(),
            },
        ),
        ("nothing", Value::Null),
    ] {
        inputs.args.insert(k.into(), v);
    }
    inputs
        .outputs_of
        .insert((expr, "spectrum".into()), upstream);
    let blob_dir = d._root.path().join("store");
    std::fs::create_dir(&blob_dir).unwrap();
    for id in [blob, upstream] {
        let p = blob_dir.join(id.to_string());
        std::fs::write(&p, id.to_string()).unwrap();
        inputs.blob_paths.insert(id, p);
    }
    let (tx, mut rx) = mpsc::channel(64);
    let report = with_deadline(run(
        inputs.request(&m, &d),
        CancellationToken::new(),
        Some(tx),
    ))
    .await;
    let RunOutcome::Success { outputs, usage } = &report.outcome else {
        panic!("{:?}\n{}", report.outcome, report.log_tail);
    };
    let work = std::fs::canonicalize(&d.work).unwrap();
    assert_eq!(outputs["args"], work.join("results/args.json"));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&outputs["args"]).unwrap()).unwrap();
    let bundle = d.bundle.display().to_string();
    let workdir = d.work.display().to_string();
    let expected_argv = vec![
        format!("--name={nasty}"),
        "-42".into(),
        "20".into(),
        "false".into(),
        "one".into(),
        "two words".into(),
        "$(id)".into(),
        inputs.blob_paths[&blob].display().to_string(),
        format!("in={}", inputs.blob_paths[&upstream].display()),
        "{literal}".into(),
        workdir.clone(),
        "[]".into(),
    ];
    assert_eq!(record["argv"], serde_json::json!(expected_argv));
    assert_eq!(record["cwd"], serde_json::json!(work.display().to_string()));
    assert_eq!(record["env"]["GREETING"], "hi there");
    assert_eq!(record["env"]["ODA_WORKDIR"], serde_json::json!(workdir));
    assert_eq!(record["env"]["ODA_BUNDLE"], serde_json::json!(bundle));
    assert_eq!(
        record["env"]["CARGO_MANIFEST_DIR"],
        serde_json::Value::Null,
        "the node's environment must not leak into jobs"
    );
    assert_eq!(record["stdin"], "");

    assert!(usage.cpu_ms > 0, "{usage:?}");
    assert!(usage.peak_rss_kib >= 60 * 1024, "{usage:?}");
    assert!(report.started_at > 0 && report.finished_at >= report.started_at);
    assert_eq!(report.stdout, d.work.join(".oda/stdout"));
    assert_eq!(
        std::fs::read_to_string(&report.stdout).unwrap(),
        "hello from stdout\n"
    );
    assert_eq!(
        std::fs::read_to_string(&report.stderr).unwrap(),
        "hello from stderr\n"
    );
    let mut lines = Vec::new();
    while let Some(l) = rx.recv().await {
        lines.push(l);
    }
    lines.sort();
    assert_eq!(lines, ["hello from stderr", "hello from stdout"]);
    assert!(report.log_tail.contains("hello from stdout\n"));
    assert!(report.log_tail.contains("hello from stderr\n"));
}

#[tokio::test]
async fn command_missing_output_is_a_failure_naming_it() {
    let d = dirs(&[]);
    let m = manifest(
        "",
        &[("made", "made.txt"), ("result", "sub/result.txt")],
        &["python3", "-c", "open('made.txt', 'w').write('x')"],
        "",
    );
    let r = run_simple(&m, &d).await;
    let reason = reason(&r);
    assert!(
        reason.contains("output `result`")
            && reason.contains("sub/result.txt")
            && reason.contains("did not write it"),
        "{reason}"
    );
}

#[tokio::test]
async fn command_output_must_not_escape_the_job_directory() {
    let d = dirs(&[]);
    let secret = d._root.path().join("secret.txt");
    std::fs::write(&secret, "worker secret").unwrap();
    let script = format!(
        "import os; os.symlink({:?}, 'out.txt'); os.mkdir('dir')",
        secret.display().to_string()
    );
    let m = manifest("", &[("out", "out.txt")], &["python3", "-c", &script], "");
    let r = run_simple(&m, &d).await;
    let reason = reason(&r);
    assert!(reason.contains("outside the job directory"), "{reason}");

    let d = dirs(&[]);
    let m = manifest("", &[("out", "dir")], &["python3", "-c", &script], "");
    let r = run_simple(&m, &d).await;
    assert!(reason_of(&r).contains("not a regular file"), "{r:?}");

    // A symlink within the job directory is fine and resolves to its target.
    let d = dirs(&[]);
    let m = manifest(
        "",
        &[("out", "link.txt")],
        &[
            "python3",
            "-c",
            "import os; open('real.txt', 'w').write('x'); os.symlink('real.txt', 'link.txt')",
        ],
        "",
    );
    let r = run_simple(&m, &d).await;
    let RunOutcome::Success { outputs, .. } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(
        outputs["out"],
        std::fs::canonicalize(&d.work).unwrap().join("real.txt")
    );
}

fn reason_of(r: &RunReport) -> String {
    reason(r).to_string()
}

#[tokio::test]
async fn command_analysis_exception_is_reported() {
    let d = dirs(&[]);
    let m = manifest(
        "",
        &[("out", "out.txt")],
        &[
            "python3",
            "-c",
            "import json, sys; json.dump({{'kind': 'NoData', 'message': 'no data in 2003-01-01..2003-01-02'}}, open('oda-exception.json', 'w')); sys.exit(1)",
        ],
        "",
    );
    let r = run_simple(&m, &d).await;
    match &r.outcome {
        // `{{`/`}}` in the template are literal braces.
        RunOutcome::AnalysisError { kind, message, .. } => {
            assert_eq!(kind, "NoData");
            assert_eq!(message, "no data in 2003-01-01..2003-01-02");
        }
        other => panic!("{other:?}"),
    }

    // An invalid exception file is an unhandled failure that says why.
    let d = dirs(&[]);
    let m = manifest(
        "",
        &[("out", "out.txt")],
        &[
            "python3",
            "-c",
            "import sys; open('oda-exception.json', 'w').write('{{not json'); sys.exit(2)",
        ],
        "",
    );
    let r = run_simple(&m, &d).await;
    let reason = reason(&r);
    assert!(
        reason.contains("exited with status 2") && reason.contains("oda-exception.json"),
        "{reason}"
    );
}

#[tokio::test]
async fn command_crash_reports_status_and_log_tail() {
    let d = dirs(&[]);
    let m = manifest(
        "",
        &[("out", "out.txt")],
        &[
            "python3",
            "-c",
            "import sys; print('about to fail', file=sys.stderr); sys.exit(3)",
        ],
        "",
    );
    let r = run_simple(&m, &d).await;
    assert_eq!(reason(&r), "exited with status 3");
    assert!(r.log_tail.contains("about to fail"), "{}", r.log_tail);
}

#[tokio::test]
async fn command_killed_by_signal() {
    let d = dirs(&[]);
    let m = manifest(
        "",
        &[("out", "out.txt")],
        &[
            "python3",
            "-c",
            "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
        ],
        "",
    );
    let r = run_simple(&m, &d).await;
    assert_eq!(reason(&r), "killed by signal 15 (SIGTERM)");
}

/// Whether process `pid` is gone (or a zombie waiting for init to reap it).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

const SPAWN_GRANDCHILD: &str = r#"
import os, subprocess, time
child = subprocess.Popen(["sleep", "1000"])
with open("grandchild.pid.tmp", "w") as f:
    f.write(str(child.pid))
os.rename("grandchild.pid.tmp", "grandchild.pid")
time.sleep(1000)
"#;

async fn read_grandchild_pid(work: &Path) -> u32 {
    let pid_file = work.join("grandchild.pid");
    assert!(
        poll_until(Duration::from_secs(20), || pid_file.exists()).await,
        "the job did not write its grandchild's pid"
    );
    std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn command_timeout_kills_the_whole_process_group() {
    let d = dirs(&[("spawn.py", SPAWN_GRANDCHILD)]);
    let m = manifest(
        "",
        &[("out", "out.txt")],
        &["python3", "{bundle}/spawn.py"],
        "timeout_secs = 1",
    );
    let started = Instant::now();
    let r = run_simple(&m, &d).await;
    assert_eq!(reason(&r), "timed out after 1 s");
    assert!(started.elapsed() < Duration::from_secs(20));
    let pid = read_grandchild_pid(&d.work).await;
    assert!(
        poll_until(Duration::from_secs(10), || gone(pid)).await,
        "grandchild {pid} survived the timeout"
    );
}

#[tokio::test]
async fn command_cancel_kills_the_job() {
    let d = dirs(&[("spawn.py", SPAWN_GRANDCHILD)]);
    let m = manifest(
        "",
        &[("out", "out.txt")],
        &["python3", "{bundle}/spawn.py"],
        "",
    );
    let cancel = CancellationToken::new();
    let inputs = Inputs::none();
    let report = with_deadline(async {
        let job = run(inputs.request(&m, &d), cancel.clone(), None);
        tokio::pin!(job);
        // Drive the job until its grandchild exists, then cancel it.
        let pid_file = d.work.join("grandchild.pid");
        let started = tokio::select! {
            r = &mut job => panic!("job ended early: {r:?}"),
            ok = poll_until(Duration::from_secs(20), || pid_file.exists()) => ok,
        };
        assert!(started, "the job did not start its grandchild");
        cancel.cancel();
        job.await
    })
    .await;
    assert_eq!(reason(&report), "cancelled");
    let pid = read_grandchild_pid(&d.work).await;
    assert!(
        poll_until(Duration::from_secs(10), || gone(pid)).await,
        "grandchild {pid} survived the cancellation"
    );
}

#[tokio::test]
async fn command_dropping_the_run_kills_the_job() {
    let d = dirs(&[("spawn.py", SPAWN_GRANDCHILD)]);
    let m = manifest(
        "",
        &[("out", "out.txt")],
        &["python3", "{bundle}/spawn.py"],
        "",
    );
    let inputs = Inputs::none();
    with_deadline(async {
        let job = run(inputs.request(&m, &d), CancellationToken::new(), None);
        tokio::pin!(job);
        let pid_file = d.work.join("grandchild.pid");
        tokio::select! {
            r = &mut job => panic!("job ended early: {r:?}"),
            ok = poll_until(Duration::from_secs(20), || pid_file.exists()) => assert!(ok),
        }
    })
    .await;
    let pid = read_grandchild_pid(&d.work).await;
    assert!(
        poll_until(Duration::from_secs(10), || gone(pid)).await,
        "grandchild {pid} survived dropping the run"
    );
}

#[tokio::test]
async fn command_that_cannot_start_fails_clearly() {
    let d = dirs(&[]);
    let m = manifest("", &[("out", "o")], &["oda-no-such-program-4711", "x"], "");
    let r = run_simple(&m, &d).await;
    let reason = reason(&r);
    assert!(
        reason.contains("cannot start `oda-no-such-program-4711`") && reason.contains("PATH"),
        "{reason}"
    );

    let d = dirs(&[]);
    let m = manifest("", &[("out", "o")], &["{bundle}/missing.sh"], "");
    let r = run_simple(&m, &d).await;
    let reason = reason_of(&r);
    assert!(
        reason.starts_with("cannot start") && reason.contains("missing.sh"),
        "{reason}"
    );

    // Not executable.
    let d = dirs(&[("script.sh", "#!/bin/sh\n")]);
    let m = manifest("", &[("out", "o")], &["{bundle}/script.sh"], "");
    let r = run_simple(&m, &d).await;
    assert!(reason_of(&r).contains("ermission denied"), "{r:?}");
}

#[tokio::test]
async fn command_missing_blob_input_fails_before_starting() {
    let d = dirs(&[]);
    let m = manifest(
        "[inputs.data]\ntype = \"blob\"",
        &[("out", "o")],
        &["touch", "o", "{data}"],
        "",
    );
    let mut inputs = Inputs::none();
    let blob = BlobId::of(b"absent");
    inputs.args.insert("data".into(), Value::Blob(blob));
    let r = with_deadline(run(inputs.request(&m, &d), CancellationToken::new(), None)).await;
    let reason = reason(&r);
    assert!(
        reason.contains("input `data`") && reason.contains(&blob.to_string()),
        "{reason}"
    );
    assert!(!d.work.join("o").exists());
}

#[tokio::test]
async fn command_leftover_processes_are_killed_when_the_job_ends() {
    let d = dirs(&[]);
    let script = "import subprocess; p = subprocess.Popen(['sleep', '1000']); open('grandchild.pid', 'w').write(str(p.pid)); open('out.txt', 'w').write('done')";
    let m = manifest("", &[("out", "out.txt")], &["python3", "-c", script], "");
    let r = run_simple(&m, &d).await;
    assert!(matches!(r.outcome, RunOutcome::Success { .. }), "{r:?}");
    let pid = read_grandchild_pid(&d.work).await;
    assert!(
        poll_until(Duration::from_secs(10), || gone(pid)).await,
        "grandchild {pid} outlived its job"
    );
}

#[test]
fn command_always_runs_and_the_other_executors_need_their_tools() {
    let m = manifest("", &[("o", "o")], &["true"], "");
    let all = Executors {
        cwl: true,
        slurm: true,
        container: true,
    };
    let none = Executors::default();
    assert_eq!(none.check(&m.executor), Ok(()));
    let parse = |executor: &str| {
        Manifest::from_toml(&format!(
            "name = \"c\"\nversion = \"1\"\nfiles = [\"c.cwl\"]\n[outputs.o]\npath = \"o\"\n[executor]\n{executor}\n"
        ))
        .unwrap()
    };
    let cases = [
        ("kind = \"cwl\"\ndocument = \"c.cwl\"", "needs cwltool"),
        ("kind = \"slurm\"\nargv = [\"x\"]", "sbatch"),
        (
            "kind = \"container\"\nimage = \"x\"\nargv = [\"x\"]",
            "podman or docker",
        ),
    ];
    for (executor, missing) in cases {
        let m = parse(executor);
        assert_eq!(all.check(&m.executor), Ok(()));
        let e = none.check(&m.executor).unwrap_err();
        assert!(e.contains(missing), "{e}");
    }
}

#[tokio::test]
async fn a_container_engine_the_worker_lacks_fails_the_run_clearly() {
    let m = Manifest::from_toml(
        "name = \"s\"\nversion = \"1\"\n[outputs.o]\npath = \"o\"\n[executor]\nkind = \"container\"\nimage = \"x\"\nargv = [\"x\"]\nengine = \"no-such-engine\"\n",
    )
    .unwrap();
    let d = dirs(&[]);
    let r = run_simple(&m, &d).await;
    let why = reason(&r);
    assert!(
        why.contains("the manifest's engine") && why.contains("no-such-engine"),
        "{why}"
    );
}

/// Whether the tests run as root (`/proc/self` belongs to the process's
/// effective user).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// The sandbox with the `bwrap` found on `PATH`; `None` when not root (the
/// test then prints that it is skipped). As root, a missing `bwrap` fails.
fn sandbox_or_skip() -> Option<Sandbox> {
    if !is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    Some(
        Sandbox::find(std::env::var_os("PATH").as_deref(), Vec::new())
            .expect("bubblewrap for the sandbox tests (apt install bubblewrap)"),
    )
}

/// Whether nobody has connected to `listener` (non-blocking).
fn untouched(listener: &std::net::TcpListener) -> bool {
    matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn run_in(m: &Manifest, d: &Dirs, sandbox: Option<&Sandbox>) -> RunReport {
    let inputs = Inputs::none();
    let req = RunRequest {
        sandbox,
        ..inputs.request(m, d)
    };
    with_deadline(run(req, CancellationToken::new(), None)).await
}

fn output_text(r: &RunReport, name: &str) -> String {
    match &r.outcome {
        RunOutcome::Success { outputs, .. } => std::fs::read_to_string(&outputs[name])
            .unwrap_or_else(|e| panic!("cannot read output {name}: {e}")),
        other => panic!("expected success, got {other:?}\nlog:\n{}", r.log_tail),
    }
}

#[tokio::test]
async fn a_sandboxed_job_writes_only_its_directory_and_reads_no_secrets() {
    let Some(sandbox) = sandbox_or_skip() else {
        return;
    };
    let d = dirs(&[]);
    let root = d.bundle.parent().expect("temp root").to_path_buf();
    // Stand-ins for the node's data dir: a key the job must not read, a
    // directory it must not write.
    let secret = root.join("node.key");
    std::fs::write(&secret, "SECRET-KEY-BYTES").unwrap();
    let outside = root.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let script = "cat \"$1\" > read.txt 2>/dev/null; \
                  echo x > \"$2/escaped\" 2>/dev/null; \
                  echo x > \"$3/escaped\" 2>/dev/null; \
                  echo x > /usr/oda-sandbox-escaped 2>/dev/null; \
                  echo done > out";
    let argv = [
        "sh",
        "-c",
        script,
        "job",
        secret.to_str().unwrap(),
        outside.to_str().unwrap(),
        "{bundle}",
    ];
    let m = manifest("", &[("out", "out"), ("read", "read.txt")], &argv, "");

    // Without the sandbox the same job reads and writes all of it: the
    // assertions below can fail.
    let free = run_in(&m, &d, None).await;
    assert_eq!(output_text(&free, "read"), "SECRET-KEY-BYTES");
    assert!(outside.join("escaped").exists());
    for p in [
        outside.join("escaped"),
        d.bundle.join("escaped"),
        "/usr/oda-sandbox-escaped".into(),
    ] {
        let _ = std::fs::remove_file(p);
    }
    std::fs::remove_dir_all(&d.work).unwrap();

    let boxed = run_in(&m, &d, Some(&sandbox)).await;
    assert_eq!(
        output_text(&boxed, "out"),
        "done\n",
        "the job ran in its own directory"
    );
    assert_eq!(output_text(&boxed, "read"), "", "the secret was read");
    assert!(
        !outside.join("escaped").exists(),
        "wrote outside its directory"
    );
    assert!(!d.bundle.join("escaped").exists(), "wrote into its bundle");
    assert!(
        !Path::new("/usr/oda-sandbox-escaped").exists(),
        "wrote into /usr"
    );
}

#[tokio::test]
async fn a_sandboxed_job_cannot_open_a_socket() {
    let Some(sandbox) = sandbox_or_skip() else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let d = dirs(&[]);
    let script = "if echo hello > /dev/tcp/127.0.0.1/$1; then echo connected > out; \
                  else echo refused > out; fi";
    let m = manifest(
        "",
        &[("out", "out")],
        &["bash", "-c", script, "job", &port],
        "",
    );

    let free = run_in(&m, &d, None).await;
    assert_eq!(output_text(&free, "out"), "connected\n");
    assert!(listener.accept().is_ok(), "the unsandboxed job connected");
    std::fs::remove_dir_all(&d.work).unwrap();

    let boxed = run_in(&m, &d, Some(&sandbox)).await;
    assert_eq!(output_text(&boxed, "out"), "refused\n");
    assert!(
        untouched(&listener),
        "the sandboxed job reached the listener"
    );
}

#[tokio::test]
async fn a_program_the_sandbox_does_not_show_fails_clearly() {
    let Some(sandbox) = sandbox_or_skip() else {
        return;
    };
    let d = dirs(&[]);
    let tools = d.bundle.parent().expect("temp root").join("tools");
    std::fs::create_dir(&tools).unwrap();
    let tool = tools.join("tool");
    std::fs::write(&tool, "#!/bin/sh\necho hi > out\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let m = manifest("", &[("out", "out")], &[tool.to_str().unwrap()], "");
    let r = run_in(&m, &d, Some(&sandbox)).await;
    let why = reason(&r);
    assert!(
        why.contains("outside what the sandbox shows") && why.contains("sandbox_paths"),
        "{why}"
    );
    // Listed in sandbox_paths, it runs.
    let allowed = Sandbox {
        extra: vec![tools.clone()],
        ..sandbox
    };
    std::fs::remove_dir_all(&d.work).ok();
    let r = run_in(&m, &d, Some(&allowed)).await;
    assert_eq!(output_text(&r, "out"), "hi\n");
}

#[tokio::test]
async fn a_job_over_its_memory_is_stopped_as_an_analysis_error() {
    // A child of the job's main process holds 200 MiB for 20 s; the
    // manifest allows 64 MiB for the whole tree.
    let hog = "import time\nb = bytearray(200 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(20)\nopen('out', 'w').write('survived')\n";
    let d = dirs(&[("hog.py", hog)]);
    let m = manifest(
        "",
        &[("out", "out")],
        &["sh", "-c", "python3 \"$1\"", "job", "{bundle}/hog.py"],
        "[resources]\nmemory_mb = 64",
    );
    let started = Instant::now();
    let r = run_simple(&m, &d).await;
    match &r.outcome {
        RunOutcome::AnalysisError {
            kind,
            message,
            usage,
        } => {
            assert_eq!(kind, MEMORY_EXCEEDED_KIND);
            assert!(message.contains("memory_mb = 64"), "{message}");
            assert!(usage.peak_rss_kib > 64 * 1024, "{usage:?}");
        }
        other => panic!(
            "expected the memory analysis error, got {other:?}\n{}",
            r.log_tail
        ),
    }
    // Stopped, not run to its end.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!d.work.join("out").exists());

    // The same job within its memory runs to its end.
    let small = "b = bytearray(8 << 20)\nopen('out', 'w').write('fine')\n";
    let d = dirs(&[("hog.py", small)]);
    let r = run_simple(&m, &d).await;
    assert!(
        matches!(r.outcome, RunOutcome::Success { .. }),
        "{:?}",
        r.outcome
    );
}

/// Inputs with the argument `data` = a blob of `bytes`, stored in a file
/// of `d`'s temp dir (returned).
fn blob_input(d: &Dirs, bytes: &[u8]) -> (Inputs, PathBuf) {
    let mut inputs = Inputs::none();
    let blob = BlobId::of(bytes);
    let stored = d._root.path().join("blob");
    std::fs::write(&stored, bytes).unwrap();
    inputs.args.insert("data".into(), Value::Blob(blob));
    inputs.blob_paths.insert(blob, stored.clone());
    (inputs, stored)
}

/// Whether `cwltool` is on `PATH`; when it is not, panics as root (CI
/// installs it) and prints that the test is skipped otherwise.
fn cwltool_or_skip() -> bool {
    let path = std::env::var_os("PATH");
    if Executors::probe(path.as_deref()).cwl {
        return true;
    }
    assert!(
        !is_root(),
        "cwltool for the cwl executor tests (apt install cwltool)"
    );
    eprintln!("skipped: needs root (to install cwltool)");
    false
}

#[tokio::test]
async fn a_cwl_tool_runs_with_a_blob_input_and_its_output_is_collected() {
    if !cwltool_or_skip() {
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workflows/byte_count");
    let m =
        Manifest::from_toml(&std::fs::read_to_string(example.join("oda-workflow.toml")).unwrap())
            .unwrap();
    let cwl = std::fs::read_to_string(example.join("byte_count.cwl")).unwrap();
    let d = dirs(&[("byte_count.cwl", &cwl)]);
    let (inputs, _) = blob_input(&d, b"hello world\n");
    let r = with_deadline(run(inputs.request(&m, &d), CancellationToken::new(), None)).await;
    let RunOutcome::Success { outputs, .. } = &r.outcome else {
        panic!("{:?}\n{}", r.outcome, r.log_tail);
    };
    assert_eq!(
        std::fs::read_to_string(&outputs["count"]).unwrap().trim(),
        "12"
    );
    assert!(outputs["count"].starts_with(std::fs::canonicalize(&d.work).unwrap()));
    // cwltool's own log is the job's.
    assert!(r.log_tail.contains("completed success"), "{}", r.log_tail);

    // A document cwltool refuses: the run fails with its words.
    let d = dirs(&[("byte_count.cwl", "cwlVersion: v1.2\nclass: Nonsense\n")]);
    let r = with_deadline(run(inputs.request(&m, &d), CancellationToken::new(), None)).await;
    let why = reason(&r);
    assert!(why.contains("exited with status"), "{why}");
    assert!(r.log_tail.contains("Nonsense"), "{}", r.log_tail);
}

/// A local image holding only a static busybox (`podman import` of a tar of
/// that root file system; no registry is reachable), built once per test
/// process. `None` when not root (the caller prints that it is skipped).
fn busybox_image() -> Option<&'static str> {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if !is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    Some(IMAGE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("rootfs");
        std::fs::create_dir_all(fs.join("bin")).unwrap();
        std::fs::create_dir_all(fs.join("tmp")).unwrap();
        std::fs::copy("/bin/busybox", fs.join("bin/busybox"))
            .expect("a static busybox (apt install busybox-static)");
        for tool in ["sh", "cat", "echo", "wc", "head", "tr", "nc", "touch"] {
            std::os::unix::fs::symlink("busybox", fs.join("bin").join(tool)).unwrap();
        }
        let tar = dir.path().join("rootfs.tar");
        let status = std::process::Command::new("tar")
            .arg("-C")
            .arg(&fs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let image = "localhost/oda-test-busybox:1".to_string();
        let out = std::process::Command::new("podman")
            .arg("import")
            .arg(&tar)
            .arg(&image)
            .output()
            .expect("podman for the container tests (apt install podman)");
        assert!(out.status.success(), "podman import: {out:?}");
        image
    }))
}

fn container_manifest(image: &str, argv: &str, extra: &str) -> Manifest {
    Manifest::from_toml(&format!(
        "name = \"c\"\nversion = \"1\"\n{extra}\n[inputs.data]\ntype = \"blob\"\n[outputs.out]\npath = \"out\"\n[executor]\nkind = \"container\"\nimage = \"{image}\"\nargv = {argv}\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn a_container_job_reads_its_input_writes_only_its_directory_and_has_no_network() {
    let Some(image) = busybox_image() else {
        return;
    };
    // The host's own address (not loopback): a container on the engine's
    // default network reaches it; with no network it must not.
    let hostname = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .unwrap();
    let host = String::from_utf8_lossy(&hostname.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .expect("a non-loopback IPv4 address of this host")
        .to_string();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "wc -c < \"$1\" > out; echo x > \"$1\" 2>/dev/null && echo wrote-input >> out; \
         echo hi | nc -w 2 {host} {port} 2>/dev/null && echo reached-network >> out; true"
    );
    let argv = format!("[\"sh\", \"-c\", {script:?}, \"job\", \"{{data}}\"]");
    let m = container_manifest(image, &argv, "");
    let d = dirs(&[]);
    let data = b"twelve bytes";
    let (inputs, stored) = blob_input(&d, data);
    let r = with_deadline(run(inputs.request(&m, &d), CancellationToken::new(), None)).await;
    assert_eq!(output_text(&r, "out").trim(), "12");
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        data,
        "the input was changed"
    );
    assert!(untouched(&listener), "the container reached the host");
}

#[tokio::test]
async fn a_container_over_its_memory_is_stopped_as_an_analysis_error() {
    let Some(image) = busybox_image() else {
        return;
    };
    let argv = "[\"sh\", \"-c\", \"x=$(head -c 200000000 /dev/zero | tr '\\\\0' a); echo survived > out\"]";
    let m = container_manifest(image, argv, "[resources]\nmemory_mb = 32");
    let d = dirs(&[]);
    let (inputs, _) = blob_input(&d, b"");
    let r = with_deadline(run(inputs.request(&m, &d), CancellationToken::new(), None)).await;
    match &r.outcome {
        RunOutcome::AnalysisError { kind, .. } => assert_eq!(kind, MEMORY_EXCEEDED_KIND),
        other => panic!(
            "expected the memory analysis error, got {other:?}\n{}",
            r.log_tail
        ),
    }
}
