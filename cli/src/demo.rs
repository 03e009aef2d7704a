//! `oda demo`: the README's "main job" on one machine, with nothing set up.
//!
//! Starts an embedded mesh on loopback in a temporary directory (in-process
//! nodes with real networking: a bootstrap node, two workers and a requester
//! that trusts the workers' keys), registers the bundled example workflows,
//! and finds the period of a simulated X-ray pulsar from three observations as
//! an expression DAG:
//!
//! ```text
//! events(obs_id=i) ──> lightcurve ──> periodogram ──┐   i = 0, 1, 2
//!                                                   └──> best_period
//! ```
//!
//! Each step is printed as it finishes (workflow, expression id, which worker
//! computed it and how long the run took), then the recovered period beside the
//! true one. The same request is then submitted again: it is served from the
//! cache and the workers run nothing. Finally the commands to join a real mesh
//! are printed. Nodes are shut down and the temporary directory removed on
//! exit, including after Ctrl-C (`--keep` keeps the directory).
//!
//! Exit codes: 0 success; 1 a step failed, the period is off by more than 1%,
//! or the second run recomputed something; 2 `python3` is missing; 130
//! interrupted.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use oda_node::api::prov as prov_api;
use oda_node::config::{Config, SchedulerSection, TrustSection, Validated, WorkerSection};
use oda_node::identity::NodeKey;
use oda_node::provenance::prov_o;
use oda_node::runtime::Node;
use oda_node::scheduler::{JobRecord, JobState};
use oda_protocol::{Expression, NetworkId, Outcome, PublicKey, SignedFact, Value, WorkflowId};

/// The period the simulated pulsar really has, s.
pub const TRUE_PERIOD: f64 = 7.3;
/// Largest accepted relative error of the recovered period.
pub const TOLERANCE: f64 = 0.01;
/// The observations simulated.
const OBSERVATIONS: [i64; 3] = [0, 1, 2];
/// The bundled workflows, in pipeline order.
const WORKFLOWS: [&str; 4] = ["events", "lightcurve", "periodogram", "best_period"];
/// Longest wait for one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the nodes to find each other.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Job slots per worker. At most one job per observation chain runs at a
/// time (3), so with 4 slots every worker can offer for every advert even
/// while it is busy: an advert seen while full is never offered for later.
const WORKER_SLOTS: u32 = 4;
/// Longest wait for one node to shut down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Keep the temporary directory (node data, stores, job dirs) and print its path.
    pub keep: bool,
    /// The example workflows folder; `None` looks next to the source tree,
    /// then in `./examples/workflows`.
    pub workflows: Option<PathBuf>,
    /// Stop and clean up on Ctrl-C (off in tests, which must not take SIGINT).
    pub handle_ctrl_c: bool,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The simulated period, s.
    pub true_period: f64,
    /// The period recovered by `best_period` (its refined period when it has one), s.
    pub recovered_period: f64,
    /// Wall time of the first run (computed).
    pub first: Duration,
    /// Wall time of the second run (same request again).
    pub second: Duration,
    /// Workflow runs on all workers after the first run.
    pub executions_first: u64,
    /// Workflow runs on all workers after the second run.
    pub executions_second: u64,
    /// For each step of the first run, whether it came from a cache.
    pub first_from_cache: Vec<bool>,
    /// For each step of the second run, whether it came from a cache.
    pub second_from_cache: Vec<bool>,
    /// Facts in the result's provenance DAG, as the requester traced it.
    pub provenance_steps: usize,
    /// That DAG as W3C PROV-O (Turtle).
    pub provenance_turtle: String,
    /// The acknowledgement text naming its contributors.
    pub acknowledgement: String,
    /// The public keys (hex) of the workers that ran a workflow.
    pub worker_keys: Vec<String>,
}

impl DemoReport {
    /// Relative error of the recovered period.
    pub fn relative_error(&self) -> f64 {
        ((self.recovered_period - self.true_period) / self.true_period).abs()
    }

    /// Whether the recovered period is within [`TOLERANCE`].
    pub fn period_ok(&self) -> bool {
        self.relative_error() <= TOLERANCE
    }

    /// Whether the second run came entirely from the cache without running anything.
    pub fn second_run_cached(&self) -> bool {
        !self.second_from_cache.is_empty()
            && self.second_from_cache.iter().all(|c| *c)
            && self.executions_second == self.executions_first
    }
}

/// The demo was stopped with Ctrl-C.
#[derive(Debug)]
struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// `oda demo [--keep]`.
pub fn run(keep: bool) -> ExitCode {
    init_logging();
    let python = match python_version() {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "oda demo: the example workflows need python3, and `python3 --version` failed: {e}.\n\
                 Install Python 3.9 or later (standard library only) so that `python3` is on PATH, then run `oda demo` again."
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("oda-demo")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oda demo: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    println!("ODA mesh demo ({python})");
    let opts = DemoOptions {
        keep,
        workflows: None,
        handle_ctrl_c: true,
    };
    let result = runtime.block_on(run_demo(opts));
    // Whatever is still running (late announcements, a job killed by Ctrl-C)
    // is dropped with the runtime; job process groups are killed on drop.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(report) => {
            let mut ok = true;
            if !report.period_ok() {
                eprintln!(
                    "oda demo: the recovered period {:.4} s is {:.2}% away from the true {} s (more than {}%)",
                    report.recovered_period,
                    100.0 * report.relative_error(),
                    report.true_period,
                    100.0 * TOLERANCE
                );
                ok = false;
            }
            if !report.second_run_cached() {
                eprintln!(
                    "oda demo: the second run was not served entirely from the cache ({} of {} steps cached, {} new workflow runs)",
                    report.second_from_cache.iter().filter(|c| **c).count(),
                    report.second_from_cache.len(),
                    report.executions_second.saturating_sub(report.executions_first)
                );
                ok = false;
            }
            if ok {
                println!(
                    "\nDemo complete: period within {}%, second run served from cache with no recomputation ({:.2} s, then {:.3} s).",
                    100.0 * TOLERANCE,
                    report.first.as_secs_f64(),
                    report.second.as_secs_f64()
                );
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("oda demo: interrupted; the demo mesh is stopped and cleaned up");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("oda demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A `tracing` subscriber on stderr only when `ODA_LOG` is set (e.g. `ODA_LOG=info`).
fn init_logging() {
    if let Ok(filter) = std::env::var("ODA_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// `python3 --version`, or why it did not run.
fn python_version() -> Result<String, String> {
    let out = std::process::Command::new("python3")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("it exited with {}", out.status));
    }
    // Python 2 printed its version on stderr.
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    Ok(String::from_utf8_lossy(&text).trim().to_string())
}

/// Run the whole demo: start the mesh, compute, ask again, print, clean up.
pub async fn run_demo(opts: DemoOptions) -> Result<DemoReport> {
    let mut mesh = Mesh::default();
    let outcome = tokio::select! {
        r = demo(&mut mesh, &opts) => r,
        () = ctrl_c(opts.handle_ctrl_c) => Err(anyhow!(Interrupted)),
    };
    if outcome.is_err() {
        println!();
    }
    mesh.close(opts.keep).await;
    outcome
}

/// Resolves on Ctrl-C when enabled; never otherwise (nor when no handler can
/// be installed).
async fn ctrl_c(enabled: bool) {
    if enabled && tokio::signal::ctrl_c().await.is_ok() {
        return;
    }
    std::future::pending::<()>().await
}

/// The demo's nodes and their directory, owned outside the demo future so that
/// they are shut down and removed whichever way it ends.
#[derive(Default)]
struct Mesh {
    dir: Option<tempfile::TempDir>,
    boot: Option<Node>,
    workers: Vec<Node>,
    requester: Option<Node>,
}

impl Mesh {
    /// Shut every node down (requester, workers, bootstrap) and remove the
    /// directory, or keep it and say where it is.
    async fn close(&mut self, keep: bool) {
        let nodes = self
            .requester
            .take()
            .into_iter()
            .chain(self.workers.drain(..))
            .chain(self.boot.take());
        for node in nodes {
            match tokio::time::timeout(SHUTDOWN_TIMEOUT, node.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "demo node did not flush its store"),
                Err(_) => tracing::warn!("demo node did not stop in time"),
            }
        }
        let Some(dir) = self.dir.take() else {
            return;
        };
        if keep {
            let path = dir.keep();
            println!(
                "Kept the demo's data (node stores, job directories) in {}",
                path.display()
            );
        } else if let Err(e) = dir.close() {
            eprintln!("oda demo: cannot remove the demo directory: {e}");
        }
    }
}

/// One expression of the DAG.
struct Step {
    workflow: &'static str,
    label: String,
    expression: Expression,
}

/// How one step ended.
struct StepResult {
    record: JobRecord,
    fact: Option<SignedFact>,
}

async fn demo(mesh: &mut Mesh, opts: &DemoOptions) -> Result<DemoReport> {
    let workflows = match &opts.workflows {
        Some(dir) => check_workflows(dir)?,
        None => find_workflows()?,
    };
    let dir = tempfile::Builder::new()
        .prefix("oda-demo-")
        .tempdir()
        .context("cannot create a temporary directory for the demo mesh")?;
    let root = dir.path().to_path_buf();
    mesh.dir = Some(dir);
    let net: NetworkId = format!("demo-{}", std::process::id())
        .parse()
        .map_err(|e| anyhow!("demo network id: {e}"))?;

    // The mesh: bootstrap, two workers, a requester trusting the workers.
    let started = Instant::now();
    println!(
        "Starting an embedded mesh on 127.0.0.1 (network `{net}`, data in {})",
        root.display()
    );
    let boot = start_node(&root, "bootstrap", &settings(&net, &[], true, false, &[])?).await?;
    let boot_addr = boot
        .wait_listening(Duration::from_secs(10))
        .await
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the bootstrap node is not listening after 10 s"))?;
    println!("  bootstrap  {boot_addr}");
    let peers = [boot_addr.to_string()];
    mesh.boot = Some(boot);

    let workflow_dirs: Vec<PathBuf> = WORKFLOWS.iter().map(|w| workflows.join(w)).collect();
    let mut worker_keys: Vec<PublicKey> = Vec::new();
    for i in 1..=2 {
        let name = format!("worker-{i}");
        let node = start_node(&root, &name, &settings(&net, &peers, false, true, &[])?).await?;
        for wf in &workflow_dirs {
            node.add_workflow(wf)
                .await
                .with_context(|| format!("{name}: cannot add the workflow {}", wf.display()))?;
        }
        println!(
            "  {name}   peer {}, {WORKER_SLOTS} job slots, runs the {} example workflows",
            node.peer_id(),
            WORKFLOWS.len()
        );
        worker_keys.push(node.key.public());
        mesh.workers.push(node);
    }

    let requester = start_node(
        &root,
        "requester",
        &settings(&net, &peers, false, false, &worker_keys)?,
    )
    .await?;
    let mut ids: BTreeMap<&str, WorkflowId> = BTreeMap::new();
    for (name, wf) in WORKFLOWS.iter().zip(&workflow_dirs) {
        let id = requester
            .add_workflow(wf)
            .await
            .with_context(|| format!("requester: cannot add the workflow {}", wf.display()))?;
        ids.insert(name, id);
    }
    println!(
        "  requester  peer {}, trusts results signed by worker-1 and worker-2",
        requester.peer_id()
    );
    let requester = &*mesh.requester.insert(requester);
    let boot = mesh
        .boot
        .as_ref()
        .ok_or_else(|| anyhow!("the bootstrap node is gone"))?;
    wait_joined(boot, requester, 2 + 1).await?;
    println!(
        "  all 4 nodes connected in {:.1} s; workflows: {}",
        started.elapsed().as_secs_f64(),
        WORKFLOWS
            .iter()
            .map(|w| format!("{w} {}", ids[w].short(4)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let steps = build_dag(requester, &ids)?;
    println!();
    println!(
        "The analysis: find the period of a simulated X-ray pulsar (true period {TRUE_PERIOD} s)"
    );
    println!(
        "from {} observations, as a DAG of {} expressions:",
        OBSERVATIONS.len(),
        steps.len()
    );
    println!("  events(obs_id) -> lightcurve -> periodogram  (one chain per observation)");
    println!("  best_period(all periodograms)");
    println!();

    // First run: everything is computed by the workers.
    let names: Vec<(PublicKey, String)> = mesh
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| (w.key.public(), format!("worker-{}", i + 1)))
        .collect();
    let executions = |workers: &[Node]| -> u64 {
        workers
            .iter()
            .filter_map(|w| w.worker.as_ref())
            .map(|w| w.executions())
            .sum()
    };
    let before = executions(&mesh.workers);
    println!("First run (nothing cached yet):");
    let t0 = Instant::now();
    let first = run_dag(requester, &steps, &names, true).await?;
    let first_time = t0.elapsed();
    let executions_first = executions(&mesh.workers);
    let per_worker: Vec<String> = mesh
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "worker-{}: {}",
                i + 1,
                w.worker.as_ref().map_or(0, |w| w.executions())
            )
        })
        .collect();
    println!(
        "  done in {:.2} s: {} workflow runs ({})",
        first_time.as_secs_f64(),
        executions_first - before,
        per_worker.join(", ")
    );

    // The result.
    let root_fact = first
        .last()
        .and_then(|r| r.fact.as_ref())
        .ok_or_else(|| anyhow!("best_period has no result"))?;
    let result = read_result(requester, root_fact).await?;
    let recovered = result
        .get("refined_period")
        .and_then(serde_json::Value::as_f64)
        .or_else(|| {
            result
                .get("best_period")
                .and_then(serde_json::Value::as_f64)
        })
        .ok_or_else(|| anyhow!("best_period's result has no period: {result}"))?;
    let error = ((recovered - TRUE_PERIOD) / TRUE_PERIOD).abs();
    println!();
    println!(
        "Result: period {recovered:.4} s recovered from {} observations; true period {TRUE_PERIOD} s (off by {:.3}%, tolerance {}%)",
        result
            .get("n_obs")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(OBSERVATIONS.len() as u64),
        100.0 * error,
        100.0 * TOLERANCE
    );
    if let (Some(grid), Some(half)) = (
        result
            .get("best_period")
            .and_then(serde_json::Value::as_f64),
        result
            .get("best_period_half_step")
            .and_then(serde_json::Value::as_f64),
    ) {
        println!("  combined periodogram peak: {grid:.4} ± {half:.4} s");
    }
    if let Some(per) = result
        .get("per_observation")
        .and_then(serde_json::Value::as_array)
    {
        let each: Vec<String> = per
            .iter()
            .filter_map(|o| {
                Some(format!(
                    "obs {}: {:.4} s",
                    o.get("obs_id")?,
                    o.get("best_period")?.as_f64()?
                ))
            })
            .collect();
        println!("  per observation: {}", each.join(", "));
    }

    // Second run: the same request again.
    println!();
    println!("Second run (the same request again):");
    let t1 = Instant::now();
    let second = run_dag(requester, &steps, &names, false).await?;
    let second_time = t1.elapsed();
    let executions_second = executions(&mesh.workers);
    let cached = second.iter().filter(|r| r.record.from_cache).count();
    println!(
        "  {cached} of {} steps served from the cache (the facts the workers signed in the first run), {} recomputed",
        second.len(),
        executions_second - executions_first
    );
    println!(
        "  first run {:.2} s, second run {:.3} s ({} workflow runs before, {} after)",
        first_time.as_secs_f64(),
        second_time.as_secs_f64(),
        executions_first,
        executions_second
    );

    // How the result was made: the DAG of signed facts the requester holds.
    // (A few small store reads: `block_in_place` keeps them off the other
    // tasks' threads.)
    let root_expr = root_fact.body.expr;
    let (provenance, provenance_turtle) = tokio::task::block_in_place(|| -> Result<_> {
        let traced = prov_api::trace_blocking(requester, vec![root_fact.clone()])
            .context("cannot trace the result's provenance")?;
        let view = prov_api::describe(
            requester,
            root_expr,
            std::slice::from_ref(root_fact),
            &traced,
        );
        Ok((serde_json::to_value(view)?, prov_o::turtle(&traced)))
    })?;
    println!();
    println!(
        "How the result was made (`oda prov {root_expr:#}`; `--format turtle` or `jsonld` give W3C PROV-O):"
    );
    print!("{}", crate::prov::steps_text(&provenance));
    let (acknowledgement, bibtex) = crate::prov::ack_text(&provenance);
    println!();
    println!("Acknowledgement (`oda credits --ack {root_expr:#}`):");
    println!("{acknowledgement}");
    println!("{bibtex}");

    println!();
    println!("To join a real mesh:");
    println!(
        "  oda-node init                               # new key + config.toml ([worker] enabled = true to contribute compute)"
    );
    println!(
        "  oda-node run --peer <bootstrap multiaddr>   # the platform's bootstrap node, or any peer you know"
    );
    println!(
        "  oda submit events -a obs_id=1 --wait        # after `oda workflow add {}`",
        workflows.join("events").display()
    );
    println!("(this demo's bootstrap was {boot_addr}; it stops when the demo exits)");

    Ok(DemoReport {
        true_period: TRUE_PERIOD,
        recovered_period: recovered,
        first: first_time,
        second: second_time,
        executions_first,
        executions_second,
        first_from_cache: first.iter().map(|r| r.record.from_cache).collect(),
        second_from_cache: second.iter().map(|r| r.record.from_cache).collect(),
        provenance_steps: provenance["steps"].as_array().map_or(0, Vec::len),
        provenance_turtle,
        acknowledgement,
        worker_keys: mesh
            .workers
            .iter()
            .filter(|w| w.worker.as_ref().is_some_and(|w| w.executions() > 0))
            .map(|w| w.key.public().to_string())
            .collect(),
    })
}

/// The example workflows next to the source tree, else in `./examples/workflows`.
fn find_workflows() -> Result<PathBuf> {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workflows");
    let here = std::env::current_dir()
        .map(|d| d.join("examples/workflows"))
        .unwrap_or_else(|_| PathBuf::from("examples/workflows"));
    for dir in [&bundled, &here] {
        if let Ok(found) = check_workflows(dir) {
            return Ok(found);
        }
    }
    bail!(
        "cannot find the example workflows (folders {}, each with an oda-workflow.toml): looked in {} and {}. \
         Run `oda demo` from a checkout of the oda-mesh repository, the folder that contains examples/workflows.",
        WORKFLOWS.join(", "),
        bundled.display(),
        here.display()
    )
}

/// `dir`, canonical, if it holds the four workflows.
fn check_workflows(dir: &Path) -> Result<PathBuf> {
    for w in WORKFLOWS {
        let manifest = dir.join(w).join("oda-workflow.toml");
        if !manifest.is_file() {
            bail!("{} does not exist", manifest.display());
        }
    }
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// A node's configuration: loopback, port 0, the demo network; `peers` are
/// multiaddrs, `trusted` the keys whose results it accepts.
fn settings(
    net: &NetworkId,
    peers: &[String],
    bootstrap: bool,
    worker: bool,
    trusted: &[PublicKey],
) -> Result<Validated> {
    let config = Config {
        network: net.to_string(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        peers: peers.to_vec(),
        bootstrap,
        worker: WorkerSection {
            enabled: worker,
            slots: WORKER_SLOTS,
            ..WorkerSection::default()
        },
        trust: TrustSection {
            keys: trusted.iter().map(ToString::to_string).collect(),
            ..TrustSection::default()
        },
        // Snappier than the defaults: a loopback mesh answers in milliseconds.
        scheduler: SchedulerSection {
            offer_window_ms: 100,
            offer_timeout_ms: 10_000,
            lease_ttl_ms: 5_000,
            max_attempts: 3,
            ..SchedulerSection::default()
        },
        ..Config::default()
    };
    let mut validated = config.validate().context("demo node configuration")?;
    validated.scheduler.readvertise_ms = 300;
    validated.scheduler.backoff_ms = 100;
    Ok(validated)
}

/// Start one node with its own fresh key in `root/name`.
async fn start_node(root: &Path, name: &str, cfg: &Validated) -> Result<Node> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Node::start(&dir, NodeKey::generate(), cfg)
        .await
        .with_context(|| format!("cannot start the {name} node"))
}

/// Wait until the bootstrap node sees every other node and the requester is
/// connected to the workers.
async fn wait_joined(boot: &Node, requester: &Node, others: usize) -> Result<()> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        let at_boot = boot.client.peers().await.map(|p| p.len()).unwrap_or(0);
        let at_requester = requester.client.peers().await.map(|p| p.len()).unwrap_or(0);
        if at_boot >= others && at_requester >= others {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the demo nodes did not connect within {} s (the bootstrap node sees {at_boot} of {others} peers, the requester {at_requester})",
                JOIN_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The expressions: per observation events → lightcurve → periodogram, then
/// best_period over all periodograms (last).
fn build_dag(node: &Node, ids: &BTreeMap<&str, WorkflowId>) -> Result<Vec<Step>> {
    let expr = |workflow: &str, args: Vec<(&str, Value)>| -> Result<Expression> {
        let id = ids
            .get(workflow)
            .ok_or_else(|| anyhow!("workflow {workflow} not registered"))?;
        let (wf, _) = node
            .store
            .workflow(id)?
            .ok_or_else(|| anyhow!("workflow {workflow} is not in the requester's store"))?;
        let args = args.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Expression::new(*id, &wf.manifest, args)
            .with_context(|| format!("cannot build the {workflow} expression"))
    };
    let output = |e: &Expression, name: &str| Value::Output {
        expr: e.id(),
        name: name.into(),
    };
    let mut steps = Vec::new();
    let mut periodograms = Vec::new();
    for obs in OBSERVATIONS {
        let events = expr(
            "events",
            vec![
                ("obs_id", Value::Int(obs)),
                ("period", Value::Float(TRUE_PERIOD)),
            ],
        )?;
        let lightcurve = expr("lightcurve", vec![("events", output(&events, "events"))])?;
        let periodogram = expr(
            "periodogram",
            vec![("lightcurve", output(&lightcurve, "lightcurve"))],
        )?;
        periodograms.push(output(&periodogram, "periodogram"));
        for (workflow, expression) in [
            ("events", events),
            ("lightcurve", lightcurve),
            ("periodogram", periodogram),
        ] {
            steps.push(Step {
                workflow,
                label: format!("obs_id={obs}"),
                expression,
            });
        }
    }
    steps.push(Step {
        workflow: "best_period",
        label: format!("{} obs", OBSERVATIONS.len()),
        expression: expr(
            "best_period",
            vec![("periodograms", Value::List(periodograms))],
        )?,
    });
    Ok(steps)
}

/// Submit every step (the requester resolves each expression once; a step
/// waiting for its inputs joins their resolution) and wait for all of them,
/// printing each as it finishes when `verbose`. Results in step order.
async fn run_dag(
    node: &Node,
    steps: &[Step],
    workers: &[(PublicKey, String)],
    verbose: bool,
) -> Result<Vec<StepResult>> {
    for step in steps {
        node.store.put_expr(&step.expression)?;
    }
    let started = Instant::now();
    let mut waits = tokio::task::JoinSet::new();
    for (i, step) in steps.iter().enumerate() {
        let job = node
            .requester
            .submit(&step.expression, false)
            .await
            .with_context(|| format!("cannot submit {} {}", step.workflow, step.label))?;
        let requester = node.requester.clone();
        waits.spawn(async move { (i, requester.wait(&job.id, STEP_TIMEOUT).await) });
    }
    let mut results: Vec<Option<StepResult>> = steps.iter().map(|_| None).collect();
    let mut failures = Vec::new();
    while let Some(joined) = waits.join_next().await {
        let (i, waited) = joined.context("a job waiter panicked")?;
        let step = &steps[i];
        let what = format!("{} {}", step.workflow, step.label);
        let record = waited
            .with_context(|| format!("{what}: cannot read the job"))?
            .ok_or_else(|| anyhow!("{what}: the job disappeared"))?;
        let fact = match record.fact {
            Some(id) => node.store.fact(&id)?,
            None => None,
        };
        let id = step.expression.id().short(4);
        let line = match (&record.state, &fact) {
            (JobState::Done, Some(f)) => {
                let by = worker_name(workers, &f.body.worker);
                let took = f.body.finished_at.saturating_sub(f.body.started_at) as f64 / 1000.0;
                if record.from_cache {
                    format!("served from cache (computed earlier by {by} in {took:.2} s)")
                } else {
                    format!("computed by {by} in {took:.2} s")
                }
            }
            (state, _) if !state.is_terminal() => {
                failures.push(format!(
                    "{what}: not finished after {} s ({})",
                    STEP_TIMEOUT.as_secs(),
                    state.name()
                ));
                format!("still {} after {} s", state.name(), STEP_TIMEOUT.as_secs())
            }
            (state, _) => {
                let why = record.error.clone().unwrap_or_else(|| state.name().into());
                failures.push(format!("{what}: {why}"));
                format!("FAILED: {why}")
            }
        };
        if verbose || !failures.is_empty() {
            println!(
                "  [+{:5.2} s] {:<12} {:<9} expr {id}  {line}",
                started.elapsed().as_secs_f64(),
                step.workflow,
                step.label
            );
        }
        results[i] = Some(StepResult { record, fact });
    }
    if let Some(first) = failures.first() {
        bail!(
            "{} of {} steps failed; first: {first}",
            failures.len(),
            steps.len()
        );
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| anyhow!("a step was not waited for")))
        .collect()
}

fn worker_name(workers: &[(PublicKey, String)], key: &PublicKey) -> String {
    workers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, name)| name.clone())
        .unwrap_or_else(|| format!("an unknown worker ({})", &key.to_string()[..8]))
}

/// Fetch and parse the `result` output of a best_period fact.
async fn read_result(node: &Node, fact: &SignedFact) -> Result<serde_json::Value> {
    let Outcome::Success { outputs } = &fact.body.outcome else {
        bail!("best_period did not succeed: {:?}", fact.body.outcome);
    };
    let out = outputs
        .get("result")
        .ok_or_else(|| anyhow!("best_period's fact has no output `result`"))?;
    node.client
        .fetch_blob(out.blob, Some(out.size), &node.store)
        .await
        .context("cannot fetch best_period's result")?;
    let bytes = node
        .store
        .read_range(&out.blob, 0, out.size)
        .context("cannot read best_period's result")?;
    serde_json::from_slice(&bytes).context("best_period's result is not JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn the_demo_recovers_the_period_and_the_second_run_is_cached() {
        init_logging();
        let started = Instant::now();
        let report =
            tokio::time::timeout(Duration::from_secs(50), run_demo(DemoOptions::default()))
                .await
                .expect("the demo finishes in under 50 s")
                .expect("the demo succeeds");
        assert!(
            report.period_ok(),
            "recovered {} s vs true {} s",
            report.recovered_period,
            report.true_period
        );
        assert_eq!(report.true_period, 7.3);
        assert_eq!(report.first_from_cache.len(), 10);
        assert!(
            report.first_from_cache.iter().all(|c| !c),
            "nothing cached in a fresh mesh: {:?}",
            report.first_from_cache
        );
        assert_eq!(report.executions_first, 10, "each expression ran once");
        assert!(
            report.second_from_cache.iter().all(|c| *c),
            "{:?}",
            report.second_from_cache
        );
        assert_eq!(
            report.executions_second, report.executions_first,
            "no recomputation"
        );
        assert!(report.second_run_cached());
        assert!(report.second < report.first, "{report:?}");
        assert!(started.elapsed() < Duration::from_secs(50));
        assert_eq!(report.provenance_steps, 10, "every fact of the DAG");
        assert!(
            report.acknowledgement.contains("from 10 signed results"),
            "{}",
            report.acknowledgement
        );
        assert_prov_o_names_the_workers(&report);
    }

    /// The demo's PROV-O export parses with rdflib, and SPARQL over it
    /// answers "which workers contributed" with the demo's workers.
    fn assert_prov_o_names_the_workers(report: &DemoReport) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prov.ttl");
        std::fs::write(&file, &report.provenance_turtle).unwrap();
        let script = r#"
import sys, rdflib
g = rdflib.Graph()
g.parse(sys.argv[1], format="turtle")
rows = g.query("""
    PREFIX prov: <http://www.w3.org/ns/prov#>
    PREFIX oda: <urn:oda-mesh:vocab#>
    SELECT DISTINCT ?key WHERE {
        ?run a prov:Activity ; prov:wasAssociatedWith ?worker .
        ?worker oda:publicKey ?key .
    }""")
for (key,) in rows:
    print(key)
"#;
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&file)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "rdflib could not read the export (python3-rdflib is needed: ./test.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        found.sort();
        let mut workers = report.worker_keys.clone();
        workers.sort();
        assert!(!workers.is_empty());
        assert_eq!(found, workers, "the workers that ran the DAG's workflows");
    }

    #[test]
    fn the_bundled_workflows_are_found() {
        let dir = find_workflows().unwrap();
        assert!(dir.join("best_period/oda-workflow.toml").is_file());
        assert!(check_workflows(Path::new("/nonexistent")).is_err());
    }
}
