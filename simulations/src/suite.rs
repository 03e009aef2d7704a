//! The whole benchmark run: which measurements, in which order, and how their
//! figures become table rows. `oda-bench` and the smoke test both call [`run`].

use std::time::Duration;

use crate::python::{Peer, PeerFigures, PEERS};
use crate::report::{Machine, Outcome, Run};
use crate::stats::{ms, rate};
use crate::{blob, cache, flood, gossip, jobs, loaded, process, Sizes};

/// Selectable benchmarks, in run order (`--only NAME`).
pub const NAMES: &[&str] = &[
    "fork",
    "blob",
    "cache",
    "gossip",
    "jobs",
    "throughput",
    "flood",
    "idle",
    "loaded",
    "dask",
    "ray",
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
    let mut peers = Vec::new();
    for peer in PEERS {
        if !selected(only, peer.key) {
            continue;
        }
        say(peer.name);
        let version = match peer.available() {
            Ok(v) => v,
            Err(why) => {
                results.push(Outcome::skipped(peer.name, why));
                continue;
            }
        };
        let (n, m) = (sizes.peer_tasks, sizes.peer_map);
        match tokio::task::spawn_blocking(move || peer.measure(n, m))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r)
        {
            Ok(figures) => peers.push(Measured {
                peer,
                version,
                figures,
            }),
            Err(e) => results.push(failed(peer.name, &e)),
        }
    }

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
            Ok(rt) => results.push(round_trip_row(sizes, &rt, fork.as_ref(), &peers)),
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
                &peers,
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
                &peers,
            )),
            Err(e) => results.push(failed("throughput, windowed", &e)),
        }
    }

    if selected(only, "flood") {
        say("honest round trip under an advert flood");
        match flood::measure(sizes.workers, sizes.flood_jobs, sizes.flood_rate).await {
            Ok(f) => results.push(flood_row(sizes.workers, &f)),
            Err(e) => results.push(failed("round trip under an advert flood", &e)),
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
            match gossip::measure(n, sizes.gossip_messages, sizes.gossip_quiet).await {
                Ok(p) => results.push(gossip_row(&name, &p)),
                Err(e) => results.push(failed(&name, &e)),
            }
        }
    }

    if selected(only, "idle") {
        say("idle node");
        let idle = Duration::from_secs_f64(sizes.idle_secs);
        results.push(
            with_node_binary("idle node", move |bin| {
                process::idle_node(bin, idle).map(|n| idle_row(&n, bin, idle))
            })
            .await,
        );
    }

    if selected(only, "loaded") {
        say("loaded node");
        let (facts, jobs) = (sizes.loaded_facts, sizes.loaded_jobs);
        results.push(
            with_node_binary("loaded node", move |bin| {
                loaded::loaded_node(bin, facts, jobs, METRICS_ASKS).map(|n| loaded_row(&n, bin))
            })
            .await,
        );
    }

    // A peer run on its own has no mesh row to stand beside: a row of its own.
    for m in peers.iter().filter(|m| only == Some(m.peer.key)) {
        let mut o = Outcome::new(m.peer.name, format!("{}, {}", m.version, m.peer.cluster));
        o.peers.insert(
            m.peer.name.into(),
            format!(
                "{}; {} of {}: {} tasks/s",
                m.figures.round_trip.brief(),
                m.peer.batch_call,
                m.figures.map_tasks,
                rate(m.figures.map_per_sec)
            ),
        );
        m.figures_into(&mut o);
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

/// A peer that ran: which, its version, its figures.
struct Measured {
    peer: &'static Peer,
    version: String,
    figures: PeerFigures,
}

impl Measured {
    /// The peer's figures for the JSON, named after it (`dask_p50`, `ray_p50`, ...).
    fn figures_into(&self, o: &mut Outcome) {
        let (key, f) = (self.peer.key, &self.figures);
        o.figure(&format!("{key}_p50"), f.round_trip.p50_ms, "ms")
            .figure(&format!("{key}_p99"), f.round_trip.p99_ms, "ms")
            .figure(&format!("{key}_map_tasks_per_s"), f.map_per_sec, "tasks/s");
    }
}

/// Each peer's cell and figures into `o`; the ratios against them, joined
/// (`None` without peers).
fn add_peers(
    o: &mut Outcome,
    peers: &[Measured],
    cell: impl Fn(&Measured) -> String,
    ratio: impl Fn(&Measured) -> String,
) -> Option<String> {
    for m in peers {
        o.peers.insert(m.peer.name.into(), cell(m));
        m.figures_into(o);
    }
    let ratios: Vec<String> = peers.iter().map(ratio).collect();
    (!ratios.is_empty()).then(|| ratios.join(", "))
}

fn round_trip_row(
    sizes: &Sizes,
    rt: &jobs::RoundTrip,
    fork: Option<&process::ForkExec>,
    peers: &[Measured],
) -> Outcome {
    let mut o = Outcome::new(
        "trivial job round trip",
        format!(
            "1 requester, {} workers × {} slots; `touch out`; {} sequential jobs, each a new expression, once the requester has listened to the jobs topic for a lease TTL; the node's default scheduler settings (offer window {} ms, cut short for an offer that only a running worker could beat)",
            sizes.workers, jobs::SLOTS, rt.latency.n, rt.offer_window_ms
        ),
    );
    o.mesh = rt.latency.brief();
    o.figure("p50", rt.latency.p50_ms, "ms")
        .figure("p99", rt.latency.p99_ms, "ms")
        .figure("just_joined_p50", rt.just_joined.p50_ms, "ms")
        .figure("just_joined_p99", rt.just_joined.p99_ms, "ms")
        .figure("lookup_miss_p50", rt.lookup_miss.p50_ms, "ms")
        .figure("offer_window", rt.offer_window_ms as f64, "ms")
        .figure("cpu", rt.cpu_percent, "% of a core");
    traffic_figures(&mut o, &rt.traffic);
    if let Some(f) = fork {
        o.limit = format!("fork/exec of `true`: p50 {} ms", ms(f.latency.p50_ms));
        o.figure("fork_exec_p50", f.latency.p50_ms, "ms");
    }
    let vs = add_peers(
        &mut o,
        peers,
        |m| {
            format!(
                "{} ({} {}, {})",
                m.figures.round_trip.brief(),
                m.peer.short,
                m.version,
                m.peer.round_trip_call
            )
        },
        |m| {
            format!(
                "{:.1}× {}'s",
                rt.latency.p50_ms / m.figures.round_trip.p50_ms,
                m.peer.short
            )
        },
    );
    if let Some(vs) = vs {
        o.ratio = format!("p50 {vs}");
    }
    o.notes.push(format!(
        "in the requester's first lease TTL on the jobs topic ({} jobs after the warm-up) \
         every job is contested (a worker may be running it for a requester this one has not \
         heard yet) and waits for such a worker as long again as the first offer took: {}",
        rt.just_joined.n,
        rt.just_joined.brief()
    ));
    o.notes.push(format!(
        "where the time goes (measured on the same mesh): cache check of a new expression \
         (`lookup_facts_until`, a miss: both DHT queries run to their end) p50 {} ms; the offer window: \
         a job without inputs takes the first trusted offer unless it is contested (another requester \
         advertised it, or the jobs topic was joined less than a lease TTL ago: then it waits as \
         long again as that offer took, at least 2 ms, for a worker already running it); the full {} ms applies only when locality is in question; the rest is \
         gossip of the advert, offer/assign/done request-responses, the run, fact signing and \
         sled writes (the fact's provider records, DHT record and announcement follow `Done`); \
         the process (all nodes) used {:.0} % of a core; {}",
        ms(rt.lookup_miss.p50_ms),
        rt.offer_window_ms,
        rt.cpu_percent,
        traffic_note(&rt.traffic)
    ));
    o
}

/// Per-job message counts as figures.
fn traffic_figures(o: &mut Outcome, t: &jobs::Traffic) {
    o.figure("gossip_published_per_job", t.gossip_published, "messages")
        .figure("gossip_received_per_job", t.gossip_received, "messages")
        .figure("dht_queries_per_job", t.dht_queries, "queries")
        .figure(
            "dht_requests_served_per_job",
            t.dht_requests_served,
            "requests",
        );
}

/// Per-job message counts in words.
fn traffic_note(t: &jobs::Traffic) -> String {
    format!(
        "per job, every node together: {:.1} gossip messages published, {:.1} received, \
         {:.1} DHT queries started, {:.1} DHT requests served",
        t.gossip_published, t.gossip_received, t.dht_queries, t.dht_requests_served
    )
}

fn throughput_row(
    name: &str,
    t: &jobs::Throughput,
    workers: usize,
    fork: Option<&process::ForkExec>,
    peers: &[Measured],
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
    traffic_figures(&mut o, &t.traffic);
    o.notes.push(format!(
        "the process (every node) used {:.0} % of a core meanwhile; {}",
        t.cpu_percent,
        traffic_note(&t.traffic)
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
    let vs = add_peers(
        &mut o,
        peers,
        |m| {
            format!(
                "{} tasks/s ({} {}, {} of {} no-op tasks)",
                rate(m.figures.map_per_sec),
                m.peer.short,
                m.version,
                m.peer.batch_call,
                m.figures.map_tasks
            )
        },
        |m| format!("{:.3}× {}'s", jps / m.figures.map_per_sec, m.peer.short),
    );
    if let Some(vs) = vs {
        o.ratio = if o.ratio.is_empty() {
            vs
        } else {
            format!("{}; {vs}", o.ratio)
        };
    }
    if let Some(e) = &t.first_error {
        o.notes.push(format!("first failure: {e}"));
    }
    o
}

fn flood_row(workers: usize, f: &flood::Flood) -> Outcome {
    let mut o = Outcome::new(
        "round trip under an advert flood",
        format!(
            "1 requester, {workers} workers × {} slots; a peer nobody trusts advertises {} new jobs/s of the same workflow at priority 255 and never answers an offer; {} sequential honest jobs before and during the flood",
            jobs::SLOTS,
            f.rate,
            f.flooded.n
        ),
    );
    o.mesh = format!(
        "flooded: {}, max {} ms; quiet: {}",
        f.flooded.brief(),
        ms(f.flooded.max_ms),
        f.quiet.brief()
    );
    o.ratio = format!(
        "p50 {:.2}× the quiet one, mean {:.2}×",
        f.flooded.p50_ms / f.quiet.p50_ms,
        f.flooded.mean_ms / f.quiet.mean_ms
    );
    o.figure("flooded_p50", f.flooded.p50_ms, "ms")
        .figure("flooded_p99", f.flooded.p99_ms, "ms")
        .figure("flooded_max", f.flooded.max_ms, "ms")
        .figure("quiet_p50", f.quiet.p50_ms, "ms")
        .figure("quiet_p99", f.quiet.p99_ms, "ms")
        .figure("adverts", f.adverts as f64, "adverts")
        .figure("offers_held", f.offers_held as f64, "offers");
    o.notes.push(format!(
        "the flooder published {} adverts in {:.1} s and held {} offers unanswered; each held offer kept one of a worker's slots (a worker waits on at most one offer per requester) for at most 5 s (`OFFER_ANSWER_MS`), after which that worker takes none of the flooder's adverts for 60 s, and the workers' backlogs take requesters in turns; every advert's signature is checked once per node (protocol v3), and adverts over the flooder's budget (1,000 at once, 200/s) are neither delivered nor forwarded",
        f.adverts, f.flood_secs, f.offers_held
    ));
    o
}

fn blob_row(t: &blob::Transfer) -> Outcome {
    let mut o = Outcome::new(
        "verified blob transfer",
        format!(
            "{} MiB between two peers, `fetch_blob_from` (noise, yamux, 1 MiB pieces × 8, BLAKE3 tree checked per 16 KiB, fsync)",
            t.bytes >> 20
        ),
    );
    o.mesh = match t.tmpfs_mib_s {
        Some(tmpfs) => format!(
            "{} MiB/s (stores on disk); {} MiB/s (stores on tmpfs)",
            rate(t.mesh_mib_s),
            rate(tmpfs)
        ),
        None => format!("{} MiB/s", rate(t.mesh_mib_s)),
    };
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
    if let Some(tmpfs) = t.tmpfs_mib_s {
        o.figure("tmpfs_mib_per_s", tmpfs, "MiB/s");
    }
    o.notes.push(format!(
        "same run: BLAKE3 on one core {} MiB/s",
        rate(t.blake3_mib_s)
    ));
    let (seal, open) = t.cipher_mib_s;
    o.figure("cipher_seal_mib_per_s", seal, "MiB/s")
        .figure("cipher_open_mib_per_s", open, "MiB/s");
    o.notes.push(format!(
        "same run: ChaCha20-Poly1305, noise's cipher (ring), on one core: seal {} MiB/s, open {} MiB/s; both peers share this process, so each byte costs one seal and one open here, and sealing plus opening alone allow at most {} MiB/s per core",
        rate(seal),
        rate(open),
        rate(1.0 / (1.0 / seal + 1.0 / open))
    ));
    if let Some(cores) = t.fetch_cores {
        o.figure("fetch_cores", cores, "cores");
        o.notes.push(format!(
            "both peers (one process) kept {cores:.2} cores busy during the fetch"
        ));
    }
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
    let settled = match p.settled_after {
        Some(d) => format!(
            "settled {:.0} s after the last peer joined",
            d.as_secs_f64()
        ),
        None => format!(
            "not settled {:.0} s after the last peer joined (measured anyway)",
            gossip::SETTLE_DEADLINE.as_secs_f64()
        ),
    };
    o.limit = format!(
        "process CPU with the mesh idle: {:.0} % of a core ({:.1} connections per peer, \
         {} opened in {:.0} s); {settled}",
        p.idle_cpu_percent,
        p.mean_connections,
        p.idle_connections_opened,
        gossip::IDLE_WINDOW.as_secs_f64()
    );
    if let Some(d) = p.settled_after {
        o.figure("settled_after", d.as_secs_f64(), "s");
    }
    o.figure("all_p50", p.all.p50_ms, "ms")
        .figure("idle_cpu", p.idle_cpu_percent, "% of a core")
        .figure(
            "idle_connections_opened",
            p.idle_connections_opened as f64,
            "connections",
        )
        .figure("connections_per_peer", p.mean_connections, "connections")
        .figure("all_p99", p.all.p99_ms, "ms")
        .figure("each_p50", p.each.p50_ms, "ms")
        .figure("each_p99", p.each.p99_ms, "ms");
    o
}

/// `/metrics` asks of the loaded-node benchmark.
const METRICS_ASKS: usize = 200;

/// Run `measure` on the `oda-node` binary (on the blocking pool), or say
/// why it cannot run.
async fn with_node_binary(
    name: &str,
    measure: impl FnOnce(&std::path::Path) -> anyhow::Result<Outcome> + Send + 'static,
) -> Outcome {
    let Some(bin) = process::find_node_binary() else {
        return Outcome::skipped(
            name,
            "no oda-node binary next to this one: `cargo build --release -p oda-node` first",
        );
    };
    match tokio::task::spawn_blocking(move || measure(&bin)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => failed(name, &e),
        Err(e) => failed(name, &e.into()),
    }
}

/// The cargo profile a binary was built with (its directory's name).
fn profile_of(binary: &std::path::Path) -> String {
    binary
        .parent()
        .and_then(|p| p.file_name())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn loaded_row(n: &loaded::LoadedNode, binary: &std::path::Path) -> Outcome {
    let mut o = Outcome::new(
        "loaded node",
        format!(
            "`oda-node run` ({} build) on a store holding {} facts (other workers' results, \
             each with its expression) and {} finished job records; {} `GET /metrics`, \
             a new loopback connection each",
            profile_of(binary),
            n.facts,
            n.jobs,
            n.metrics.n
        ),
    );
    o.mesh = format!(
        "RSS {:.1} MiB (peak {:.1} MiB); `/metrics` {}; ready in {} ms",
        n.rss_kib as f64 / 1024.0,
        n.peak_kib as f64 / 1024.0,
        n.metrics.brief(),
        ms(n.ready.as_secs_f64() * 1e3)
    );
    o.notes.push(format!(
        "filling the store through the library took {:.1} s; one `/metrics` answer is {} bytes",
        n.fill.as_secs_f64(),
        n.metrics_bytes
    ));
    o.figure("rss", n.rss_kib as f64 / 1024.0, "MiB")
        .figure("peak_rss", n.peak_kib as f64 / 1024.0, "MiB")
        .figure("metrics_p50", n.metrics.p50_ms, "ms")
        .figure("metrics_p99", n.metrics.p99_ms, "ms")
        .figure("ready", n.ready.as_secs_f64() * 1e3, "ms");
    o
}

fn idle_row(n: &process::IdleNode, binary: &std::path::Path, idle: Duration) -> Outcome {
    let profile = profile_of(binary);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_is_selectable_and_runs_alone() {
        for p in PEERS {
            assert!(NAMES.contains(&p.key), "{} is not in NAMES", p.key);
            assert!(selected(Some(p.key), p.key));
            assert!(!selected(Some(p.key), "fork"));
        }
    }
}
