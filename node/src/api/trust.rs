//! Trust routes: the node's trust policy as it is now (`GET /v1/trust`),
//! adding, removing and showing a key (`/v1/trust/keys[/{key}]`), importing
//! a signed group roster (`POST /v1/trust/rosters`), and signing a roster
//! with the node key for a group this node owns (`POST /v1/groups`).
//! Rosters travel as the lowercase hex of their encoding.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use oda_protocol::{GroupRoster, PublicKey, SignedGroupRoster, Wire};
use serde::{Deserialize, Serialize};

use super::{blocking, ApiError, ApiJson, ApiPath, ApiState};
use crate::identity::peer_id_of;
use crate::scheduler::jobs::now_ms;
use crate::scheduler::trust::{GroupRef, RosterImport, TrustPolicy};

/// Most members one roster may list through the API.
pub const MAX_MEMBERS: usize = 1024;

/// A group roster as the API shows it.
#[derive(Debug, Serialize)]
pub struct RosterView {
    /// `<owner key hex>/<name>`, as `[trust] groups` names it.
    pub group: String,
    /// The owner's key (hex), who signed the roster.
    pub owner: String,
    /// The group's name.
    pub name: String,
    /// The roster's version (the newest imported wins).
    pub version: u64,
    /// Member keys (hex).
    pub members: Vec<String>,
    /// When the owner signed it, Unix ms.
    pub issued_at: u64,
    /// The encoded signed roster, lowercase hex (what `oda trust import` reads).
    pub roster: String,
}

impl RosterView {
    fn new(r: &SignedGroupRoster) -> Result<Self, ApiError> {
        let bytes = r
            .encode()
            .map_err(|e| ApiError::internal(format!("cannot encode the roster: {e}")))?;
        Ok(Self {
            group: group_name(&(r.body.owner, r.body.name.clone())),
            owner: r.body.owner.to_string(),
            name: r.body.name.clone(),
            version: r.body.version,
            members: r.body.members.iter().map(ToString::to_string).collect(),
            issued_at: r.body.issued_at,
            roster: hex::encode(bytes),
        })
    }
}

fn group_name((owner, name): &GroupRef) -> String {
    format!("{owner}/{name}")
}

/// A group this node's policy names, with the roster it holds.
#[derive(Debug, Serialize)]
pub struct GroupView {
    /// `<owner key hex>/<name>`.
    pub group: String,
    /// The newest roster imported, if any (no roster: nobody is trusted
    /// through this group yet).
    pub roster: Option<RosterView>,
}

/// `GET /v1/trust` answer.
#[derive(Debug, Serialize)]
pub struct TrustView {
    /// This node's key (hex): its own facts are always trusted.
    pub own_key: String,
    /// `[trust] keys`: whose facts are accepted (hex), besides its own.
    pub keys: Vec<String>,
    /// `[trust] experts`: whose workflow endorsements the worker accepts.
    pub experts: Vec<String>,
    /// Keys added with `oda trust add` (kept in the data dir).
    pub added_keys: Vec<String>,
    /// `[trust] groups`, each with its roster.
    pub groups: Vec<GroupView>,
    /// Rosters held of groups the policy does not name (not trusted).
    pub other_rosters: Vec<RosterView>,
    /// `[trust] controllers`: whose endorsements and disputes of facts
    /// count here (besides this node's own).
    pub controllers: Vec<String>,
    /// Signers in disrepute: a controller this node heeds disputed one of
    /// their facts, so their other facts are trusted only when endorsed and
    /// they are not assigned jobs.
    pub disreputed: Vec<DisreputeView>,
}

/// A signer in disrepute, and why.
#[derive(Debug, Serialize)]
pub struct DisreputeView {
    /// The signer (hex).
    pub key: String,
    /// The disputed fact, `fa:<hex>`.
    pub fact: String,
    /// The controller that disputed it (hex).
    pub controller: String,
}

fn trust_view(p: &TrustPolicy) -> Result<TrustView, ApiError> {
    let groups = p
        .groups
        .iter()
        .map(|g| {
            Ok(GroupView {
                group: group_name(g),
                roster: p.rosters.get(g).map(RosterView::new).transpose()?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(TrustView {
        own_key: p.own.to_string(),
        keys: p
            .fact_signers
            .iter()
            .filter(|k| **k != p.own)
            .map(ToString::to_string)
            .collect(),
        experts: p.experts.iter().map(ToString::to_string).collect(),
        added_keys: p.added.iter().map(ToString::to_string).collect(),
        groups,
        other_rosters: p
            .rosters
            .iter()
            .filter(|(g, _)| !p.groups.contains(*g))
            .map(|(_, r)| RosterView::new(r))
            .collect::<Result<_, _>>()?,
        controllers: p.controllers.iter().map(ToString::to_string).collect(),
        disreputed: p
            .disreputed
            .iter()
            .map(|(key, (fact, controller))| DisreputeView {
                key: key.to_string(),
                fact: format!("{fact:#}"),
                controller: controller.to_string(),
            })
            .collect(),
    })
}

/// `GET /v1/trust`: whose facts this node accepts and why.
pub async fn show(State(s): State<ApiState>) -> Result<Json<TrustView>, ApiError> {
    Ok(Json(trust_view(&s.node.trust.now())?))
}

/// `POST /v1/trust/rosters` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The encoded signed roster, hex.
    pub roster: String,
}

/// `POST /v1/trust/rosters` answer.
#[derive(Debug, Serialize)]
pub struct ImportView {
    /// The roster.
    #[serde(flatten)]
    pub roster: RosterView,
    /// True if it replaced an older version (or was the first); false if
    /// this node already had this version or a newer one.
    pub imported: bool,
    /// Whether the policy names the group (`[trust] groups`): only then are
    /// its members' facts trusted.
    pub trusted_group: bool,
}

/// `POST /v1/trust/rosters`: import a signed group roster (kept if it
/// verifies and is newer than the version held).
pub async fn import(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<ImportRequest>,
) -> Result<Json<ImportView>, ApiError> {
    let bytes = hex::decode(req.roster.trim())
        .map_err(|e| ApiError::bad_request(format!("roster is not hex: {e}")))?;
    let roster = SignedGroupRoster::decode(&bytes)
        .map_err(|e| ApiError::bad_request(format!("not a signed group roster: {e}")))?;
    let view = RosterView::new(&roster)?;
    let group = (roster.body.owner, roster.body.name.clone());
    let imported = s
        .node
        .import_roster(roster)
        .await
        .map_err(ApiError::bad_request)?;
    Ok(Json(ImportView {
        roster: view,
        imported: imported == RosterImport::Newer,
        trusted_group: s.node.trust.now().groups.contains(&group),
    }))
}

/// `POST /v1/groups` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The group's name (1 to 128 bytes).
    pub name: String,
    /// The roster's version: higher than any version signed before.
    pub version: u64,
    /// Member keys (hex).
    pub members: Vec<String>,
}

/// `POST /v1/groups`: sign a roster of a group this node's key owns (201).
/// It is not imported here; give it to the members' requesters (`oda trust
/// import`), and import it here too to trust the group on this node.
pub async fn sign(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<SignRequest>,
) -> Result<(StatusCode, Json<RosterView>), ApiError> {
    if !crate::config::valid_group_name(&req.name) {
        return Err(ApiError::bad_request(format!(
            "name must be 1 to {} bytes",
            crate::config::MAX_GROUP_NAME
        )));
    }
    if req.members.len() > MAX_MEMBERS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_MEMBERS} members, got {}",
            req.members.len()
        )));
    }
    let members = req
        .members
        .iter()
        .enumerate()
        .map(|(i, k)| {
            k.parse::<PublicKey>()
                .map_err(|e| ApiError::bad_request(format!("members[{i}]: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let key = &s.node.key;
    let roster = key
        .secret
        .sign(GroupRoster {
            owner: key.public(),
            name: req.name,
            version: req.version,
            members,
            issued_at: now_ms(),
        })
        .map_err(|e| ApiError::internal(format!("cannot sign: {e}")))?;
    Ok((StatusCode::CREATED, Json(RosterView::new(&roster)?)))
}

fn parse_key(text: &str) -> Result<PublicKey, ApiError> {
    text.trim()
        .parse()
        .map_err(|e| ApiError::bad_request(format!("not a public key: {e}")))
}

/// `POST /v1/trust/keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddKeyRequest {
    /// The public key (hex) whose facts to trust.
    pub key: String,
}

/// Answer of adding or removing a key.
#[derive(Debug, Serialize)]
pub struct KeyChange {
    /// The key (hex).
    pub key: String,
    /// Whether the policy changed (false: it was already so).
    pub changed: bool,
}

/// `POST /v1/trust/keys`: trust a key's facts from now on (kept across
/// restarts in `trusted_keys` in the data dir).
pub async fn add_key(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<AddKeyRequest>,
) -> Result<Json<KeyChange>, ApiError> {
    let key = parse_key(&req.key)?;
    let changed = s
        .node
        .add_trusted_key(key)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(KeyChange {
        key: key.to_string(),
        changed,
    }))
}

/// `DELETE /v1/trust/keys/{key}`: stop trusting a key added at run time
/// (400 for a key of `[trust] keys` or the node's own).
pub async fn remove_key(
    State(s): State<ApiState>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<KeyChange>, ApiError> {
    let key = parse_key(&key)?;
    let changed = s
        .node
        .remove_trusted_key(key)
        .await
        .map_err(ApiError::bad_request)?;
    Ok(Json(KeyChange {
        key: key.to_string(),
        changed,
    }))
}

/// `GET /v1/trust/keys/{key}` answer: what this node knows of a key.
#[derive(Debug, Serialize)]
pub struct KeyView {
    /// The key (hex).
    pub key: String,
    /// Its peer id.
    pub peer_id: Option<String>,
    /// Whether its facts are trusted here.
    pub trusted: bool,
    /// Why, or why not.
    pub trust: String,
    /// Groups (`<owner>/<name>`) whose newest roster held here lists it,
    /// trusted or not.
    pub groups: Vec<String>,
    /// Facts it signed that this node stores.
    pub facts: u64,
    /// Of those, the ones whose outputs this node holds.
    pub facts_held: u64,
    /// Whether this node heeds its endorsements and disputes of facts
    /// (`[trust] controllers`, or this node's own key).
    pub heeded_controller: bool,
}

/// `GET /v1/trust/keys/{key}`: whether the key is trusted and why, the
/// groups that list it, and the facts by it this node stores.
pub async fn show_key(
    State(s): State<ApiState>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<KeyView>, ApiError> {
    let key = parse_key(&key)?;
    let policy = s.node.trust.now();
    let (trusted, trust) = match policy.signer(&key) {
        Ok(why) => (true, why),
        Err(why) => (false, why),
    };
    let store = s.node.store.clone();
    let (facts, facts_held) = blocking(move || {
        store
            .facts_signed_by(&key)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    Ok(Json(KeyView {
        key: key.to_string(),
        peer_id: peer_id_of(&key).map(|p| p.to_string()),
        trusted,
        trust,
        groups: policy
            .rosters
            .iter()
            .filter(|(_, r)| r.body.owner == key || r.body.members.contains(&key))
            .map(|(g, _)| group_name(g))
            .collect(),
        facts,
        facts_held,
        heeded_controller: policy.heeds(&key),
    }))
}
