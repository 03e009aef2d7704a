//! Trust policy: whose facts this node accepts as results, and whose workflow
//! endorsements its worker accepts: the node itself, keys named in the
//! config, and the members of the groups it names (each group a signed
//! [`GroupRoster`](oda_protocol::GroupRoster) by its owner; the newest
//! version imported wins). A fact by anyone else is never returned as a trusted result,
//! and every view of a fact says whether it is trusted here and why
//! ([`TrustPolicy::verdict`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use tokio::sync::watch;

use oda_protocol::{
    FactId, PublicKey, ResolvedInput, SignedEndorsement, SignedFact, SignedGroupRoster, Subject,
    WorkflowId,
};

/// A group: its owner's key and its name.
pub type GroupRef = (PublicKey, String);

/// What importing a roster did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterImport {
    /// It is the newest version of its group now.
    Newer,
    /// This node already has this version or a newer one.
    NotNewer,
}

/// Most input facts one trust check follows, back to the sources.
pub const CHAIN_LIMIT: usize = 4096;

/// What following a fact's inputs back to the sources found
/// ([`TrustPolicy::walk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walk {
    /// Trusted, and why.
    Trusted(String),
    /// Not trusted, and why.
    Untrusted(String),
    /// An input fact the lookup does not give: until it is found, nothing
    /// is known. `named_by` signed the fact that names it (the peer most
    /// likely to hold it).
    Missing {
        /// The input whose fact is missing.
        input: ResolvedInput,
        /// The signer of the fact that names it.
        named_by: PublicKey,
    },
}

/// Whether a fact is a trusted result here, and why, in words for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The fact may be returned as a result.
    pub trusted: bool,
    /// Why, e.g. "signed by this node's own key" or "signed by K, whom this
    /// node does not trust".
    pub why: String,
}

/// The node's trust policy as it is now, shared by the requester, the worker
/// and the API: changes (a group roster imported) replace it as a whole, and
/// each decision reads one snapshot ([`TrustBook::now`]).
#[derive(Debug, Clone)]
pub struct TrustBook(Arc<watch::Sender<Arc<TrustPolicy>>>);

impl TrustBook {
    /// A book holding `policy`.
    pub fn new(policy: TrustPolicy) -> Self {
        Self(Arc::new(watch::Sender::new(Arc::new(policy))))
    }

    /// The policy now.
    pub fn now(&self) -> Arc<TrustPolicy> {
        self.0.borrow().clone()
    }

    /// Change the policy; returns what `change` returns.
    pub fn update<T>(&self, change: impl FnOnce(&mut TrustPolicy) -> T) -> T {
        let mut out = None;
        self.0.send_modify(|p| out = Some(change(Arc::make_mut(p))));
        out.expect("send_modify runs the change once")
    }
}

/// The node's trust settings.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    /// This node's own key.
    pub own: PublicKey,
    /// Keys whose facts are accepted (always includes the node's own key).
    pub fact_signers: BTreeSet<PublicKey>,
    /// Keys whose workflow endorsements the worker accepts.
    pub experts: BTreeSet<PublicKey>,
    /// Keys whose facts are accepted, added at run time (`oda trust add`).
    pub added: BTreeSet<PublicKey>,
    /// Groups whose members' facts are accepted.
    pub groups: BTreeSet<GroupRef>,
    /// The newest verified roster of each group this node knows (of the
    /// groups above or not).
    pub rosters: BTreeMap<GroupRef, SignedGroupRoster>,
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
            own,
            fact_signers: signers,
            experts: experts.into_iter().collect(),
            added: BTreeSet::new(),
            groups: BTreeSet::new(),
            rosters: BTreeMap::new(),
        }
    }

    /// This policy, also trusting the members of `groups`.
    pub fn with_groups(mut self, groups: impl IntoIterator<Item = GroupRef>) -> Self {
        self.groups.extend(groups);
        self
    }

    /// Whether results from this worker key are acceptable.
    pub fn trusts_worker(&self, key: &PublicKey) -> bool {
        self.fact_signers.contains(key) || self.added.contains(key) || self.group_of(key).is_some()
    }

    /// Trust `key`'s facts from now on; false if they already were because
    /// of the key itself (own, configured or added).
    pub fn add_key(&mut self, key: PublicKey) -> bool {
        !self.fact_signers.contains(&key) && self.added.insert(key)
    }

    /// Stop trusting a key added at run time; false if it was not added. A
    /// key of `[trust] keys` or the node's own cannot be removed here.
    pub fn remove_key(&mut self, key: &PublicKey) -> Result<bool, String> {
        if *key == self.own {
            return Err("this is the node's own key, always trusted".into());
        }
        if self.fact_signers.contains(key) {
            return Err(format!(
                "{key} is listed in [trust] keys of config.toml; remove it there and restart"
            ));
        }
        Ok(self.added.remove(key))
    }

    /// The roster of a trusted group that admits `key` (its owner or a
    /// member), if any.
    pub fn group_of(&self, key: &PublicKey) -> Option<&SignedGroupRoster> {
        self.groups
            .iter()
            .filter_map(|g| self.rosters.get(g))
            .find(|r| r.body.owner == *key || r.body.members.contains(key))
    }

    /// Keep `roster` if it verifies and is newer than the version this
    /// policy has of its group.
    pub fn import(&mut self, roster: SignedGroupRoster) -> Result<RosterImport, String> {
        roster
            .verify()
            .map_err(|e| format!("the roster's signature does not verify: {e}"))?;
        let group = (roster.body.owner, roster.body.name.clone());
        if self
            .rosters
            .get(&group)
            .is_some_and(|held| held.body.version >= roster.body.version)
        {
            return Ok(RosterImport::NotNewer);
        }
        self.rosters.insert(group, roster);
        Ok(RosterImport::Newer)
    }

    /// Whether a fact is acceptable: valid signature by a trusted signer.
    pub fn accepts(&self, fact: &SignedFact) -> bool {
        self.trusts_worker(&fact.body.worker) && fact.verify_for(&fact.body.expr).is_ok()
    }

    /// Why facts by `key` are trusted here, or the reason they are not.
    pub fn signer(&self, key: &PublicKey) -> Result<String, String> {
        if *key == self.own {
            Ok("signed by this node's own key".into())
        } else if self.fact_signers.contains(key) {
            Ok(format!("signed by {key}, listed in [trust] keys"))
        } else if self.added.contains(key) {
            Ok(format!("signed by {key}, added with `oda trust add`"))
        } else if let Some(r) = self.group_of(key) {
            Ok(format!(
                "signed by {key}, a member of group {:?} (roster version {} by {})",
                r.body.name, r.body.version, r.body.owner
            ))
        } else {
            Err(format!("signed by {key}, whom this node does not trust"))
        }
    }

    /// Why `input` cannot be trusted because of its signer, if it cannot.
    pub fn untrusted_input(&self, input: &ResolvedInput) -> Option<String> {
        (!self.trusts_worker(&input.signer)).then(|| {
            format!(
                "input {:?} of {} was computed by {}, whom this node does not trust",
                input.name, input.expr, input.signer
            )
        })
    }

    /// Whether `fact` is a trusted result here, judged with the input facts
    /// `held` gives (this node's store, which verified them when it stored
    /// them): its signature verifies, its signer is trusted, and so is
    /// every input fact behind it, back to the sources, each giving the blob
    /// the fact that names it says it used. An input fact `held` does not
    /// give leaves the fact untrusted here (the requester looks such facts
    /// up in the mesh before it takes a result).
    pub fn verdict(
        &self,
        fact: &SignedFact,
        held: impl FnMut(&FactId) -> Option<SignedFact>,
    ) -> Verdict {
        match fact.verify_for(&fact.body.expr) {
            Ok(()) => self.verdict_of_verified(fact, held),
            Err(e) => Verdict {
                trusted: false,
                why: format!("its signature does not verify: {e}"),
            },
        }
    }

    /// [`TrustPolicy::verdict`] of a fact whose signature was verified
    /// before (a fact from this node's store).
    pub fn verdict_of_verified(
        &self,
        fact: &SignedFact,
        held: impl FnMut(&FactId) -> Option<SignedFact>,
    ) -> Verdict {
        match self.walk(fact, held) {
            Walk::Trusted(why) => Verdict { trusted: true, why },
            Walk::Untrusted(why) => Verdict {
                trusted: false,
                why,
            },
            Walk::Missing { input, .. } => Verdict {
                trusted: false,
                why: format!(
                    "input {:?} of {}: its fact {} is not held here, so it is not checked",
                    input.name, input.expr, input.fact
                ),
            },
        }
    }

    /// Follow `fact` (its signature verified before) and its input facts,
    /// as `held` gives them (facts verified when they were stored), back to
    /// the sources: each signer must be trusted and each input fact must be
    /// the one named, giving the blob named. Stops at the first input fact
    /// `held` does not give.
    pub fn walk(
        &self,
        fact: &SignedFact,
        mut held: impl FnMut(&FactId) -> Option<SignedFact>,
    ) -> Walk {
        let why = match self.signer(&fact.body.worker) {
            Ok(why) => why,
            Err(why) => return Walk::Untrusted(why),
        };
        fn named(f: &SignedFact) -> impl Iterator<Item = (ResolvedInput, PublicKey)> + '_ {
            f.body.inputs.iter().map(|i| (i.clone(), f.body.worker))
        }
        let mut pending: Vec<(ResolvedInput, PublicKey)> = named(fact).collect();
        let mut seen = HashSet::new();
        while let Some((input, named_by)) = pending.pop() {
            if !seen.insert(input.fact) {
                continue;
            }
            if seen.len() > CHAIN_LIMIT {
                return Walk::Untrusted(format!(
                    "its provenance has more than {CHAIN_LIMIT} input facts"
                ));
            }
            if let Some(why) = self.untrusted_input(&input) {
                return Walk::Untrusted(why);
            }
            let Some(found) = held(&input.fact) else {
                return Walk::Missing { input, named_by };
            };
            if let Err(e) = input.matches(&found) {
                let why = format!("input {:?} of {}: {e}", input.name, input.expr);
                return Walk::Untrusted(why);
            }
            pending.extend(named(&found));
        }
        Walk::Trusted(match seen.len() {
            0 => why,
            1 => format!("{why}; its input fact is by a trusted signer"),
            n => format!("{why}; its {n} input facts are by trusted signers"),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_facts::fact;
    use oda_protocol::{BlobId, SecretKey};
    use std::collections::HashMap;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed([seed; 32])
    }

    #[test]
    fn a_verdict_names_the_signer_and_follows_the_inputs_to_the_sources() {
        let (own, friend, stranger) = (key(1), key(2), key(3));
        let policy = TrustPolicy::new(own.public(), [friend.public()], []);
        let held = |facts: &[&SignedFact]| -> HashMap<FactId, SignedFact> {
            facts.iter().map(|f| (f.id(), (*f).clone())).collect()
        };

        let source = fact(&friend, 1, &[]);
        let mine = fact(&own, 2, &[&source]);
        let all = held(&[&source, &mine]);
        let v = policy.verdict(&source, |id| all.get(id).cloned());
        assert!(v.trusted, "{v:?}");
        assert!(v.why.contains("listed in [trust] keys"), "{v:?}");
        let v = policy.verdict(&mine, |id| all.get(id).cloned());
        assert!(v.trusted, "{v:?}");
        assert_eq!(
            v.why,
            "signed by this node's own key; its input fact is by a trusted signer"
        );

        // A stranger's fact, and a trusted fact resting on one.
        let forged = fact(&stranger, 1, &[]);
        let v = policy.verdict(&forged, |_| None);
        assert!(!v.trusted);
        assert!(v.why.contains("whom this node does not trust"), "{v:?}");
        let on_forged = fact(&friend, 2, &[&forged]);
        let all = held(&[&forged]);
        let v = policy.verdict(&on_forged, |id| all.get(id).cloned());
        assert!(!v.trusted);
        assert!(v.why.starts_with("input \"out\""), "{v:?}");
        assert!(v.why.contains(&stranger.public().to_string()), "{v:?}");

        // An input fact not held here is not vouched for.
        let v = policy.verdict(&mine, |_| None);
        assert!(!v.trusted);
        assert!(v.why.contains("not held here"), "{v:?}");

        // A held fact that is not the one named (other bytes): refused.
        let mut lying = mine.body.clone();
        lying.inputs[0].blob = BlobId([9; 32]);
        let lying = own.sign(lying).expect("signs");
        let all = held(&[&source]);
        let v = policy.verdict(&lying, |id| all.get(id).cloned());
        assert!(!v.trusted);
        assert!(
            v.why.ends_with(&format!("not {}", BlobId([9; 32]))),
            "{v:?}"
        );

        // A broken signature.
        let mut bad = source.clone();
        bad.body.finished_at += 1;
        let v = policy.verdict(&bad, |_| None);
        assert!(!v.trusted);
        assert!(v.why.contains("signature"), "{v:?}");
    }

    fn roster(
        owner: &SecretKey,
        name: &str,
        version: u64,
        members: &[&SecretKey],
    ) -> SignedGroupRoster {
        owner
            .sign(oda_protocol::GroupRoster {
                owner: owner.public(),
                name: name.into(),
                version,
                members: members.iter().map(|m| m.public()).collect(),
                issued_at: version,
            })
            .expect("signs")
    }

    #[test]
    fn members_of_a_trusted_group_are_trusted_by_its_newest_roster() {
        let (own, admin, alice, bob) = (key(1), key(2), key(3), key(4));
        let team = (admin.public(), "team".to_string());
        let mut policy = TrustPolicy::new(own.public(), [], []).with_groups([team.clone()]);
        assert!(!policy.trusts_worker(&alice.public()), "no roster yet");

        assert_eq!(
            policy.import(roster(&admin, "team", 1, &[&alice])),
            Ok(RosterImport::Newer)
        );
        assert!(policy.trusts_worker(&alice.public()));
        assert!(
            policy.trusts_worker(&admin.public()),
            "the owner is a member"
        );
        assert!(!policy.trusts_worker(&bob.public()));
        let why = policy.signer(&alice.public()).expect("trusted");
        assert!(
            why.contains("a member of group \"team\" (roster version 1"),
            "{why}"
        );

        // Version 2 drops alice and adds bob; version 1 again changes nothing.
        assert_eq!(
            policy.import(roster(&admin, "team", 2, &[&bob])),
            Ok(RosterImport::Newer)
        );
        assert_eq!(
            policy.import(roster(&admin, "team", 1, &[&alice])),
            Ok(RosterImport::NotNewer)
        );
        assert!(!policy.trusts_worker(&alice.public()));
        assert!(policy.trusts_worker(&bob.public()));

        // A group this node does not name, and a forged roster.
        policy
            .import(roster(&bob, "other", 1, &[&alice]))
            .expect("valid");
        assert!(!policy.trusts_worker(&alice.public()));
        let mut forged = roster(&admin, "team", 3, &[&alice]);
        forged.body.members.insert(key(9).public());
        assert!(policy.import(forged).is_err());
        assert!(!policy.trusts_worker(&alice.public()));
    }
}
