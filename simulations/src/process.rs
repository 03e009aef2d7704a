//! Process-level figures: the machine's fork/exec ceiling (the physical limit
//! of any system that runs each job as a process) and an idle `oda-node`'s
//! memory and start-up time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::stats::Latency;

/// CPU time (user + system) this process has used so far, in seconds (from
/// `/proc/self/stat`, clock ticks of 1/100 s; `None` where unavailable).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Measures this process's CPU use from creation to [`CpuMeter::percent`].
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter(Option<f64>, Instant);

impl CpuMeter {
    /// Start measuring.
    pub fn start() -> Self {
        Self(cpu_seconds(), Instant::now())
    }

    /// CPU used since the start, in % of one core (0 where unavailable).
    pub fn percent(&self) -> f64 {
        match (self.0, cpu_seconds()) {
            (Some(a), Some(b)) => (b - a) * 100.0 / self.1.elapsed().as_secs_f64().max(1e-9),
            _ => 0.0,
        }
    }
}

/// Spawns of `true` per second: one loop, and `parallel` loops at once.
#[derive(Debug, Clone, Copy)]
pub struct ForkExec {
    /// One loop, spawn and wait, per second.
    pub sequential_per_sec: f64,
    /// All loops together, per second.
    pub parallel_per_sec: f64,
    /// Loops in the parallel run.
    pub parallel: usize,
    /// Latency of one spawn-and-wait in the sequential loop.
    pub latency: Latency,
}

fn spawn_loop(secs: f64) -> anyhow::Result<Vec<Duration>> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut samples = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        let status = Command::new("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run `true`")?;
        if !status.success() {
            bail!("`true` exited with {status}");
        }
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Run `true` in a loop for `secs` seconds, then in `parallel` threads at once.
pub fn fork_exec(secs: f64, parallel: usize) -> anyhow::Result<ForkExec> {
    let t = Instant::now();
    let seq = spawn_loop(secs)?;
    let sequential_per_sec = seq.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let handles: Vec<_> = (0..parallel)
        .map(|_| std::thread::spawn(move || spawn_loop(secs)))
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("a spawn loop panicked"))??
            .len();
    }
    Ok(ForkExec {
        sequential_per_sec,
        parallel_per_sec: total as f64 / t.elapsed().as_secs_f64(),
        parallel,
        latency: Latency::of(&seq).context("no spawns")?,
    })
}

/// An idle `oda-node`: resident memory after `idle` and time to ready.
#[derive(Debug, Clone)]
pub struct IdleNode {
    /// Spawn of `oda-node run` → `node.json` lists a listen address.
    pub ready: Duration,
    /// VmRSS after sitting idle, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS) at the same time, KiB.
    pub peak_kib: u64,
}

/// The `oda-node` binary next to this executable (the same cargo profile
/// directory), else in a sibling profile directory of the same target dir.
pub fn find_node_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?.to_path_buf();
    // Test binaries live one level down, in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let name = format!("oda-node{}", std::env::consts::EXE_SUFFIX);
    let here = dir.join(&name);
    if here.is_file() {
        return Some(here);
    }
    let target = dir.parent()?;
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join(&name))
        .find(|p| p.is_file())
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Kills the child when dropped, so a failed measurement leaves nothing behind.
pub(crate) struct Reaper(std::process::Child);

impl Reaper {
    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `oda-node init --network bench` in `dir/node`, with the API on a free
/// loopback port; the data dir.
pub(crate) fn init_node(binary: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let data = dir.join("node");
    let out = Command::new(binary)
        .arg("--data-dir")
        .arg(&data)
        .args(["init", "--network", "bench"])
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "`oda-node init` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Loopback only: the API's fixed default port may be taken on a shared machine.
    let config = data.join("config.toml");
    let text = std::fs::read_to_string(&config).context("read config.toml")?;
    std::fs::write(&config, text.replace("127.0.0.1:5801", "127.0.0.1:0"))
        .context("write config.toml")?;
    Ok(data)
}

/// `oda-node run` on `data`, listening on loopback (port 0); returns once
/// `node.json` lists an address, with the time that took.
pub(crate) fn run_node(binary: &Path, data: &Path) -> anyhow::Result<(Reaper, Duration)> {
    let t = Instant::now();
    let child = Command::new(binary)
        .arg("--data-dir")
        .arg(data)
        .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .env("ODA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start `oda-node run`")?;
    let mut child = Reaper(child);
    let runtime_file = data.join("node.json");
    loop {
        if let Ok(text) = std::fs::read_to_string(&runtime_file) {
            let listening = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("listen")?.as_array().map(|a| !a.is_empty()))
                .unwrap_or(false);
            if listening {
                return Ok((child, t.elapsed()));
            }
        }
        if let Some(status) = child.0.try_wait()? {
            bail!("`oda-node run` exited early with {status}");
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("`oda-node run` wrote no node.json with an address within 60 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Resident and peak memory of a process, KiB.
pub(crate) fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let rss = status_kib(pid, "VmRSS:").context("cannot read VmRSS")?;
    Ok((rss, status_kib(pid, "VmHWM:").unwrap_or(rss)))
}

/// `oda-node init` then `run` in a temp dir with network id `bench`, listening
/// on loopback only (port 0, API on port 0); time until `node.json` lists an
/// address, then RSS after `idle`.
pub fn idle_node(binary: &Path, idle: Duration) -> anyhow::Result<IdleNode> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let data = init_node(binary, dir.path())?;
    let (child, ready) = run_node(binary, &data)?;
    std::thread::sleep(idle);
    let (rss_kib, peak_kib) = memory_kib(child.pid())?;
    drop(child);
    Ok(IdleNode {
        ready,
        rss_kib,
        peak_kib,
    })
}
