//! One resolution, run as a task the actor owns: the local store, then the
//! mesh, then the inputs (each its own resolution, asked of the actor, so
//! one expression is resolved once however many ask), then compute it with
//! up to `max_attempts` auctions and leases.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::PeerId;
use oda_protocol::messages::JobAdvert;
use oda_protocol::names::Topic;
use oda_protocol::{ExprId, Expression, Outcome, ResolvedInput, RunnerClass, SignedFact, Subject};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::actor::Cmd;
use super::auction::{advertise_and_choose, Choice};
use super::failures::failed_on;
use super::lease::{run_lease, LeaseEnd};
use super::{Ctx, ResolveError, Resolved, Want};
use crate::identity::peer_id_of;
use crate::scheduler::jobs::{now_ms, Attempt, JobState};
use crate::scheduler::{quorum, verdicts};

/// Resolve `expr` as `want` says: from a cache unless `no_cache`, else by
/// computing it; under its quorum.
pub(super) async fn resolve(
    ctx: Ctx,
    expr: ExprId,
    want: Want,
    cancel: CancellationToken,
) -> Result<Resolved, ResolveError> {
    let (no_cache, quorum) = (want.no_cache, want.quorum());
    let store = &ctx.parts().store;
    let expression = store
        .expr(&expr)?
        .ok_or(ResolveError::UnknownExpression(expr))?;
    let mut lookup = None;
    if !no_cache {
        if let Some(fact) = ctx.pick_trusted(&store.facts_for(&expr)?, quorum).await {
            tracing::debug!(%expr, "served from the local store");
            return Ok(Resolved {
                fact,
                from_cache: true,
            });
        }
        // Without inputs to resolve first, the advert can go out while
        // the lookup runs (see `speculate.rs`); a worker is assigned only
        // once it has missed.
        let speculate = expression.dependencies().is_empty()
            && ctx.ask(|reply| Cmd::Speculate { reply }).await == Some(true);
        if speculate {
            lookup = Some(Box::pin(cache_lookup(&ctx, expr, quorum)) as Lookup<'_>);
        } else if let Some(found) = cache_lookup(&ctx, expr, quorum).await? {
            return Ok(found);
        }
    }
    let inputs = tokio::select! {
        _ = cancel.cancelled() => return Err(ResolveError::Cancelled),
        inputs = resolve_inputs(&ctx, &expression, quorum) => inputs?,
    };
    if cancel.is_cancelled() {
        return Err(ResolveError::Cancelled);
    }
    compute(&ctx, expression, inputs, (want, lookup), &cancel).await
}

/// A job's mesh lookup still running while its advert is out: its
/// outcome decides whether a worker is assigned at all.
pub(super) type Lookup<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = LookupResult> + Send + 'a>>;
/// What a mesh lookup gave.
pub(super) type LookupResult = Result<Option<Resolved>, ResolveError>;

/// [`mesh_lookup`] for a job, its outcome noted for [`Cmd::Speculate`].
async fn cache_lookup(ctx: &Ctx, expr: ExprId, quorum: usize) -> LookupResult {
    let found = mesh_lookup(ctx, expr, quorum).await;
    if let Ok(hit) = &found {
        ctx.tell(Cmd::LookupEnded(hit.is_some())).await;
    }
    found
}

/// The outcome of `lookup` if it is still running: `Some(found)` for a
/// hit, `None` for a miss or no lookup.
async fn finish(lookup: &mut Option<Lookup<'_>>) -> LookupResult {
    match lookup.take() {
        Some(running) => running.await,
        None => Ok(None),
    }
}

/// Resolve the expressions `expression` takes outputs of, in parallel;
/// which blob each `Output` argument names, sorted, and their total size.
async fn resolve_inputs(
    ctx: &Ctx,
    expression: &Expression,
    quorum: usize,
) -> Result<(Vec<ResolvedInput>, u64), ResolveError> {
    let deps = expression.dependencies();
    if deps.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let expr = expression.id();
    ctx.set_state(expr, JobState::ResolvingInputs).await;
    let results = futures::future::join_all(deps.iter().map(|dep| {
        let dep = *dep;
        async move {
            let want = Want {
                no_cache: false,
                quorum: quorum as u32,
                without: None,
            };
            let asked = ctx
                .ask(|reply| Cmd::Resolve {
                    expr: dep,
                    want,
                    reply,
                })
                .await;
            asked.unwrap_or(Err(ResolveError::Cancelled))
        }
    }))
    .await;
    let mut by_expr = HashMap::new();
    for (dep, result) in deps.iter().zip(results) {
        let resolved = result.map_err(|e| ResolveError::Input {
            expr: *dep,
            reason: e.to_string(),
        })?;
        by_expr.insert(*dep, resolved.fact);
    }
    let mut inputs = Vec::new();
    let mut input_bytes = 0;
    for (dep, name) in expression.output_refs() {
        let fact = &by_expr[&dep];
        let input = ResolvedInput::from_fact(fact, &name).map_err(|e| ResolveError::Input {
            expr: dep,
            reason: e.to_string(),
        })?;
        input_bytes += fact.body.output(&name).map_or(0, |o| o.size);
        inputs.push(input);
    }
    inputs.sort();
    Ok((inputs, input_bytes))
}

/// Facts for `expr` in the mesh: the best trusted one (under a `quorum`),
/// kept and provided.
pub(super) async fn mesh_lookup(
    ctx: &Ctx,
    expr: ExprId,
    quorum: usize,
) -> Result<Option<Resolved>, ResolveError> {
    let Ok(_permit) = ctx.0.lookups.acquire().await else {
        return Ok(None);
    };
    let parts = ctx.parts();
    // A trusted success ends the lookup at once; otherwise every fact
    // found is considered (an analysis error, untrusted signers).
    let trust = parts.trust.now();
    // With a quorum, every fact found counts.
    let single = quorum <= 1;
    let facts = parts
        .client
        .lookup_facts_until(expr, |f| {
            single && trust.accepts(f) && matches!(f.body.outcome, Outcome::Success { .. })
        })
        .await;
    let mut picked = ctx.pick_trusted(&facts, quorum).await;
    // Facts by signers this node does not trust on their own may have been
    // endorsed by a controller it heeds before it was listening: ask.
    if picked.is_none()
        && verdicts::look_up(&parts.client, &parts.store, &parts.trust, &facts).await
    {
        picked = ctx.pick_trusted(&facts, quorum).await;
    }
    let Some(fact) = picked else {
        if !facts.is_empty() {
            tracing::info!(%expr, n = facts.len(), "mesh has facts, none by a trusted signer");
        }
        return Ok(None);
    };
    parts.store.put_fact(&fact)?;
    if !single {
        for f in facts.iter().filter(|f| trust.accepts(f)) {
            parts.store.put_fact(f)?;
        }
    }
    // Keep it and say so: the next ask from a neighbour is one
    // request-response away.
    parts.client.announce_facts_held(&expr).await;
    tracing::debug!(%expr, "served from the mesh cache");
    Ok(Some(Resolved {
        fact,
        from_cache: true,
    }))
}

/// A `job` runner (`oda-node execute`) leaves once its run is over, and
/// its outputs' bytes with it: fetch them from it now, into this node's
/// store (a failure is logged; the fact stands, its bytes may be lost).
async fn keep_outputs_of_a_leaving_runner(ctx: &Ctx, fact: &SignedFact, worker: PeerId) {
    if fact.body.runner_class != RunnerClass::Job {
        return;
    }
    let Outcome::Success { outputs } = &fact.body.outcome else {
        return;
    };
    let parts = ctx.parts();
    for (name, out) in outputs {
        if let Err(e) = parts
            .client
            .fetch_blob_from(out.blob, Some(out.size), vec![worker], &parts.store)
            .await
        {
            tracing::warn!(expr = %fact.body.expr, output = %name, error = %e,
                "cannot keep the output of a job runner that is leaving");
        }
    }
}

/// Schedule `expression` on a worker; `inputs` are its resolved `Output`
/// arguments and their total size in bytes; `lookup`, a mesh lookup still
/// running (its fact is the result if it hits; no worker is assigned before
/// it ends). Unless `no_cache`, it is not tried again once as many trusted
/// workers as `max_attempts` are known to have failed it on these inputs
/// (their failure records, this node's own attempts), and workers known to
/// have failed it rank last.
async fn compute(
    ctx: &Ctx,
    expression: Expression,
    (inputs, input_bytes): (Vec<ResolvedInput>, u64),
    (want, mut lookup): (Want, Option<Lookup<'_>>),
    cancel: &CancellationToken,
) -> Result<Resolved, ResolveError> {
    let parts = ctx.parts();
    let expr = expression.id();
    let (workflow, bundle) = parts
        .store
        .workflow(&expression.workflow)?
        .ok_or_else(|| ResolveError::UnknownWorkflow(expression.workflow.to_string()))?;
    let topic = Topic::jobs(&expression.workflow);
    // Listening since the workflow was added or the node started, unless
    // this is the first the node hears of it.
    let listening_since = match parts.client.subscribe(topic.clone()).await {
        Ok(since) => since,
        Err(e) => {
            tracing::debug!(error = %e, "cannot subscribe to the jobs topic");
            now_ms()
        }
    };
    let endorsements = parts
        .store
        .endorsements_of(&Subject::Workflow(expression.workflow))?
        .into_iter()
        .take(JobAdvert::MAX_ENDORSEMENTS)
        .collect();
    let advert = JobAdvert {
        expr: expression.clone(),
        inputs,
        requester: parts.key.public(),
        requirements: workflow.manifest.resources.clone(),
        deadline: 0,
        priority: 0,
        token: None,
        bundle,
        endorsements,
    };
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut excluded: HashSet<PeerId> = want.without.iter().filter_map(peer_id_of).collect();
    let cfg = &parts.cfg;
    let (no_cache, quorum) = (want.no_cache, want.quorum());
    // With a quorum: results that came without agreement, and how many
    // more than the quorum may come before the job fails.
    let mut results = 0;
    let most_results = quorum + cfg.max_attempts as usize - 1;
    while attempts.len() < cfg.max_attempts as usize {
        if !attempts.is_empty() {
            let backoff = Duration::from_millis(cfg.backoff_ms << (attempts.len() - 1).min(6));
            tokio::select! {
                _ = cancel.cancelled() => return Err(ResolveError::Cancelled),
                _ = tokio::time::sleep(backoff) => {}
            }
        }
        let records = ctx
            .ask(|reply| Cmd::FailuresOf { expr, reply })
            .await
            .unwrap_or_default();
        let own: Vec<(PeerId, String)> = attempts
            .iter()
            .filter_map(|a| Some((a.worker.parse().ok()?, a.outcome.clone())))
            .collect();
        let failed = failed_on(&records, &advert.inputs, &own, now_ms());
        if !no_cache && failed.len() >= cfg.max_attempts as usize {
            if let Some(found) = finish(&mut lookup).await? {
                return Ok(found);
            }
            return Err(ResolveError::FailedElsewhere {
                failures: failed
                    .into_iter()
                    .map(|(peer, why)| (peer.to_string(), why))
                    .collect(),
            });
        }
        excluded.extend(failed.into_keys());
        let waited = match join_foreign(ctx, expr, quorum, cancel).await? {
            Joined::Fact(found) => return Ok(*found),
            Joined::Waited | Joined::Stranger => true,
            Joined::Nobody => false,
        };
        let listened_ms = now_ms().saturating_sub(listening_since);
        let contested = contested(waited, attempts.len(), listened_ms, cfg.lease_ttl_ms);
        // A quorum needs distinct workers: those whose facts are held
        // already are not asked again.
        let signed = if quorum > 1 {
            signers_of(ctx, expr)?
        } else {
            HashSet::new()
        };
        let chosen = advertise_and_choose(
            ctx,
            &topic,
            (&advert, input_bytes),
            (&excluded, &signed, contested, quorum),
            cancel,
            &mut lookup,
        )
        .await?;
        let (worker, reply) = match chosen {
            Choice::Worker(worker, reply) => (worker, reply),
            Choice::Found(found) => return Ok(*found),
            // Results came, but no other trusted worker is left to ask.
            Choice::Nobody if results > 0 => {
                return Err(ResolveError::NoQuorum {
                    needed: quorum,
                    said: what_they_said(ctx, expr)?,
                })
            }
            Choice::Nobody => {
                return Err(ResolveError::NoOffer {
                    waited_s: cfg.offer_timeout_ms / 1000,
                    attempts,
                })
            }
        };
        let started_at = now_ms();
        match run_lease(ctx, (expr, worker, reply), cancel, (&topic, &advert)).await {
            LeaseEnd::Fact(fact) => {
                parts.store.put_fact(&fact)?;
                let accepted = if quorum > 1 {
                    let held = parts.store.facts_for(&expr)?;
                    ctx.pick_trusted(&held, quorum).await
                } else {
                    Some(*fact)
                };
                if let Some(fact) = accepted {
                    if quorum > 1 {
                        dispute_dissenters(ctx, &fact, quorum).await?;
                    }
                    keep_outputs_of_a_leaving_runner(ctx, &fact, worker).await;
                    parts.client.announce_facts_held(&expr).await;
                    return Ok(Resolved {
                        fact,
                        from_cache: false,
                    });
                }
                results += 1;
                let said = what_they_said(ctx, expr)?;
                if results >= most_results {
                    return Err(ResolveError::NoQuorum {
                        needed: quorum,
                        said,
                    });
                }
                tracing::info!(%expr, quorum, %said, "no quorum yet; asking another worker");
            }
            LeaseEnd::Cancelled => return Err(ResolveError::Cancelled),
            LeaseEnd::Failed { outcome, log_tail } => {
                tracing::warn!(%expr, %worker, %outcome, "attempt failed");
                excluded.insert(worker);
                let attempt = Attempt {
                    worker: worker.to_string(),
                    started_at,
                    ended_at: now_ms(),
                    outcome,
                    log_tail,
                };
                ctx.tell(Cmd::Attempt {
                    expr,
                    attempt: attempt.clone(),
                })
                .await;
                attempts.push(attempt);
            }
        }
    }
    Err(ResolveError::Exhausted { attempts })
}

/// Sign, keep and publish a dispute of every trusted fact held that the
/// quorum behind `agreed` outvoted (same input bytes, other outcome).
async fn dispute_dissenters(
    ctx: &Ctx,
    agreed: &SignedFact,
    quorum: usize,
) -> Result<(), ResolveError> {
    let parts = ctx.parts();
    let held = trusted_held(ctx, agreed.body.expr)?;
    let (_, why) = quorum::verdict(&held, agreed, quorum);
    let signer = verdicts::Signer {
        client: &parts.client,
        store: &parts.store,
        key: &parts.key,
        trust: &parts.trust,
    };
    for outvoted in quorum::dissenters(&held, agreed) {
        let reason = format!("outvoted by a quorum: {why}");
        if let Err(e) = signer
            .publish_dispute(outvoted, quorum::observed(agreed), reason)
            .await
        {
            tracing::warn!(error = %e, "cannot dispute a result the quorum outvoted");
        }
    }
    Ok(())
}

/// The facts for `expr` this node holds whose signer it trusts.
fn trusted_held(ctx: &Ctx, expr: ExprId) -> Result<Vec<SignedFact>, ResolveError> {
    let trust = ctx.parts().trust.now();
    let mut held = ctx.parts().store.facts_for(&expr)?;
    held.retain(|f| trust.accepts(f));
    Ok(held)
}

/// The peers whose trusted facts for `expr` this node holds.
fn signers_of(ctx: &Ctx, expr: ExprId) -> Result<HashSet<PeerId>, ResolveError> {
    Ok(trusted_held(ctx, expr)?
        .iter()
        .filter_map(|f| peer_id_of(&f.body.worker))
        .collect())
}

/// Who said what among the trusted facts held for `expr`
/// ([`quorum::describe`]); a disagreement is logged as a warning.
fn what_they_said(ctx: &Ctx, expr: ExprId) -> Result<String, ResolveError> {
    let held = trusted_held(ctx, expr)?;
    let groups = quorum::groups(&held);
    let said = quorum::describe(&groups);
    if groups.len() > 1 {
        tracing::warn!(%expr, %said, "trusted workers disagree on a result");
    }
    Ok(said)
}

/// Whether a worker may already be running an expression about to be
/// advertised (then an ideal offer waits a little for a running worker's):
/// another requester was heard advertising it (`waited` for its fact in
/// vain), an earlier attempt's worker may still run it, or this node has
/// listened to the workflow's jobs topic for less than a lease TTL — the
/// interval at which a requester re-publishes the advert of a running
/// lease — so it may have missed such an advert.
fn contested(waited: bool, attempts: usize, listened_ms: u64, lease_ttl_ms: u64) -> bool {
    waited || attempts > 0 || listened_ms < lease_ttl_ms
}

/// What [`join_foreign`] found.
enum Joined {
    /// The other requester's fact.
    Fact(Box<Resolved>),
    /// Another requester advertised it, but no fact came: its worker may
    /// still be running it.
    Waited,
    /// Only requesters this node does not trust advertise it: not waited
    /// for (a peer could advertise an expression first and never compute
    /// it), but a worker may be running it.
    Stranger,
    /// Nobody else is known to advertise it.
    Nobody,
}

/// If a requester this node trusts is advertising `expr`, wait for its fact
/// (up to twice the lease TTL) instead of advertising a duplicate. Adverts
/// by other requesters are not waited for: a worker that runs the
/// expression for them still answers this node's advert with a `running`
/// offer, so the run is joined all the same.
async fn join_foreign(
    ctx: &Ctx,
    expr: ExprId,
    quorum: usize,
    cancel: &CancellationToken,
) -> Result<Joined, ResolveError> {
    let mut announced = ctx.0.announced.subscribe();
    let Some((until, trusted)) = ctx
        .ask(|reply| Cmd::ForeignUntil { expr, reply })
        .await
        .flatten()
    else {
        return Ok(Joined::Nobody);
    };
    if !trusted {
        return Ok(Joined::Stranger);
    }
    tracing::info!(%expr, "another requester is computing this; waiting for its fact");
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(until.saturating_sub(now_ms()));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Err(ResolveError::Cancelled),
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(match mesh_lookup(ctx, expr, quorum).await? {
                    Some(found) => Joined::Fact(Box::new(found)),
                    None => Joined::Waited,
                });
            }
            got = announced.recv() => match got {
                Ok(e) if e == expr => {
                    if let Some(found) = mesh_lookup(ctx, expr, quorum).await? {
                        return Ok(Joined::Fact(Box::new(found)));
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(Joined::Waited),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::contested;

    #[test]
    fn a_job_is_contested_while_a_running_worker_may_exist() {
        let ttl = 10_000;
        // Listening long enough, nobody else heard, first attempt: no.
        assert!(!contested(false, 0, ttl, ttl));
        // Another requester advertised it.
        assert!(contested(true, 0, ttl, ttl));
        // An earlier attempt's worker may still run it.
        assert!(contested(false, 1, ttl, ttl));
        // Just subscribed: a running lease's advert may not have come yet.
        assert!(contested(false, 0, ttl - 1, ttl));
    }
}
