//! The tools a user would pick instead of the mesh for many small tasks on a
//! cluster they control, each measured by a Python script on this machine:
//! [`crate::dask`] and [`crate::ray`]. A [`Peer`] runs only when `python3` can
//! import it; the benchmark never installs one.
//!
//! What the peers share lives here: the version check, running the script
//! under a deadline (when it overruns, it and every process it started are
//! killed, so a cluster that hangs at start-up cannot hang the benchmark), and
//! reading the figures it prints.

use std::io::{Read, Seek};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::stats::Latency;

/// The peers, in the order of their columns in the table.
pub const PEERS: [&Peer; 2] = [&crate::dask::DASK, &crate::ray::RAY];

/// How long `import <module>` may take.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(60);
/// A script's deadline: this for starting and stopping the cluster...
const STARTUP_ALLOWANCE: Duration = Duration::from_secs(120);
/// ... plus this per task (Dask needs about 3 ms a task here, Ray 1 ms).
const PER_TASK_ALLOWANCE: Duration = Duration::from_millis(20);

/// A tool measured beside the mesh: the script that measures it, and how the
/// table names it.
#[derive(Debug)]
pub struct Peer {
    /// Its column and row in the table (`Dask distributed`).
    pub name: &'static str,
    /// In cells and ratios (`Dask`, as in `3.1× Dask's`).
    pub short: &'static str,
    /// Its `--only` name and the prefix of its figures in the JSON (`dask`).
    pub key: &'static str,
    /// The module whose import decides whether it runs and whose
    /// `__version__` is reported (`distributed`).
    pub module: &'static str,
    /// How to install it, for the note when it is missing.
    pub install: &'static str,
    /// The cluster the script starts, for the setup cell.
    pub cluster: &'static str,
    /// One round trip, for the cell (`` `submit(f).result()` ``).
    pub round_trip_call: &'static str,
    /// How the batch of no-op tasks is run, for the cell (`map`).
    pub batch_call: &'static str,
    /// The script. Its arguments: sequential tasks, tasks in the batch, and a
    /// scratch directory (removed afterwards); it ends by printing one JSON
    /// line `{"round_trip_ms": [...], "map_seconds": s}`.
    pub script: &'static str,
    /// Environment of the script and of every process it starts.
    pub env: &'static [(&'static str, &'static str)],
}

/// A peer's figures.
#[derive(Debug, Clone, Copy)]
pub struct PeerFigures {
    /// One trivial task at a time, submit to result.
    pub round_trip: Latency,
    /// The batch of no-op tasks, tasks per second.
    pub map_per_sec: f64,
    /// Tasks in the batch.
    pub map_tasks: usize,
}

#[derive(Deserialize)]
struct Raw {
    round_trip_ms: Vec<f64>,
    map_seconds: f64,
}

impl Peer {
    /// The peer's version, or why it cannot be used.
    pub fn available(&self) -> Result<String, String> {
        let check = format!("import {m}; print({m}.__version__)", m = self.module);
        match python(&["-c", &check], self.env, IMPORT_TIMEOUT) {
            Ok(out) if out.status.success() => Ok(out.stdout.trim().to_string()),
            Ok(out) if out.stderr.contains("ModuleNotFoundError") => Err(format!(
                "{} is not installed (`{}`)",
                self.name, self.install
            )),
            Ok(out) => Err(format!(
                "`import {}` failed: {}",
                self.module,
                tail(&out.stderr, 1)
            )),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// Run the script: `tasks` sequential round trips, then a batch of
    /// `map_tasks` no-op tasks.
    pub fn measure(&self, tasks: usize, map_tasks: usize) -> anyhow::Result<PeerFigures> {
        let scratch = tempfile::Builder::new()
            .prefix("oda-bench-")
            .tempdir()
            .context("cannot create a scratch directory")?;
        let scratch_path = scratch.path().to_str().context("non-UTF-8 temp dir")?;
        let timeout = STARTUP_ALLOWANCE + PER_TASK_ALLOWANCE * (tasks + map_tasks) as u32;
        let (n, m) = (tasks.to_string(), map_tasks.to_string());
        let out = python(
            &["-c", self.script, &n, &m, scratch_path],
            self.env,
            timeout,
        )
        .with_context(|| format!("the {} script", self.short))?;
        if !out.status.success() {
            bail!(
                "the {} script failed ({}): {}",
                self.short,
                out.status,
                tail(&out.stderr, 20)
            );
        }
        let line = out
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("the {} script printed no result", self.short))?;
        let raw: Raw = serde_json::from_str(line)
            .with_context(|| format!("the {} script's result", self.short))?;
        let samples: Vec<Duration> = raw
            .round_trip_ms
            .iter()
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
            .collect();
        Ok(PeerFigures {
            round_trip: Latency::of(&samples)
                .with_context(|| format!("no {} samples", self.short))?,
            map_per_sec: map_tasks as f64 / raw.map_seconds.max(1e-9),
            map_tasks,
        })
    }
}

/// How a `python3` run ended.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run `python3 args` with `env` added, killing it and every process it
/// started once `timeout` has passed. Its output goes to files, not pipes,
/// so that a process it leaves behind cannot keep us waiting for their end.
fn python(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> anyhow::Result<Finished> {
    let mut stdout = tempfile::tempfile().context("cannot create a temp file")?;
    let mut stderr = tempfile::tempfile().context("cannot create a temp file")?;
    let mut child = Command::new("python3")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        // Left in our process group, so that Ctrl-C stops the cluster too.
        .spawn()
        .context("python3 not runnable")?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for python3")? {
            break status;
        }
        if Instant::now() >= deadline {
            kill_tree(child.id());
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "python3 did not finish within {} s; killed it and every process it started",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |f: &mut std::fs::File| -> anyhow::Result<String> {
        let mut bytes = Vec::new();
        f.rewind()?;
        f.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    Ok(Finished {
        status,
        stdout: read(&mut stdout).context("reading python3's output")?,
        stderr: read(&mut stderr).context("reading python3's output")?,
    })
}

/// SIGKILL `pid` and every descendant of it, found through their parents
/// (for Ray: GCS, raylet, agents, and workers, which even leave the process
/// group). `pid` must not have been reaped yet.
fn kill_tree(pid: u32) {
    let parents = parents();
    let mut victims = vec![pid.to_string()];
    let mut todo = vec![pid];
    while let Some(parent) = todo.pop() {
        for &(child, _) in parents.iter().filter(|&&(_, p)| p == parent) {
            victims.push(child.to_string());
            todo.push(child);
        }
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .args(&victims)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Every process and its parent, from `/proc/<pid>/stat`.
fn parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may contain anything but ')'.
            let ppid = stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?;
            Some((pid, ppid.parse().ok()?))
        })
        .collect()
}

/// The last `n` lines of `s`, trimmed.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_python() -> bool {
        Command::new("python3")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn a_missing_module_is_a_skip_note() {
        if !has_python() {
            return;
        }
        let peer = Peer {
            module: "oda_bench_no_such_module",
            ..crate::dask::DASK
        };
        let why = peer.available().unwrap_err();
        assert!(
            why.contains("is not installed") && why.contains("pip install"),
            "{why}"
        );
    }

    #[test]
    fn a_script_past_its_deadline_is_killed_with_what_it_started() {
        if !has_python() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // A grandchild that leaves the process group, as Ray's workers do.
        let script = "import subprocess, sys, time\n\
             p = subprocess.Popen([sys.executable, '-c', \
             'import os, time; os.setpgid(0, 0); time.sleep(60)'])\n\
             open(sys.argv[1], 'w').write(str(p.pid))\n\
             time.sleep(60)\n";
        let t = Instant::now();
        let err = python(
            &["-c", script, pid_file.to_str().unwrap()],
            &[],
            Duration::from_secs(2),
        )
        .err()
        .expect("past its deadline");
        assert!(err.to_string().contains("did not finish"), "{err:#}");
        assert!(t.elapsed() < Duration::from_secs(10));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
        };
        let end = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(), "the grandchild {pid} outlived the deadline");
    }
}
