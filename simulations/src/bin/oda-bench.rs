//! `oda-bench`: the ODA mesh measured on this machine, next to the physical
//! limits measured in the same run and to Dask distributed and Ray (each when
//! installed).
//!
//! ```text
//! cargo build --release -p oda-node          # for the idle-node figures
//! cargo run --release -p oda-simulations --bin oda-bench [-- --quick] [-- --only NAME]
//! ```
//!
//! Prints a Markdown table, writes `target/oda-bench.json`, and (on a full run
//! of every benchmark) replaces the generated section of `docs/benchmarks.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use oda_simulations::report;
use oda_simulations::suite::{self, NAMES};
use oda_simulations::Sizes;

const USAGE: &str = "usage: oda-bench [--quick] [--only NAME] [--burst N] [--flood-rate N] [--no-docs]

  --quick      tiny sizes (seconds; CI smoke), never written to the docs
  --only NAME  run one benchmark: fork, blob, cache, gossip, jobs, throughput, flood, idle, loaded, dask, ray
  --burst N    jobs submitted at once in the throughput benchmark (default 5000)
  --flood-rate N  adverts per second of the flooder in the flood benchmark (default 1000)
  --no-docs    do not update docs/benchmarks.md (a full run does otherwise)

Logs: ODA_LOG=debug (tracing env filter) prints the nodes' logs to stderr;
ODA_BENCH_TRACE=1 prints per-message gossip arrival times.";

struct Args {
    quick: bool,
    only: Option<String>,
    burst: Option<usize>,
    flood_rate: Option<u64>,
    docs: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut out = Args {
        quick: false,
        only: None,
        burst: None,
        flood_rate: None,
        docs: true,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => out.quick = true,
            "--no-docs" => out.docs = false,
            "--only" => {
                let name = args.next().context("--only needs a benchmark name")?;
                if !NAMES.contains(&name.as_str()) {
                    bail!("unknown benchmark {name:?}; one of: {}", NAMES.join(", "));
                }
                out.only = Some(name);
            }
            "--burst" => {
                let n = args.next().context("--burst needs a number of jobs")?;
                out.burst = Some(n.parse().with_context(|| format!("--burst {n:?}"))?);
            }
            "--flood-rate" => {
                let n = args
                    .next()
                    .context("--flood-rate needs adverts per second")?;
                let rate: u64 = n.parse().with_context(|| format!("--flood-rate {n:?}"))?;
                if rate == 0 {
                    bail!("--flood-rate must be at least 1");
                }
                out.flood_rate = Some(rate);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(out)
}

/// `target/` of this build: the executable is `target/<profile>/oda-bench`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn main() -> ExitCode {
    if let Ok(filter) = std::env::var("ODA_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = parse(std::env::args().skip(1))?;
    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(n) = args.burst {
        sizes.burst_jobs = n;
    }
    if let Some(rate) = args.flood_rate {
        sizes.flood_rate = rate;
    }
    let mut command = "cargo run --release -p oda-simulations --bin oda-bench".to_string();
    let extra: Vec<String> = std::env::args().skip(1).collect();
    if !extra.is_empty() {
        command = format!("{command} -- {}", extra.join(" "));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let started = std::time::Instant::now();
    let run = runtime.block_on(suite::run(&sizes, args.only.as_deref(), command, |what| {
        eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
    }));
    eprintln!("[{:>6.1} s] done", started.elapsed().as_secs_f64());
    // Dropping the runtime stops every peer's tasks; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));

    let section = run.markdown();
    println!("{section}");
    let json_path = target_dir().join("oda-bench.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&run)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    eprintln!("wrote {}", json_path.display());
    if args.docs && !args.quick && args.only.is_none() {
        let doc = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/benchmarks.md"
        ));
        report::update_doc(&doc, &section)?;
        eprintln!("updated {}", doc.display());
    }
    Ok(())
}
