//! One run, from the offer to the last `Done`: a task the actor owns. It
//! offers; if assigned, journals the lease (durably), tells the actor (which
//! then routes `Cancel` and join offers to it), fetches the workflow and the
//! inputs (each kept from eviction while the run reads it), runs the
//! executor while sending heartbeats, imports the outputs and signs the fact
//! on the blocking pool, gives its slot back, and delivers `Done` to its
//! requester and to every requester that joined. Publishing the fact (its
//! outputs' provider records, its DHT record and its announcement) comes
//! last: not on the job's critical path (fetchers ask the DHT again for a
//! moment when a blob has no provider yet).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use oda_protocol::messages::{
    Done, Gossip, JobAdvert, JobRequest, JobResponse, LeaseId, Offer, Progress, RunFailure,
    OFFER_ANSWER_MS,
};
use oda_protocol::{
    BlobId, ExprId, Fact, Failure, Outcome, OutputRef, ResolvedInput, SignedFact, Topic, Value,
    Wire, Workflow,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::actor::Cmd;
use super::inputs;
use super::journal::Entry;
use super::Ctx;
use crate::executor::{self, RunOutcome, RunRequest};
use crate::identity::peer_id_of;
use crate::network::Client;
use crate::registry;
use crate::scheduler::ask;
use crate::scheduler::jobs::now_ms;

/// Offer for `advert` (holding a slot, `free_slots` counting it) and, if
/// assigned, run it to the end.
pub(super) async fn offer_and_run(
    ctx: Arc<Ctx>,
    commands: mpsc::Sender<Cmd>,
    advert: JobAdvert,
    free_slots: u32,
) {
    let expr = advert.expr.id();
    let tell = |cmd: Cmd| {
        let commands = commands.clone();
        async move {
            // Nothing to do if the actor stopped: so is this task, soon.
            let _ = commands.send(cmd).await;
        }
    };
    let Some(requester) = peer_id_of(&advert.requester) else {
        tell(Cmd::OfferEnded {
            expr,
            unreachable: None,
        })
        .await;
        return;
    };
    let local_input_bytes = advert
        .inputs
        .iter()
        .filter_map(|i| ctx.parts.store.blob_size(&i.blob))
        .sum();
    let offer = Offer {
        expr,
        local_input_bytes,
        free_slots,
        expected_start_ms: 0,
        running: false,
    };
    // A requester that does not answer in time is treated as unreachable,
    // so that adverts nobody answers cannot hold the slots.
    let assign = match send_offer(&ctx.parts.client, requester, offer).await {
        Ok(JobResponse::Assign(a)) if a.expr == expr => a,
        Ok(other) => {
            tracing::debug!(?other, "offer not taken");
            return tell(Cmd::OfferEnded {
                expr,
                unreachable: None,
            })
            .await;
        }
        Err(e) => {
            tracing::debug!(error = %e, "offer failed; the requester is unreachable");
            return tell(Cmd::OfferEnded {
                expr,
                unreachable: Some(advert.requester),
            })
            .await;
        }
    };
    let lease = assign.lease;
    tracing::info!(lease, %requester, "assigned; running");
    // Durable before the run starts: a restart after a crash must find the
    // run to report it as interrupted.
    let requester_name = requester.to_string();
    ctx.journal
        .put(
            lease,
            Entry::Running {
                expr,
                requester: requester_name.clone(),
            },
            true,
        )
        .await;
    let cancel = CancellationToken::new();
    let (lines, lines_rx) = watch::channel(String::new());
    tell(Cmd::Running {
        expr,
        lease,
        primary: advert.requester,
        cancel: cancel.clone(),
        lines: lines_rx.clone(),
    })
    .await;

    // Heartbeats go on until the run is over; a `Decline` cancels it.
    let every = Duration::from_millis((assign.ttl_ms / 3).max(100));
    let mut beat = pin!(heartbeats(
        ctx.parts.client.clone(),
        requester,
        expr,
        lease,
        every,
        lines_rx,
        Some(cancel.clone()),
    ));
    let mut work = pin!(async {
        let result = execute(&ctx, &advert, lease, cancel, lines).await;
        // The run is over: the slot takes the next job while the result is
        // reported and the fact published.
        tell(Cmd::SlotFree { expr }).await;
        result
    });
    let result = tokio::select! {
        result = &mut work => result,
        () = &mut beat => work.await,
    };
    let Some(joined) = ask(&commands, |reply| Cmd::RunEnded { expr, lease, reply }).await else {
        return;
    };

    let done = |lease| {
        JobRequest::Done(Box::new(Done {
            expr,
            lease,
            result: result.clone(),
        }))
    };
    let primary = done(lease);
    ctx.journal
        .put(
            lease,
            Entry::Finished {
                expr,
                requester: requester_name.clone(),
                // A `Done` that cannot be encoded is not re-sent after a restart.
                done: primary.encode().unwrap_or_default(),
                delivered: false,
            },
            false,
        )
        .await;
    let to_primary = async {
        // The result first, then the fact's provider records, record and
        // announcement: queued behind them in the event loop, `Done` took
        // milliseconds longer.
        let delivered = deliver(&ctx.parts.client, requester, primary).await;
        if let Ok(fact) = &result {
            tell(Cmd::FactKnown(expr)).await;
            if let Err(e) = ctx.parts.client.publish_fact(fact).await {
                tracing::debug!(error = %e, "publishing the fact partly failed");
            }
        }
        if delivered {
            mark_delivered(&ctx, lease, expr, requester_name).await;
        }
    };
    let to_joined = futures::future::join_all(
        joined
            .into_iter()
            .map(|(peer, lease)| deliver(&ctx.parts.client, peer, done(lease))),
    );
    futures::join!(to_primary, to_joined);
    ctx.ended.send_replace(Some(super::RunEnd {
        expr,
        result: result.map_err(|f| f.message),
    }));
}

/// Note in the journal that the `Done` of `lease` reached its requester.
pub(super) async fn mark_delivered(ctx: &Ctx, lease: LeaseId, expr: ExprId, requester: String) {
    ctx.journal
        .put(
            lease,
            Entry::Finished {
                expr,
                requester,
                done: Vec::new(),
                delivered: true,
            },
            false,
        )
        .await;
}

/// Send `offer` and wait at most [`OFFER_ANSWER_MS`] for the answer.
pub(super) async fn send_offer(
    client: &Client,
    requester: PeerId,
    offer: Offer,
) -> Result<JobResponse, String> {
    let asked = client.send_job(requester, JobRequest::Offer(offer));
    match tokio::time::timeout(Duration::from_millis(OFFER_ANSWER_MS), asked).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {OFFER_ANSWER_MS} ms")),
    }
}

/// Send `Done`, retrying a few times while the requester is unreachable.
pub(super) async fn deliver(client: &Client, requester: PeerId, done: JobRequest) -> bool {
    for attempt in 0..5u32 {
        match client.send_job(requester, done.clone()).await {
            Ok(_) => return true,
            Err(e) => {
                tracing::debug!(%requester, error = %e, attempt, "cannot deliver result yet");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
        }
    }
    false
}

/// Send progress heartbeats with the run's latest log line, forever; a
/// `Decline` means the requester no longer wants the job: the run is
/// cancelled (when `cancel` is given) and the heartbeats stop.
pub(super) async fn heartbeats(
    client: Client,
    requester: PeerId,
    expr: ExprId,
    lease: LeaseId,
    every: Duration,
    mut lines: watch::Receiver<String>,
    cancel: Option<CancellationToken>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let message = match lines.has_changed() {
            Ok(true) => lines.borrow_and_update().clone(),
            _ => String::new(),
        };
        let progress = JobRequest::Progress(Progress {
            expr,
            lease,
            fraction: None,
            message,
        });
        match client.send_job(requester, progress).await {
            Ok(JobResponse::Decline(_)) => {
                tracing::info!(%expr, lease, "requester no longer wants this job; cancelling");
                if let Some(cancel) = &cancel {
                    cancel.cancel();
                }
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%expr, error = %e, "heartbeat failed"),
        }
    }
}

/// Run a step of a job's blocking file work (unpacking, importing outputs,
/// signing, flushing) on the blocking pool.
async fn off_async<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RunFailure> + Send + 'static,
) -> Result<T, RunFailure> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(RunFailure {
            message: format!("a blocking step of the run failed: {e}"),
            log_tail: String::new(),
        })
    })
}

fn failure(message: String) -> RunFailure {
    RunFailure {
        message,
        log_tail: String::new(),
    }
}

/// Compute the advert's expression (or find this worker's earlier fact for
/// it) and sign the result.
async fn execute(
    ctx: &Arc<Ctx>,
    advert: &JobAdvert,
    lease: LeaseId,
    cancel: CancellationToken,
    lines: watch::Sender<String>,
) -> Result<SignedFact, RunFailure> {
    let expr = advert.expr.id();
    let own = {
        let (ctx, inputs) = (ctx.clone(), advert.inputs.clone());
        off_async(move || Ok(own_fact(&ctx, &expr, &inputs))).await?
    };
    if let Some(fact) = own {
        tracing::info!("computed here before; sending the stored fact");
        return Ok(fact);
    }
    let parts = &ctx.parts;
    let workflow = ensure_workflow(ctx, advert).await.map_err(failure)?;
    parts
        .cfg
        .executors
        .check(&workflow.manifest.executor)
        .map_err(failure)?;
    inputs::verify(ctx, advert, &workflow.manifest)
        .await
        .map_err(failure)?;
    // Inputs: upstream outputs and literal blobs, fetched if missing.
    let mut needed: Vec<BlobId> = advert.inputs.iter().map(|i| i.blob).collect();
    needed.extend(advert.expr.args.values().flat_map(literal_blobs));
    // Each input is kept from eviction until the run is over.
    let mut in_use = Vec::new();
    for blob in needed {
        parts
            .client
            .fetch_blob(blob, None, &parts.store)
            .await
            .map_err(|e| failure(format!("cannot fetch input {blob}: {e}")))?;
        let guard = parts.store.use_blob(&blob).ok_or_else(|| {
            failure(format!(
                "input {blob} was evicted from the store right after it was fetched (is the blob cap smaller than the job's inputs?)"
            ))
        })?;
        in_use.push((blob, guard));
    }
    let blob_paths: HashMap<BlobId, PathBuf> = in_use
        .iter()
        .map(|(blob, guard)| (*blob, guard.path().to_path_buf()))
        .collect();
    let outputs_of: HashMap<(ExprId, String), BlobId> = advert
        .inputs
        .iter()
        .map(|i| ((i.expr, i.name.clone()), i.blob))
        .collect();
    let job_dir = parts.cfg.jobs_dir.join(format!("{lease:016x}"));
    let bundle_dir = job_dir.join("bundle");
    let work_dir = job_dir.join("work");
    let (store, workflow_id, bundle_at) = (
        parts.store.clone(),
        advert.expr.workflow,
        bundle_dir.clone(),
    );
    off_async(move || {
        registry::materialise(&store, &workflow_id, &bundle_at)
            .map_err(|e| failure(format!("cannot unpack the workflow: {e}")))
    })
    .await?;
    let (log_tx, mut log_rx) = mpsc::channel::<String>(256);
    let forward = async move {
        while let Some(line) = log_rx.recv().await {
            lines.send_replace(line);
        }
    };
    ctx.stats.executions.fetch_add(1, Ordering::Relaxed);
    let cancelled = cancel.clone();
    let report = {
        let mut running = pin!(executor::run(
            RunRequest {
                manifest: &workflow.manifest,
                args: &advert.expr.args,
                outputs_of: &outputs_of,
                blob_paths: &blob_paths,
                bundle_dir: &bundle_dir,
                work_dir: &work_dir,
                sandbox: parts.cfg.sandbox.for_job(vouched(ctx, advert)),
            },
            cancel,
            Some(log_tx),
        ));
        tokio::select! {
            report = &mut running => report,
            () = forward => running.await,
        }
    };
    drop(in_use);
    if let RunOutcome::Failed { reason } = &report.outcome {
        if !cancelled.is_cancelled() {
            publish_failure(ctx, advert, reason, &report.log_tail).await;
        }
    }
    // Importing the outputs (hashing, fsync), signing, storing, removing the
    // job directory and making the fact durable are blocking work.
    let (ctx, advert) = (ctx.clone(), advert.clone());
    off_async(move || {
        let result = sign_outcome(&ctx, &advert, &workflow, report);
        if let Err(e) = std::fs::remove_dir_all(&job_dir) {
            tracing::debug!(dir = %job_dir.display(), error = %e, "cannot remove job dir");
        }
        let fact = result?;
        // Durable before anybody hears of it: a crash must not make this
        // worker forget a fact it has published and reported.
        if let Err(e) = ctx.parts.store.flush() {
            tracing::warn!(error = %e, "cannot flush the store after a fact");
        }
        Ok(fact)
    })
    .await
}

/// Whether the advert's requester is this node or one of its owners (their
/// jobs run outside the sandbox unless `[worker] sandbox = "all"`).
fn vouched(ctx: &Ctx, advert: &JobAdvert) -> bool {
    advert.requester == ctx.parts.key.public()
        || ctx.parts.cfg.serves.owners.contains(&advert.requester)
}

/// Sign and publish a record of a run that failed without a result, so that
/// requesters trusting this worker do not all try it again (a gossip
/// message on the facts topic; a failure to publish is only logged).
async fn publish_failure(ctx: &Ctx, advert: &JobAdvert, reason: &str, log_tail: &str) {
    let record = Failure {
        worker: ctx.parts.key.public(),
        expr: advert.expr.id(),
        workflow: advert.expr.workflow,
        inputs: advert.inputs.clone(),
        at: now_ms(),
        reason: clip(reason, Failure::MAX_REASON, false),
        log_tail: clip(log_tail, Failure::MAX_LOG_TAIL, true),
    };
    let published = match ctx.parts.key.secret.sign(record) {
        Ok(signed) => ctx
            .parts
            .client
            .publish(Topic::Facts, Gossip::Failure(Box::new(signed)))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = published {
        tracing::debug!(error = %e, "cannot publish the failure record");
    }
}

/// `text` cut to at most `max` bytes on a character boundary, keeping its
/// end (`keep_end`) or its start.
fn clip(text: &str, max: usize, keep_end: bool) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let cut = |mut at: usize| {
        while !text.is_char_boundary(at) {
            at += usize::from(keep_end);
            at -= usize::from(!keep_end);
        }
        at
    };
    if keep_end {
        text[cut(text.len() - max)..].to_string()
    } else {
        text[..cut(max)].to_string()
    }
}

/// A fact this worker signed earlier for `expr` from the same `inputs`, if
/// its store still has it and its outputs (blocking). A fact computed from
/// other input facts is another result, never handed out for these.
fn own_fact(ctx: &Ctx, expr: &ExprId, inputs: &[ResolvedInput]) -> Option<SignedFact> {
    let (store, own) = (&ctx.parts.store, ctx.parts.key.public());
    store.facts_for(expr).ok()?.into_iter().find(|f| {
        f.body.worker == own
            && f.body.inputs == inputs
            && f.body.output_blobs().iter().all(|b| store.has_blob(b))
    })
}

/// Import the outputs, sign the fact and store it (blocking).
fn sign_outcome(
    ctx: &Ctx,
    advert: &JobAdvert,
    workflow: &Workflow,
    report: executor::RunReport,
) -> Result<SignedFact, RunFailure> {
    let parts = &ctx.parts;
    let fail = |message: String| RunFailure {
        message,
        log_tail: report.log_tail.clone(),
    };
    let (outcome, usage) = match report.outcome {
        RunOutcome::Success { outputs, usage } => {
            let mut refs = BTreeMap::new();
            for (name, path) in outputs {
                let blob = parts
                    .store
                    .import_file(&path)
                    .map_err(|e| fail(format!("cannot store output {name}: {e}")))?;
                let size = parts.store.blob_size(&blob).unwrap_or(0);
                refs.insert(name, OutputRef { blob, size });
            }
            (Outcome::Success { outputs: refs }, usage)
        }
        RunOutcome::AnalysisError {
            kind,
            message,
            usage,
        } => (Outcome::AnalysisError { kind, message }, usage),
        RunOutcome::Failed { reason } => return Err(fail(reason)),
    };
    let mut inputs = advert.inputs.clone();
    inputs.sort();
    let fact = Fact {
        expr: advert.expr.id(),
        workflow: advert.expr.workflow,
        outcome,
        worker: parts.key.public(),
        runner_class: parts.cfg.serves.class,
        inputs,
        started_at: report.started_at,
        finished_at: report.finished_at.max(report.started_at),
        usage,
        environment: executor::environment_digest(&workflow.manifest),
    };
    let signed = parts
        .key
        .secret
        .sign(fact)
        .map_err(|e| fail(format!("cannot sign: {e}")))?;
    parts
        .store
        .put_own_fact(&signed)
        .map_err(|e| fail(format!("cannot store the fact: {e}")))?;
    Ok(signed)
}

/// The workflow, from the store or fetched from the mesh and verified.
async fn ensure_workflow(ctx: &Arc<Ctx>, advert: &JobAdvert) -> Result<Workflow, String> {
    let parts = &ctx.parts;
    let id = advert.expr.workflow;
    let stored = {
        let store = parts.store.clone();
        tokio::task::spawn_blocking(move || {
            let found = store.workflow(&id)?;
            Ok::<_, crate::store::StoreError>(found.map(|(wf, bundle)| {
                let held = store.has_blob(&bundle);
                (wf, bundle, held)
            }))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
    };
    if let Some((wf, bundle, held)) = stored {
        if !held {
            // The record is here but its bundle bytes were evicted: fetch
            // them again (verified against the blob id), so the job can be
            // unpacked.
            parts
                .client
                .fetch_blob(bundle, None, &parts.store)
                .await
                .map_err(|e| format!("workflow bundle was evicted and cannot be fetched: {e}"))?;
        }
        return Ok(wf);
    }
    parts
        .client
        .fetch_blob(advert.bundle, None, &parts.store)
        .await
        .map_err(|e| format!("cannot fetch workflow bundle: {e}"))?;
    let (store, bundle) = (parts.store.clone(), advert.bundle);
    tokio::task::spawn_blocking(move || registry::install_bundle(&store, &id, &bundle))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("bad workflow bundle: {e}"))
}

fn literal_blobs(value: &Value) -> Vec<BlobId> {
    match value {
        Value::Blob(b) => vec![*b],
        Value::List(items) => items.iter().flat_map(literal_blobs).collect(),
        _ => Vec::new(),
    }
}
