//! The controller role (`[controller] enabled`): an actor that re-computes
//! samples of the facts other workers announce for the deterministic
//! workflows this node holds, and publishes what it found, signed: an
//! endorsement of the fact (the same outcome from the same input bytes) or a
//! dispute of it (another outcome). It owns what it heard (the expressions
//! of recent adverts: an announcement names only the expression's id), the
//! sampling records per worker ([`sampling::Sampler`]), the samples waiting
//! and the re-computations running; the requester computes each sample on
//! a trusted worker other than the fact's signer (this node's own worker
//! competes as any other).
//!
//! Each expression is re-computed at most once per run of the node, so the
//! facts the re-computations themselves produce are not sampled again.

pub mod sampling;

use std::collections::VecDeque;
use std::sync::Arc;

use oda_protocol::messages::{FactAnnounce, JobAdvert};
use oda_protocol::{ExprId, Expression, PublicKey, SignedFact};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::quorum::{self, Comparison};
use super::requester::Requester;
use super::trust::TrustBook;
use super::verdicts::Signer;
use crate::identity::NodeKey;
use crate::network::Client;
use crate::recent::Recent;
use crate::store::Store;
use sampling::Sampler;

/// `[controller]` settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// The lowest share of a worker's facts re-computed.
    pub min_rate: f64,
    /// Re-computations at the same time.
    pub concurrent: usize,
}

/// Most samples waiting for a re-computation slot; more are skipped.
pub const MAX_WAITING: usize = 256;
/// Most advertised expressions remembered (the oldest are forgotten).
pub const MAX_EXPRESSIONS: usize = 4096;
/// Most expressions remembered as re-computed.
const MAX_CHECKED: usize = 65_536;
/// Events queued for the actor; beyond it they are dropped (sampling
/// loses nothing it promised).
const INBOX: usize = 1024;

/// What the controller is built from.
pub struct Parts {
    /// Finds facts and publishes verdicts.
    pub client: Client,
    /// Keeps expressions, facts and verdicts.
    pub store: Store,
    /// Signs verdicts.
    pub key: NodeKey,
    /// Counts this node's own disputes.
    pub trust: TrustBook,
    /// Computes the samples.
    pub requester: Requester,
}

/// What the controller hears from the mesh.
enum Heard {
    Advert(Box<Expression>),
    Announce(FactAnnounce),
}

/// A handle on the controller's actor. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inbox: mpsc::Sender<Heard>,
}

impl Controller {
    /// Start the actor; it ends once `shutdown` is cancelled.
    pub fn start(
        parts: Parts,
        cfg: ControllerConfig,
        shutdown: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (tx, inbox) = mpsc::channel(INBOX);
        let actor = Actor {
            parts: Arc::new(parts),
            concurrent: cfg.concurrent.max(1),
            sampler: Sampler::new(cfg.min_rate, rand::random()),
            expressions: Recent::new(MAX_EXPRESSIONS),
            checked: Recent::new(MAX_CHECKED),
            waiting: VecDeque::new(),
            running: JoinSet::new(),
            inbox,
            shutdown,
        };
        (Self { inbox: tx }, tokio::spawn(actor.run()))
    }

    /// A job advert (gossip, or this node's own): remember its expression.
    /// Never waits.
    pub fn on_advert(&self, advert: &JobAdvert) {
        self.hear(Heard::Advert(Box::new(advert.expr.clone())));
    }

    /// A fact announcement (gossip): perhaps re-compute it. Never waits.
    pub fn on_fact_announce(&self, announce: &FactAnnounce) {
        self.hear(Heard::Announce(announce.clone()));
    }

    fn hear(&self, heard: Heard) {
        if self.inbox.try_send(heard).is_err() {
            tracing::debug!("controller busy; dropping what it heard");
        }
    }
}

/// How one re-computation ended.
#[derive(Debug)]
enum Checked {
    /// Same outcome: endorsed.
    Agreed,
    /// Another outcome: disputed.
    Disputed,
    /// Nothing to say (not found, not deterministic, other inputs, no worker).
    Inconclusive(String),
}

struct Actor {
    parts: Arc<Parts>,
    concurrent: usize,
    sampler: Sampler,
    /// The expressions of recent adverts (an announcement names only an id).
    expressions: Recent<ExprId, Expression>,
    /// Expressions already sampled.
    checked: Recent<ExprId, ()>,
    waiting: VecDeque<(FactAnnounce, Expression)>,
    running: JoinSet<(PublicKey, Checked)>,
    inbox: mpsc::Receiver<Heard>,
    shutdown: CancellationToken,
}

impl Actor {
    async fn run(mut self) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(ended) = self.running.join_next(), if !self.running.is_empty() => {
                    if let Ok((worker, checked)) = ended {
                        self.ended(worker, checked);
                    }
                    self.start_waiting();
                }
                heard = self.inbox.recv() => match heard {
                    Some(Heard::Advert(e)) => self.remember(*e),
                    Some(Heard::Announce(a)) => self.announced(a),
                    None => break,
                },
            }
        }
        self.running.shutdown().await;
    }

    fn remember(&mut self, expression: Expression) {
        self.expressions.insert_new(expression.id(), expression);
    }

    fn announced(&mut self, a: FactAnnounce) {
        if a.worker == self.parts.key.public() || self.checked.contains(&a.expr) {
            return;
        }
        let Some(expression) = self.expressions.get(&a.expr) else {
            return;
        };
        if !self.sampler.sample(&a.worker, &a.fact_id) {
            return;
        }
        let expression = expression.clone();
        self.checked.insert_new(a.expr, ());
        if self.waiting.len() >= MAX_WAITING {
            tracing::debug!(expr = %a.expr, "controller: too many samples waiting; skipping one");
            return;
        }
        self.waiting.push_back((a, expression));
        self.start_waiting();
    }

    fn start_waiting(&mut self) {
        while self.running.len() < self.concurrent {
            let Some((a, expression)) = self.waiting.pop_front() else {
                return;
            };
            let parts = Arc::clone(&self.parts);
            let worker = a.worker;
            self.running.spawn(async move {
                let checked = match check(&parts, &a, expression).await {
                    Ok(checked) => checked,
                    Err(e) => Checked::Inconclusive(e),
                };
                (worker, checked)
            });
        }
    }

    fn ended(&mut self, worker: PublicKey, checked: Checked) {
        match checked {
            Checked::Agreed => self.sampler.agreed(worker),
            Checked::Disputed => self.sampler.disputed(worker),
            Checked::Inconclusive(why) => {
                tracing::info!(%worker, %why, "controller: a sample was inconclusive");
            }
        }
        tracing::debug!(%worker, rate = self.sampler.rate(&worker), "controller: sampling rate");
    }
}

/// Re-compute the announced fact and publish the verdict.
async fn check(parts: &Parts, a: &FactAnnounce, expression: Expression) -> Result<Checked, String> {
    let store = parts.store.clone();
    let workflow = expression.workflow;
    let deterministic = crate::blocking::run(move || {
        store
            .workflow(&workflow)
            .map(|w| w.map(|(w, _)| w.manifest.deterministic))
    })
    .await?;
    match deterministic {
        None => {
            return Ok(Checked::Inconclusive(
                "its workflow is not held here".into(),
            ))
        }
        Some(false) => {
            return Ok(Checked::Inconclusive(
                "its workflow is not deterministic".into(),
            ))
        }
        Some(true) => {}
    }
    let fact_id = a.fact_id;
    let found = parts
        .client
        .lookup_facts_until(a.expr, |f| f.id() == fact_id)
        .await;
    let Some(original) = found.into_iter().find(|f| f.id() == fact_id) else {
        return Ok(Checked::Inconclusive(format!(
            "the announced fact {fact_id} was not found"
        )));
    };
    if original.body.worker != a.worker {
        return Ok(Checked::Inconclusive(
            "the announced fact is by another key".into(),
        ));
    }
    keep(parts, &original, expression).await?;
    let recheck = parts
        .requester
        .recheck(a.expr, a.worker)
        .await
        .map_err(|e| format!("re-computing it failed: {e}"))?
        .fact;
    publish(parts, &original, &recheck).await
}

/// Keep the expression (the requester computes from the store) and the
/// fact (a dispute is kept only for a fact held).
async fn keep(parts: &Parts, fact: &SignedFact, expression: Expression) -> Result<(), String> {
    let (store, fact) = (parts.store.clone(), fact.clone());
    crate::blocking::run(move || {
        store.put_expr(&expression)?;
        store.put_fact(&fact)
    })
    .await
    .map(|_| ())
}

/// Compare and publish an endorsement or a dispute of `original`.
async fn publish(
    parts: &Parts,
    original: &SignedFact,
    recheck: &SignedFact,
) -> Result<Checked, String> {
    let signer = Signer {
        client: &parts.client,
        store: &parts.store,
        key: &parts.key,
        trust: &parts.trust,
    };
    let by = recheck.body.worker;
    match quorum::compare(original, recheck) {
        Comparison::Agree => {
            let note = format!("re-computed by {by}: the same outcome");
            signer.publish_endorsement(original, note).await?;
            Ok(Checked::Agreed)
        }
        Comparison::Differ => {
            let reason = format!(
                "re-computed by {by} from the same input bytes: {}",
                quorum::describe(&quorum::groups(&[recheck.clone(), original.clone()]))
            );
            signer
                .publish_dispute(original, quorum::observed(recheck), reason)
                .await?;
            Ok(Checked::Disputed)
        }
        Comparison::OtherInputs => Ok(Checked::Inconclusive(
            "re-computed from other input bytes".into(),
        )),
    }
}
