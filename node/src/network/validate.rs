//! Validation of everything that arrives from peers, as pure functions so they
//! are tested without a swarm: DHT fact records and gossip messages.

use libp2p::kad::Record;
use libp2p::PeerId;
use oda_protocol::messages::Gossip;
use oda_protocol::names::Topic;
use oda_protocol::{NetworkId, SignedFact, Wire};

use super::keys::parse_fact_record;
use crate::identity::public_key_of;

/// Check a DHT record: the key names an expression, the value is a fact about
/// that expression, and the signature verifies.
pub fn fact_record(record: &Record) -> Result<SignedFact, String> {
    let expr = parse_fact_record(&record.key).ok_or("record key is not fact/<expression id>")?;
    let fact = SignedFact::decode(&record.value).map_err(|e| e.to_string())?;
    fact.verify_for(&expr).map_err(|e| e.to_string())?;
    Ok(fact)
}

/// Check a gossip message: it decodes, its kind matches the topic, and any key
/// it names as its author is the key that signed the gossip message.
pub fn gossip(
    net: &NetworkId,
    topic: &str,
    source: Option<&PeerId>,
    data: &[u8],
) -> Result<Gossip, String> {
    let topic = Topic::decode(net, topic).map_err(|e| e.to_string())?;
    let message = Gossip::decode(data).map_err(|e| e.to_string())?;
    let source_key = source
        .and_then(public_key_of)
        .ok_or("gossip source is not an ed25519 peer")?;
    match (&topic, &message) {
        (Topic::Jobs { workflow_prefix }, Gossip::JobAdvert(advert)) => {
            if &advert
                .expr
                .workflow
                .short(oda_protocol::names::JOBS_TOPIC_PREFIX_BYTES)
                != workflow_prefix
            {
                return Err("job advert for another workflow than the topic's".into());
            }
            if advert.requester != source_key {
                return Err("job advert names a requester other than its signer".into());
            }
            if let Some(token) = &advert.token {
                token.verify().map_err(|e| format!("job token: {e}"))?;
            }
            if advert.endorsements.len() > oda_protocol::messages::JobAdvert::MAX_ENDORSEMENTS {
                return Err("job advert carries too many endorsements".into());
            }
            for e in &advert.endorsements {
                e.verify().map_err(|e| format!("endorsement: {e}"))?;
            }
        }
        (Topic::Facts, Gossip::FactAnnounce(announce)) => {
            // Announcements may be relayed only by their worker.
            if announce.worker != source_key {
                return Err("fact announcement by a peer other than the worker".into());
            }
        }
        (Topic::Facts, Gossip::Failure(record)) => {
            // Published only by the worker that ran it, signed by it.
            if record.body.worker != source_key {
                return Err("failure record by a peer other than the worker".into());
            }
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
            // Published only by the key that disputes, signed by it.
            if dispute.body.controller != source_key {
                return Err("dispute by a peer other than its signer".into());
            }
            dispute.verify().map_err(|e| format!("dispute: {e}"))?;
        }
        (Topic::Facts, Gossip::Endorsement(endorsement)) => {
            // A controller's verdict on a fact, published by the controller;
            // workflow endorsements travel with adverts, not on their own.
            if endorsement.body.endorser != source_key {
                return Err("endorsement by a peer other than its signer".into());
            }
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
    fn gossip_must_fit_topic_and_signer() {
        let net = NetworkId::main();
        let key = NodeKey::from_seed([6; 32]);
        let other = NodeKey::from_seed([7; 32]);
        let announce = Gossip::FactAnnounce(FactAnnounce {
            expr: ExprId([1; 32]),
            fact_id: FactId([2; 32]),
            worker: key.public(),
        });
        let data = announce.encode().unwrap();
        let facts = Topic::Facts.encode(&net);
        assert!(gossip(&net, &facts, Some(&key.peer_id()), &data).is_ok());
        assert!(gossip(&net, &facts, Some(&other.peer_id()), &data).is_err());
        assert!(gossip(
            &net,
            &Topic::Capacity.encode(&net),
            Some(&key.peer_id()),
            &data
        )
        .is_err());
        assert!(gossip(&net, &facts, Some(&key.peer_id()), &[1, 2, 3]).is_err());
        assert!(gossip(&net, "/oda/other/facts/2", Some(&key.peer_id()), &data).is_err());
    }

    #[test]
    fn disputes_come_signed_from_the_key_that_disputes() {
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
        assert!(gossip(&net, &facts, Some(&key.peer_id()), &good).is_ok());
        let other = NodeKey::from_seed([9; 32]);
        let err = gossip(&net, &facts, Some(&other.peer_id()), &good).unwrap_err();
        assert!(err.contains("other than its signer"), "{err}");
        let mut forged = key.secret.sign(body).unwrap();
        forged.body.reason = "something else".into();
        let err = gossip(&net, &facts, Some(&key.peer_id()), &encode(forged)).unwrap_err();
        assert!(err.starts_with("dispute:"), "{err}");
    }

    #[test]
    fn endorsements_of_facts_come_signed_from_their_controller() {
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
        assert!(gossip(&net, &facts, Some(&key.peer_id()), &good).is_ok());
        let other = NodeKey::from_seed([9; 32]);
        let err = gossip(&net, &facts, Some(&other.peer_id()), &good).unwrap_err();
        assert!(err.contains("other than its signer"), "{err}");
        let mut forged = key.secret.sign(of_fact.clone()).unwrap();
        forged.body.issued_at = 6;
        let err = gossip(&net, &facts, Some(&key.peer_id()), &encode(forged)).unwrap_err();
        assert!(err.starts_with("endorsement:"), "{err}");
        let of_workflow = body(oda_protocol::Subject::Workflow(WorkflowId([1; 32])));
        let err = gossip(
            &net,
            &facts,
            Some(&key.peer_id()),
            &encode(key.secret.sign(of_workflow).unwrap()),
        )
        .unwrap_err();
        assert!(err.contains("only endorsements of facts"), "{err}");
        let mut long = of_fact;
        long.note = "x".repeat(oda_protocol::Endorsement::MAX_NOTE + 1);
        let err = gossip(
            &net,
            &facts,
            Some(&key.peer_id()),
            &encode(key.secret.sign(long).unwrap()),
        )
        .unwrap_err();
        assert!(err.contains("note over its limit"), "{err}");
    }

    #[test]
    fn failure_records_come_signed_from_their_worker_with_bounded_text() {
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
        assert!(gossip(&net, &facts, Some(&key.peer_id()), &good).is_ok());
        // Relayed as if by another peer, or on another topic.
        let other = NodeKey::from_seed([7; 32]);
        assert!(gossip(&net, &facts, Some(&other.peer_id()), &good).is_err());
        let capacity = Topic::Capacity.encode(&net);
        assert!(gossip(&net, &capacity, Some(&key.peer_id()), &good).is_err());
        // A forged signature.
        let mut forged = key.secret.sign(body.clone()).unwrap();
        forged.body.reason = "something else".into();
        let err = gossip(&net, &facts, Some(&key.peer_id()), &encode(forged)).unwrap_err();
        assert!(err.starts_with("failure record:"), "{err}");
        // Text over the limit.
        let long = oda_protocol::Failure {
            log_tail: "x".repeat(oda_protocol::Failure::MAX_LOG_TAIL + 1),
            ..body
        };
        let err = gossip(
            &net,
            &facts,
            Some(&key.peer_id()),
            &encode(key.secret.sign(long).unwrap()),
        )
        .unwrap_err();
        assert!(err.contains("over its limit"), "{err}");
    }
}
