//! The tool a user would pick instead for many small tasks: Dask distributed,
//! a `LocalCluster` with 2 worker processes on this machine. Used only when
//! `python3 -c "import distributed"` works; the benchmark never installs it
//! (`pip install 'dask[distributed]'` does).

use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::stats::Latency;

/// Dask's figures.
#[derive(Debug, Clone, Copy)]
pub struct DaskFigures {
    /// `client.submit(f).result()`, one at a time.
    pub round_trip: Latency,
    /// `client.gather(client.map(f, range(n)))`, tasks per second.
    pub map_per_sec: f64,
    /// Tasks in the map.
    pub map_tasks: usize,
}

/// Dask's version, or why it cannot be used.
pub fn available() -> Result<String, String> {
    let out = Command::new("python3")
        .args(["-c", "import distributed; print(distributed.__version__)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err("Dask distributed is not installed (`pip install 'dask[distributed]'`)".into())
    }
}

const SCRIPT: &str = r#"
import json, sys, time, logging
from distributed import Client, LocalCluster

def nothing(_=None):
    return None

def main(tasks, map_tasks):
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster, \
         Client(cluster) as client:
        for _ in range(20):  # warm-up: function shipped, workers connected
            client.submit(nothing, pure=False).result()
        rt = []
        for _ in range(tasks):
            t = time.perf_counter()
            client.submit(nothing, pure=False).result()
            rt.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        client.gather(client.map(nothing, range(map_tasks), pure=False))
        elapsed = time.perf_counter() - t
    print(json.dumps({"round_trip_ms": rt, "map_seconds": elapsed}))

if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
"#;

#[derive(Deserialize)]
struct Raw {
    round_trip_ms: Vec<f64>,
    map_seconds: f64,
}

/// Run the Dask side: `tasks` sequential round trips, then a map of `map_tasks`.
pub fn measure(tasks: usize, map_tasks: usize) -> anyhow::Result<DaskFigures> {
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(tasks.to_string())
        .arg(map_tasks.to_string())
        .stdin(Stdio::null())
        .output()
        .context("cannot run python3")?;
    if !out.status.success() {
        bail!(
            "the Dask script failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the Dask script printed no result")?;
    let raw: Raw = serde_json::from_str(line).context("the Dask script's result")?;
    let samples: Vec<std::time::Duration> = raw
        .round_trip_ms
        .iter()
        .map(|ms| std::time::Duration::from_secs_f64(ms / 1e3))
        .collect();
    Ok(DaskFigures {
        round_trip: Latency::of(&samples).context("no Dask samples")?,
        map_per_sec: map_tasks as f64 / raw.map_seconds.max(1e-9),
        map_tasks,
    })
}
