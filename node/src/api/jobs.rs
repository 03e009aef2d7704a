//! Job routes: submit an expression, list, status, wait (long poll), logs,
//! cancel, the server-sent event stream of one job, and the facts of an
//! expression. Job JSON is [`JobView`]; its `result` says what the accepted
//! fact holds, who signed it, and whether it came from a cache.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use futures::stream::{self, Stream, StreamExt};
use oda_protocol::{ExprId, Expression, Outcome, SignedFact, Subject};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::args::{parse_args, value_to_json};
use super::{blocking, parse_id, ApiError, ApiJson, ApiPath, ApiQuery, ApiState};
use crate::identity::peer_id_of;
use crate::runtime::Node;
use crate::scheduler::jobs::now_ms;
use crate::scheduler::quorum;
use crate::scheduler::trust::Verdict;
use crate::scheduler::{JobEvent, JobId, JobRecord};

/// `POST /v1/jobs` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Workflow name (the newest added of that name) or id (`wf:<hex>`).
    pub workflow: String,
    /// Arguments by input name, typed by the manifest (see [`super::args`]).
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
    /// Skip the caches and compute again.
    #[serde(default)]
    pub no_cache: bool,
    /// Distinct trusted workers that must agree on the result, 1 to 16
    /// (default: the node's `[trust] quorum`).
    #[serde(default)]
    pub quorum: Option<u32>,
}

/// One attempt on one worker.
#[derive(Debug, Serialize)]
pub struct AttemptView {
    /// The worker's peer id (empty when nobody offered).
    pub worker: String,
    /// Unix ms.
    pub started_at: u64,
    /// Unix ms.
    pub ended_at: u64,
    /// What happened.
    pub outcome: String,
    /// The last log lines the worker sent.
    pub log_tail: String,
}

/// One output file of a result.
#[derive(Debug, Serialize)]
pub struct OutputView {
    /// Content id, `bl:<hex>`.
    pub blob: String,
    /// Size in bytes.
    pub size: u64,
}

/// A fact: the result of an expression, signed by the worker that computed it.
#[derive(Debug, Serialize)]
pub struct FactView {
    /// `fa:<hex>`.
    pub fact: String,
    /// `ex:<hex>`.
    pub expr: String,
    /// `wf:<hex>`.
    pub workflow: String,
    /// `success` or `analysis-error`.
    pub outcome: &'static str,
    /// Outputs by name (empty for an analysis error).
    pub outputs: BTreeMap<String, OutputView>,
    /// The analysis exception's kind, for `analysis-error`.
    pub error_kind: Option<String>,
    /// The analysis exception's message, for `analysis-error`.
    pub error_message: Option<String>,
    /// The signing worker's public key (hex).
    pub worker_key: String,
    /// The signing worker's peer id.
    pub worker_peer: Option<String>,
    /// The runner class that computed it.
    pub runner_class: &'static str,
    /// Run start, Unix ms.
    pub started_at: u64,
    /// Run end, Unix ms.
    pub finished_at: u64,
    /// `finished_at - started_at`.
    pub run_ms: u64,
    /// CPU time of the run, ms.
    pub cpu_ms: u64,
    /// Peak resident memory of the run, KiB.
    pub peak_rss_kib: u64,
    /// Whether this node holds the fact in its store. A held fact is not
    /// necessarily trusted: a worker keeps the input facts of what it
    /// computed, whoever signed them.
    pub local: bool,
    /// Whether this node would take the fact as a result: its signer and
    /// every input fact behind it (as far as this node holds them) are
    /// trusted here.
    pub trusted: bool,
    /// Why it is trusted or not, e.g. "signed by <key>, listed in [trust]
    /// keys" or "signed by <key>, whom this node does not trust".
    pub trust: String,
    /// Disputes of this fact this node keeps (signed by whoever disputes
    /// it: a requester whose quorum outvoted it, a controller that
    /// re-computed it).
    pub disputes: Vec<DisputeView>,
    /// Endorsements of this fact this node keeps (signed by controllers that
    /// re-computed it and got the same outcome).
    pub endorsements: Vec<EndorsementView>,
}

/// A signed endorsement of a fact.
#[derive(Debug, Serialize)]
pub struct EndorsementView {
    /// The endorsing key (hex).
    pub by: String,
    /// Whether this node heeds that key (`[trust] controllers`, or itself).
    pub by_heeded: bool,
    /// Unix ms.
    pub issued_at: u64,
    /// The endorser's note, e.g. "re-computed by <key>: the same outcome".
    pub note: String,
}

/// A signed dispute of a fact.
#[derive(Debug, Serialize)]
pub struct DisputeView {
    /// The disputing key (hex).
    pub by: String,
    /// Whether this node heeds that key (`[trust] controllers`, or itself):
    /// then the fact is not trusted here, nor are its signer's other facts
    /// unless endorsed.
    pub by_heeded: bool,
    /// What the disputer takes the outputs to be, blob by output name.
    pub observed: BTreeMap<String, String>,
    /// Unix ms.
    pub issued_at: u64,
    /// Why, e.g. "outvoted by a quorum: 2 of 2 agree: A, B".
    pub reason: String,
}

impl FactView {
    /// The view of a fact, with this node's verdict on it.
    pub fn new(f: &SignedFact, local: bool, verdict: Verdict) -> Self {
        let b = &f.body;
        let (outcome, outputs, error_kind, error_message) = match &b.outcome {
            Outcome::Success { outputs } => (
                "success",
                outputs
                    .iter()
                    .map(|(name, o)| {
                        (
                            name.clone(),
                            OutputView {
                                blob: format!("{:#}", o.blob),
                                size: o.size,
                            },
                        )
                    })
                    .collect(),
                None,
                None,
            ),
            Outcome::AnalysisError { kind, message } => (
                "analysis-error",
                BTreeMap::new(),
                Some(kind.clone()),
                Some(message.clone()),
            ),
        };
        Self {
            fact: format!("{:#}", f.id()),
            expr: format!("{:#}", b.expr),
            workflow: format!("{:#}", b.workflow),
            outcome,
            outputs,
            error_kind,
            error_message,
            worker_key: b.worker.to_string(),
            worker_peer: peer_id_of(&b.worker).map(|p| p.to_string()),
            runner_class: b.runner_class.name(),
            started_at: b.started_at,
            finished_at: b.finished_at,
            run_ms: b.finished_at.saturating_sub(b.started_at),
            cpu_ms: b.usage.cpu_ms,
            peak_rss_kib: b.usage.peak_rss_kib,
            local,
            trusted: verdict.trusted,
            trust: verdict.why,
            disputes: Vec::new(),
            endorsements: Vec::new(),
        }
    }

    /// The view of a fact whose signature was verified (held here: when it
    /// was stored; from the mesh: by the lookup), judged with the input
    /// facts the store holds (blocking).
    pub fn judged(node: &Node, f: &SignedFact, local: bool) -> Self {
        Self::judged_under(node, f, local, node.requester.quorum())
    }

    /// [`FactView::judged`] under a quorum of `k` (a job's own).
    pub fn judged_under(node: &Node, f: &SignedFact, local: bool, k: u32) -> Self {
        Self::with_verdict(node, f, local, verdict_under(node, f, k))
    }

    /// The view of a fact with `verdict`, and the disputes and endorsements
    /// of it the store keeps (blocking).
    pub fn with_verdict(node: &Node, f: &SignedFact, local: bool, verdict: Verdict) -> Self {
        let trust = node.trust.now();
        let mut view = Self::new(f, local, verdict);
        view.disputes = node
            .store
            .disputes_of(&f.id())
            .unwrap_or_default()
            .into_iter()
            .map(|d| DisputeView {
                by: d.body.controller.to_string(),
                by_heeded: trust.heeds(&d.body.controller),
                observed: d
                    .body
                    .observed
                    .iter()
                    .map(|(n, b)| (n.clone(), format!("{b:#}")))
                    .collect(),
                issued_at: d.body.issued_at,
                reason: d.body.reason,
            })
            .collect();
        view.endorsements = node
            .store
            .endorsements_of(&Subject::Fact(f.id()))
            .unwrap_or_default()
            .into_iter()
            .map(|e| EndorsementView {
                by: e.body.endorser.to_string(),
                by_heeded: trust.heeds(&e.body.endorser),
                issued_at: e.body.issued_at,
                note: e.body.note,
            })
            .collect();
        view
    }
}

/// This node's verdict on a fact whose signature was verified, judged with
/// the input facts the store holds, under a quorum of `k` (blocking).
pub fn verdict_under(node: &Node, f: &SignedFact, k: u32) -> Verdict {
    let trust = node.trust.now();
    let verdict = trust.verdict_of_verified(f, &node.store);
    let k = k as usize;
    if !verdict.trusted || k <= 1 {
        return verdict;
    }
    // Under a quorum a trusted signer is not enough: enough trusted
    // signers must say the same.
    let held: Vec<SignedFact> = node
        .store
        .facts_for(&f.body.expr)
        .unwrap_or_default()
        .into_iter()
        .filter(|h| trust.accepts(h))
        .collect();
    let (trusted, why) = quorum::verdict(&held, f, k);
    Verdict { trusted, why }
}

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct JobView {
    /// Job id (32 hex digits).
    pub id: String,
    /// The expression, `ex:<hex>`.
    pub expr: String,
    /// Its workflow, `wf:<hex>`, if the expression is in the store.
    pub workflow: Option<String>,
    /// The workflow's name, if known.
    pub workflow_name: Option<String>,
    /// `queued`, `resolving-inputs`, `advertised`, `assigned`, `running`,
    /// `done`, `failed` or `cancelled`.
    pub state: &'static str,
    /// Whether the state is final (`done`, `failed`, `cancelled`).
    pub terminal: bool,
    /// The worker's peer id while assigned or running.
    pub worker: Option<String>,
    /// Submitted with `no_cache` (forced recompute).
    pub no_cache: bool,
    /// Distinct trusted workers that must agree on the result.
    pub quorum: u32,
    /// The result came from a cache (this node's or the mesh's), not a new run.
    pub from_cache: bool,
    /// Submitted, Unix ms.
    pub created_at: u64,
    /// Last change, Unix ms.
    pub updated_at: u64,
    /// Time from submission to the last change (to now while not terminal), ms.
    pub elapsed_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Attempts so far.
    pub attempts: Vec<AttemptView>,
    /// The accepted fact, once there is one.
    pub result: Option<FactView>,
}

/// Build the view of a job (reads the expression, workflow and fact).
pub fn job_view(node: &Node, r: &JobRecord) -> JobView {
    use crate::scheduler::JobState;
    let store = &node.store;
    let workflow = store.expr(&r.expr).ok().flatten().map(|e| e.workflow);
    let workflow_name = workflow
        .and_then(|w| store.workflow(&w).ok().flatten())
        .map(|(wf, _)| wf.manifest.name);
    let worker = match &r.state {
        JobState::Assigned { worker } | JobState::Running { worker } => Some(worker.clone()),
        _ => None,
    };
    let result = r
        .fact
        .and_then(|id| store.fact(&id).ok().flatten())
        .map(|f| FactView::judged_under(node, &f, true, r.quorum));
    let terminal = r.state.is_terminal();
    let end = if terminal { r.updated_at } else { now_ms() };
    JobView {
        id: r.id.to_string(),
        expr: format!("{:#}", r.expr),
        workflow: workflow.map(|w| format!("{w:#}")),
        workflow_name,
        state: r.state.name(),
        terminal,
        worker,
        no_cache: r.no_cache,
        quorum: r.quorum,
        from_cache: r.from_cache,
        created_at: r.created_at,
        updated_at: r.updated_at,
        elapsed_ms: end.saturating_sub(r.created_at),
        error: r.error.clone(),
        attempts: r
            .attempts
            .iter()
            .map(|a| AttemptView {
                worker: a.worker.clone(),
                started_at: a.started_at,
                ended_at: a.ended_at,
                outcome: a.outcome.clone(),
                log_tail: a.log_tail.clone(),
            })
            .collect(),
        result,
    }
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    parse_id("job", text)
}

fn record(node: &Node, id: &JobId) -> Result<JobRecord, ApiError> {
    node.requester.status(id)?.ok_or_else(|| {
        ApiError::not_found(format!("no job {id} on this node; `oda jobs` lists them"))
    })
}

/// `POST /v1/jobs`: type the arguments by the manifest, store the expression,
/// start a job. 201 with the job; 400 for bad arguments; 404 for an unknown
/// workflow.
pub async fn submit(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<SubmitRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let node = s.node.clone();
    let expression = blocking(move || {
        let (wf_id, workflow) = super::workflows::find(&node, &req.workflow)?;
        let args = parse_args(&workflow.manifest, &req.args)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Expression::new(wf_id, &workflow.manifest, args)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    })
    .await?;
    let record = s
        .node
        .requester
        .submit_with_quorum(&expression, req.no_cache, req.quorum)
        .await?;
    let node = s.node.clone();
    let view = blocking(move || Ok(job_view(&node, &record))).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /v1/jobs`: every job, oldest first.
pub async fn list(State(s): State<ApiState>) -> Result<Json<Vec<JobView>>, ApiError> {
    let node = s.node.clone();
    blocking(move || {
        let records = node.requester.list()?;
        Ok(Json(records.iter().map(|r| job_view(&node, r)).collect()))
    })
    .await
}

/// `GET /v1/jobs/{id}`.
pub async fn status(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(&id)?;
    let r = record(&s.node, &id)?;
    Ok(Json(job_view(&s.node, &r)))
}

/// Query of `GET /v1/jobs/{id}/wait`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Longest wait, ms; default 30000, at most 300000 (larger values are capped).
    pub timeout_ms: Option<u64>,
}

/// Default long-poll time, ms.
pub const WAIT_DEFAULT_MS: u64 = 30_000;
/// Longest long-poll time, ms.
pub const WAIT_MAX_MS: u64 = 300_000;

/// `GET /v1/jobs/{id}/wait`: the job once terminal, or as it is after the
/// timeout (check `terminal`).
pub async fn wait(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(&id)?;
    record(&s.node, &id)?;
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(WAIT_DEFAULT_MS).min(WAIT_MAX_MS));
    let waited = tokio::select! {
        r = s.node.requester.wait(&id, timeout) => r?,
        _ = s.shutdown.cancelled() => None,
    };
    let r = match waited {
        Some(r) => r,
        None => record(&s.node, &id)?,
    };
    Ok(Json(job_view(&s.node, &r)))
}

/// `GET /v1/jobs/{id}/logs` answer.
#[derive(Debug, Serialize)]
pub struct LogsView {
    /// The job.
    pub job: String,
    /// Recent lines (at most 500), oldest first.
    pub lines: Vec<String>,
}

/// `GET /v1/jobs/{id}/logs`: recent log lines of the job's expression.
pub async fn logs(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<LogsView>, ApiError> {
    let id = job_id(&id)?;
    record(&s.node, &id)?;
    Ok(Json(LogsView {
        job: id.to_string(),
        lines: s.node.requester.logs(&id).await?,
    }))
}

/// `POST /v1/jobs/{id}/cancel`: the job, cancelled unless it had finished.
pub async fn cancel(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(&id)?;
    let r = s.node.requester.cancel(&id).await?.ok_or_else(|| {
        ApiError::not_found(format!("no job {id} on this node; `oda jobs` lists them"))
    })?;
    Ok(Json(job_view(&s.node, &r)))
}

/// Query of `GET /v1/jobs/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Send the recent log lines first (default true).
    pub backlog: Option<bool>,
}

/// What the event stream does next.
enum Phase {
    Live(broadcast::Receiver<JobEvent>),
    Done,
}

fn state_event(node: &Node, r: &JobRecord) -> Event {
    match Event::default().event("state").json_data(job_view(node, r)) {
        Ok(e) => e,
        Err(e) => Event::default().event("error").data(e.to_string()),
    }
}

fn log_event(line: &str) -> Event {
    Event::default()
        .event("log")
        .json_data(serde_json::json!({ "line": line }))
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}

/// `GET /v1/jobs/{id}/events`: server-sent events. `log` events
/// (`{"line": …}`, the recent backlog first), then a `state` event with the
/// current [`JobView`], then live `state` and `log` events; the stream ends
/// after a terminal state (or when the node shuts down).
pub async fn events(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = job_id(&id)?;
    // Subscribe before reading the state so nothing falls between the two.
    let rx = s.node.requester.events();
    let current = record(&s.node, &id)?;
    let mut first: Vec<Event> = Vec::new();
    if q.backlog.unwrap_or(true) {
        first.extend(
            s.node
                .requester
                .logs(&id)
                .await?
                .iter()
                .map(|l| log_event(l)),
        );
    }
    first.push(state_event(&s.node, &current));
    let phase = if current.state.is_terminal() {
        Phase::Done
    } else {
        Phase::Live(rx)
    };
    let node = s.node.clone();
    let live = stream::unfold(phase, move |phase| {
        let node = node.clone();
        async move {
            let Phase::Live(mut rx) = phase else {
                return None;
            };
            loop {
                match rx.recv().await {
                    Ok(JobEvent::State(r)) if r.id == id => {
                        let next = if r.state.is_terminal() {
                            Phase::Done
                        } else {
                            Phase::Live(rx)
                        };
                        return Some((state_event(&node, &r), next));
                    }
                    Ok(JobEvent::Log { job, line }) if job == id => {
                        return Some((log_event(&line), Phase::Live(rx)));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Missed events: send the current state instead.
                        let r = node.requester.status(&id).ok().flatten()?;
                        let next = if r.state.is_terminal() {
                            Phase::Done
                        } else {
                            Phase::Live(rx)
                        };
                        return Some((state_event(&node, &r), next));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let shutdown = s.shutdown.clone();
    let all = stream::iter(first)
        .chain(live)
        .take_until(async move { shutdown.cancelled_owned().await })
        .map(Ok);
    Ok(Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Query of `GET /v1/exprs/{id}/facts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsQuery {
    /// Also ask the mesh (DHT record and providers); default false.
    pub mesh: Option<bool>,
}

/// `GET /v1/exprs/{id}/facts` answer.
#[derive(Debug, Serialize)]
pub struct FactsView {
    /// `ex:<hex>`.
    pub expr: String,
    /// The expression, if this node has it: `{"workflow", "args"}`.
    pub expression: Option<serde_json::Value>,
    /// Facts, those in the local store first.
    pub facts: Vec<FactView>,
    /// Trusted workers' records of runs of this expression that failed
    /// without a result, in the last hour (oldest first).
    pub failures: Vec<FailureView>,
}

/// A worker's signed record of a run that failed without a result.
#[derive(Debug, Serialize)]
pub struct FailureView {
    /// The worker's public key (hex).
    pub worker_key: String,
    /// The worker's peer id.
    pub worker_peer: Option<String>,
    /// When the run ended, Unix ms.
    pub at: u64,
    /// What happened.
    pub reason: String,
    /// The end of the run's log.
    pub log_tail: String,
}

impl FailureView {
    fn new(f: &oda_protocol::SignedFailure) -> Self {
        Self {
            worker_key: f.body.worker.to_string(),
            worker_peer: peer_id_of(&f.body.worker).map(|p| p.to_string()),
            at: f.body.at,
            reason: f.body.reason.clone(),
            log_tail: f.body.log_tail.clone(),
        }
    }
}

/// `GET /v1/exprs/{id}/facts`: the facts this node holds for an expression
/// and, with `?mesh=true`, also those the mesh holds (signatures verified).
/// Every fact says whether this node trusts it and why (`trusted`, `trust`):
/// a held fact may be untrusted (a worker keeps the input facts of what it
/// computed), and so may a fact from the mesh. 404 if neither the
/// expression nor any fact is known.
pub async fn facts(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<FactsQuery>,
) -> Result<Json<FactsView>, ApiError> {
    let expr: ExprId = parse_id("expression", &id)?;
    let node = s.node.clone();
    let (expression, mut views) = blocking(move || {
        let e = node.store.expr(&expr)?;
        let held = node.store.facts_for(&expr)?;
        let views: Vec<FactView> = held
            .iter()
            .map(|f| FactView::judged(&node, f, true))
            .collect();
        Ok((e, views))
    })
    .await?;
    if q.mesh.unwrap_or(false) {
        let found = s
            .node
            .client
            .lookup_facts(expr)
            .await
            .map_err(|e| ApiError::internal(format!("mesh lookup failed: {e}")))?;
        let known: std::collections::HashSet<String> =
            views.iter().map(|v| v.fact.clone()).collect();
        let node = s.node.clone();
        let found: Vec<FactView> = blocking(move || {
            Ok(found
                .iter()
                .map(|f| FactView::judged(&node, f, false))
                .collect())
        })
        .await?;
        views.extend(found.into_iter().filter(|v| !known.contains(&v.fact)));
    }
    let mut failures = s.node.requester.failures(expr).await;
    failures.sort_by_key(|f| f.body.at);
    if expression.is_none() && views.is_empty() && failures.is_empty() {
        return Err(ApiError::not_found(format!(
            "expression {expr:#} is unknown to this node and has no facts{}",
            if q.mesh.unwrap_or(false) {
                " here or in the mesh"
            } else {
                " here (add ?mesh=true to ask the mesh)"
            }
        )));
    }
    Ok(Json(FactsView {
        expr: format!("{expr:#}"),
        expression: expression.map(|e| {
            serde_json::json!({
                "workflow": format!("{:#}", e.workflow),
                "args": e.args.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect::<serde_json::Map<_, _>>(),
            })
        }),
        facts: views,
        failures: failures.iter().map(FailureView::new).collect(),
    }))
}
