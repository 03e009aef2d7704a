//! `POST /v1/why`: why an expression is (or would be) a cache miss here —
//! whether this node holds a trusted fact of it, the cached expressions of
//! the same workflow nearest to it with their differing arguments
//! ([`crate::misses`]), and the same arguments under the other versions of
//! the workflow (same name) and whether those are cached.
//!
//! The expression is given as a submission would give it (`workflow` and
//! `args`) or by id (`expr`, which this node must have stored). Only what
//! this node's store holds is searched: the expressions it submitted, ran or
//! received, and the facts it holds.

use axum::extract::State;
use axum::Json;
use oda_protocol::{ExprId, Expression};
use serde::{Deserialize, Serialize};

use super::args::{parse_args, value_to_json};
use super::jobs::verdict_under;
use super::{blocking, parse_id, ApiError, ApiJson, ApiState};
use crate::misses::{Difference, Nearest};
use crate::runtime::Node;

/// Nearest cached expressions listed.
const NEAREST: usize = 5;

/// `POST /v1/why` body: `workflow` (name or id) with `args`, or `expr`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhyRequest {
    /// Workflow name or id, as for `POST /v1/jobs`.
    pub workflow: Option<String>,
    /// Arguments by input name, typed by the manifest.
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
    /// Or an expression id (`ex:<hex>`) this node has.
    pub expr: Option<String>,
}

/// `POST /v1/why` answer.
#[derive(Debug, Serialize)]
pub struct WhyView {
    /// The expression asked about, `ex:<hex>`.
    pub expr: String,
    /// Its workflow, `wf:<hex>`.
    pub workflow: String,
    /// The workflow's name.
    pub workflow_name: String,
    /// The workflow's version.
    pub workflow_version: String,
    /// Whether this node holds a fact of it that it trusts.
    pub cached: bool,
    /// The cached expressions of the same workflow nearest to it (fewest
    /// differing arguments first), at most 5.
    pub nearest: Vec<NearView>,
    /// The same arguments under the other versions of the workflow.
    pub other_versions: Vec<VersionView>,
}

/// A cached expression near the one asked about.
#[derive(Debug, Serialize)]
pub struct NearView {
    /// `ex:<hex>`.
    pub expr: String,
    /// Its arguments that differ.
    pub differences: Vec<DifferenceView>,
}

/// One differing argument (values in the forms `POST /v1/jobs` accepts;
/// null when the argument is absent on that side).
#[derive(Debug, Serialize)]
pub struct DifferenceView {
    /// The argument.
    pub argument: String,
    /// Its value in the cached expression.
    pub cached: serde_json::Value,
    /// Its value in the one asked about.
    pub asked: serde_json::Value,
}

impl DifferenceView {
    fn new(d: &Difference) -> Self {
        let json = |v: &Option<oda_protocol::Value>| {
            v.as_ref().map_or(serde_json::Value::Null, value_to_json)
        };
        Self {
            argument: d.argument.clone(),
            cached: json(&d.cached),
            asked: json(&d.asked),
        }
    }
}

/// The asked arguments under another version of the workflow.
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// `wf:<hex>`.
    pub workflow: String,
    /// Its version.
    pub version: String,
    /// The expression the arguments make under it, if they fit its inputs.
    pub expr: Option<String>,
    /// Whether this node holds a trusted fact of that expression.
    pub cached: bool,
    /// Why the arguments do not fit, when they do not.
    pub problem: Option<String>,
}

/// `POST /v1/why`. 400 when neither or both forms are given or the
/// arguments do not fit; 404 for an unknown workflow or expression.
pub async fn why(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<WhyRequest>,
) -> Result<Json<WhyView>, ApiError> {
    let node = s.node.clone();
    blocking(move || {
        let asked = asked(&node, &req)?;
        Ok(Json(explain(&node, &asked)?))
    })
    .await
}

/// The expression a request names (blocking).
fn asked(node: &Node, req: &WhyRequest) -> Result<Expression, ApiError> {
    match (&req.workflow, &req.expr) {
        (Some(name), None) => {
            let (id, workflow) = super::workflows::find(node, name)?;
            let args = parse_args(&workflow.manifest, &req.args)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            Expression::new(id, &workflow.manifest, args)
                .map_err(|e| ApiError::bad_request(e.to_string()))
        }
        (None, Some(text)) if req.args.is_empty() => {
            let id: ExprId = parse_id("expression", text)?;
            node.store.expr(&id)?.ok_or_else(|| {
                ApiError::not_found(format!(
                    "expression {id:#} is unknown to this node; give the workflow and its arguments instead"
                ))
            })
        }
        _ => Err(ApiError::bad_request(
            "give either `workflow` (with `args`) or `expr`, not both",
        )),
    }
}

/// Whether this node holds a fact of `expr` that it trusts (blocking).
fn cached(node: &Node, expr: &ExprId) -> Result<bool, ApiError> {
    let quorum = node.requester.quorum();
    Ok(node
        .store
        .facts_for(expr)?
        .iter()
        .any(|f| verdict_under(node, f, quorum).trusted))
}

fn explain(node: &Node, asked: &Expression) -> Result<WhyView, ApiError> {
    let id = asked.id();
    let (workflow, _) = node.store.workflow(&asked.workflow)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "workflow {:#} of expression {id:#} is not on this node; `oda workflow add DIR` adds it",
            asked.workflow
        ))
    })?;
    let mut nearest = Nearest::new(asked, NEAREST);
    node.store.exprs_of(&asked.workflow, |expr, e| {
        if cached(node, &expr)? {
            nearest.offer(expr, &e);
        }
        Ok::<(), ApiError>(())
    })?;
    let mut other_versions = Vec::new();
    for (other, wf, _) in node.store.workflows()? {
        if other == asked.workflow || wf.manifest.name != workflow.manifest.name {
            continue;
        }
        let (expr, problem) = match Expression::new(other, &wf.manifest, asked.args.clone()) {
            Ok(e) => (Some(e.id()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        other_versions.push(VersionView {
            workflow: format!("{other:#}"),
            version: wf.manifest.version.clone(),
            expr: expr.map(|e| format!("{e:#}")),
            cached: match &expr {
                Some(e) => cached(node, e)?,
                None => false,
            },
            problem,
        });
    }
    Ok(WhyView {
        expr: format!("{id:#}"),
        workflow: format!("{:#}", asked.workflow),
        workflow_name: workflow.manifest.name.clone(),
        workflow_version: workflow.manifest.version.clone(),
        cached: cached(node, &id)?,
        nearest: nearest
            .into_vec()
            .into_iter()
            .map(|n| NearView {
                expr: format!("{:#}", n.expr),
                differences: n.differences.iter().map(DifferenceView::new).collect(),
            })
            .collect::<Vec<_>>(),
        other_versions,
    })
}
