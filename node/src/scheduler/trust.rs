//! Trust policy: whose facts this node accepts as results, and whose workflow
//! endorsements its worker accepts: the node itself, keys named in the
//! config, and the members of the groups it names (each group a signed
//! [`GroupRoster`](oda_protocol::GroupRoster) by its owner; the newest
//! version imported wins); and what the controllers it heeds said: a fact
//! one of them endorsed is trusted whoever signed it, a fact one of them
//! disputed is not, and neither is any other fact by that signer unless
//! endorsed ([`TrustPolicy::judge`]). A fact by anyone else is never
//! returned as a trusted result, and every view of a fact says whether it is
//! trusted here and why ([`TrustPolicy::verdict`]).

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

/// What the controllers said of one fact: who endorsed it and who disputed
/// it (signatures checked when they were stored; any key, the policy
/// counts only the controllers it heeds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    /// Keys that re-computed the fact and got the same outputs.
    pub endorsed_by: Vec<PublicKey>,
    /// Keys that re-computed the fact and got other outputs.
    pub disputed_by: Vec<PublicKey>,
}

/// Where a trust decision reads what it needs beyond the fact itself: the
/// input facts held (verified when stored) and the controllers' verdicts
/// on each fact. The node's [`Store`](crate::store::Store) is one.
pub trait Evidence {
    /// A held fact.
    fn fact(&self, id: &FactId) -> Option<SignedFact>;
    /// Endorsements and disputes of a fact.
    fn controls(&self, id: &FactId) -> Controls;
}

impl Evidence for crate::store::Store {
    fn fact(&self, id: &FactId) -> Option<SignedFact> {
        crate::store::Store::fact(self, id).ok().flatten()
    }

    fn controls(&self, id: &FactId) -> Controls {
        Controls {
            endorsed_by: self
                .endorsements_of(&Subject::Fact(*id))
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.body.endorser)
                .collect(),
            disputed_by: self
                .disputes_of(id)
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.body.controller)
                .collect(),
        }
    }
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
    /// Controllers whose endorsements and disputes of facts count here.
    pub controllers: BTreeSet<PublicKey>,
    /// Signers a heeded controller disputed a fact of, with that fact and
    /// controller: their other facts are trusted only when endorsed, and
    /// they are not assigned jobs.
    pub disreputed: BTreeMap<PublicKey, (FactId, PublicKey)>,
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
            controllers: BTreeSet::new(),
            disreputed: BTreeMap::new(),
        }
    }

    /// This policy, also heeding these controllers.
    pub fn with_controllers(mut self, controllers: impl IntoIterator<Item = PublicKey>) -> Self {
        self.controllers.extend(controllers);
        self
    }

    /// Whether this node counts `key`'s endorsements and disputes of facts:
    /// a controller it names, or itself.
    pub fn heeds(&self, key: &PublicKey) -> bool {
        self.controllers.contains(key) || *key == self.own
    }

    /// Count `controller`'s dispute of `disputed` (a held fact) if this
    /// policy heeds it: its signer is in disrepute from now on. Returns
    /// whether it changed anything. The node's own key is never in disrepute
    /// here.
    pub fn count_dispute(&mut self, controller: &PublicKey, disputed: &SignedFact) -> bool {
        let signer = disputed.body.worker;
        if !self.heeds(controller) || signer == self.own {
            return false;
        }
        self.disreputed
            .insert(signer, (disputed.id(), *controller))
            .is_none()
    }

    /// This policy, also trusting the members of `groups`.
    pub fn with_groups(mut self, groups: impl IntoIterator<Item = GroupRef>) -> Self {
        self.groups.extend(groups);
        self
    }

    /// Whether results from this worker key are acceptable (and it may be
    /// assigned jobs): a key trusted by the config, `oda trust add` or a
    /// group, and not in disrepute with a heeded controller.
    pub fn trusts_worker(&self, key: &PublicKey) -> bool {
        // The decision `signer` explains, without building the explanation:
        // this runs for every offer and every fact judged.
        let trusted = *key == self.own
            || (!self.disreputed.contains_key(key)
                && (self.fact_signers.contains(key)
                    || self.added.contains(key)
                    || self.group_of(key).is_some()));
        debug_assert_eq!(trusted, self.signer(key).is_ok(), "signer() explains it");
        trusted
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
        self.roster_admitting(&self.groups, key)
    }

    /// Whether `key` is the owner or a member of one of `groups`, by the
    /// newest roster of each this node imported (a worker's `group` class).
    pub fn in_groups(&self, groups: &BTreeSet<GroupRef>, key: &PublicKey) -> bool {
        self.roster_admitting(groups, key).is_some()
    }

    fn roster_admitting(
        &self,
        groups: &BTreeSet<GroupRef>,
        key: &PublicKey,
    ) -> Option<&SignedGroupRoster> {
        groups
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

    /// Whether a fact is acceptable on its signer alone: valid signature by
    /// a trusted signer. [`TrustPolicy::walk`] also counts the controllers'
    /// verdicts and the inputs.
    pub fn accepts(&self, fact: &SignedFact) -> bool {
        self.trusts_worker(&fact.body.worker) && fact.verify_for(&fact.body.expr).is_ok()
    }

    /// Whether a fact might be acceptable once the controllers' verdicts
    /// are counted: a valid signature, by a trusted signer or, when this
    /// node heeds controllers, by anyone (one may have endorsed it).
    pub fn may_accept(&self, fact: &SignedFact) -> bool {
        (self.trusts_worker(&fact.body.worker) || !self.controllers.is_empty())
            && fact.verify_for(&fact.body.expr).is_ok()
    }

    /// Why the fact `id` by `signer` is trusted here, or why not, counting
    /// what the controllers this node heeds said of it (`controls`): the
    /// node's own facts always; a fact a heeded controller disputed never;
    /// one a heeded controller endorsed always; else as its signer is.
    pub fn judge(&self, signer: &PublicKey, controls: &Controls) -> Result<String, String> {
        if *signer == self.own {
            return self.signer(signer);
        }
        let heeded = |keys: &[PublicKey]| keys.iter().find(|k| self.heeds(k)).copied();
        if let Some(c) = heeded(&controls.disputed_by) {
            return Err(format!("signed by {signer}; controller {c} disputed it"));
        }
        if let Some(c) = heeded(&controls.endorsed_by) {
            return Ok(match self.signer(signer) {
                Ok(why) => format!("{why}; endorsed by controller {c}"),
                Err(_) => format!("signed by {signer}, endorsed by controller {c}"),
            });
        }
        self.signer(signer)
    }

    /// Why facts by `key` are trusted here, or the reason they are not.
    pub fn signer(&self, key: &PublicKey) -> Result<String, String> {
        if *key == self.own {
            Ok("signed by this node's own key".into())
        } else if let Some((fact, controller)) = self.disreputed.get(key) {
            Err(format!(
                "signed by {key}, whose fact {fact} controller {controller} disputed"
            ))
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

    /// Why `input` cannot be trusted because of its signer or the
    /// controllers' verdicts on its fact (`controls`), if it cannot.
    pub fn untrusted_input(&self, input: &ResolvedInput, controls: &Controls) -> Option<String> {
        self.judge(&input.signer, controls)
            .err()
            .map(|why| format!("input {:?} of {}: {why}", input.name, input.expr))
    }

    /// Whether `fact` is a trusted result here, judged with the input facts
    /// `held` gives (this node's store, which verified them when it stored
    /// them): its signature verifies, its signer is trusted, and so is
    /// every input fact behind it, back to the sources, each giving the blob
    /// the fact that names it says it used. An input fact `held` does not
    /// give leaves the fact untrusted here (the requester looks such facts
    /// up in the mesh before it takes a result).
    pub fn verdict(&self, fact: &SignedFact, held: &impl Evidence) -> Verdict {
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
    pub fn verdict_of_verified(&self, fact: &SignedFact, held: &impl Evidence) -> Verdict {
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
    /// the sources: each must be trusted as [`TrustPolicy::judge`] says and
    /// each input fact must be the one named, giving the blob named. Stops
    /// at the first input fact `held` does not give.
    pub fn walk(&self, fact: &SignedFact, held: &impl Evidence) -> Walk {
        let why = match self.judge(&fact.body.worker, &held.controls(&fact.id())) {
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
            if let Some(why) = self.untrusted_input(&input, &held.controls(&input.fact)) {
                return Walk::Untrusted(why);
            }
            let Some(found) = held.fact(&input.fact) else {
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

    /// Facts held and the controllers' verdicts, as a store would give them.
    #[derive(Default)]
    struct Held(HashMap<FactId, SignedFact>, HashMap<FactId, Controls>);

    impl Evidence for Held {
        fn fact(&self, id: &FactId) -> Option<SignedFact> {
            self.0.get(id).cloned()
        }
        fn controls(&self, id: &FactId) -> Controls {
            self.1.get(id).cloned().unwrap_or_default()
        }
    }

    #[test]
    fn a_verdict_names_the_signer_and_follows_the_inputs_to_the_sources() {
        let (own, friend, stranger) = (key(1), key(2), key(3));
        let policy = TrustPolicy::new(own.public(), [friend.public()], []);
        let held = |facts: &[&SignedFact]| {
            Held(
                facts.iter().map(|f| (f.id(), (*f).clone())).collect(),
                HashMap::new(),
            )
        };

        let source = fact(&friend, 1, &[]);
        let mine = fact(&own, 2, &[&source]);
        let all = held(&[&source, &mine]);
        let v = policy.verdict(&source, &all);
        assert!(v.trusted, "{v:?}");
        assert!(v.why.contains("listed in [trust] keys"), "{v:?}");
        let v = policy.verdict(&mine, &all);
        assert!(v.trusted, "{v:?}");
        assert_eq!(
            v.why,
            "signed by this node's own key; its input fact is by a trusted signer"
        );

        // A stranger's fact, and a trusted fact resting on one.
        let forged = fact(&stranger, 1, &[]);
        let v = policy.verdict(&forged, &Held::default());
        assert!(!v.trusted);
        assert!(v.why.contains("whom this node does not trust"), "{v:?}");
        let on_forged = fact(&friend, 2, &[&forged]);
        let all = held(&[&forged]);
        let v = policy.verdict(&on_forged, &all);
        assert!(!v.trusted);
        assert!(v.why.starts_with("input \"out\""), "{v:?}");
        assert!(v.why.contains(&stranger.public().to_string()), "{v:?}");

        // An input fact not held here is not vouched for.
        let v = policy.verdict(&mine, &Held::default());
        assert!(!v.trusted);
        assert!(v.why.contains("not held here"), "{v:?}");

        // A held fact that is not the one named (other bytes): refused.
        let mut lying = mine.body.clone();
        lying.inputs[0].blob = BlobId([9; 32]);
        let lying = own.sign(lying).expect("signs");
        let all = held(&[&source]);
        let v = policy.verdict(&lying, &all);
        assert!(!v.trusted);
        assert!(
            v.why.ends_with(&format!("not {}", BlobId([9; 32]))),
            "{v:?}"
        );

        // A broken signature.
        let mut bad = source.clone();
        bad.body.finished_at += 1;
        let v = policy.verdict(&bad, &Held::default());
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

    #[test]
    fn heeded_controllers_endorse_and_dispute_facts_and_signers() {
        let (own, friend, stranger, controller, other) = (key(1), key(2), key(3), key(4), key(5));
        let mut policy = TrustPolicy::new(own.public(), [friend.public()], [])
            .with_controllers([controller.public()]);
        let by_friend = fact(&friend, 1, &[]);
        let by_stranger = fact(&stranger, 2, &[]);
        let endorsed = |k: &SecretKey| Controls {
            endorsed_by: vec![k.public()],
            disputed_by: vec![],
        };
        let disputed = |k: &SecretKey| Controls {
            endorsed_by: vec![],
            disputed_by: vec![k.public()],
        };
        let mut held = Held::default();

        // A stranger's fact endorsed by a heeded controller is trusted; by
        // a controller this node does not heed, it is not.
        assert!(policy.heeds(&own.public()) && !policy.heeds(&other.public()));
        held.1.insert(by_stranger.id(), endorsed(&other));
        assert!(!policy.verdict(&by_stranger, &held).trusted);
        held.1.insert(by_stranger.id(), endorsed(&controller));
        let v = policy.verdict(&by_stranger, &held);
        assert!(v.trusted, "{v:?}");
        assert!(
            v.why
                .ends_with(&format!("endorsed by controller {}", controller.public())),
            "{v:?}"
        );
        assert!(policy.may_accept(&by_stranger) && !policy.accepts(&by_stranger));

        // A trusted signer's disputed fact is not trusted, and an input
        // resting on it neither.
        held.1.insert(by_friend.id(), disputed(&controller));
        let v = policy.verdict(&by_friend, &held);
        assert!(!v.trusted);
        assert!(v.why.contains("disputed it"), "{v:?}");
        let mine = fact(&own, 3, &[&by_friend]);
        held.0.insert(by_friend.id(), by_friend.clone());
        let v = policy.verdict(&mine, &held);
        assert!(!v.trusted, "{v:?}");
        assert!(v.why.starts_with("input \"out\""), "{v:?}");

        // Counting the dispute puts the signer in disrepute: its other
        // facts are no longer trusted (unless endorsed), and it is not
        // assigned jobs; an unheeded controller's dispute counts for nothing.
        assert!(!policy.count_dispute(&other.public(), &by_friend));
        assert!(policy.trusts_worker(&friend.public()));
        assert!(policy.count_dispute(&controller.public(), &by_friend));
        assert!(!policy.trusts_worker(&friend.public()));
        let later = fact(&friend, 4, &[]);
        let v = policy.verdict(&later, &held);
        assert!(!v.trusted);
        assert!(v.why.contains("whose fact"), "{v:?}");
        held.1.insert(later.id(), endorsed(&controller));
        assert!(policy.verdict(&later, &held).trusted);

        // The node's own facts stay its own.
        let own_fact = fact(&own, 5, &[]);
        held.1.insert(own_fact.id(), disputed(&controller));
        assert!(!policy.count_dispute(&controller.public(), &own_fact));
        assert!(policy.verdict(&own_fact, &held).trusted);
    }
}
