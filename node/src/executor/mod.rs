//! Executors: running one job of a workflow on this worker.
//!
//! Every executor runs as a local process, **never through a shell**: the
//! `command` executor's filled argv template; for `cwl`, cwltool with a job
//! file (`cwl`); for `container`, the engine's `run` (`container`); for
//! `slurm`, the job is submitted with `sbatch` and followed instead
//! (`slurm`, `run_slurm`). Which tools this worker has is [`Executors`].
//! [`run`] does, in order:
//!
//! 1. create the job directory (`work_dir`) and `.oda/` in it, with the files
//!    `.oda/stdout` and `.oda/stderr`;
//! 2. fill the argv template from the arguments (`argv`: every rule there);
//! 3. build the environment and find the program (`environment`);
//! 4. start it with cwd = job directory, stdin = `/dev/null`, stdout and stderr
//!    captured (`logs`), leading its own process group (`process`);
//! 5. wait for the main process to end, for the manifest's `timeout_secs` at
//!    most, or until cancelled, or until its process tree holds more memory
//!    (resident set, sampled every 200 ms) than the manifest's
//!    `resources.memory_mb`. On timeout or cancellation the whole process
//!    group is killed with `SIGKILL`; over its memory too, and the run is an
//!    analysis error of kind [`MEMORY_EXCEEDED_KIND`] (a cacheable result:
//!    every worker holds the job to the same limit). When the main process ends by itself,
//!    whatever it left running in its group is killed too: a job is over when
//!    its main process is;
//! 6. judge the result (`collect`): exit status 0 → every declared output must be
//!    a regular file inside the job directory ([`RunOutcome::Success`]); a
//!    non-zero exit with a valid `oda-exception.json` → the workflow's own
//!    analysis exception ([`RunOutcome::AnalysisError`], a cacheable result);
//!    anything else → [`RunOutcome::Failed`] (not cacheable; the requester
//!    retries elsewhere).
//!
//! [`RunReport::log_tail`] holds the last lines of stdout and stderr whatever
//! the outcome; [`Usage`] is what the `process` module measures (CPU time of the
//! reaped process tree, peak RSS with caveats documented there).
//!
//! Submodules: `argv` (template filling), `environment` (variables, program
//! lookup, [`environment_digest`]), `process` (process group, waiting, usage),
//! `logs` (capture), `collect` (outputs and exception file), `sandbox`
//! (bubblewrap), `cwl`, `container` and `slurm` (each executor's arguments
//! and results, pure).

mod argv;
mod collect;
mod container;
mod cwl;
mod environment;
mod logs;
mod process;
mod sandbox;
mod slurm;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oda_protocol::{BlobId, Executor, ExprId, Manifest, Usage, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use collect::{EXCEPTION_FILE, MAX_EXCEPTION_BYTES, MAX_KIND_BYTES};
pub use environment::{
    environment_digest, DIGEST_CONTEXT, ODA_BUNDLE, ODA_WORKDIR, PASSED_THROUGH,
};
pub use logs::{MAX_LINE_BYTES, MAX_LOG_FILE_BYTES, TAIL_BYTES, TAIL_LINES};
pub use sandbox::{Sandbox, SandboxMode, SandboxPolicy};

/// Directory, inside the job directory, holding the executor's own files.
pub const ODA_DIR: &str = ".oda";

/// How often the job's memory (the resident set of its process tree, held
/// to `resources.memory_mb`) and its main process's peak RSS are sampled.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// The analysis-error kind of a job stopped for using more memory than its
/// manifest's `resources.memory_mb`: a result like any analysis error (every
/// worker enforces the same limit), so it is cached, not retried.
pub const MEMORY_EXCEEDED_KIND: &str = "oda.memory_exceeded";
/// How long the output readers may take to finish after the process group was
/// killed (a descendant that escaped the group may keep the pipes open).
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for the main process to be reaped after `SIGKILL`.
const KILL_GRACE: Duration = Duration::from_secs(30);

/// Everything one run needs. Paths are used as given; relative ones are made
/// absolute against the node's current directory.
#[derive(Debug, Clone, Copy)]
pub struct RunRequest<'a> {
    /// The workflow's manifest.
    pub manifest: &'a Manifest,
    /// Normalised expression arguments (defaults filled in).
    pub args: &'a BTreeMap<String, Value>,
    /// How each `Value::Output` argument resolved.
    pub outputs_of: &'a HashMap<(ExprId, String), BlobId>,
    /// Where each needed blob's bytes are (read-only files in the store).
    pub blob_paths: &'a HashMap<BlobId, PathBuf>,
    /// The workflow's bundled files, already materialised.
    pub bundle_dir: &'a Path,
    /// A fresh, empty directory for this job; created if missing.
    pub work_dir: &'a Path,
    /// Run the program in this sandbox (`sandbox`), or as the worker's user.
    pub sandbox: Option<&'a Sandbox>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Exit status 0 and every declared output present: output name → the file's
    /// real path (inside the job directory).
    Success {
        /// Output files by name.
        outputs: BTreeMap<String, PathBuf>,
        /// Resources used.
        usage: Usage,
    },
    /// The workflow reported an analysis exception (non-zero exit with a valid
    /// `oda-exception.json`). A valid, cacheable result.
    AnalysisError {
        /// Machine-readable kind chosen by the workflow.
        kind: String,
        /// Message for humans.
        message: String,
        /// Resources used.
        usage: Usage,
    },
    /// An unhandled failure: crash, signal, timeout, cancellation, missing
    /// output, or the job could not start. Not cacheable.
    Failed {
        /// What happened, for humans ("exited with status 3", "timed out after
        /// 60 s", "cancelled", …).
        reason: String,
    },
}

/// The outcome with everything a fact or a log needs.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How it ended.
    pub outcome: RunOutcome,
    /// File with the job's stdout (`<work_dir>/.oda/stdout`).
    pub stdout: PathBuf,
    /// File with the job's stderr (`<work_dir>/.oda/stderr`).
    pub stderr: PathBuf,
    /// The last lines of stdout and stderr, interleaved in arrival order.
    pub log_tail: String,
    /// Start of the run, Unix milliseconds.
    pub started_at: u64,
    /// End of the run, Unix milliseconds.
    pub finished_at: u64,
}

/// The executors this worker can run, found when it starts: `command`
/// always, `cwl` when `cwltool` is on the node's `PATH`, `slurm` when
/// `sbatch`, `scontrol` and `scancel` are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Executors {
    /// `cwltool` was found.
    pub cwl: bool,
    /// SLURM's client tools were found.
    pub slurm: bool,
    /// A container engine (podman or docker) was found.
    pub container: bool,
}

impl Executors {
    /// Look for the tools on `path` (a `PATH` value; file checks only).
    pub fn probe(path: Option<&std::ffi::OsStr>) -> Self {
        let cwd = std::env::current_dir().unwrap_or_default();
        let found = |tool: &str| environment::resolve_program(tool.as_ref(), path, &cwd).is_ok();
        Self {
            cwl: found(cwl::CWLTOOL),
            slurm: slurm::TOOLS.iter().all(|t| found(t)),
            container: container::ENGINES.iter().any(|e| found(e)),
        }
    }

    /// Whether a workflow with this executor runs here; the error says why
    /// not, for a user.
    pub fn check(&self, executor: &Executor) -> Result<(), String> {
        match executor {
            Executor::Command { .. } => Ok(()),
            Executor::Cwl { .. } if self.cwl => Ok(()),
            Executor::Cwl { .. } => Err(
                "the cwl executor needs cwltool, which is not on this worker's PATH".to_string(),
            ),
            Executor::Slurm { .. } if self.slurm => Ok(()),
            Executor::Slurm { .. } => Err(format!(
                "the slurm executor needs {}, which are not all on this worker's PATH",
                slurm::TOOLS.join(", ")
            )),
            Executor::Container { .. } if self.container => Ok(()),
            Executor::Container { .. } => Err(
                "the container executor needs podman or docker, neither of which is on this \
                 worker's PATH"
                    .to_string(),
            ),
        }
    }
}

/// Run one job to the end and report. Never panics and never returns early:
/// every problem becomes a [`RunOutcome::Failed`]. If `log_lines` is given,
/// output lines are sent to it as they arrive (dropped if it is full). If the
/// returned future is dropped, the job's process group is killed.
pub async fn run(
    req: RunRequest<'_>,
    cancel: CancellationToken,
    log_lines: Option<mpsc::Sender<String>>,
) -> RunReport {
    let started_at = now_ms();
    let oda_dir = req.work_dir.join(ODA_DIR);
    let stdout = oda_dir.join("stdout");
    let stderr = oda_dir.join("stderr");
    let tail = logs::SharedTail::default();
    let span = tracing::debug_span!("job", workflow = %req.manifest.name, work_dir = %req.work_dir.display());
    let outcome = run_job(&req, &cancel, log_lines, &tail, &stdout, &stderr)
        .instrument(span.clone())
        .await;
    span.in_scope(|| match &outcome {
        RunOutcome::Failed { reason } => tracing::debug!(%reason, "job failed"),
        _ => tracing::debug!("job finished"),
    });
    let log_tail = tail
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .render();
    RunReport {
        outcome,
        stdout,
        stderr,
        log_tail,
        started_at,
        finished_at: now_ms().max(started_at),
    }
}

fn failed(reason: impl Into<String>) -> RunOutcome {
    RunOutcome::Failed {
        reason: reason.into(),
    }
}

/// Why the wait for the main process ended.
enum End {
    Exited(Result<process::Exit, String>),
    TimedOut,
    Cancelled,
    /// The process tree's resident set, KiB, over the limit.
    OverMemory(u64),
}

/// What a job is started from.
struct Prepared {
    /// Its program first, as a name or path.
    argv: Vec<OsString>,
    /// Exactly its environment.
    env: Vec<(OsString, OsString)>,
    /// For `container`: removes the container when the run is over.
    container: Option<container::Remove>,
}

/// The job's argv and environment by executor: the `command` template
/// filled in; cwltool with the CWL job file (written here) for `cwl`; the
/// engine's `run` for `container`, with `inputs` (absolute) bound in.
async fn prepare(
    manifest: &Manifest,
    ctx: &argv::Context<'_>,
    inputs: &[&Path],
) -> Result<Prepared, String> {
    let plain = |argv| Prepared {
        argv,
        env: environment::job_env(&BTreeMap::new(), ctx.workdir, ctx.bundle),
        container: None,
    };
    match &manifest.executor {
        Executor::Command {
            argv: template,
            env,
        } => Ok(Prepared {
            argv: argv::fill(template, ctx)?,
            env: environment::job_env(env, ctx.workdir, ctx.bundle),
            container: None,
        }),
        Executor::Slurm { argv: template, .. } => Ok(plain(argv::fill(template, ctx)?)),
        Executor::Cwl { document } => {
            let oda = ctx.workdir.join(ODA_DIR);
            let job = cwl::job_object(ctx)?;
            tokio::fs::write(oda.join(cwl::JOB_FILE), job.to_string())
                .await
                .map_err(|e| format!("cannot write the CWL job file in {}: {e}", oda.display()))?;
            let mut argv = vec![OsString::from(cwl::CWLTOOL)];
            argv.extend(cwl::args(&ctx.bundle.join(document), &oda));
            Ok(plain(argv))
        }
        Executor::Container {
            image,
            argv: template,
            engine,
        } => {
            let mut prepared = plain(Vec::new());
            let path = environment::path_of(&prepared.env);
            let engine = match engine {
                Some(e) => environment::resolve_program(e.as_ref(), path, ctx.workdir)
                    .map_err(|why| format!("the manifest's engine: {why}"))?,
                None => container::ENGINES
                    .iter()
                    .find_map(|e| environment::resolve_program(e.as_ref(), path, ctx.workdir).ok())
                    .ok_or("no container engine (podman or docker) on this worker's PATH")?,
            };
            let name = container::name();
            let filled = argv::fill(template, ctx)?;
            let spec = container::Spec {
                name: &name,
                image,
                argv: &filled,
                resources: &manifest.resources,
                bundle: ctx.bundle,
                workdir: ctx.workdir,
                inputs,
                limits: container::host_limits(),
            };
            prepared.argv = vec![engine.clone().into_os_string()];
            prepared.argv.extend(container::run_args(&spec));
            prepared.container = Some(container::Remove {
                engine: engine.into_os_string(),
                name,
            });
            Ok(prepared)
        }
    }
}

/// Run the job as a SLURM batch job (`slurm`) and judge it like a local
/// process once SLURM says it is over; its log files are written by SLURM
/// and their last lines become the log tail.
async fn run_slurm(
    req: &RunRequest<'_>,
    (argv, env): (&[OsString], &[(OsString, OsString)]),
    workdir: &Path,
    cancel: &CancellationToken,
    tail: &logs::SharedTail,
) -> RunOutcome {
    let oda = workdir.join(ODA_DIR);
    let script = match slurm::script(argv, env) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    if let Err(e) = tokio::fs::write(oda.join(slurm::SCRIPT), script).await {
        return failed(format!(
            "cannot write the batch script in {}: {e}",
            oda.display()
        ));
    }
    let submitted = tokio::process::Command::new("sbatch")
        .args(slurm::sbatch_args(req.manifest, workdir, &oda))
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    let id = match submitted {
        Ok(o) if o.status.success() => slurm::job_id(&String::from_utf8_lossy(&o.stdout)),
        Ok(o) => Err(format!(
            "sbatch refused the job: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run sbatch: {e}")),
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => return failed(e),
    };
    tracing::debug!(slurm_job = id, "job submitted to SLURM");
    let mut job = slurm::Scancel { id, armed: true };
    let end = loop {
        tokio::select! {
            () = cancel.cancelled() => return failed("cancelled"),
            () = tokio::time::sleep(slurm::POLL) => {}
        }
        let shown = tokio::process::Command::new("scontrol")
            .args(["show", "job", &id.to_string()])
            .stdin(std::process::Stdio::null())
            .output()
            .await;
        match shown {
            Ok(o) if o.status.success() => {
                if let Some(end) = slurm::ended(&String::from_utf8_lossy(&o.stdout)) {
                    break end;
                }
            }
            Ok(o) => {
                return failed(format!(
                    "scontrol cannot show SLURM job {id}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => return failed(format!("cannot run scontrol: {e}")),
        }
    };
    job.armed = false;
    let (stdout, stderr) = (oda.join("stdout"), oda.join("stderr"));
    logs::tail_files(tail, &[&stdout, &stderr]);
    let usage = Usage::default();
    match end {
        slurm::Ended::Exited(code) => judge(
            req.manifest,
            workdir,
            &stdout,
            process::Status::Code(code),
            usage,
        ),
        slurm::Ended::TimedOut => failed(format!(
            "timed out after {} s (SLURM's TIMEOUT)",
            req.manifest.timeout_secs
        )),
        slurm::Ended::OutOfMemory => memory_exceeded(req.manifest.resources.memory_mb, 0, usage),
        slurm::Ended::Other(state) => failed(format!("the SLURM job ended {state}")),
    }
}

async fn run_job(
    req: &RunRequest<'_>,
    cancel: &CancellationToken,
    log_lines: Option<mpsc::Sender<String>>,
    tail: &logs::SharedTail,
    stdout_path: &Path,
    stderr_path: &Path,
) -> RunOutcome {
    let (workdir, bundle) = match (
        std::path::absolute(req.work_dir),
        std::path::absolute(req.bundle_dir),
    ) {
        (Ok(w), Ok(b)) => (w, b),
        (Err(e), _) | (_, Err(e)) => {
            return failed(format!("cannot make the job paths absolute: {e}"))
        }
    };
    if let Err(e) = std::fs::create_dir_all(workdir.join(ODA_DIR)) {
        return failed(format!(
            "cannot create the job directory {}: {e}",
            workdir.display()
        ));
    }
    let (out_file, err_file) = match (
        tokio::fs::File::create(stdout_path).await,
        tokio::fs::File::create(stderr_path).await,
    ) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return failed(format!(
                "cannot create the job's log files in {}: {e}",
                workdir.join(ODA_DIR).display()
            ))
        }
    };
    let ctx = argv::Context {
        args: req.args,
        outputs_of: req.outputs_of,
        blob_paths: req.blob_paths,
        bundle: &bundle,
        workdir: &workdir,
    };
    // Input files at absolute paths (a store under a relative data dir gives
    // relative ones): the sandbox and containers bind them there.
    let inputs = match req
        .blob_paths
        .values()
        .map(std::path::absolute)
        .collect::<Result<Vec<PathBuf>, _>>()
    {
        Ok(i) => i,
        Err(e) => return failed(format!("cannot make the input paths absolute: {e}")),
    };
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let Prepared {
        argv,
        env,
        container,
    } = match prepare(req.manifest, &ctx, &inputs).await {
        Ok(prepared) => prepared,
        Err(e) => return failed(e),
    };
    if let Executor::Slurm { .. } = &req.manifest.executor {
        return run_slurm(req, (&argv, &env), &workdir, cancel, tail).await;
    }
    let Some(program) = argv.first() else {
        return failed("the argv template is empty");
    };
    let program = match environment::resolve_program(program, environment::path_of(&env), &workdir)
    {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    // A container is isolated by its engine (no network, only the job's
    // paths bound), not by bubblewrap.
    let sandbox = req.sandbox.filter(|_| container.is_none());
    let spawned = match sandbox {
        None => process::spawn(&program, &argv, &env, &workdir),
        Some(sandbox) => {
            let paths = sandbox::JobPaths {
                bundle: &bundle,
                workdir: &workdir,
                inputs: &inputs,
            };
            if !sandbox.shows(&program, &paths) {
                return failed(format!(
                    "`{}` is outside what the sandbox shows (system directories, the bundle, \
                     the job directory, [worker] sandbox_paths); add its installation to \
                     sandbox_paths",
                    program.display()
                ));
            }
            let mut wrapped = vec![sandbox.bwrap.clone().into_os_string()];
            wrapped.extend(sandbox.wrap(&program, argv.get(1..).unwrap_or_default(), &paths));
            process::spawn(&sandbox.bwrap, &wrapped, &env, &workdir)
        }
    };
    let job = match spawned {
        Ok(j) => j,
        Err(e) => return failed(format!("cannot start `{}`: {e}", program.display())),
    };
    let process::Job {
        pid,
        stdout,
        stderr,
        exit: mut exit_rx,
        mut group,
    } = job;
    tracing::debug!(%pid, program = %program.display(), sandboxed = sandbox.is_some(), "job started");

    let pumps = match (
        tokio::process::ChildStdout::from_std(stdout),
        tokio::process::ChildStderr::from_std(stderr),
    ) {
        (Ok(o), Ok(e)) => [
            tokio::spawn(
                logs::pump(o, out_file, tail.clone(), log_lines.clone())
                    .instrument(tracing::debug_span!("job-stdout")),
            ),
            tokio::spawn(
                logs::pump(e, err_file, tail.clone(), log_lines)
                    .instrument(tracing::debug_span!("job-stderr")),
            ),
        ],
        (Err(e), _) | (_, Err(e)) => {
            group.kill();
            return failed(format!("cannot read the job's output pipes: {e}"));
        }
    };

    let timeout = Duration::from_secs(req.manifest.timeout_secs);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut sampler = tokio::time::interval(RSS_SAMPLE_INTERVAL);
    sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampled_rss: u64 = 0;
    let memory_mb = req.manifest.resources.memory_mb;
    let end = loop {
        tokio::select! {
            r = &mut exit_rx => break End::Exited(r.unwrap_or_else(|_| Err("the job's wait thread ended without reporting".into()))),
            () = &mut deadline => break End::TimedOut,
            () = cancel.cancelled() => break End::Cancelled,
            _ = sampler.tick() => {
                if let Some(kib) = process::sample_peak_rss_kib(pid) {
                    sampled_rss = sampled_rss.max(kib);
                }
                let tree = process::tree_rss_kib(pid);
                sampled_rss = sampled_rss.max(tree);
                if over_memory(tree, memory_mb) {
                    break End::OverMemory(tree);
                }
            }
        }
    };
    // Whatever happened, nothing of the job may keep running.
    group.kill();
    let (stopped, exit) = match end {
        End::Exited(r) => (None, Some(r)),
        stop => (Some(stop), reaped(&mut exit_rx).await),
    };
    if exit.is_some() {
        // The group leader is reaped: its id may be reused from now on.
        group.disarm();
    }
    drain(pumps).await;
    match stopped {
        Some(End::OverMemory(kib)) => {
            let usage = Usage {
                cpu_ms: exit.and_then(|e| e.ok()).map_or(0, |e| e.cpu_ms),
                peak_rss_kib: kib,
            };
            return memory_exceeded(memory_mb, kib, usage);
        }
        Some(End::TimedOut) => {
            return failed(format!("timed out after {} s", req.manifest.timeout_secs))
        }
        Some(End::Cancelled) => return failed("cancelled"),
        Some(End::Exited(_)) | None => {}
    }
    let exit = match exit {
        Some(Ok(exit)) => exit,
        Some(Err(e)) => return failed(e),
        None => return failed("the job's exit status was lost"),
    };
    let usage = Usage {
        cpu_ms: exit.cpu_ms,
        peak_rss_kib: exit.max_rss_kib.unwrap_or(sampled_rss),
    };
    if let Some(c) = &container {
        if container::oom_killed(c).await {
            return memory_exceeded(req.manifest.resources.memory_mb, 0, usage);
        }
    }
    judge(req.manifest, &workdir, stdout_path, exit.status, usage)
}

/// The outcome of a job whose main process ended with `status`: exit 0 →
/// its outputs (for `cwl`, first moved into place from cwltool's output
/// object in `stdout_path`); another code → its analysis exception if it
/// wrote one, else a failure.
fn judge(
    manifest: &Manifest,
    workdir: &Path,
    stdout_path: &Path,
    status: process::Status,
    usage: Usage,
) -> RunOutcome {
    match status {
        process::Status::Code(0) => {
            if let Executor::Cwl { .. } = &manifest.executor {
                let placed = std::fs::read_to_string(stdout_path)
                    .map_err(|e| format!("cannot read cwltool's output object: {e}"))
                    .and_then(|object| {
                        let oda = workdir.join(ODA_DIR);
                        cwl::place_outputs(manifest, &object, &oda.join(cwl::OUT_DIR), workdir)
                    });
                if let Err(e) = placed {
                    return failed(e);
                }
            }
            match collect::outputs(manifest, workdir) {
                Ok(outputs) => RunOutcome::Success { outputs, usage },
                Err(e) => failed(e),
            }
        }
        process::Status::Code(code) => match collect::exception(workdir) {
            Ok(Some((kind, message))) => RunOutcome::AnalysisError {
                kind,
                message,
                usage,
            },
            Ok(None) => failed(format!("exited with status {code}")),
            Err(e) => failed(format!(
                "exited with status {code}, and its {EXCEPTION_FILE} is not valid: {e}"
            )),
        },
        process::Status::Signal(sig) => failed(format!(
            "killed by signal {} ({})",
            sig as i32,
            sig.as_str()
        )),
    }
}

/// The analysis error of a job over its `memory_mb` (`held_kib`: what it
/// held when stopped, 0 if unknown).
fn memory_exceeded(memory_mb: u64, held_kib: u64, usage: Usage) -> RunOutcome {
    let held = if held_kib > 0 {
        format!("its processes held {} MiB", held_kib / 1024)
    } else {
        "it used more memory".to_string()
    };
    RunOutcome::AnalysisError {
        kind: MEMORY_EXCEEDED_KIND.into(),
        message: format!(
            "stopped: {held}, over the workflow's resources.memory_mb = {memory_mb}; raise \
             memory_mb in its manifest"
        ),
        usage,
    }
}

/// Whether a process tree holding `rss_kib` is over `memory_mb`.
fn over_memory(rss_kib: u64, memory_mb: u64) -> bool {
    rss_kib > memory_mb.saturating_mul(1024)
}

/// The main process's end after it was killed, if it is reaped within
/// [`KILL_GRACE`] (so that no zombie is left behind).
async fn reaped(
    exit_rx: &mut tokio::sync::oneshot::Receiver<Result<process::Exit, String>>,
) -> Option<Result<process::Exit, String>> {
    tokio::time::timeout(KILL_GRACE, exit_rx).await.ok()?.ok()
}

/// Let the output readers finish; abort them after [`DRAIN_GRACE`].
async fn drain(pumps: [tokio::task::JoinHandle<std::io::Result<u64>>; 2]) {
    for mut pump in pumps {
        match tokio::time::timeout(DRAIN_GRACE, &mut pump).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cannot write the job's log file"),
            Ok(Err(e)) => tracing::warn!(error = %e, "job log reader failed"),
            Err(_) => {
                tracing::warn!(
                    "a process outside the job's group keeps its output open; stopped reading it"
                );
                pump.abort();
            }
        }
    }
}

/// Wall-clock time in Unix milliseconds (0 if the clock is before 1970).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
