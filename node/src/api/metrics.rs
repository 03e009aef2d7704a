//! `/metrics` in the Prometheus text exposition format (version 0.0.4): jobs
//! by state, worker executions, facts, blobs and bytes, workflows, peers.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::{blocking, ApiError, ApiState};
use crate::scheduler::JobState;

/// Append one metric with its help and type lines.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// `GET /metrics`.
pub async fn metrics(State(s): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let node = s.node.clone();
    let jobs = s.node.requester.tally();
    let stats = blocking(move || Ok(node.store.stats()?)).await?;
    let peers = s.node.client.peers().await.map(|p| p.len()).unwrap_or(0);
    let net = s.node.client.stats().await.unwrap_or_default();
    let labels: Vec<String> = JobState::NAMES
        .iter()
        .map(|n| format!("{{state=\"{n}\"}}"))
        .collect();
    let job_samples: Vec<(&str, f64)> = labels
        .iter()
        .zip(jobs.by_state)
        .map(|(l, n)| (l.as_str(), n as f64))
        .collect();
    let mut out = String::new();
    metric(
        &mut out,
        "oda_jobs",
        "gauge",
        "Jobs submitted to this node, by state.",
        &job_samples,
    );
    metric(
        &mut out,
        "oda_jobs_from_cache",
        "gauge",
        "Jobs whose result came from a cache without computing.",
        &[("", jobs.from_cache as f64)],
    );
    let worker = s.node.worker.as_ref();
    metric(
        &mut out,
        "oda_worker_enabled",
        "gauge",
        "1 if this node computes jobs for the mesh.",
        &[("", f64::from(u8::from(worker.is_some())))],
    );
    metric(
        &mut out,
        "oda_executions_total",
        "counter",
        "Executions started by this node's worker since the node started.",
        &[("", worker.map_or(0, |w| w.executions()) as f64)],
    );
    metric(
        &mut out,
        "oda_worker_declined_total",
        "counter",
        "Job adverts this node's worker declined since the node started.",
        &[("", worker.map_or(0, |w| w.declined()) as f64)],
    );
    metric(
        &mut out,
        "oda_worker_free_slots",
        "gauge",
        "Free job slots of this node's worker.",
        &[("", f64::from(worker.map_or(0, |w| w.free_slots())))],
    );
    metric(
        &mut out,
        "oda_worker_backlog",
        "gauge",
        "Job adverts this node's worker is waiting for a free slot to offer for.",
        &[("", worker.map_or(0, |w| w.backlog_len()) as f64)],
    );
    metric(
        &mut out,
        "oda_worker_shed_total",
        "counter",
        "Job adverts and fact announcements this node's worker shed because its queue was full.",
        &[("", worker.map_or(0, |w| w.shed()) as f64)],
    );
    metric(
        &mut out,
        "oda_gossip_shed_total",
        "counter",
        "Gossip messages dropped because the node was behind (job RPCs are never dropped).",
        &[("", net.gossip_shed as f64)],
    );
    metric(
        &mut out,
        "oda_adverts_over_budget_total",
        "counter",
        "Valid job adverts dropped, not forwarded, because their author published over its budget (1,000 at once, 200/s).",
        &[("", net.adverts_over_budget as f64)],
    );
    metric(
        &mut out,
        "oda_gossip_received_total",
        "counter",
        "Gossip messages received, each once (adverts, fact announcements, capacity).",
        &[("", net.gossip_received as f64)],
    );
    metric(
        &mut out,
        "oda_gossip_published_total",
        "counter",
        "Gossip messages this node published.",
        &[("", net.gossip_published as f64)],
    );
    metric(
        &mut out,
        "oda_dht_queries_total",
        "counter",
        "DHT queries this node started (record puts and gets, provides, provider lookups).",
        &[("", net.dht_queries as f64)],
    );
    metric(
        &mut out,
        "oda_dht_requests_served_total",
        "counter",
        "DHT requests from other peers this node answered.",
        &[("", net.dht_requests_served as f64)],
    );
    metric(
        &mut out,
        "oda_blob_ranges_served_total",
        "counter",
        "Blob ranges (up to 1 MiB each, with their BLAKE3 tree hashes) served to other peers.",
        &[("", net.blob_ranges_served as f64)],
    );
    metric(
        &mut out,
        "oda_rpc_waiting",
        "gauge",
        "Job RPCs waiting for the scheduler to take them.",
        &[("", net.control_waiting as f64)],
    );
    metric(
        &mut out,
        "oda_facts",
        "gauge",
        "Facts in the store.",
        &[("", stats.facts as f64)],
    );
    metric(
        &mut out,
        "oda_held_facts",
        "gauge",
        "Facts whose output bytes this node holds and serves.",
        &[("", stats.held_facts as f64)],
    );
    metric(
        &mut out,
        "oda_blobs",
        "gauge",
        "Blobs in the store.",
        &[("", stats.blobs as f64)],
    );
    metric(
        &mut out,
        "oda_blob_bytes",
        "gauge",
        "Bytes of all blobs in the store.",
        &[("", stats.blob_bytes as f64)],
    );
    metric(
        &mut out,
        "oda_pinned_blobs",
        "gauge",
        "Pinned blobs (never evicted).",
        &[("", stats.pinned_blobs as f64)],
    );
    metric(
        &mut out,
        "oda_pinned_bytes",
        "gauge",
        "Bytes of pinned blobs.",
        &[("", stats.pinned_bytes as f64)],
    );
    metric(
        &mut out,
        "oda_blob_cap_bytes",
        "gauge",
        "The blob cache cap.",
        &[("", stats.cap_bytes as f64)],
    );
    metric(
        &mut out,
        "oda_workflows",
        "gauge",
        "Workflows in the store.",
        &[("", stats.workflows as f64)],
    );
    metric(
        &mut out,
        "oda_expressions",
        "gauge",
        "Expressions in the store.",
        &[("", stats.exprs as f64)],
    );
    metric(
        &mut out,
        "oda_peers",
        "gauge",
        "Connected peers.",
        &[("", peers as f64)],
    );
    metric(
        &mut out,
        "oda_api_uptime_seconds",
        "gauge",
        "Seconds since the local API started.",
        &[("", s.started.elapsed().as_secs_f64().floor())],
    );
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    ))
}
