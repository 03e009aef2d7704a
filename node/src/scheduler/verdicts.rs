//! Verdicts on facts by whoever re-computed them: endorsements (the same
//! outcome from the same input bytes) and disputes (another outcome). This
//! module signs, keeps and publishes the node's own ([`publish_dispute`],
//! [`publish_endorsement`]: a requester whose quorum outvoted a fact, a
//! controller that re-computed a sample) and keeps those that arrive by
//! gossip ([`keep`]). It owns no state: the store keeps the verdicts, and
//! the trust book counts the disputes of the controllers the node heeds
//! ([`TrustPolicy::count_dispute`]), from the store again at each start
//! ([`count_stored_disputes`]). A node that publishes a verdict also
//! provides `verdicts/<fact>`, so that nodes which were not listening can
//! ask it later ([`look_up`]).

use std::collections::BTreeMap;

use oda_protocol::messages::Gossip;
use oda_protocol::names::Topic;
use oda_protocol::{
    BlobId, Dispute, Endorsement, FactId, SignedDispute, SignedEndorsement, SignedFact, Subject,
};

use super::jobs::now_ms;
use super::trust::{TrustBook, TrustPolicy};
use crate::identity::NodeKey;
use crate::network::Client;
use crate::store::{Store, StoreError};

/// A verdict on a fact: from gossip or a lookup (its signature checked on
/// the way in), or this node's own.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// Someone re-computed a fact and got another outcome.
    Dispute(Box<SignedDispute>),
    /// A controller re-computed a fact and got the same outcome.
    Endorsement(Box<SignedEndorsement>),
}

impl Incoming {
    /// The fact it is about (none for an endorsement of a workflow).
    fn fact(&self) -> Option<FactId> {
        match self {
            Incoming::Dispute(d) => Some(d.body.fact),
            Incoming::Endorsement(e) => match e.body.subject {
                Subject::Fact(f) => Some(f),
                Subject::Workflow(_) => None,
            },
        }
    }

    /// It as gossip on the facts topic.
    fn gossip(&self) -> Gossip {
        match self {
            Incoming::Dispute(d) => Gossip::Dispute(d.clone()),
            Incoming::Endorsement(e) => Gossip::Endorsement(e.clone()),
        }
    }
}

/// Keep an incoming verdict (blocking: store reads and writes). A dispute
/// is kept for a fact held here ([`Store::put_dispute`]); an endorsement of
/// a fact held here, or by a controller this node heeds (the endorsement is
/// what makes a fact found in the mesh later trusted). Anyone else's
/// verdicts on facts this node does not hold would only fill its disk. A
/// heeded controller's dispute puts the fact's signer in disrepute.
/// Returns whether anything was kept.
pub fn keep(store: &Store, trust: &TrustBook, verdict: Incoming) -> Result<bool, StoreError> {
    match verdict {
        Incoming::Dispute(d) => {
            let kept = store.put_dispute(&d)?;
            if let Some(fact) = store.fact(&d.body.fact)?.filter(|_| kept) {
                if trust.update(|p| p.count_dispute(&d.body.controller, &fact)) {
                    tracing::warn!(worker = %fact.body.worker, fact = %fact.id(), controller = %d.body.controller,
                        "a controller this node heeds disputed a fact: its signer is no longer trusted");
                }
            }
            Ok(kept)
        }
        Incoming::Endorsement(e) => {
            let Subject::Fact(fact) = e.body.subject else {
                return Ok(false);
            };
            if !trust.now().heeds(&e.body.endorser) && !store.is_held(&fact)? {
                return Ok(false);
            }
            store.put_endorsement(&e)
        }
    }
}

/// Ask the mesh for the verdicts on `facts` (those by signers `trust` does
/// not trust on their own, while it heeds controllers: a heeded
/// controller's endorsement would make them trusted) and keep them.
/// Returns whether anything was kept.
pub async fn look_up(
    client: &Client,
    store: &Store,
    trust: &TrustBook,
    facts: &[SignedFact],
) -> bool {
    let policy = trust.now();
    if policy.controllers.is_empty() {
        return false;
    }
    let unknown = facts
        .iter()
        .filter(|f| !policy.trusts_worker(&f.body.worker))
        .take(MAX_LOOKED_UP);
    let mut kept = false;
    for fact in unknown {
        let found = client.lookup_verdicts(&fact.id()).await;
        let incoming: Vec<Incoming> = found
            .endorsements
            .into_iter()
            .map(|e| Incoming::Endorsement(Box::new(e)))
            .chain(
                found
                    .disputes
                    .into_iter()
                    .map(|d| Incoming::Dispute(Box::new(d))),
            )
            .collect();
        if incoming.is_empty() {
            continue;
        }
        let (store, trust) = (store.clone(), trust.clone());
        let stored = crate::blocking::run(move || {
            let mut any = false;
            for verdict in incoming {
                any |= keep(&store, &trust, verdict)?;
            }
            Ok::<_, StoreError>(any)
        })
        .await;
        match stored {
            Ok(any) => kept |= any,
            Err(e) => tracing::debug!(error = %e, "cannot keep looked-up verdicts"),
        }
    }
    kept
}

/// Most facts whose verdicts one lookup asks for.
const MAX_LOOKED_UP: usize = 4;

/// Count every stored dispute by a controller `policy` heeds whose fact is
/// held (blocking; at start, before the policy is shared).
pub fn count_stored_disputes(store: &Store, policy: &mut TrustPolicy) -> Result<(), StoreError> {
    for dispute in store.all_disputes()? {
        if let Some(fact) = store.fact(&dispute.body.fact)? {
            policy.count_dispute(&dispute.body.controller, &fact);
        }
    }
    Ok(())
}

/// What signing and publishing a verdict needs.
pub struct Signer<'a> {
    /// Publishes the verdict.
    pub client: &'a Client,
    /// Keeps it.
    pub store: &'a Store,
    /// Signs it.
    pub key: &'a NodeKey,
    /// Counts this node's own disputes.
    pub trust: &'a TrustBook,
}

impl Signer<'_> {
    /// Sign a dispute of `disputed` (this node got `observed` from the same
    /// input bytes), keep it and publish it on the facts topic.
    pub async fn publish_dispute(
        &self,
        disputed: &SignedFact,
        observed: BTreeMap<String, BlobId>,
        reason: String,
    ) -> Result<(), String> {
        let dispute = Dispute {
            controller: self.key.public(),
            fact: disputed.id(),
            expr: disputed.body.expr,
            observed,
            issued_at: now_ms(),
            reason,
        };
        let signed = self
            .key
            .secret
            .sign(dispute)
            .map_err(|e| format!("cannot sign the dispute: {e}"))?;
        tracing::warn!(fact = %signed.body.fact, worker = %disputed.body.worker, reason = %signed.body.reason, "disputing a fact");
        self.release(Incoming::Dispute(Box::new(signed))).await
    }

    /// Sign an endorsement of `fact`, keep it and publish it on the facts
    /// topic.
    pub async fn publish_endorsement(&self, fact: &SignedFact, note: String) -> Result<(), String> {
        let id = fact.id();
        let endorsement = Endorsement {
            endorser: self.key.public(),
            subject: Subject::Fact(id),
            issued_at: now_ms(),
            note,
        };
        let signed = self
            .key
            .secret
            .sign(endorsement)
            .map_err(|e| format!("cannot sign the endorsement: {e}"))?;
        tracing::info!(fact = %id, worker = %fact.body.worker, "endorsing a fact");
        self.release(Incoming::Endorsement(Box::new(signed))).await
    }

    /// Keep this node's own signed verdict, say it keeps verdicts on the
    /// fact (`verdicts/<fact>`) and publish it on the facts topic.
    async fn release(&self, verdict: Incoming) -> Result<(), String> {
        let fact = verdict.fact();
        let gossip = verdict.gossip();
        let (store, trust) = (self.store.clone(), self.trust.clone());
        crate::blocking::run(move || keep(&store, &trust, verdict)).await?;
        if let Some(fact) = fact {
            self.client.provide_verdicts(&fact).await;
        }
        if let Err(e) = self.client.publish(Topic::Facts, gossip).await {
            tracing::debug!(error = %e, "cannot publish the verdict");
        }
        Ok(())
    }
}
