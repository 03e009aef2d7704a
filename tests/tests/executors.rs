//! Runner classes against real `oda-node` processes on loopback: a worker
//! of each class and two requesters that trust it, one the class admits and
//! one it does not. The admitted requester's job is computed and its fact
//! records the class; the other's advert is declined (`NotAllowed` in the
//! worker's log, polled with a deadline). A `session` worker stops by
//! itself when its session ends.
//!
//! The sandbox: a worker with `[worker] sandbox = "others"` runs a
//! stranger's job under bubblewrap and its own node's job as itself
//! (the sandbox's own rules are tested against real bwrap in the
//! executor's unit tests); a worker asked to sandbox without bwrap refuses
//! to start.
//!
//! The `job` runner: `oda-node execute --expr ID` runs the one job a
//! requester asks for and exits 0, or 1 when it failed, or 2 on bad
//! arguments; the requester keeps the outputs after the runner has left.
//!
//! The `cwl` executor: a worker runs the `byte_count` example (a CWL tool,
//! through the real cwltool) on the output of an `events` job.
//!
//! The `slurm` executor: a worker submits a job to a real single-node SLURM
//! cluster (slurmctld, slurmd, munged; started by the test as root).
//!
//! The pulsar pipeline across executors: `events` in a container (podman, a
//! Python image imported from this machine's files), `lightcurve` under
//! SLURM, `periodogram` through cwltool in the sandbox, `best_period` as a
//! command in the sandbox, recovering the demo's period.

use std::time::{Duration, Instant, SystemTime};

use oda_node::config::Config;
use oda_tests::{examples, is_root, network_id, NodeProc};

/// Two requesters (started first, so that their keys are known) and a
/// worker configured by `worker(config, admitted key, other key)` that
/// dials both; each requester trusts the worker; all have `events`.
struct Mesh {
    admitted: NodeProc,
    other: NodeProc,
    worker: NodeProc,
}

fn mesh(test: &str, worker: impl FnOnce(&mut Config, &str, &str)) -> Mesh {
    let net = network_id(test);
    let mut admitted = NodeProc::init("admitted", &net, |_| {});
    admitted.start();
    let mut other = NodeProc::init("other", &net, |_| {});
    other.start();
    let (a, o) = (admitted.public_key(), other.public_key());
    let peers = vec![admitted.addr(), other.addr()];
    let mut w = NodeProc::init("worker", &net, |c| {
        c.worker.enabled = true;
        c.peers = peers;
        worker(c, &a, &o);
    });
    w.start();
    for node in [&admitted, &other] {
        node.oda(&["trust", "add", &w.public_key()]).expect_code(0);
    }
    let events = examples().join("events");
    for node in [&admitted, &other, &w] {
        node.oda(&["workflow", "add", events.to_str().expect("utf-8 path")])
            .expect_code(0);
    }
    Mesh {
        admitted,
        other,
        worker: w,
    }
}

/// Submit `events` for observation `obs`; the job's JSON.
fn submit(node: &NodeProc, obs: u32, wait: bool) -> serde_json::Value {
    let obs = format!("obs_id={obs}");
    let mut args = vec![
        "--json",
        "submit",
        "events",
        "-a",
        &obs,
        "-a",
        "duration=100",
    ];
    if wait {
        args.push("--wait");
    }
    node.oda(&args).expect_code(0).json()
}

/// The admitted requester's job is computed with the worker's class in its
/// fact; the other's advert is declined as not allowed.
fn admits_one_and_declines_the_other(m: &Mesh, class: &str) {
    let done = submit(&m.admitted, 1, true);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["result"]["worker_key"], m.worker.public_key().as_str());
    assert_eq!(done["result"]["runner_class"], class, "{done}");

    let job = submit(&m.other, 2, false);
    let expr = job["expr"].as_str().expect("expr").to_string();
    let short = expr.trim_start_matches("ex:");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let log = m.worker.log();
        if log
            .lines()
            .any(|l| l.contains("not offering") && l.contains(short) && l.contains("NotAllowed"))
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "the {class} worker did not decline {expr} within 60 s\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = job["id"].as_str().expect("id");
    let status = m.other.oda(&["--json", "status", id]).expect_code(0).json();
    assert_ne!(status["state"], "done", "{status}");
    m.other.oda(&["cancel", id]).expect_code(0);
}

#[test]
fn a_user_runner_serves_its_owners_only() {
    let m = mesh("runner-user", |c, admitted, _| {
        c.worker.runner_class = "user".into();
        c.worker.owners = vec![admitted.to_string()];
    });
    admits_one_and_declines_the_other(&m, "user");
}

#[test]
fn a_group_runner_serves_the_members_of_its_groups_newest_roster() {
    let m = mesh("runner-group", |c, admitted, _| {
        c.worker.runner_class = "group".into();
        // The admitted requester owns the group "team".
        c.worker.groups = vec![format!("{admitted}/team")];
    });
    // The owner signs a roster; the worker imports it.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("team.roster");
    let file = file.to_str().expect("utf-8 path");
    let admitted = m.admitted.public_key();
    m.admitted
        .oda(&[
            "group",
            "sign",
            "team",
            "--version",
            "1",
            "--member",
            &admitted,
            "-o",
            file,
        ])
        .expect_code(0);
    m.worker.oda(&["trust", "import", file]).expect_code(0);
    admits_one_and_declines_the_other(&m, "group");
}

#[test]
fn a_session_runner_serves_one_key_until_the_session_ends_then_stops() {
    let until = SystemTime::now() + Duration::from_secs(20);
    let mut m = mesh("runner-session", |c, admitted, _| {
        c.worker.runner_class = "session".into();
        c.worker.session_key = admitted.to_string();
        c.worker.session_until = humantime::format_rfc3339_seconds(until).to_string();
    });
    admits_one_and_declines_the_other(&m, "session");
    let status = m
        .worker
        .wait_exit(Duration::from_secs(60))
        .expect("the session worker stops by itself when its session ends");
    assert!(status.success(), "{status}\n{}", m.worker.log());
    assert!(
        m.worker.log().contains("the session ended at"),
        "{}",
        m.worker.log()
    );
}

/// A workflow that copies the file named by its `path` argument into its
/// output `read` (empty when it cannot read it).
fn peek_workflow(dir: &std::path::Path) -> std::path::PathBuf {
    workflow_dir(
        dir,
        "peek",
        r#"name = "peek"
version = "1"
description = "Copy a file of the worker's, if the job may read it."
timeout_secs = 30

[inputs.path]
type = "string"

[outputs.read]
path = "read.txt"

[executor]
kind = "command"
argv = ["sh", "-c", "cat \"$1\" > read.txt 2>/dev/null; true", "peek", "{path}"]
"#,
    )
}

/// A workflow folder `name` in `parent` holding just `manifest`.
fn workflow_dir(parent: &std::path::Path, name: &str, manifest: &str) -> std::path::PathBuf {
    let wf = parent.join(name);
    std::fs::create_dir(&wf).expect("workflow dir");
    std::fs::write(wf.join("oda-workflow.toml"), manifest).expect("manifest");
    wf
}

/// What the `peek` job of `node` read from `path`.
fn peek(node: &NodeProc, path: &str) -> String {
    let arg = format!("path={path}");
    let job = node
        .oda(&["--json", "submit", "peek", "-a", &arg, "--wait"])
        .expect_code(0)
        .json();
    assert_eq!(job["state"], "done", "{job}");
    output_of(node, job["expr"].as_str().expect("expr"), "read")
}

/// The output `name` of `expr`, downloaded with `oda get` from `node`.
fn output_of(node: &NodeProc, expr: &str, name: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    node.oda(&["get", expr, "-o", dir.path().to_str().expect("utf-8 path")])
        .expect_code(0);
    std::fs::read_to_string(dir.path().join(name)).expect("the output")
}

/// `log` without its ANSI colour sequences (`ESC [ … m`).
fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut rest = log;
    while let Some(at) = rest.find('\u{1b}') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = rest.find('m').map_or("", |m| &rest[m + 1..]);
    }
    out.push_str(rest);
    out
}

#[test]
fn a_sandboxing_worker_runs_a_strangers_job_in_the_sandbox_and_its_own_outside() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let m = mesh("sandbox-others", |c, _, _| {
        c.worker.sandbox = "others".into();
    });
    let tmp = tempfile::tempdir().expect("temp dir");
    let wf = peek_workflow(tmp.path());
    for node in [&m.admitted, &m.worker] {
        node.oda(&["workflow", "add", wf.to_str().expect("utf-8 path")])
            .expect_code(0);
    }
    // The worker's node key: what a stranger's job must never read.
    let key = m.worker.path().join("node.key");
    assert!(key.exists(), "no node key at {}", key.display());
    let key = std::fs::canonicalize(&key).expect("key path");
    let key = key.to_str().expect("utf-8 path");

    let own = peek(&m.worker, key);
    assert!(
        !own.is_empty(),
        "the worker's own job ran outside the sandbox and read its key"
    );
    // The same file by another name: a new expression, not the cached one.
    let same_file = key.replacen('/', "//", 1);
    let strangers = peek(&m.admitted, &same_file);
    assert_eq!(strangers, "", "a stranger's job read the worker's key");
    // One run in the sandbox (the stranger's), one outside (its own).
    let log = without_colours(&m.worker.log());
    let started = |sandboxed: &str| {
        log.lines()
            .filter(|l| l.contains("job started") && l.contains(sandboxed))
            .count()
    };
    assert_eq!(
        (started("sandboxed=true"), started("sandboxed=false")),
        (1, 1),
        "{log}"
    );
}

#[test]
fn a_worker_asked_to_sandbox_without_bubblewrap_refuses_to_start() {
    let net = network_id("sandbox-missing");
    let w = NodeProc::init("worker", &net, |c| {
        c.worker.enabled = true;
        c.worker.sandbox = "all".into();
    });
    // A PATH without bwrap.
    let empty = tempfile::tempdir().expect("temp dir");
    let mut cmd = std::process::Command::new(oda_tests::bin("oda-node"));
    cmd.arg("run")
        .arg("--data-dir")
        .arg(w.path())
        .env("PATH", empty.path());
    let out = oda_tests::run_with_deadline(cmd, Duration::from_secs(30));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("[worker] sandbox") && out.stderr.contains("apt install bubblewrap"),
        "{out:?}"
    );
    assert!(w.info.is_none());
}

/// A requester with `events` and a failing workflow, and a runner data dir
/// (its own key, both workflows added, the requester as its peer) that the
/// requester trusts.
struct JobMesh {
    requester: NodeProc,
    runner: NodeProc,
    _workflows: tempfile::TempDir,
}

fn job_mesh(test: &str) -> JobMesh {
    let net = network_id(test);
    let mut requester = NodeProc::init("requester", &net, |_| {});
    requester.start();
    let peers = vec![requester.addr()];
    let mut runner = NodeProc::init("runner", &net, |c| c.peers = peers);
    runner.start();
    let workflows = tempfile::tempdir().expect("temp dir");
    let fails = workflow_dir(
        workflows.path(),
        "fails",
        r#"name = "fails"
version = "1"
[inputs.n]
type = "int"
[outputs.out]
path = "out"
[executor]
kind = "command"
argv = ["sh", "-c", "echo failing on purpose >&2; exit 3"]
"#,
    );
    let events = examples().join("events");
    for node in [&requester, &runner] {
        for wf in [&events, &fails] {
            node.oda(&["workflow", "add", wf.to_str().expect("utf-8 path")])
                .expect_code(0);
        }
    }
    // The runner's data dir is ready; `oda-node execute` uses it next.
    assert!(runner.stop(), "{}", runner.log());
    requester
        .oda(&["trust", "add", &runner.public_key()])
        .expect_code(0);
    JobMesh {
        requester,
        runner,
        _workflows: workflows,
    }
}

/// `oda-node execute --expr EXPR` on the runner's data dir, to its end.
fn execute(m: &JobMesh, args: &[&str]) -> oda_tests::Output {
    let mut cmd = std::process::Command::new(oda_tests::bin("oda-node"));
    cmd.arg("execute")
        .arg("--data-dir")
        .arg(m.runner.path())
        .args(args)
        .env("ODA_LOG", "info,oda_node=debug,libp2p=warn");
    oda_tests::run_with_deadline(cmd, Duration::from_secs(120))
}

#[test]
fn a_job_runner_runs_one_job_and_the_requester_keeps_its_outputs() {
    let m = job_mesh("runner-job");
    let job = submit(&m.requester, 5, false);
    let expr = job["expr"].as_str().expect("expr").to_string();
    let id = job["id"].as_str().expect("id").to_string();

    let out = execute(
        &m,
        &["--expr", &expr, "--timeout", "60s", "--linger", "30s"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("done: fact"), "{out:?}");
    assert!(
        !out.stdout.contains("not fetched"),
        "the outputs were not fetched: {out:?}"
    );

    let done = m
        .requester
        .oda(&["--json", "wait", &id, "--timeout", "60"])
        .expect_code(0)
        .json();
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["result"]["runner_class"], "job", "{done}");
    assert_eq!(done["result"]["worker_key"], m.runner.public_key().as_str());
    // The runner is gone; its outputs are on the requester.
    let events: serde_json::Value =
        serde_json::from_str(&output_of(&m.requester, &expr, "events")).expect("JSON");
    assert_eq!(events["obs_id"], 5);
}

#[test]
fn a_job_runner_exits_1_when_its_job_fails_and_2_on_bad_arguments() {
    let m = job_mesh("runner-job-fails");
    let job = m
        .requester
        .oda(&["--json", "submit", "fails", "-a", "n=1"])
        .expect_code(0)
        .json();
    let expr = job["expr"].as_str().expect("expr");
    let out = execute(&m, &["--expr", expr, "--timeout", "60s"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("the job failed") && out.stderr.contains("status 3"),
        "{out:?}"
    );
    m.requester
        .oda(&["cancel", job["id"].as_str().expect("id")])
        .expect_code(0);

    // Nobody asks for this one.
    let nobody = format!("ex:{}", "ab".repeat(32));
    let out = execute(&m, &["--expr", &nobody, "--timeout", "2s"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("nobody asked for"), "{out:?}");

    for bad in [
        &["--expr", "nonsense"][..],
        &[][..],
        &["--expr", &nobody, "--timeout", "soon"][..],
    ] {
        let out = execute(&m, bad);
        assert_eq!(out.code, 2, "{bad:?}: {out:?}");
    }
}

#[test]
fn a_cwl_workflow_runs_through_cwltool_on_an_upstream_output() {
    let cwltool = std::process::Command::new("cwltool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !cwltool {
        assert!(
            !is_root(),
            "cwltool for the cwl executor (apt install cwltool)"
        );
        eprintln!("skipped: needs root (to install cwltool)");
        return;
    }
    let m = mesh("executor-cwl", |_, _, _| {});
    let byte_count = examples().join("byte_count");
    for node in [&m.admitted, &m.worker] {
        node.oda(&["workflow", "add", byte_count.to_str().expect("utf-8 path")])
            .expect_code(0);
    }
    let events = submit(&m.admitted, 3, true);
    assert_eq!(events["state"], "done", "{events}");
    let size = events["result"]["outputs"]["events"]["size"]
        .as_u64()
        .expect("size");
    let data = format!("data={}/events", events["expr"].as_str().expect("expr"));
    let expr = computed(&m.admitted, "byte_count", &[data]);
    let count = output_of(&m.admitted, &expr, "count");
    assert_eq!(count.trim(), size.to_string());
}

/// A test SLURM cluster, a requester and a worker that trusts nobody but
/// is trusted by the requester; the worker gets `SLURM_CONF` and `env`,
/// and `edit` changes its config.
fn slurm_mesh(
    test: &str,
    env: &[(&str, &std::ffi::OsStr)],
    edit: impl FnOnce(&mut Config),
) -> (oda_tests::slurm::Cluster, NodeProc, NodeProc) {
    let cluster = oda_tests::slurm::Cluster::start();
    let net = network_id(test);
    let mut requester = NodeProc::init("requester", &net, |_| {});
    requester.start();
    let peers = vec![requester.addr()];
    let mut worker = NodeProc::init("worker", &net, |c| {
        c.worker.enabled = true;
        c.peers = peers;
        edit(c);
    });
    let conf = cluster.conf();
    let mut all = vec![("SLURM_CONF", conf.as_os_str())];
    all.extend_from_slice(env);
    worker.start_with_env(&all);
    requester
        .oda(&["trust", "add", &worker.public_key()])
        .expect_code(0);
    (cluster, requester, worker)
}

#[test]
fn a_slurm_workflow_runs_as_a_batch_job_of_a_real_cluster() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (cluster, requester, worker) = slurm_mesh("executor-slurm", &[], |_| {});
    let tmp = tempfile::tempdir().expect("temp dir");
    let wf = workflow_dir(
        tmp.path(),
        "slurm_hello",
        r#"name = "slurm_hello"
version = "1"
timeout_secs = 120
[inputs.n]
type = "int"
[outputs.out]
path = "out.txt"
[executor]
kind = "slurm"
argv = ["sh", "-c", "echo \"n=$1 job=$SLURM_JOB_ID\" > out.txt", "job", "{n}"]
[resources]
memory_mb = 100
"#,
    );
    for node in [&requester, &worker] {
        node.oda(&["workflow", "add", wf.to_str().expect("utf-8 path")])
            .expect_code(0);
    }
    let expr = computed(&requester, "slurm_hello", &["n=4".to_string()]);
    let text = output_of(&requester, &expr, "out");
    let job_id = text
        .trim()
        .strip_prefix("n=4 job=")
        .unwrap_or_else(|| panic!("not run by SLURM: {text:?}"));
    assert!(
        !job_id.is_empty() && job_id.chars().all(|c| c.is_ascii_digit()),
        "{text:?}"
    );
    assert!(
        without_colours(&worker.log()).contains("job submitted to SLURM slurm_job="),
        "{}",
        worker.log()
    );
    drop(cluster);
}

/// A workflow folder `name` in `parent` with `manifest` and copies of
/// `files` (paths of example scripts).
fn workflow_with(
    parent: &std::path::Path,
    name: &str,
    manifest: &str,
    files: &[(&str, &str)],
) -> std::path::PathBuf {
    let wf = workflow_dir(parent, name, manifest);
    for (file, text) in files {
        std::fs::write(wf.join(file), text).expect("bundled file");
    }
    wf
}

const LIGHTCURVE_ON_SLURM: &str = r#"name = "lightcurve_slurm"
version = "1"
timeout_secs = 120
files = ["lightcurve.py"]
[inputs.events]
type = "blob"
[inputs.bin_s]
type = "float"
default = 0.5
[outputs.lightcurve]
path = "lightcurve.json"
[executor]
kind = "slurm"
argv = ["python3", "{bundle}/lightcurve.py", "--events={events}", "--bin-s={bin_s}", "--out=lightcurve.json"]
[resources]
memory_mb = 256
"#;

const PERIODOGRAM_IN_CWL: &str = r#"name = "periodogram_cwl"
version = "1"
timeout_secs = 120
files = ["periodogram.cwl", "periodogram.py"]
[inputs.lightcurve]
type = "blob"
[inputs.p_min]
type = "float"
default = 2.0
[inputs.p_max]
type = "float"
default = 20.0
[inputs.n_periods]
type = "int"
default = 400
[outputs.periodogram]
path = "periodogram.json"
[executor]
kind = "cwl"
document = "periodogram.cwl"
[resources]
memory_mb = 512
"#;

const PERIODOGRAM_CWL: &str = r#"cwlVersion: v1.2
class: CommandLineTool
doc: The periodogram step of the pulsar pipeline (periodogram.py, bundled beside it).
baseCommand: [python3]
inputs:
  script:
    type: File
    default: {class: File, location: periodogram.py}
    inputBinding: {position: 0}
  lightcurve:
    type: File
    inputBinding: {position: 1, prefix: "--lightcurve=", separate: false}
  p_min:
    type: double
    inputBinding: {position: 2, prefix: "--p-min=", separate: false}
  p_max:
    type: double
    inputBinding: {position: 3, prefix: "--p-max=", separate: false}
  n_periods:
    type: int
    inputBinding: {position: 4, prefix: "--n-periods=", separate: false}
arguments:
  - {position: 5, valueFrom: "--out=periodogram.json"}
outputs:
  periodogram:
    type: File
    outputBinding: {glob: periodogram.json}
"#;

/// `oda submit WORKFLOW -a ARG… --wait` on `node`: the expression of the
/// finished job (which must be done).
fn computed(node: &NodeProc, workflow: &str, args: &[String]) -> String {
    let mut argv = vec!["--json", "submit", workflow, "--wait"];
    for a in args {
        argv.extend(["-a", a.as_str()]);
    }
    let job = node.oda(&argv).expect_code(0).json();
    assert_eq!(job["state"], "done", "{workflow}: {job}");
    job["expr"].as_str().expect("expr").to_string()
}

#[test]
fn the_pulsar_pipeline_runs_across_executors_and_finds_the_period() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // The system's python3 first: the sandbox shows /usr, not a pyenv or
    // Conda installation.
    let (cluster, requester, worker) =
        slurm_mesh("executor-dag", &[("PATH", "/usr/bin:/bin".as_ref())], |c| {
            c.worker.sandbox = "others".into();
        });
    let tmp = tempfile::tempdir().expect("temp dir");
    let script = |wf: &str, file: &str| {
        std::fs::read_to_string(examples().join(wf).join(file)).expect("example script")
    };
    // `events` as a container job: the example's manifest with its
    // executor swapped for a `container` one on a Python image.
    let image = oda_tests::images::python_image();
    let events = std::fs::read_to_string(examples().join("events/oda-workflow.toml"))
        .expect("the events manifest")
        .replace("name = \"events\"", "name = \"events_container\"")
        .replace(
            "kind = \"command\"\n",
            &format!("kind = \"container\"\nimage = \"{image}\"\n"),
        );
    assert!(events.contains("kind = \"container\""), "{events}");
    let workflows = [
        workflow_with(
            tmp.path(),
            "events_container",
            &events,
            &[("events.py", &script("events", "events.py"))],
        ),
        workflow_with(
            tmp.path(),
            "lightcurve_slurm",
            LIGHTCURVE_ON_SLURM,
            &[("lightcurve.py", &script("lightcurve", "lightcurve.py"))],
        ),
        workflow_with(
            tmp.path(),
            "periodogram_cwl",
            PERIODOGRAM_IN_CWL,
            &[
                ("periodogram.cwl", PERIODOGRAM_CWL),
                ("periodogram.py", &script("periodogram", "periodogram.py")),
            ],
        ),
        examples().join("best_period"),
    ];
    for node in [&requester, &worker] {
        for wf in &workflows {
            node.oda(&["workflow", "add", wf.to_str().expect("utf-8 path")])
                .expect_code(0);
        }
    }
    // events in a container, lightcurve under SLURM, periodogram through
    // cwltool (in the sandbox), best_period in the sandbox.
    let mut periodograms = Vec::new();
    for obs in 0..2 {
        let events = computed(&requester, "events_container", &[format!("obs_id={obs}")]);
        let lc = computed(
            &requester,
            "lightcurve_slurm",
            &[format!("events={events}/events")],
        );
        let pg = computed(
            &requester,
            "periodogram_cwl",
            &[format!("lightcurve={lc}/lightcurve")],
        );
        periodograms.push(format!("periodograms={pg}/periodogram"));
    }
    let best = computed(&requester, "best_period", &periodograms);
    let result: serde_json::Value =
        serde_json::from_str(&output_of(&requester, &best, "result")).expect("JSON");
    let period = result["refined_period"]
        .as_f64()
        .or_else(|| result["best_period"].as_f64())
        .expect("a period");
    // The demo's true period and tolerance.
    assert!(
        (period - 7.3).abs() / 7.3 < 0.01,
        "recovered {period} s: {result}"
    );
    let log = without_colours(&worker.log());
    let sandboxed = log
        .lines()
        .filter(|l| l.contains("job started") && l.contains("sandboxed=true"))
        .count();
    assert_eq!(sandboxed, 3, "cwltool ×2, best_period: {log}");
    assert!(log.contains("job submitted to SLURM"), "{log}");
    drop(cluster);
}
