//! `GET /v1/exprs/{id}/prov`: the provenance of an expression's result —
//! the DAG of signed facts behind it ([`crate::provenance`]) as JSON, or as
//! W3C PROV-O in Turtle or JSON-LD.
//!
//! The roots are the facts this node holds for the expression that it
//! trusts (all held facts when it trusts none; `?fact=` picks one); with
//! `?mesh=true` the mesh is asked for the expression's facts when none is
//! held, and for every input fact the store lacks (each checked against the
//! input that names it and kept, as the requester keeps input facts), level
//! by level until the DAG is complete or nothing more is found.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oda_protocol::{ExprId, FactId, ResolvedInput, SignedFact};
use serde::{Deserialize, Serialize};

use super::args::value_to_json;
use super::jobs::{verdict_under, FactView};
use super::{blocking, parse_id, ApiError, ApiPath, ApiQuery, ApiState};
use crate::provenance::{self, prov_o, Provenance, Step};
use crate::runtime::Node;
use crate::scheduler::input_facts;
use crate::store::StoreError;

/// Rounds of fetching missing input facts from the mesh: one per level of
/// the DAG that was not held.
const MESH_ROUNDS: usize = 64;
/// Input facts asked of the mesh at once.
const MESH_AT_ONCE: usize = 16;

/// Query of `GET /v1/exprs/{id}/prov`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvQuery {
    /// `json` (default), `turtle` or `jsonld`.
    pub format: Option<String>,
    /// Ask the mesh for facts this node does not hold; default false.
    pub mesh: Option<bool>,
    /// Only this fact of the expression (`fa:<hex>`) as the root.
    pub fact: Option<String>,
}

/// The answer's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Turtle,
    JsonLd,
}

impl Format {
    fn parse(text: Option<&str>) -> Result<Self, ApiError> {
        match text.unwrap_or("json") {
            "json" => Ok(Self::Json),
            "turtle" | "ttl" => Ok(Self::Turtle),
            "jsonld" | "json-ld" => Ok(Self::JsonLd),
            other => Err(ApiError::bad_request(format!(
                "unknown format `{other:.64}`: use json, turtle or jsonld"
            ))),
        }
    }
}

/// `GET /v1/exprs/{id}/prov` answer (format `json`).
#[derive(Debug, Serialize)]
pub struct ProvView {
    /// `ex:<hex>`.
    pub expr: String,
    /// The root facts, `fa:<hex>`.
    pub roots: Vec<String>,
    /// Every fact of the DAG: the roots first, then breadth-first.
    pub steps: Vec<StepView>,
    /// Inputs whose fact is not held here (nor found in the mesh, with
    /// `?mesh=true`): the DAG above them is unknown.
    pub missing: Vec<InputView>,
    /// The DAG has more than 10,000 facts and was cut.
    pub truncated: bool,
}

/// One fact of the DAG.
#[derive(Debug, Serialize)]
pub struct StepView {
    /// The fact, with this node's verdict, disputes and endorsements.
    #[serde(flatten)]
    pub fact: FactView,
    /// The workflow's name, if this node has the workflow.
    pub workflow_name: Option<String>,
    /// The workflow's version, if this node has the workflow.
    pub workflow_version: Option<String>,
    /// Keys (hex) that endorsed the workflow.
    pub workflow_endorsed_by: Vec<String>,
    /// The expression's arguments, if this node has the expression.
    pub args: Option<BTreeMap<String, serde_json::Value>>,
    /// The input facts it was computed from.
    pub inputs: Vec<InputView>,
}

/// An input of a step: which output of which fact it used.
#[derive(Debug, Serialize)]
pub struct InputView {
    /// The argument that took it, if the expression is known.
    pub argument: Option<String>,
    /// The upstream expression, `ex:<hex>`.
    pub expr: String,
    /// Its output name.
    pub output: String,
    /// The bytes used, `bl:<hex>`.
    pub blob: String,
    /// The upstream fact, `fa:<hex>`.
    pub fact: String,
    /// That fact's signer (hex).
    pub signer: String,
}

impl InputView {
    fn new(input: &ResolvedInput, argument: Option<&str>) -> Self {
        Self {
            argument: argument.map(str::to_string),
            expr: format!("{:#}", input.expr),
            output: input.name.clone(),
            blob: format!("{:#}", input.blob),
            fact: format!("{:#}", input.fact),
            signer: input.signer.to_string(),
        }
    }
}

impl StepView {
    /// Blocking (the fact's disputes and endorsements are read).
    fn new(node: &Node, step: &Step) -> Self {
        let local = node.store.fact(&step.fact.id()).ok().flatten().is_some();
        Self {
            fact: FactView::with_verdict(node, &step.fact, local, step.verdict.clone()),
            workflow_name: step.workflow.as_ref().map(|m| m.name.clone()),
            workflow_version: step.workflow.as_ref().map(|m| m.version.clone()),
            workflow_endorsed_by: step
                .workflow_endorsed_by
                .iter()
                .map(|k| k.to_string())
                .collect(),
            args: step.expression.as_ref().map(|e| {
                e.args
                    .iter()
                    .map(|(k, v)| (k.clone(), value_to_json(v)))
                    .collect()
            }),
            inputs: step
                .fact
                .body
                .inputs
                .iter()
                .map(|i| InputView::new(i, step.argument_of(i)))
                .collect(),
        }
    }
}

/// `GET /v1/exprs/{id}/prov`: the provenance DAG of the expression's
/// result. 404 if no fact of it is held (or found, with `?mesh=true`);
/// 400 for an unknown format or a `fact` that is no fact id.
pub async fn prov(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProvQuery>,
) -> Result<Response, ApiError> {
    let expr: ExprId = parse_id("expression", &id)?;
    let format = Format::parse(q.format.as_deref())?;
    let only: Option<FactId> = q.fact.as_deref().map(|f| parse_id("fact", f)).transpose()?;
    let mesh = q.mesh.unwrap_or(false);
    let node = s.node.clone();
    let roots = roots(&node, expr, only, mesh).await?;
    let mut traced = trace(&node, roots.clone()).await?;
    if mesh {
        for _ in 0..MESH_ROUNDS {
            if traced.missing.is_empty() || !fetch(&node, &traced.missing).await {
                break;
            }
            traced = trace(&node, roots.clone()).await?;
        }
    }
    Ok(match format {
        Format::Turtle => text("text/turtle; charset=utf-8", prov_o::turtle(&traced)),
        Format::JsonLd => text("application/ld+json", prov_o::json_ld(&traced)),
        Format::Json => {
            let view = blocking(move || Ok(describe(&node, expr, &roots, &traced))).await?;
            Json(view).into_response()
        }
    })
}

/// The JSON view of a traced DAG (blocking: the facts' verdicts are read).
pub fn describe(node: &Node, expr: ExprId, roots: &[SignedFact], traced: &Provenance) -> ProvView {
    ProvView {
        expr: format!("{expr:#}"),
        roots: roots.iter().map(|f| format!("{:#}", f.id())).collect(),
        steps: traced
            .steps
            .iter()
            .map(|s| StepView::new(node, s))
            .collect(),
        missing: traced
            .missing
            .iter()
            .map(|i| InputView::new(i, None))
            .collect(),
        truncated: traced.truncated,
    }
}

fn text(content_type: &'static str, body: String) -> Response {
    ([(CONTENT_TYPE, content_type)], body).into_response()
}

/// The root facts: those held for `expr` that this node trusts, else all
/// held; with `mesh`, those the mesh has when none is held. `only` keeps
/// one fact. 404 when there is none.
async fn roots(
    node: &Arc<Node>,
    expr: ExprId,
    only: Option<FactId>,
    mesh: bool,
) -> Result<Vec<SignedFact>, ApiError> {
    let held = {
        let node = node.clone();
        blocking(move || Ok(node.store.facts_for(&expr)?)).await?
    };
    let facts = if held.is_empty() && mesh {
        node.client
            .lookup_facts(expr)
            .await
            .map_err(|e| ApiError::internal(format!("mesh lookup failed: {e}")))?
    } else {
        held
    };
    let picked: Vec<SignedFact> = match only {
        Some(id) => facts.into_iter().filter(|f| f.id() == id).collect(),
        None => {
            let node = node.clone();
            blocking(move || {
                let quorum = node.requester.quorum();
                let (trusted, other): (Vec<_>, Vec<_>) = facts
                    .into_iter()
                    .partition(|f| verdict_under(&node, f, quorum).trusted);
                Ok(if trusted.is_empty() { other } else { trusted })
            })
            .await?
        }
    };
    if picked.is_empty() {
        let what = match only {
            Some(id) => format!("fact {id:#} of expression {expr:#}"),
            None => format!("a fact of expression {expr:#}"),
        };
        return Err(ApiError::not_found(format!(
            "{what} is not held here{}",
            if mesh {
                " nor found in the mesh"
            } else {
                " (add ?mesh=true to ask the mesh)"
            }
        )));
    }
    Ok(picked)
}

async fn trace(node: &Arc<Node>, roots: Vec<SignedFact>) -> Result<Provenance, ApiError> {
    let node = node.clone();
    blocking(move || Ok(trace_blocking(&node, roots)?)).await
}

/// The DAG behind `roots` in this node's store, each fact with this node's
/// verdict under its default quorum (blocking).
pub fn trace_blocking(node: &Node, roots: Vec<SignedFact>) -> Result<Provenance, StoreError> {
    let quorum = node.requester.quorum();
    provenance::trace(&node.store, roots, |f| verdict_under(node, f, quorum))
}

/// Ask the mesh for missing input facts (checked and kept); whether any
/// was found.
async fn fetch(node: &Arc<Node>, missing: &[ResolvedInput]) -> bool {
    use futures::stream::{self, StreamExt};
    let found: Vec<bool> = stream::iter(missing.to_vec())
        .map(|input| {
            let node = node.clone();
            async move {
                match input_facts::checked(&node.store, &node.client, &input, None).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::debug!(error = %e, "provenance: an input fact was not found");
                        false
                    }
                }
            }
        })
        .buffer_unordered(MESH_AT_ONCE)
        .collect()
        .await;
    found.contains(&true)
}
