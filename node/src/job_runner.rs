//! `oda-node execute`: the one run of a `job` runner. It starts a node whose
//! worker serves a single expression ([`Serves::job`](crate::scheduler::worker::Serves::job),
//! set by the caller), waits for that run to end (its `Done` delivered and
//! its fact published: [`Worker::ended`](crate::scheduler::worker::Worker::ended)),
//! then stays until the outputs' bytes were fetched — the requester of a
//! `job` runner's fact fetches them at once, since the runner leaves — or
//! `linger` passed, and stops the node with its store flushed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use oda_protocol::codec::limits;
use oda_protocol::{ExprId, Outcome};

use crate::config::Validated;
use crate::identity::NodeKey;
use crate::runtime::Node;

/// Run `expr` once as the config's worker (a `job` runner): `Ok` when the
/// job succeeded, an error saying why not (it failed, ended in an analysis
/// error, nobody asked for it within `timeout`, or the process was told to
/// stop).
pub async fn one_job(
    data_dir: &Path,
    key: NodeKey,
    cfg: Validated,
    expr: ExprId,
    (timeout, linger): (Duration, Duration),
) -> anyhow::Result<()> {
    let node = Node::start(data_dir, key, &cfg).await?;
    println!("peer id: {}", node.peer_id());
    for addr in node.wait_listening(Duration::from_secs(5)).await {
        println!("listening on {addr}");
    }
    println!(
        "waiting at most {} for a requester of {expr}",
        humantime::format_duration(timeout)
    );
    let result = tokio::select! {
        r = run_and_linger(&node, expr, timeout, linger) => r,
        r = crate::runtime::stop_signal() => Err(r.map_or_else(
            |e| anyhow::anyhow!("cannot listen for stop signals: {e}"),
            |()| anyhow::anyhow!("stopped by a signal before the job ended"),
        )),
    };
    node.shutdown().await.context("flushing the store")?;
    result
}

async fn run_and_linger(
    node: &Node,
    expr: ExprId,
    timeout: Duration,
    linger: Duration,
) -> anyhow::Result<()> {
    let worker = node
        .worker
        .as_ref()
        .context("the job runner started without a worker")?;
    let mut ended = worker.ended();
    let end = tokio::time::timeout(
        timeout,
        ended.wait_for(|e| e.as_ref().is_some_and(|e| e.expr == expr)),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "nobody asked for {expr} within {} (is its workflow added here, and does the requester trust this runner's key?)",
            humantime::format_duration(timeout)
        )
    })?
    .ok()
    .and_then(|e| e.clone())
    .context("the worker stopped before the job ended")?;
    let fact = end
        .result
        .map_err(|why| anyhow::anyhow!("the job failed: {why}"))?;
    match &fact.body.outcome {
        Outcome::Success { outputs } => {
            println!("done: fact {} published", fact.id());
            let ranges = outputs
                .values()
                .map(|o| o.size.div_ceil(limits::BLOB_CHUNK as u64))
                .sum();
            if !fetched(node, ranges, linger).await {
                println!(
                    "the outputs were not fetched within {}; leaving anyway",
                    humantime::format_duration(linger)
                );
            }
            Ok(())
        }
        Outcome::AnalysisError { kind, message } => Err(anyhow::anyhow!(
            "the job ended in an analysis error ({kind}): {message} (fact {} published)",
            fact.id()
        )),
    }
}

/// Whether this node served at least `ranges` blob ranges (the outputs'
/// bytes) within `linger`, polled every 100 ms.
async fn fetched(node: &Node, ranges: u64, linger: Duration) -> bool {
    let end = Instant::now() + linger;
    loop {
        let served = node
            .client
            .stats()
            .await
            .map_or(0, |s| s.blob_ranges_served);
        if served >= ranges {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
