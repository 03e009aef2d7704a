//! Starting a job process in its own process group, waiting for it without
//! blocking the async runtime, killing its whole group, and measuring what it
//! used.
//!
//! **Process group.** The job's main process is started with `process_group(0)`,
//! so it leads a new group that its children join by default. "Kill the job"
//! means `SIGKILL` to the whole group (`kill(-pgid)`), which also reaches
//! grandchildren. A descendant that moves to another group or session (`setsid`)
//! escapes this; a sandbox (cgroups, bubblewrap) is the remedy, not this module.
//!
//! **Waiting.** A dedicated thread waits with `waitid(WEXITED | WNOWAIT)`, which
//! reports the exit but leaves the process a zombie. While the zombie exists its
//! pid and process group id cannot be reused, so killing the group after the
//! main process exited still hits only the job's processes. Then the thread
//! reaps it.
//!
//! **Usage.** There is no safe `wait4` (the workspace forbids `unsafe`), so CPU
//! time is measured as the change of `getrusage(RUSAGE_CHILDREN)` across the
//! reap, with a process-wide lock around the reap so that two jobs never reap at
//! once. It counts the main process and every descendant that was waited for by
//! its parent inside the job (user + system time). Descendants killed with the
//! group are reaped by init and not counted. Another part of the node reaping a
//! child of its own within the same microseconds would be counted too (nothing
//! in the node does). Peak RSS: `RUSAGE_CHILDREN`'s `ru_maxrss` is the largest
//! of any reaped child of the node, so it is exact only when the job set a new
//! record; otherwise the largest `VmHWM` of the main process sampled from
//! `/proc` during the run is used, a lower bound (0 if the job ended before the
//! first sample).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::resource::{getrusage, Usage as RUsage, UsageWho};
use nix::sys::signal::{killpg, Signal};
use nix::sys::time::TimeValLike;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// Held while reaping a job, so that `RUSAGE_CHILDREN` deltas belong to one job.
static REAP_LOCK: Mutex<()> = Mutex::new(());

/// How the main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(Signal),
}

/// The main process's end, with what the job used.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exit {
    pub status: Status,
    /// CPU time (user + system) of the reaped process tree, milliseconds.
    pub cpu_ms: u64,
    /// `ru_maxrss` of the reaped tree in KiB, when it is known to be the job's.
    pub max_rss_kib: Option<u64>,
}

/// A started job.
pub(super) struct Job {
    pub pid: Pid,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    /// Resolves when the main process has ended and been reaped.
    pub exit: oneshot::Receiver<Result<Exit, String>>,
    /// Kills the group when dropped.
    pub group: GroupGuard,
}

/// Kills the job's process group (with `SIGKILL`) on [`GroupGuard::kill`] and
/// when dropped, unless disarmed. Dropping the `run` future therefore never
/// leaves a job running.
pub(super) struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl GroupGuard {
    /// `SIGKILL` to every process in the group. A group that no longer exists is
    /// not an error.
    pub(super) fn kill(&self) {
        if !self.armed {
            return;
        }
        match killpg(self.pgid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid = %self.pgid, error = %e, "cannot kill the job's process group")
            }
        }
    }

    /// Stop guarding: the group is gone and its id may be reused.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start `program` with `argv` (argv\[0\] as the program sees it), exactly
/// `env`, in `cwd`, stdin from `/dev/null`, stdout and stderr piped, leading a
/// new process group.
pub(super) fn spawn(
    program: &Path,
    argv: &[OsString],
    env: &[(OsString, OsString)],
    cwd: &Path,
) -> std::io::Result<Job> {
    let mut cmd = Command::new(program);
    if let Some((arg0, rest)) = argv.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(std::io::Error::other)?);
    let mut group = GroupGuard {
        pgid: pid,
        armed: true,
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        group.kill();
        let _ = reap(pid);
        group.disarm();
        return Err(std::io::Error::other(
            "the job's output pipes were not created",
        ));
    };
    // `child` is dropped without waiting: the thread below reaps the process.
    drop(child);
    let (tx, exit) = oneshot::channel();
    let waiter = std::thread::Builder::new()
        .name(format!("oda-job-wait-{pid}"))
        .spawn(move || {
            let _ = tx.send(wait_and_reap(pid));
        });
    if let Err(e) = waiter {
        group.kill();
        let _ = reap(pid);
        group.disarm();
        return Err(std::io::Error::other(format!(
            "cannot start a thread to wait for the job: {e}"
        )));
    }
    Ok(Job {
        pid,
        stdout,
        stderr,
        exit,
        group,
    })
}

/// Block until `pid` exits, then reap it under [`REAP_LOCK`] and measure.
fn wait_and_reap(pid: Pid) -> Result<Exit, String> {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("cannot wait for the job's process {pid}: {e}")),
        }
    }
    reap(pid)
}

/// Reap the (already exited, or killed) process `pid` and measure its usage.
fn reap(pid: Pid) -> Result<Exit, String> {
    let _lock = REAP_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = getrusage(UsageWho::RUSAGE_CHILDREN).ok();
    let status = loop {
        match waitpid(pid, None) {
            Ok(s) => break s,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("cannot reap the job's process {pid}: {e}")),
        }
    };
    let after = getrusage(UsageWho::RUSAGE_CHILDREN).ok();
    let status = match status {
        WaitStatus::Exited(_, code) => Status::Code(code),
        WaitStatus::Signaled(_, sig, _) => Status::Signal(sig),
        other => return Err(format!("unexpected wait status of the job: {other:?}")),
    };
    let (cpu_ms, max_rss_kib) = match (before, after) {
        (Some(b), Some(a)) => (
            cpu_ms(&a).saturating_sub(cpu_ms(&b)),
            (a.max_rss() > b.max_rss()).then(|| u64::try_from(a.max_rss()).unwrap_or(0)),
        ),
        _ => (0, None),
    };
    Ok(Exit {
        status,
        cpu_ms,
        max_rss_kib,
    })
}

fn cpu_ms(u: &RUsage) -> u64 {
    let ms = u.user_time().num_milliseconds() + u.system_time().num_milliseconds();
    u64::try_from(ms).unwrap_or(0)
}

/// The main process's peak resident set size so far (`VmHWM`), in KiB, if
/// readable.
pub(super) fn sample_peak_rss_kib(pid: Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmHWM:")
}

/// A `kB` field of a `/proc/<pid>/status` text.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// At most this many processes are summed by [`tree_rss_kib`] (a fork bomb
/// is not walked to its end; the group is killed with the job anyway).
const MAX_TREE: usize = 4096;

/// The resident set size of `pid` and every descendant now, in KiB (the
/// children of each thread from `/proc/<pid>/task/<tid>/children`). A
/// process that exits meanwhile counts 0.
pub(super) fn tree_rss_kib(pid: Pid) -> u64 {
    let mut todo = vec![pid.as_raw()];
    let mut total = 0u64;
    let mut seen = 0usize;
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > MAX_TREE {
            break;
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            total += status_kib(&status, "VmRSS:").unwrap_or(0);
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                todo.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<i32>().ok()),
                );
            }
        }
    }
    total
}

/// Run `program` with `args` to its end, ignoring its output and outcome:
/// the clean-up of drop guards (`scancel`, removing a container), which
/// cannot report anything.
pub(super) fn run_quietly(program: &std::ffi::OsStr, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
