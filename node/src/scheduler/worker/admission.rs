//! Whether this worker takes an advert at all: the runner class must admit
//! the requester and the workflow must be trusted here. The decision is a
//! pure function ([`refusal`]) of whom the worker serves ([`Serves`]), the
//! trust policy's rosters and what the store says about the workflow.

use std::collections::{BTreeSet, HashSet};

use oda_protocol::messages::{DeclineReason, JobAdvert};
use oda_protocol::{ExprId, PublicKey, RunnerClass, Subject};

use super::Ctx;
use crate::registry;
use crate::scheduler::trust::{GroupRef, TrustPolicy};

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

/// Whom a worker serves: its runner class and what that class needs.
#[derive(Debug, Clone)]
pub struct Serves {
    /// The class, recorded in every fact the worker signs.
    pub class: RunnerClass,
    /// `user`: the owner keys.
    pub owners: HashSet<PublicKey>,
    /// `group`: the groups whose members (and owners), by the newest roster
    /// of each the node imported, are served.
    pub groups: BTreeSet<GroupRef>,
    /// `session`: the one requester served, and until when.
    pub session: Option<Session>,
    /// `job`: the one expression run (`oda-node execute`), whoever asks.
    pub job: Option<ExprId>,
}

impl Serves {
    /// A `public` worker.
    pub fn public() -> Self {
        Self {
            class: RunnerClass::Public,
            owners: HashSet::new(),
            groups: BTreeSet::new(),
            session: None,
            job: None,
        }
    }

    /// A `job` runner: it runs `expr` once, for whoever advertises it.
    pub fn job(expr: ExprId) -> Self {
        Self {
            class: RunnerClass::Job,
            job: Some(expr),
            ..Self::public()
        }
    }
}

/// A `session` worker's one requester and the end of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The requester served.
    pub requester: PublicKey,
    /// When the session ends, Unix ms: no job is taken after it, and the
    /// node stops.
    pub until_ms: u64,
}

/// Why the worker will not take `expr` from `requester` for a workflow in
/// state `workflow` at `now_ms`, if it will not. `own` is this node's key:
/// a worker of any class serves its own node, except a `job` runner, which
/// runs its one expression and nothing else.
pub(super) fn refusal(
    serves: &Serves,
    trust: &TrustPolicy,
    (own, requester, expr): (&PublicKey, &PublicKey, &ExprId),
    now_ms: u64,
    workflow: WorkflowTrust,
) -> Option<DeclineReason> {
    let admitted = match serves.class {
        RunnerClass::Job => serves.job.as_ref() == Some(expr),
        _ if requester == own => true,
        RunnerClass::Public => true,
        RunnerClass::User => serves.owners.contains(requester),
        RunnerClass::Group => trust.in_groups(&serves.groups, requester),
        RunnerClass::Session => serves
            .session
            .is_some_and(|s| s.requester == *requester && now_ms < s.until_ms),
        RunnerClass::Anonymous => false,
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
    use oda_protocol::{GroupRoster, SecretKey};

    fn key() -> PublicKey {
        SecretKey::from_seed(rand::random()).public()
    }

    const EXPR: ExprId = ExprId([7; 32]);

    fn policy(own: PublicKey) -> TrustPolicy {
        TrustPolicy::new(own, [], [])
    }

    #[test]
    fn public_and_job_workers_serve_anyone_for_a_trusted_workflow_only() {
        let (own, stranger) = (key(), key());
        let trust = policy(own);
        for serves in [Serves::public(), Serves::job(EXPR)] {
            for workflow in [WorkflowTrust::Local, WorkflowTrust::Endorsed] {
                assert_eq!(
                    refusal(&serves, &trust, (&own, &stranger, &EXPR), 0, workflow),
                    None
                );
            }
            assert_eq!(
                refusal(
                    &serves,
                    &trust,
                    (&own, &stranger, &EXPR),
                    0,
                    WorkflowTrust::Untrusted
                ),
                Some(DeclineReason::UntrustedWorkflow)
            );
        }
    }

    #[test]
    fn a_user_worker_serves_its_owners_and_its_own_node_only() {
        let (own, owner, stranger) = (key(), key(), key());
        let serves = Serves {
            class: RunnerClass::User,
            owners: [owner].into(),
            ..Serves::public()
        };
        let trust = policy(own);
        let local = WorkflowTrust::Local;
        assert_eq!(
            refusal(&serves, &trust, (&own, &owner, &EXPR), 0, local),
            None
        );
        assert_eq!(
            refusal(&serves, &trust, (&own, &own, &EXPR), 0, local),
            None
        );
        assert_eq!(
            refusal(&serves, &trust, (&own, &stranger, &EXPR), 0, local),
            Some(DeclineReason::NotAllowed)
        );
    }

    #[test]
    fn a_group_worker_serves_the_newest_roster_of_its_groups() {
        let own = key();
        let owner = SecretKey::from_seed([7; 32]);
        let (member, dropped, stranger) = (key(), key(), key());
        let roster = |version: u64, members: Vec<PublicKey>| {
            owner
                .sign(GroupRoster {
                    owner: owner.public(),
                    name: "team".into(),
                    version,
                    members: members.into_iter().collect(),
                    issued_at: version,
                })
                .unwrap()
        };
        let mut trust = policy(own);
        let serves = Serves {
            class: RunnerClass::Group,
            groups: [(owner.public(), "team".to_string())].into(),
            ..Serves::public()
        };
        let local = WorkflowTrust::Local;
        // No roster imported: nobody but the node itself.
        assert_eq!(
            refusal(&serves, &trust, (&own, &member, &EXPR), 0, local),
            Some(DeclineReason::NotAllowed)
        );
        trust.import(roster(1, vec![member, dropped])).unwrap();
        trust.import(roster(2, vec![member])).unwrap();
        assert_eq!(
            refusal(&serves, &trust, (&own, &member, &EXPR), 0, local),
            None
        );
        assert_eq!(
            refusal(&serves, &trust, (&own, &owner.public(), &EXPR), 0, local),
            None
        );
        for outsider in [dropped, stranger] {
            assert_eq!(
                refusal(&serves, &trust, (&own, &outsider, &EXPR), 0, local),
                Some(DeclineReason::NotAllowed)
            );
        }
    }

    #[test]
    fn a_session_worker_serves_one_key_until_the_session_ends() {
        let (own, requester, stranger) = (key(), key(), key());
        let serves = Serves {
            class: RunnerClass::Session,
            session: Some(Session {
                requester,
                until_ms: 1_000,
            }),
            ..Serves::public()
        };
        let trust = policy(own);
        let local = WorkflowTrust::Local;
        assert_eq!(
            refusal(&serves, &trust, (&own, &requester, &EXPR), 999, local),
            None
        );
        assert_eq!(
            refusal(&serves, &trust, (&own, &requester, &EXPR), 1_000, local),
            Some(DeclineReason::NotAllowed)
        );
        assert_eq!(
            refusal(&serves, &trust, (&own, &stranger, &EXPR), 0, local),
            Some(DeclineReason::NotAllowed)
        );
    }

    #[test]
    fn a_job_runner_runs_its_one_expression_for_anyone_and_nothing_else() {
        let (own, stranger) = (key(), key());
        let (serves, trust) = (Serves::job(EXPR), policy(own));
        let local = WorkflowTrust::Local;
        assert_eq!(
            refusal(&serves, &trust, (&own, &stranger, &EXPR), 0, local),
            None
        );
        let other = ExprId([8; 32]);
        for requester in [&stranger, &own] {
            assert_eq!(
                refusal(&serves, &trust, (&own, requester, &other), 0, local),
                Some(DeclineReason::NotAllowed)
            );
        }
    }
}
