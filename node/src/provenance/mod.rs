//! Provenance of a result: the DAG of signed facts behind it, as this
//! node's store holds it.
//!
//! [`trace`] walks breadth-first from the root facts over each fact's input
//! facts ([`ResolvedInput::fact`]). Each [`Step`] is one fact with what this
//! node knows about it: the expression (workflow and arguments), the
//! workflow's manifest and the experts who endorsed it, the controllers that
//! endorsed or disputed the fact, and this node's trust verdict (from the
//! `judge` the caller passes, so every view of a fact says the same). Inputs
//! whose fact is not held are listed as [`Provenance::missing`]: the API can
//! fetch them from the mesh ([`crate::scheduler::input_facts`] checks and
//! keeps them) and walk again. Blocking (sled reads): call it from the
//! blocking pool. [`prov_o`] writes the DAG as W3C PROV-O.

pub mod prov_o;

use std::collections::{HashSet, VecDeque};

use oda_protocol::{Expression, FactId, Manifest, PublicKey, ResolvedInput, SignedFact, Subject};

use crate::scheduler::trust::{Evidence, Verdict};
use crate::store::{Store, StoreError};

/// The most facts one walk visits; a deeper DAG is cut there
/// ([`Provenance::truncated`]).
pub const MAX_STEPS: usize = 10_000;

/// One fact of the DAG, with what this node knows about it.
#[derive(Debug, Clone)]
pub struct Step {
    /// The signed fact (its signature was checked when it was stored).
    pub fact: SignedFact,
    /// The expression it evaluates, if this node has it.
    pub expression: Option<Expression>,
    /// The workflow's manifest, if this node has the workflow.
    pub workflow: Option<Manifest>,
    /// Keys that endorsed the workflow (experts).
    pub workflow_endorsed_by: Vec<PublicKey>,
    /// Keys that re-computed the fact and agree (controllers).
    pub endorsed_by: Vec<PublicKey>,
    /// Keys that re-computed the fact and disagree.
    pub disputed_by: Vec<PublicKey>,
    /// This node's verdict on the fact.
    pub verdict: Verdict,
}

impl Step {
    /// The name of the argument of this step's expression that took
    /// `input` (an `Output` argument naming the input's expression and
    /// output), if the expression is known.
    pub fn argument_of(&self, input: &ResolvedInput) -> Option<&str> {
        let expression = self.expression.as_ref()?;
        expression.args.iter().find_map(|(name, value)| {
            value
                .outputs()
                .iter()
                .any(|(expr, output)| *expr == input.expr && *output == input.name)
                .then_some(name.as_str())
        })
    }
}

/// The DAG behind one or more root facts.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The roots first, then breadth-first; each fact once.
    pub steps: Vec<Step>,
    /// Inputs whose fact this node does not hold (so their own inputs are
    /// not known either), each once.
    pub missing: Vec<ResolvedInput>,
    /// The walk stopped at [`MAX_STEPS`] facts.
    pub truncated: bool,
}

/// Walk the DAG behind `roots` through the store (blocking). `judge` gives
/// this node's verdict on each fact.
pub fn trace(
    store: &Store,
    roots: Vec<SignedFact>,
    judge: impl Fn(&SignedFact) -> Verdict,
) -> Result<Provenance, StoreError> {
    let mut out = Provenance::default();
    let mut seen: HashSet<FactId> = HashSet::new();
    let mut missing_seen: HashSet<FactId> = HashSet::new();
    let mut queue: VecDeque<SignedFact> = VecDeque::new();
    for root in roots {
        if seen.insert(root.id()) {
            queue.push_back(root);
        }
    }
    while let Some(fact) = queue.pop_front() {
        if out.steps.len() == MAX_STEPS {
            out.truncated = true;
            break;
        }
        for input in &fact.body.inputs {
            if seen.contains(&input.fact) {
                continue;
            }
            match store.fact(&input.fact)? {
                // A held fact that is not the one the input names (another
                // expression or output) is no step of this DAG.
                Some(upstream) if input.matches(&upstream).is_ok() => {
                    seen.insert(input.fact);
                    queue.push_back(upstream);
                }
                _ => {
                    if missing_seen.insert(input.fact) {
                        out.missing.push(input.clone());
                    }
                }
            }
        }
        out.steps.push(step(store, fact, &judge)?);
    }
    Ok(out)
}

fn step(
    store: &Store,
    fact: SignedFact,
    judge: &impl Fn(&SignedFact) -> Verdict,
) -> Result<Step, StoreError> {
    let body = &fact.body;
    let expression = store.expr(&body.expr)?;
    let workflow = store.workflow(&body.workflow)?.map(|(wf, _)| wf.manifest);
    let workflow_endorsed_by = store
        .endorsements_of(&Subject::Workflow(body.workflow))?
        .into_iter()
        .map(|e| e.body.endorser)
        .collect();
    let controls = Evidence::controls(store, &fact.id());
    let verdict = judge(&fact);
    Ok(Step {
        expression,
        workflow,
        workflow_endorsed_by,
        endorsed_by: controls.endorsed_by,
        disputed_by: controls.disputed_by,
        verdict,
        fact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use crate::test_facts::fact;
    use oda_protocol::SecretKey;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(StoreConfig::new(dir.path().join("store"), 1 << 20)).unwrap();
        (dir, store)
    }

    fn trusted(_: &SignedFact) -> Verdict {
        Verdict {
            trusted: true,
            why: "test".into(),
        }
    }

    #[test]
    fn the_walk_visits_every_input_fact_once_and_names_the_missing_ones() {
        let (_dir, store) = store();
        let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let events = fact(&a, 1, &[]);
        let other = fact(&b, 2, &[]);
        // Two steps both use `events`: a diamond.
        let left = fact(&a, 3, &[&events]);
        let right = fact(&b, 4, &[&events, &other]);
        let top = fact(&a, 5, &[&left, &right]);
        for f in [&events, &left, &right, &top] {
            store.put_fact(f).unwrap();
        }
        let p = trace(&store, vec![top.clone()], trusted).unwrap();
        let ids: Vec<FactId> = p.steps.iter().map(|s| s.fact.id()).collect();
        assert_eq!(ids[0], top.id(), "the root comes first");
        assert_eq!(ids.len(), 4, "each fact once: {ids:?}");
        for f in [&events, &left, &right] {
            assert!(ids.contains(&f.id()));
        }
        // `other` is not held: named once as missing.
        assert_eq!(p.missing.len(), 1);
        assert_eq!(p.missing[0].fact, other.id());
        assert!(!p.truncated);
        assert!(p.steps.iter().all(|s| s.verdict.trusted));
    }

    #[test]
    fn a_held_fact_that_is_not_the_named_input_is_not_a_step() {
        let (_dir, store) = store();
        let a = SecretKey::from_seed([1; 32]);
        let events = fact(&a, 1, &[]);
        let mut top = fact(&a, 5, &[&events]);
        // The input names `events` by id but claims other bytes.
        top.body.inputs[0].blob = oda_protocol::BlobId([9; 32]);
        store.put_fact(&events).unwrap();
        let p = trace(&store, vec![top], trusted).unwrap();
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.missing.len(), 1);
    }
}
