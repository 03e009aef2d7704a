//! Quorum results: which facts about one expression agree, and whether
//! enough distinct signers do (`[trust] quorum`), and how a controller's
//! re-computation compares with the fact it checks. Pure functions over facts
//! the caller has already judged trusted.
//!
//! Two facts agree when they were computed from the same input bytes (each
//! `Output` argument resolved to the same blob) and say the same thing: the
//! same outputs (name, blob, size) or the same analysis error. Which input
//! *facts* named those bytes, and when or where the run happened, does not
//! matter.

use std::collections::BTreeMap;

use oda_protocol::{BlobId, ExprId, Outcome, PublicKey, SignedFact};

/// Facts that agree, at most one per signer, in the order given.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// One fact per distinct signer.
    pub facts: Vec<&'a SignedFact>,
}

impl Group<'_> {
    /// The signers, in order.
    pub fn signers(&self) -> Vec<PublicKey> {
        self.facts.iter().map(|f| f.body.worker).collect()
    }
}

/// What makes two facts agree.
fn claim(fact: &SignedFact) -> (Vec<(ExprId, &str, BlobId)>, &Outcome) {
    let mut inputs: Vec<_> = fact
        .body
        .inputs
        .iter()
        .map(|i| (i.expr, i.name.as_str(), i.blob))
        .collect();
    inputs.sort();
    (inputs, &fact.body.outcome)
}

/// Group `facts` by what they claim; within a group each signer counts once
/// (its first fact). Groups with more signers come first; ties keep the
/// order of their first fact.
pub fn groups(facts: &[SignedFact]) -> Vec<Group<'_>> {
    let mut out: Vec<Group<'_>> = Vec::new();
    for fact in facts {
        let said = claim(fact);
        match out.iter_mut().find(|g| claim(g.facts[0]) == said) {
            Some(g) => {
                if g.facts.iter().all(|f| f.body.worker != fact.body.worker) {
                    g.facts.push(fact);
                }
            }
            None => out.push(Group { facts: vec![fact] }),
        }
    }
    out.sort_by_key(|g| std::cmp::Reverse(g.facts.len()));
    out
}

/// The first group in which at least `k` distinct signers agree, a
/// successful one before an analysis error.
pub fn agreed(facts: &[SignedFact], k: usize) -> Option<Group<'_>> {
    let mut enough: Vec<Group<'_>> = groups(facts)
        .into_iter()
        .filter(|g| g.facts.len() >= k.max(1))
        .collect();
    enough.sort_by_key(|g| !matches!(g.facts[0].body.outcome, Outcome::Success { .. }));
    enough.into_iter().next()
}

/// The facts among `held` computed from the same input bytes as `agreed`
/// that say something else: what a quorum outvoted.
pub fn dissenters<'a>(held: &'a [SignedFact], agreed: &SignedFact) -> Vec<&'a SignedFact> {
    let (inputs, outcome) = claim(agreed);
    held.iter()
        .filter(|f| {
            let (i, o) = claim(f);
            i == inputs && o != outcome
        })
        .collect()
}

/// How a re-computation compares with the fact it re-checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Same input bytes, same outcome.
    Agree,
    /// Same input bytes, another outcome.
    Differ,
    /// Computed from other input bytes: says nothing about the fact.
    OtherInputs,
}

/// Compare `recheck` with the `original` fact about the same expression.
pub fn compare(original: &SignedFact, recheck: &SignedFact) -> Comparison {
    let ((i, o), (ri, ro)) = (claim(original), claim(recheck));
    if i != ri {
        Comparison::OtherInputs
    } else if o == ro {
        Comparison::Agree
    } else {
        Comparison::Differ
    }
}

/// What a fact says it computed, by output name (empty for an analysis
/// error): what a dispute names as observed.
pub fn observed(fact: &SignedFact) -> BTreeMap<String, BlobId> {
    match &fact.body.outcome {
        Outcome::Success { outputs } => outputs.iter().map(|(n, o)| (n.clone(), o.blob)).collect(),
        Outcome::AnalysisError { .. } => BTreeMap::new(),
    }
}

/// Whether `fact` is a result under a quorum of `k`, judged with the
/// trusted facts `held` about its expression: how many distinct signers
/// agree with it (itself included) and who they are, for people.
pub fn verdict(held: &[SignedFact], fact: &SignedFact, k: usize) -> (bool, String) {
    let said = claim(fact);
    let mut agree = vec![fact.body.worker];
    for f in held {
        if claim(f) == said && !agree.contains(&f.body.worker) {
            agree.push(f.body.worker);
        }
    }
    let names: Vec<String> = agree.iter().map(short).collect();
    let n = agree.len();
    if n >= k {
        (true, format!("{n} of {k} agree: {}", names.join(", ")))
    } else {
        (
            false,
            format!(
                "only {n} of the {k} trusted workers `[trust] quorum` asks for agree: {}",
                names.join(", ")
            ),
        )
    }
}

fn short(key: &PublicKey) -> String {
    let hex = key.to_string();
    hex[..hex.len().min(8)].to_string()
}

/// A line for people: each group's signers (short) and what it claims.
pub fn describe(groups: &[Group<'_>]) -> String {
    groups
        .iter()
        .map(|g| {
            let who: Vec<String> = g.facts.iter().map(|f| short(&f.body.worker)).collect();
            let what = match &g.facts[0].body.outcome {
                Outcome::Success { outputs } => outputs
                    .iter()
                    .map(|(name, o)| {
                        let blob = o.blob.to_string();
                        format!("{name}={}", &blob[..blob.len().min(12)])
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Outcome::AnalysisError { kind, .. } => format!("analysis error {kind}"),
            };
            format!("[{}: {what}]", who.join(", "))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_facts::{fact, fact_saying};
    use oda_protocol::SecretKey;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed([seed; 32])
    }

    #[test]
    fn distinct_signers_that_say_the_same_agree() {
        let (a, b, c) = (key(1), key(2), key(3));
        let facts = vec![
            fact_saying(&a, 7, 70, &[]),
            fact_saying(&b, 7, 66, &[]),
            fact_saying(&c, 7, 70, &[]),
            // The same signer again does not count twice.
            fact_saying(&a, 7, 70, &[]),
        ];
        let g = groups(&facts);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].facts.len(), 2, "a and c agree");
        assert_eq!(g[1].facts.len(), 1);
        let two = agreed(&facts, 2).expect("2 agree");
        assert_eq!(two.signers(), vec![a.public(), c.public()]);
        assert!(
            agreed(&facts, 3).is_none(),
            "only two distinct signers agree"
        );
        assert!(agreed(&facts, 1).is_some());
        let line = describe(&g);
        assert_eq!(line.matches('[').count(), 2, "{line}");
        let (ok, why) = verdict(&facts, &facts[2], 2);
        assert!(ok && why.starts_with("2 of 2 agree"), "{why}");
        let (ok, why) = verdict(&facts, &facts[1], 2);
        assert!(!ok && why.starts_with("only 1 of the 2"), "{why}");
        let outvoted = dissenters(&facts, &facts[0]);
        assert_eq!(outvoted.len(), 1);
        assert_eq!(outvoted[0].body.worker, b.public());
        assert_eq!(compare(&facts[0], &facts[2]), Comparison::Agree);
        assert_eq!(compare(&facts[0], &facts[1]), Comparison::Differ);
        assert_eq!(observed(&facts[1]).len(), 1);
    }

    #[test]
    fn facts_from_other_input_bytes_do_not_agree() {
        let (src, other_src) = (
            fact_saying(&key(9), 5, 50, &[]),
            fact_saying(&key(9), 5, 51, &[]),
        );
        let x = fact(&key(1), 7, &[&src]);
        let y = fact(&key(2), 7, &[&other_src]);
        assert_eq!(compare(&x, &y), Comparison::OtherInputs);
        assert_eq!(groups(&[x.clone(), y]).len(), 2);
        // The same input bytes named through another signer's input fact
        // still agree.
        let same_bytes = fact_saying(&key(8), 5, 50, &[]);
        let z = fact(&key(3), 7, &[&same_bytes]);
        assert!(agreed(&[x, z], 2).is_some());
    }
}
