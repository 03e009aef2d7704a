//! Trust policy: whose facts this node accepts as results, and whose workflow
//! endorsements its worker accepts. For now: the node itself plus keys named in
//! the config. A fact by anyone else is never returned as a trusted result.

use std::collections::BTreeSet;

use oda_protocol::{PublicKey, SignedEndorsement, SignedFact, Subject, WorkflowId};

/// The node's trust settings.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    /// Keys whose facts are accepted (always includes the node's own key).
    pub fact_signers: BTreeSet<PublicKey>,
    /// Keys whose workflow endorsements the worker accepts.
    pub experts: BTreeSet<PublicKey>,
}

impl TrustPolicy {
    /// A policy trusting `own` plus the listed keys.
    pub fn new(
        own: PublicKey,
        fact_signers: impl IntoIterator<Item = PublicKey>,
        experts: impl IntoIterator<Item = PublicKey>,
    ) -> Self {
        let mut signers: BTreeSet<PublicKey> = fact_signers.into_iter().collect();
        signers.insert(own);
        Self {
            fact_signers: signers,
            experts: experts.into_iter().collect(),
        }
    }

    /// Whether results from this worker key are acceptable.
    pub fn trusts_worker(&self, key: &PublicKey) -> bool {
        self.fact_signers.contains(key)
    }

    /// Whether a fact is acceptable: valid signature by a trusted signer.
    pub fn accepts(&self, fact: &SignedFact) -> bool {
        self.trusts_worker(&fact.body.worker) && fact.verify_for(&fact.body.expr).is_ok()
    }

    /// The first valid endorsement of `workflow` by a trusted expert, if any.
    pub fn endorsed<'a>(
        &self,
        workflow: &WorkflowId,
        endorsements: impl IntoIterator<Item = &'a SignedEndorsement>,
    ) -> Option<PublicKey> {
        endorsements.into_iter().find_map(|e| {
            let ok = e.body.subject == Subject::Workflow(*workflow)
                && self.experts.contains(&e.body.endorser)
                && e.verify().is_ok();
            ok.then_some(e.body.endorser)
        })
    }
}
