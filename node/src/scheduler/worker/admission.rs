//! Whether this worker takes an advert at all: the runner class must admit
//! the requester and the workflow must be trusted here. The decision is a
//! pure function ([`refusal`]) of what the store says about the workflow.

use std::collections::HashSet;

use oda_protocol::messages::{DeclineReason, JobAdvert};
use oda_protocol::{PublicKey, RunnerClass, Subject};

use super::Ctx;
use crate::registry;

/// What the store says about an advert's workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkflowTrust {
    /// Added to this node by its owner.
    Local,
    /// Endorsed by an expert this node trusts.
    Endorsed,
    /// Neither.
    Untrusted,
}

/// Why the worker will not take a job from `requester` for a workflow in
/// state `workflow`, if it will not. `own` is this node's key (a `user`
/// worker always serves its own node).
pub(super) fn refusal(
    class: RunnerClass,
    owners: &HashSet<PublicKey>,
    own: &PublicKey,
    requester: &PublicKey,
    workflow: WorkflowTrust,
) -> Option<DeclineReason> {
    let admitted = match class {
        RunnerClass::Public => true,
        RunnerClass::User => owners.contains(requester) || requester == own,
        _ => false,
    };
    if !admitted {
        return Some(DeclineReason::NotAllowed);
    }
    (workflow == WorkflowTrust::Untrusted).then_some(DeclineReason::UntrustedWorkflow)
}

/// Look the advert's workflow up in the store (sled reads, served from its
/// cache) and in the endorsements it carries.
pub(super) fn workflow_trust(ctx: &Ctx, advert: &JobAdvert) -> WorkflowTrust {
    let parts = &ctx.parts;
    let workflow = advert.expr.workflow;
    if registry::is_local(&parts.store, &workflow).unwrap_or(false) {
        return WorkflowTrust::Local;
    }
    let stored = parts
        .store
        .endorsements_of(&Subject::Workflow(workflow))
        .unwrap_or_default();
    match parts
        .trust
        .now()
        .endorsed(&workflow, advert.endorsements.iter().chain(stored.iter()))
    {
        Some(_) => WorkflowTrust::Endorsed,
        None => WorkflowTrust::Untrusted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oda_protocol::SecretKey;

    fn key() -> PublicKey {
        SecretKey::from_seed(rand::random()).public()
    }

    #[test]
    fn a_public_worker_serves_anyone_for_a_trusted_workflow_only() {
        let (own, stranger) = (key(), key());
        let none = HashSet::new();
        for trust in [WorkflowTrust::Local, WorkflowTrust::Endorsed] {
            assert_eq!(
                refusal(RunnerClass::Public, &none, &own, &stranger, trust),
                None
            );
        }
        assert_eq!(
            refusal(
                RunnerClass::Public,
                &none,
                &own,
                &stranger,
                WorkflowTrust::Untrusted
            ),
            Some(DeclineReason::UntrustedWorkflow)
        );
    }

    #[test]
    fn a_user_worker_serves_its_owners_and_its_own_node_only() {
        let (own, owner, stranger) = (key(), key(), key());
        let owners: HashSet<_> = [owner].into();
        let local = WorkflowTrust::Local;
        assert_eq!(
            refusal(RunnerClass::User, &owners, &own, &owner, local),
            None
        );
        assert_eq!(refusal(RunnerClass::User, &owners, &own, &own, local), None);
        assert_eq!(
            refusal(RunnerClass::User, &owners, &own, &stranger, local),
            Some(DeclineReason::NotAllowed)
        );
    }

    #[test]
    fn classes_not_implemented_here_refuse_everyone() {
        let own = key();
        for class in [RunnerClass::Group, RunnerClass::Session, RunnerClass::Job] {
            assert_eq!(
                refusal(class, &HashSet::new(), &own, &own, WorkflowTrust::Local),
                Some(DeclineReason::NotAllowed)
            );
        }
    }
}
