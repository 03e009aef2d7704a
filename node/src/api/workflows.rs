//! Workflow routes: add a workflow folder on the node's machine, list, show
//! (manifest, files, endorsements), endorse (sign an endorsement with the node
//! key and store it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use oda_protocol::{Endorsement, SignedEndorsement, Subject, Workflow, WorkflowId};
use serde::{Deserialize, Serialize};

use super::args::{type_to_json, value_to_json};
use super::{blocking, ApiError, ApiJson, ApiPath, ApiState, OptionalJson};
use crate::registry::{self, RegistryError};
use crate::runtime::Node;
use crate::scheduler::jobs::now_ms;

/// `POST /v1/workflows` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    /// Absolute path of the workflow folder on the node's machine.
    pub path: String,
}

/// A workflow in a list.
#[derive(Debug, Serialize)]
pub struct WorkflowSummary {
    /// `wf:<hex>`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Added on this node by its owner (trusted by its worker without endorsement).
    pub local: bool,
    /// Endorsements stored for it.
    pub endorsements: usize,
}

/// One input of a workflow.
#[derive(Debug, Serialize)]
pub struct InputView {
    /// Type and constraints: `{"type": "float", "min": …, "max": …}`.
    #[serde(rename = "type")]
    pub ty: serde_json::Value,
    /// Default, or null when required.
    pub default: serde_json::Value,
    /// Whether it must be given.
    pub required: bool,
    /// Description.
    pub description: String,
}

/// One output of a workflow.
#[derive(Debug, Serialize)]
pub struct OutputSpecView {
    /// File the run writes.
    pub path: String,
    /// Description.
    pub description: String,
}

/// An endorsement.
#[derive(Debug, Serialize)]
pub struct EndorsementView {
    /// Endorser's public key (hex).
    pub endorser: String,
    /// What is endorsed, `wf:<hex>`.
    pub subject: String,
    /// Unix ms.
    pub issued_at: u64,
    /// Free text.
    pub note: String,
}

impl EndorsementView {
    fn new(e: &SignedEndorsement) -> Self {
        Self {
            endorser: e.body.endorser.to_string(),
            subject: match e.body.subject {
                Subject::Workflow(w) => format!("{w:#}"),
                Subject::Fact(f) => format!("{f:#}"),
            },
            issued_at: e.body.issued_at,
            note: e.body.note.clone(),
        }
    }
}

/// A workflow in full.
#[derive(Debug, Serialize)]
pub struct WorkflowDetail {
    /// `wf:<hex>`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Added on this node by its owner.
    pub local: bool,
    /// Executor kind (`command`, …).
    pub executor: &'static str,
    /// Run time limit, s.
    pub timeout_secs: u64,
    /// Same inputs give the same bytes.
    pub deterministic: bool,
    /// Inputs by name.
    pub inputs: BTreeMap<String, InputView>,
    /// Outputs by name.
    pub outputs: BTreeMap<String, OutputSpecView>,
    /// Bundled files: path → `bl:<hex>`.
    pub files: BTreeMap<String, String>,
    /// The bundle blob, `bl:<hex>`.
    pub bundle: Option<String>,
    /// Endorsements stored for it.
    pub endorsements: Vec<EndorsementView>,
}

fn detail(node: &Node, id: WorkflowId, wf: &Workflow) -> Result<WorkflowDetail, ApiError> {
    let m = &wf.manifest;
    let bundle = node.store.workflow(&id)?.map(|(_, b)| format!("{b:#}"));
    let endorsements = node.store.endorsements_of(&Subject::Workflow(id))?;
    Ok(WorkflowDetail {
        id: format!("{id:#}"),
        name: m.name.clone(),
        version: m.version.clone(),
        description: m.description.clone(),
        local: registry::is_local(&node.store, &id).map_err(internal)?,
        executor: m.executor.kind(),
        timeout_secs: m.timeout_secs,
        deterministic: m.deterministic,
        inputs: m
            .inputs
            .iter()
            .map(|(name, spec)| {
                (
                    name.clone(),
                    InputView {
                        ty: type_to_json(&spec.ty),
                        default: spec
                            .default
                            .as_ref()
                            .map(value_to_json)
                            .unwrap_or(serde_json::Value::Null),
                        required: spec.default.is_none(),
                        description: spec.description.clone(),
                    },
                )
            })
            .collect(),
        outputs: m
            .outputs
            .iter()
            .map(|(name, o)| {
                (
                    name.clone(),
                    OutputSpecView {
                        path: o.path.clone(),
                        description: o.description.clone(),
                    },
                )
            })
            .collect(),
        files: wf
            .files
            .iter()
            .map(|(p, b)| (p.clone(), format!("{b:#}")))
            .collect(),
        bundle,
        endorsements: endorsements.iter().map(EndorsementView::new).collect(),
    })
}

fn internal(e: RegistryError) -> ApiError {
    ApiError::internal(e.to_string())
}

/// Find a workflow by name or id: 400 for a malformed id or an ambiguous
/// name, 404 if there is none.
pub fn find(node: &Node, name_or_id: &str) -> Result<(WorkflowId, Workflow), ApiError> {
    registry::find(&node.store, name_or_id)
        .map_err(|e| match e {
            RegistryError::BadId(_) => ApiError::bad_request(format!(
                "{} is neither a workflow name nor a workflow id: {e}",
                super::quoted(name_or_id)
            )),
            RegistryError::Ambiguous { .. } => ApiError::bad_request(e.to_string()),
            other => internal(other),
        })?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no workflow named or with id {} on this node; `oda workflow ls` lists them, `oda workflow add DIR` adds one",
                super::quoted(name_or_id)
            ))
        })
}

/// `POST /v1/workflows`: add the folder at `path` (on the node's machine) as
/// an owner-added workflow. 201 with the workflow; 400 if the folder or its
/// manifest is not valid.
pub async fn add(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<AddRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let dir = PathBuf::from(&req.path);
    if !dir.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "path {:?} is not absolute; give the folder's absolute path on the node's machine",
            req.path
        )));
    }
    let id = s.node.add_workflow(&dir).await.map_err(|e| match e {
        RegistryError::Store(_)
        | RegistryError::Db { .. }
        | RegistryError::Corrupt { .. }
        | RegistryError::Task(_) => internal(e),
        other => ApiError::bad_request(other.to_string()),
    })?;
    let node = s.node.clone();
    let view = blocking(move || {
        let (wf, _) = node
            .store
            .workflow(&id)?
            .ok_or_else(|| ApiError::internal(format!("workflow {id:#} vanished after adding")))?;
        detail(&node, id, &wf)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /v1/workflows`: every stored workflow, by id.
pub async fn list(State(s): State<ApiState>) -> Result<Json<Vec<WorkflowSummary>>, ApiError> {
    let node = s.node.clone();
    blocking(move || {
        let mut out = Vec::new();
        for (id, wf, _) in node.store.workflows()? {
            out.push(WorkflowSummary {
                id: format!("{id:#}"),
                name: wf.manifest.name.clone(),
                version: wf.manifest.version.clone(),
                description: wf.manifest.description.clone(),
                local: registry::is_local(&node.store, &id).map_err(internal)?,
                endorsements: node.store.endorsements_of(&Subject::Workflow(id))?.len(),
            });
        }
        Ok(Json(out))
    })
    .await
}

/// `GET /v1/workflows/{id}`: by id or name.
pub async fn show(
    State(s): State<ApiState>,
    ApiPath(name_or_id): ApiPath<String>,
) -> Result<Json<WorkflowDetail>, ApiError> {
    let node = s.node.clone();
    blocking(move || {
        let (id, wf) = find(&node, &name_or_id)?;
        detail(&node, id, &wf).map(Json)
    })
    .await
}

/// `POST /v1/workflows/{id}/endorse` body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndorseRequest {
    /// Free text, at most 500 characters.
    #[serde(default)]
    pub note: String,
}

/// Longest endorsement note, characters (at most 2,000 bytes, within
/// [`oda_protocol::Endorsement::MAX_NOTE`]).
pub const MAX_NOTE: usize = 500;

/// Answer of an endorsement.
#[derive(Debug, Serialize)]
pub struct EndorseView {
    /// The endorsement.
    #[serde(flatten)]
    pub endorsement: EndorsementView,
    /// False if the same endorsement was stored before.
    pub new: bool,
}

/// `POST /v1/workflows/{id}/endorse`: sign an endorsement of the workflow with
/// the node key and store it (a worker whose `[trust] experts` lists this key
/// then runs the workflow). 201.
pub async fn endorse(
    State(s): State<ApiState>,
    ApiPath(name_or_id): ApiPath<String>,
    OptionalJson(body): OptionalJson<EndorseRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let note = body.unwrap_or_default().note;
    if note.chars().count() > MAX_NOTE {
        return Err(ApiError::bad_request(format!(
            "note is {} characters, more than {MAX_NOTE}",
            note.chars().count()
        )));
    }
    let node = s.node.clone();
    let view = blocking(move || {
        let (id, _) = find(&node, &name_or_id)?;
        let signed = node
            .key
            .secret
            .sign(Endorsement {
                endorser: node.key.public(),
                subject: Subject::Workflow(id),
                issued_at: now_ms(),
                note,
            })
            .map_err(|e| ApiError::internal(format!("cannot sign the endorsement: {e}")))?;
        let new = node.store.put_endorsement(&signed)?;
        Ok(EndorseView {
            endorsement: EndorsementView::new(&signed),
            new,
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}
