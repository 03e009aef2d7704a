//! The whole benchmark run: which measurements, in which order, and how their
//! figures become table rows. `oda-bench` and the smoke test both call [`run`].

use std::time::Duration;

use crate::report::{Machine, Outcome, Run};
use crate::stats::{ms, rate};
use crate::{blob, cache, dask, gossip, jobs, process, Sizes};

/// Selectable benchmarks, in run order (`--only NAME`).
pub const NAMES: &[&str] = &[
    "fork",
    "blob",
    "cache",
    "gossip",
    "jobs",
    "throughput",
    "idle",
    "dask",
];

/// Whether `name` runs under the selection `only`. The fork/exec ceiling is
/// the physical limit of the job benchmarks, so it runs with them.
fn selected(only: Option<&str>, name: &str) -> bool {
    match only {
        None => true,
        Some(o) if o == name => true,
        Some(o) => name == "fork" && (o == "jobs" || o == "throughput"),
    }
}

fn failed(name: &str, e: &anyhow::Error) -> Outcome {
    let mut o = Outcome::new(name, "");
    o.mesh = "failed".into();
    o.notes.push(format!("{e:#}"));
    o
}

/// Run the selected benchmarks with `sizes`, reporting progress through `say`.
pub async fn run(sizes: &Sizes, only: Option<&str>, command: String, say: impl Fn(&str)) -> Run {
    let quick = sizes.quick;
    let load_before = crate::report::load_average();
    let mut results = Vec::new();

    let fork = if selected(only, "fork") {
        say("fork/exec ceiling");
        let secs = sizes.fork_secs;
        tokio::task::spawn_blocking(move || process::fork_exec(secs, 2))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r)
            .map_err(|e| say(&format!("fork/exec failed: {e:#}")))
            .ok()
    } else {
        None
    };
    let dask_figures = if selected(only, "dask") {
        say("Dask distributed");
        match dask::available() {
            Ok(version) => {
                let (n, m) = (sizes.dask_tasks, sizes.dask_map);
                match tokio::task::spawn_blocking(move || dask::measure(n, m)).await {
                    Ok(Ok(d)) => Some((version, d)),
                    Ok(Err(e)) => {
                        results.push(failed("Dask distributed", &e));
                        None
                    }
                    Err(e) => {
                        results.push(failed("Dask distributed", &e.into()));
                        None
                    }
                }
            }
            Err(why) => {
                results.push(Outcome::skipped("Dask distributed", why));
                None
            }
        }
    } else {
        None
    };

    if selected(only, "cache") {
        say("remote cache hit and cold lookup");
        match cache::measure(sizes).await {
            Ok(f) => results.extend(cache::outcomes(sizes, &f)),
            Err(e) => results.push(failed("remote cache hit", &e)),
        }
    }

    if selected(only, "jobs") {
        say("trivial job round trip");
        match jobs::round_trip(sizes.workers, sizes.sequential_jobs).await {
            Ok(rt) => results.push(round_trip_row(
                sizes,
                &rt,
                fork.as_ref(),
                dask_figures.as_ref(),
            )),
            Err(e) => results.push(failed("trivial job round trip", &e)),
        }
    }

    if selected(only, "throughput") {
        say("throughput: all at once");
        let deadline = Duration::from_secs(if quick { 60 } else { 600 });
        match jobs::throughput(sizes.workers, sizes.burst_jobs, sizes.burst_jobs, deadline).await {
            Ok(t) => results.push(throughput_row(
                "throughput, all at once",
                &t,
                sizes.workers,
                fork.as_ref(),
                dask_figures.as_ref(),
            )),
            Err(e) => results.push(failed("throughput, all at once", &e)),
        }
        let window_jobs = (sizes.burst_jobs / 5).max(4);
        let in_flight = jobs::SLOTS as usize;
        say(&format!(
            "throughput: {window_jobs} jobs, at most {in_flight} in flight"
        ));
        let deadline = Duration::from_secs(if quick { 60 } else { 150 });
        match jobs::throughput(sizes.workers, window_jobs, in_flight, deadline).await {
            Ok(t) => results.push(throughput_row(
                &format!("throughput, ≤ {in_flight} in flight"),
                &t,
                sizes.workers,
                fork.as_ref(),
                dask_figures.as_ref(),
            )),
            Err(e) => results.push(failed("throughput, windowed", &e)),
        }
    }

    if selected(only, "blob") {
        say("verified blob transfer");
        match blob::measure(sizes.blob_bytes).await {
            Ok(t) => results.push(blob_row(&t)),
            Err(e) => results.push(failed("verified blob transfer", &e)),
        }
    }

    if selected(only, "gossip") {
        for &n in &sizes.gossip_nodes {
            say(&format!("gossip propagation, {n} nodes"));
            let name = format!("gossip propagation, {n} nodes");
            match gossip::measure(n, sizes.gossip_messages).await {
                Ok(p) => results.push(gossip_row(&name, &p)),
                Err(e) => results.push(failed(&name, &e)),
            }
        }
    }

    if selected(only, "idle") {
        say("idle node");
        results.push(match process::find_node_binary() {
            None => Outcome::skipped(
                "idle node",
                "no oda-node binary next to this one: `cargo build --release -p oda-node` first",
            ),
            Some(bin) => {
                let idle = Duration::from_secs_f64(sizes.idle_secs);
                match tokio::task::spawn_blocking(move || process::idle_node(&bin, idle)).await {
                    Ok(Ok(n)) => idle_row(&n, idle),
                    Ok(Err(e)) => failed("idle node", &e),
                    Err(e) => failed("idle node", &e.into()),
                }
            }
        });
    }

    if let (Some((version, d)), true) = (&dask_figures, only == Some("dask")) {
        let mut o = Outcome::new(
            "Dask distributed",
            format!("{version}, LocalCluster, 2 worker processes"),
        );
        o.peer = format!(
            "{}; map of {}: {} tasks/s",
            d.round_trip.brief(),
            d.map_tasks,
            rate(d.map_per_sec)
        );
        dask_figures_into(&mut o, d);
        results.push(o);
    }

    Run {
        date: crate::report::today(),
        machine: Machine::detect(),
        quick,
        command,
        load_average: (load_before, crate::report::load_average()),
        results,
    }
}

fn dask_figures_into(o: &mut Outcome, d: &dask::DaskFigures) {
    o.figure("dask_p50", d.round_trip.p50_ms, "ms")
        .figure("dask_p99", d.round_trip.p99_ms, "ms")
        .figure("dask_map_tasks_per_s", d.map_per_sec, "tasks/s");
}

fn round_trip_row(
    sizes: &Sizes,
    rt: &jobs::RoundTrip,
    fork: Option<&process::ForkExec>,
    dask: Option<&(String, dask::DaskFigures)>,
) -> Outcome {
    let mut o = Outcome::new(
        "trivial job round trip",
        format!(
            "1 requester, {} workers × {} slots; `touch out`; {} sequential jobs, each a new expression; the node's default scheduler settings (offer window {} ms, cut short for an offer that only a running worker could beat)",
            sizes.workers, jobs::SLOTS, rt.latency.n, rt.offer_window_ms
        ),
    );
    o.mesh = rt.latency.brief();
    o.figure("p50", rt.latency.p50_ms, "ms")
        .figure("p99", rt.latency.p99_ms, "ms")
        .figure("lookup_miss_p50", rt.lookup_miss.p50_ms, "ms")
        .figure("publish_fact_p50", rt.publish_fact.p50_ms, "ms")
        .figure("offer_window", rt.offer_window_ms as f64, "ms")
        .figure("cpu", rt.cpu_percent, "% of a core");
    if let Some(f) = fork {
        o.limit = format!("fork/exec of `true`: p50 {} ms", ms(f.latency.p50_ms));
        o.figure("fork_exec_p50", f.latency.p50_ms, "ms");
    }
    if let Some((version, d)) = dask {
        o.peer = format!(
            "{} (Dask {version}, `submit(f).result()`)",
            d.round_trip.brief()
        );
        o.ratio = format!("p50 {:.1}× Dask's", rt.latency.p50_ms / d.round_trip.p50_ms);
        dask_figures_into(&mut o, d);
    }
    o.notes.push(format!(
        "where the time goes (measured on the same mesh): cache check of a new expression \
         (`lookup_facts_until`, a miss: both DHT queries run to their end) p50 {} ms; the offer window: \
         a job without inputs waits after the first trusted offer as long again as it took (at \
         least 5 ms) for a worker already running it; the full {} ms applies only when locality \
         is in question; the worker's `publish_fact` before `Done` p50 {} ms; the rest is gossip of the advert, \
         offer/assign/done request-responses, the run, fact signing and sled writes; \
         the process (all nodes) used {:.0} % of a core",
        ms(rt.lookup_miss.p50_ms),
        rt.offer_window_ms,
        ms(rt.publish_fact.p50_ms),
        rt.cpu_percent
    ));
    o
}

fn throughput_row(
    name: &str,
    t: &jobs::Throughput,
    workers: usize,
    fork: Option<&process::ForkExec>,
    dask: Option<&(String, dask::DaskFigures)>,
) -> Outcome {
    let mut o = Outcome::new(
        name,
        format!(
            "{} trivial jobs, at most {} in flight; 1 requester, {} workers × {} slots",
            t.submitted,
            t.in_flight,
            workers,
            jobs::SLOTS
        ),
    );
    let jps = t.jobs_per_sec();
    o.mesh = format!(
        "{} jobs/s ({} done, {} failed, {} unfinished in {:.1} s)",
        rate(jps),
        t.done,
        t.failed,
        t.unfinished,
        t.elapsed.as_secs_f64()
    );
    o.figure("jobs_per_s", jps, "jobs/s")
        .figure("done", t.done as f64, "jobs")
        .figure("failed", t.failed as f64, "jobs")
        .figure("unfinished", t.unfinished as f64, "jobs")
        .figure("elapsed", t.elapsed.as_secs_f64(), "s")
        .figure("cpu", t.cpu_percent, "% of a core");
    o.notes.push(format!(
        "the process (every node) used {:.0} % of a core meanwhile",
        t.cpu_percent
    ));
    if let Some(f) = fork {
        o.limit = format!(
            "fork/exec of `true`: {}/s sequential, {}/s with {} in parallel",
            rate(f.sequential_per_sec),
            rate(f.parallel_per_sec),
            f.parallel
        );
        o.figure("fork_exec_seq_per_s", f.sequential_per_sec, "spawns/s")
            .figure("fork_exec_par_per_s", f.parallel_per_sec, "spawns/s");
        let limit = f.parallel_per_sec.max(f.sequential_per_sec);
        o.ratio = format!("{:.3} of fork/exec", jps / limit);
    }
    if let Some((version, d)) = dask {
        o.peer = format!(
            "{} tasks/s (Dask {version}, map of {} no-op tasks)",
            rate(d.map_per_sec),
            d.map_tasks
        );
        let vs = format!("{:.3}× Dask's", jps / d.map_per_sec);
        o.ratio = if o.ratio.is_empty() {
            vs
        } else {
            format!("{}; {vs}", o.ratio)
        };
        dask_figures_into(&mut o, d);
    }
    if let Some(e) = &t.first_error {
        o.notes.push(format!("first failure: {e}"));
    }
    o
}

fn blob_row(t: &blob::Transfer) -> Outcome {
    let mut o = Outcome::new(
        "verified blob transfer",
        format!(
            "{} MiB between two peers, `fetch_blob_from` (noise, yamux, 1 MiB ranges × 8, BLAKE3, fsync)",
            t.bytes >> 20
        ),
    );
    o.mesh = format!("{} MiB/s", rate(t.mesh_mib_s));
    o.limit = format!(
        "raw loopback TCP: {} MiB/s; disk write + fsync: {} MiB/s",
        rate(t.tcp_mib_s),
        rate(t.disk_mib_s)
    );
    let limit = t.tcp_mib_s.min(t.disk_mib_s);
    o.ratio = format!("{:.2} of the lower limit", t.mesh_mib_s / limit);
    o.figure("mib_per_s", t.mesh_mib_s, "MiB/s")
        .figure("tcp_mib_per_s", t.tcp_mib_s, "MiB/s")
        .figure("disk_mib_per_s", t.disk_mib_s, "MiB/s")
        .figure("blake3_mib_per_s", t.blake3_mib_s, "MiB/s");
    o.notes.push(format!(
        "same run: BLAKE3 on one core {} MiB/s",
        rate(t.blake3_mib_s)
    ));
    o
}

fn gossip_row(name: &str, p: &gossip::Propagation) -> Outcome {
    let mut o = Outcome::new(
        name,
        format!(
            "{} peers in one process, each dials the bootstrap and 3 random others; {} fact announcements",
            p.nodes, p.all.n
        ),
    );
    o.mesh = format!(
        "every peer: {}; one peer: p50 {} ms",
        p.all.brief(),
        ms(p.each.p50_ms)
    );
    o.limit = format!(
        "process CPU with the mesh idle: {:.0} % of a core ({:.1} connections per peer)",
        p.idle_cpu_percent, p.mean_connections
    );
    o.figure("all_p50", p.all.p50_ms, "ms")
        .figure("idle_cpu", p.idle_cpu_percent, "% of a core")
        .figure("connections_per_peer", p.mean_connections, "connections")
        .figure("all_p99", p.all.p99_ms, "ms")
        .figure("each_p50", p.each.p50_ms, "ms")
        .figure("each_p99", p.each.p99_ms, "ms");
    o
}

fn idle_row(n: &process::IdleNode, idle: Duration) -> Outcome {
    let profile = n
        .binary
        .parent()
        .and_then(|p| p.file_name())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut o = Outcome::new(
        "idle node",
        format!(
            "`oda-node init` + `run` ({profile} build), network `bench`, loopback, no peers; RSS after {:.1} s idle",
            idle.as_secs_f64()
        ),
    );
    o.mesh = format!(
        "RSS {:.1} MiB (peak {:.1} MiB); ready in {} ms",
        n.rss_kib as f64 / 1024.0,
        n.peak_kib as f64 / 1024.0,
        ms(n.ready.as_secs_f64() * 1e3)
    );
    o.figure("rss", n.rss_kib as f64 / 1024.0, "MiB")
        .figure("peak_rss", n.peak_kib as f64 / 1024.0, "MiB")
        .figure("ready", n.ready.as_secs_f64() * 1e3, "ms");
    o
}
