//! Validation of everything that arrives from peers, as pure functions so they
//! are tested without a swarm: DHT fact records and gossip messages.

use libp2p::kad::Record;
use oda_protocol::messages::Gossip;
use oda_protocol::names::Topic;
use oda_protocol::{NetworkId, SignedFact, Wire};

use super::keys::parse_fact_record;

/// Check a DHT record: the key names an expression, the value is a fact about
/// that expression, and the signature verifies.
pub fn fact_record(record: &Record) -> Result<SignedFact, String> {
    let expr = parse_fact_record(&record.key).ok_or("record key is not fact/<expression id>")?;
    let fact = SignedFact::decode(&record.value).map_err(|e| e.to_string())?;
    fact.verify_for(&expr).map_err(|e| e.to_string())?;
    Ok(fact)
}

/// Check a gossip message: it decodes, its kind matches the topic, it is
/// within its bounds and, unless it is a `Capacity` summary, the signature
/// of its author (the key it names: requester, worker, controller) verifies.
/// Gossipsub does not sign messages (protocol v3): each payload is signed
/// by its author, and checked here once per message, not once per copy.
pub fn gossip(net: &NetworkId, topic: &str, data: &[u8]) -> Result<Gossip, String> {
    let topic = Topic::decode(net, topic).map_err(|e| e.to_string())?;
    let message = Gossip::decode(data).map_err(|e| e.to_string())?;
    match (&topic, &message) {
        (Topic::Jobs { workflow_prefix }, Gossip::JobAdvert(signed)) => {
            let advert = &signed.body;
            if &advert
                .expr
                .workflow
                .short(oda_protocol::names::JOBS_TOPIC_PREFIX_BYTES)
                != workflow_prefix
            {
                return Err("job advert for another workflow than the topic's".into());
            }
            if advert.endorsements.len() > oda_protocol::messages::JobAdvert::MAX_ENDORSEMENTS {
                return Err("job advert carries too many endorsements".into());
            }
            signed.verify().map_err(|e| format!("job advert: {e}"))?;
            if let Some(token) = &advert.token {
                token.verify().map_err(|e| format!("job token: {e}"))?;
            }
            for e in &advert.endorsements {
                e.verify().map_err(|e| format!("endorsement: {e}"))?;
            }
        }
        (Topic::Facts, Gossip::FactAnnounce(announce)) => {
            announce
                .verify()
                .map_err(|e| format!("fact announcement: {e}"))?;
        }
        (Topic::Facts, Gossip::Failure(record)) => {
            if record.body.reason.len() > oda_protocol::Failure::MAX_REASON
                || record.body.log_tail.len() > oda_protocol::Failure::MAX_LOG_TAIL
            {
                return Err("failure record text over its limit".into());
            }
            record
                .verify()
                .map_err(|e| format!("failure record: {e}"))?;
        }
        (Topic::Facts, Gossip::Dispute(dispute)) => {
            dispute.verify().map_err(|e| format!("dispute: {e}"))?;
        }
        (Topic::Facts, Gossip::Endorsement(endorsement)) => {
            // A controller's verdict on a fact; workflow endorsements travel
            // with adverts, not on their own.
            if !matches!(endorsement.body.subject, oda_protocol::Subject::Fact(_)) {
                return Err("only endorsements of facts are gossiped".into());
            }
            if endorsement.body.note.len() > oda_protocol::Endorsement::MAX_NOTE {
                return Err("endorsement note over its limit".into());
            }
            endorsement
                .verify()
                .map_err(|e| format!("endorsement: {e}"))?;
        }
        (Topic::Capacity, Gossip::Capacity(cap)) => {
            if cap.workflows.len() > oda_protocol::messages::Capacity::MAX_LIST
                || cap.blobs.len() > oda_protocol::messages::Capacity::MAX_LIST
                || cap.free_slots > cap.total_slots
            {
                return Err("capacity message out of bounds".into());
            }
        }
        _ => return Err("message kind does not belong on this topic".into()),
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;
    use crate::network::keys;
    use oda_protocol::messages::FactAnnounce;
    use oda_protocol::{ExprId, Fact, FactId, Outcome, RunnerClass, Usage, WorkflowId};

    fn fact(key: &NodeKey, expr: ExprId) -> SignedFact {
        key.secret
            .sign(Fact {
                expr,
                workflow: WorkflowId([1; 32]),
                outcome: Outcome::AnalysisError {
                    kind: "NoData".into(),
                    message: "none".into(),
                },
                worker: key.public(),
                runner_class: RunnerClass::Public,
                inputs: vec![],
                started_at: 1,
                finished_at: 2,
                usage: Usage::default(),
                environment: [0; 32],
            })
            .unwrap()
    }

    #[test]
    fn records_must_match_their_key_and_signature() {
        let key = NodeKey::from_seed([5; 32]);
        let e = ExprId([2; 32]);
        let f = fact(&key, e);
        let good = Record::new(keys::fact_record(&e), f.encode().unwrap());
        assert_eq!(fact_record(&good).unwrap(), f);

        let wrong_key = Record::new(keys::fact_record(&ExprId([3; 32])), f.encode().unwrap());
        assert!(fact_record(&wrong_key).unwrap_err().contains("not"));

        let mut forged = f.clone();
        forged.body.finished_at += 1;
        let forged = Record::new(keys::fact_record(&e), forged.encode().unwrap());
        assert!(fact_record(&forged).unwrap_err().contains("bad signature"));

        let garbage = Record::new(keys::fact_record(&e), vec![0xff; 40]);
        assert!(fact_record(&garbage).is_err());
    }

    #[test]
    fn gossip_must_fit_its_topic_and_be_signed_by_its_author() {
        let net = NetworkId::main();
        let key = NodeKey::from_seed([6; 32]);
        let other = NodeKey::from_seed([7; 32]);
        let body = FactAnnounce {
            expr: ExprId([1; 32]),
            fact_id: FactId([2; 32]),
            worker: key.public(),
        };
        let encode = |a| Gossip::FactAnnounce(a).encode().unwrap();
        let data = encode(key.secret.sign(body.clone()).unwrap());
        let facts = Topic::Facts.encode(&net);
        let ok = gossip(&net, &facts, &data).unwrap();
        assert_eq!(ok.author(), Some(&key.public()));
        // Claimed for another worker, signed by this key: refused.
        let mut claimed = key.secret.sign(body.clone()).unwrap();
        claimed.body.worker = other.public();
        let err = gossip(&net, &facts, &encode(claimed)).unwrap_err();
        assert!(err.starts_with("fact announcement:"), "{err}");
        assert!(gossip(&net, &Topic::Capacity.encode(&net), &data).is_err());
        assert!(gossip(&net, &facts, &[1, 2, 3]).is_err());
        assert!(gossip(&net, "/oda/other/facts/3", &data).is_err());
        assert!(
            gossip(&net, "/oda/main/facts/2", &data).is_err(),
            "v2 topic"
        );
    }

    #[test]
    fn adverts_are_signed_by_their_requester_and_fit_their_topic() {
        let net = NetworkId::main();
        let requester = NodeKey::from_seed([6; 32]);
        let wf = WorkflowId([1; 32]);
        let manifest = oda_protocol::Manifest::from_toml(
            "name = \"w\"\nversion = \"1\"\n[outputs.out]\npath = \"o\"\n[executor]\nkind = \"command\"\nargv = [\"true\"]\n",
        )
        .unwrap();
        let advert = oda_protocol::messages::JobAdvert {
            expr: oda_protocol::Expression::new(wf, &manifest, Default::default()).unwrap(),
            inputs: vec![],
            requester: requester.public(),
            requirements: Default::default(),
            deadline: 9,
            priority: 0,
            token: None,
            bundle: oda_protocol::BlobId([0; 32]),
            endorsements: vec![],
        };
        let encode = |a| Gossip::JobAdvert(Box::new(a)).encode().unwrap();
        let topic = Topic::jobs(&wf).encode(&net);
        let good = encode(requester.secret.sign(advert.clone()).unwrap());
        let ok = gossip(&net, &topic, &good).unwrap();
        assert_eq!(ok.author(), Some(&requester.public()));
        // The priority raised after signing: refused.
        let mut raised = requester.secret.sign(advert.clone()).unwrap();
        raised.body.priority = 255;
        let err = gossip(&net, &topic, &encode(raised)).unwrap_err();
        assert!(err.starts_with("job advert:"), "{err}");
        // On the topic of another workflow.
        let other = Topic::jobs(&WorkflowId([2; 32])).encode(&net);
        let err = gossip(&net, &other, &good).unwrap_err();
        assert!(err.contains("another workflow"), "{err}");
    }

    #[test]
    fn disputes_come_signed_by_the_key_that_disputes() {
        let net = NetworkId::main();
        let facts = Topic::Facts.encode(&net);
        let key = NodeKey::from_seed([8; 32]);
        let body = oda_protocol::Dispute {
            controller: key.public(),
            fact: FactId([3; 32]),
            expr: ExprId([1; 32]),
            observed: Default::default(),
            issued_at: 5,
            reason: "outvoted by a quorum".into(),
        };
        let encode =
            |d: oda_protocol::SignedDispute| Gossip::Dispute(Box::new(d)).encode().unwrap();
        let good = encode(key.secret.sign(body.clone()).unwrap());
        assert!(gossip(&net, &facts, &good).is_ok());
        let mut forged = key.secret.sign(body).unwrap();
        forged.body.reason = "something else".into();
        let err = gossip(&net, &facts, &encode(forged)).unwrap_err();
        assert!(err.starts_with("dispute:"), "{err}");
    }

    #[test]
    fn endorsements_of_facts_come_signed_by_their_controller() {
        let net = NetworkId::main();
        let facts = Topic::Facts.encode(&net);
        let key = NodeKey::from_seed([8; 32]);
        let body = |subject| oda_protocol::Endorsement {
            endorser: key.public(),
            subject,
            issued_at: 5,
            note: "recomputed: same outputs".into(),
        };
        let encode =
            |e: oda_protocol::SignedEndorsement| Gossip::Endorsement(Box::new(e)).encode().unwrap();
        let of_fact = body(oda_protocol::Subject::Fact(FactId([3; 32])));
        let good = encode(key.secret.sign(of_fact.clone()).unwrap());
        assert!(gossip(&net, &facts, &good).is_ok());
        let mut forged = key.secret.sign(of_fact.clone()).unwrap();
        forged.body.issued_at = 6;
        let err = gossip(&net, &facts, &encode(forged)).unwrap_err();
        assert!(err.starts_with("endorsement:"), "{err}");
        let of_workflow = body(oda_protocol::Subject::Workflow(WorkflowId([1; 32])));
        let err = gossip(&net, &facts, &encode(key.secret.sign(of_workflow).unwrap())).unwrap_err();
        assert!(err.contains("only endorsements of facts"), "{err}");
        let mut long = of_fact;
        long.note = "x".repeat(oda_protocol::Endorsement::MAX_NOTE + 1);
        let err = gossip(&net, &facts, &encode(key.secret.sign(long).unwrap())).unwrap_err();
        assert!(err.contains("note over its limit"), "{err}");
    }

    #[test]
    fn failure_records_come_signed_by_their_worker_with_bounded_text() {
        let net = NetworkId::main();
        let facts = Topic::Facts.encode(&net);
        let key = NodeKey::from_seed([6; 32]);
        let body = oda_protocol::Failure {
            worker: key.public(),
            expr: ExprId([1; 32]),
            workflow: oda_protocol::WorkflowId([2; 32]),
            inputs: vec![],
            at: 5,
            reason: "exited with status 1".into(),
            log_tail: "Traceback ...".into(),
        };
        let encode = |record: oda_protocol::SignedFailure| {
            Gossip::Failure(Box::new(record)).encode().unwrap()
        };
        let good = encode(key.secret.sign(body.clone()).unwrap());
        assert!(gossip(&net, &facts, &good).is_ok());
        // On another topic.
        let capacity = Topic::Capacity.encode(&net);
        assert!(gossip(&net, &capacity, &good).is_err());
        // A forged signature.
        let mut forged = key.secret.sign(body.clone()).unwrap();
        forged.body.reason = "something else".into();
        let err = gossip(&net, &facts, &encode(forged)).unwrap_err();
        assert!(err.starts_with("failure record:"), "{err}");
        // Text over the limit.
        let long = oda_protocol::Failure {
            log_tail: "x".repeat(oda_protocol::Failure::MAX_LOG_TAIL + 1),
            ..body
        };
        let err = gossip(&net, &facts, &encode(key.secret.sign(long).unwrap())).unwrap_err();
        assert!(err.contains("over its limit"), "{err}");
    }
}
