//! Networking core with real swarms and stores, in process, on loopback:
//! DHT fact cache, forged-fact rejection, gossip validation, verified blob fetch.

mod common;

use std::time::Duration;

use common::{eventually, mesh, pseudo_random_bytes, spawn, test_network};
use oda_node::identity::NodeKey;
use oda_node::network::NetworkEvent;
use oda_protocol::messages::{FactAnnounce, Gossip};
use oda_protocol::names::Topic;
use oda_protocol::{
    BlobId, ExprId, Fact, FactId, Outcome, OutputRef, RunnerClass, SignedFact, Usage, Wire,
    WorkflowId,
};

const DEADLINE: Duration = Duration::from_secs(60);

fn fact(key: &NodeKey, expr: ExprId, outcome: Outcome) -> SignedFact {
    key.secret
        .sign(Fact {
            expr,
            workflow: WorkflowId([1; 32]),
            outcome,
            worker: key.public(),
            runner_class: RunnerClass::Public,
            inputs: vec![],
            started_at: 1_000,
            finished_at: 2_000,
            usage: Usage::default(),
            environment: [0; 32],
        })
        .expect("signer matches")
}

fn no_data() -> Outcome {
    Outcome::AnalysisError {
        kind: "NoData".into(),
        message: "no events in range".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_published_at_one_node_is_found_from_every_other() {
    let net = test_network("dht10");
    let (_boot, peers) = mesh(&net, 10).await;
    let publisher = &peers[3];
    let expr = ExprId(*blake3::hash(b"expression published at node 3").as_bytes());
    let signed = fact(&publisher.key, expr, no_data());
    publisher.store.put_fact(&signed).expect("store accepts");
    let served = || async {
        let mut n = 0;
        for p in &peers {
            n += p.client.stats().await.expect("stats").dht_requests_served;
        }
        n
    };
    let before = publisher.client.stats().await.expect("stats");
    let served_before = served().await;
    publisher
        .client
        .publish_fact(&signed)
        .await
        .expect("publish");
    // Putting the record and providing the expression are two queries,
    // each answered by other peers; counted where `/metrics` reads them.
    let after = publisher.client.stats().await.expect("stats");
    assert!(
        after.dht_queries >= before.dht_queries + 2,
        "{before:?} -> {after:?}"
    );
    assert!(
        served().await >= served_before + 2,
        "nobody served the queries"
    );

    for (i, peer) in peers.iter().enumerate() {
        let client = peer.client.clone();
        let found = eventually(&format!("node {i} finds the fact"), DEADLINE, || {
            let client = client.clone();
            let signed = signed.clone();
            async move {
                let facts = client.lookup_facts(expr).await.ok()?;
                facts.contains(&signed).then_some(facts)
            }
        })
        .await;
        for f in &found {
            f.verify_for(&expr).expect("only valid facts are returned");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_facts_are_rejected_and_never_returned() {
    let net = test_network("forged");
    let (boot, peers) = mesh(&net, 4).await;
    let rogue = &peers[0];
    let honest = &peers[1..];

    // (1) A valid signature, filed under another expression's key.
    let e_real = ExprId([0x11; 32]);
    let e_claimed = ExprId([0x22; 32]);
    let misfiled = fact(&rogue.key, e_real, no_data());
    // (2) A fact whose signature does not match its content.
    let e_forged = ExprId([0x33; 32]);
    let mut forged = fact(&rogue.key, e_forged, no_data());
    forged.body.outcome = Outcome::Success {
        outputs: [(
            "result".to_string(),
            OutputRef {
                blob: BlobId([9; 32]),
                size: 1,
            },
        )]
        .into(),
    };
    // (3) Undecodable bytes.
    let e_garbage = ExprId([0x44; 32]);

    let puts = [
        (format!("fact/{e_claimed}"), misfiled.encode().unwrap()),
        (format!("fact/{e_forged}"), forged.encode().unwrap()),
        (format!("fact/{e_garbage}"), vec![0xde, 0xad, 0xbe, 0xef]),
    ];
    let mut watchers = vec![boot.client.clone()];
    watchers.extend(honest.iter().map(|p| p.client.clone()));
    let rogue_id = rogue.key.peer_id();
    // Lowest reputation the rogue has with any honest node.
    let worst_reputation = || {
        let watchers = watchers.clone();
        async move {
            let mut worst: f64 = 0.0;
            for w in &watchers {
                worst = worst.min(w.reputation(rogue_id).await.unwrap_or(0.0));
            }
            worst
        }
    };
    for (key, value) in puts {
        // The rogue tries until a peer has been offered the record, or until
        // the honest nodes have stopped talking to it.
        let client = rogue.client.clone();
        eventually("rogue record offered", DEADLINE, || {
            let (client, key, value) = (client.clone(), key.clone(), value.clone());
            let worst = worst_reputation();
            async move {
                if client.put_raw_record(key.into_bytes(), value).await.is_ok() {
                    return Some(());
                }
                (worst.await <= oda_node::network::scoring::BAN_THRESHOLD).then_some(())
            }
        })
        .await;
    }

    // Somebody noticed and penalised the rogue.
    eventually("an honest node penalises the rogue", DEADLINE, || {
        let worst = worst_reputation();
        async move { (worst.await < 0.0).then_some(()) }
    })
    .await;

    // No honest lookup ever returns any of them.
    for peer in honest {
        for e in [e_claimed, e_forged, e_garbage, e_real] {
            let facts = peer.client.lookup_facts(e).await.expect("lookup runs");
            assert!(facts.is_empty(), "lookup of {e} returned {facts:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_all_subscribers_and_garbage_is_not_forwarded() {
    let net = test_network("gossip");
    // A line: a - b - c. Messages from a reach c only through b.
    let b = spawn(&net, vec![], true).await;
    let a = spawn(&net, vec![b.addr.clone()], false).await;
    let mut c = spawn(&net, vec![b.addr.clone()], false).await;

    // Until the gossip mesh a - b - c has formed, a message may not reach c;
    // a keeps announcing (fresh ids) until c has received one.
    let announce = |n: u8| {
        let signed = a
            .key
            .secret
            .sign(FactAnnounce {
                expr: ExprId([n; 32]),
                fact_id: FactId([n; 32]),
                worker: a.key.public(),
            })
            .expect("a signs its own announcement");
        Gossip::FactAnnounce(signed)
    };
    let end = tokio::time::Instant::now() + DEADLINE;
    let mut sent = Vec::new();
    let (got, source) = 'outer: loop {
        assert!(
            tokio::time::Instant::now() < end,
            "c never received a's announcements"
        );
        let n = sent.len() as u8 + 1;
        if a.client.publish(Topic::Facts, announce(n)).await.is_ok() {
            sent.push(announce(n));
        }
        let wait = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                e = c.events.recv() => match e {
                    Some(NetworkEvent::Gossip { message, author }) => break 'outer (message, author),
                    Some(_) => continue,
                    None => panic!("event stream closed"),
                },
            }
        }
    };
    assert!(
        sent.contains(&got),
        "c received something a never sent: {got:?}"
    );
    assert_eq!(source, Some(a.key.peer_id()), "the author is the signer");

    // Garbage from a: b rejects it and penalises a; c never sees it, so c has
    // no reason to penalise b.
    a.client
        .publish_raw(Topic::Facts, vec![0xff; 100])
        .await
        .expect("published");
    let (a_id, b_id) = (a.key.peer_id(), b.key.peer_id());
    let b_client = b.client.clone();
    eventually("b scores a down", DEADLINE, || {
        let b_client = b_client.clone();
        async move {
            let peers = b_client.peers().await.ok()?;
            peers
                .iter()
                .find(|p| p.peer == a_id)
                .and_then(|p| p.gossip_score)
                .filter(|s| *s < 0.0)
        }
    })
    .await;
    // A valid message published after the garbage still reaches c, proving the
    // path works; by then c would have seen the garbage had b forwarded it.
    let later = announce(200);
    a.client
        .publish(Topic::Facts, later.clone())
        .await
        .expect("published");
    let next = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(NetworkEvent::Gossip { message, .. }) = c.events.recv().await {
                if !sent.contains(&message) {
                    return message;
                }
            }
        }
    })
    .await
    .expect("c receives the later message");
    assert_eq!(next, later, "the garbage must not have reached c");
    let c_view = c.client.peers().await.unwrap();
    let b_score = c_view
        .iter()
        .find(|p| p.peer == b_id)
        .and_then(|p| p.gossip_score);
    assert!(b_score.unwrap_or(0.0) >= 0.0, "c penalised b: {b_score:?}");
}

/// Blob ranges a node has served to others so far.
async fn ranges_served(node: &common::Peer) -> u64 {
    node.client.stats().await.expect("stats").blob_ranges_served
}

/// Connect `fetcher` to each of `providers` and wait until it sees them all.
async fn connect_all(fetcher: &common::Peer, providers: &[&common::Peer]) {
    for p in providers {
        fetcher.client.dial(p.addr.clone()).await.expect("dial");
    }
    let ids: Vec<_> = providers.iter().map(|p| p.key.peer_id()).collect();
    eventually(
        "the fetcher connected to every provider",
        Duration::from_secs(10),
        || {
            let (c, ids) = (fetcher.client.clone(), ids.clone());
            async move {
                let peers = c.peers().await.ok()?;
                ids.iter()
                    .all(|id| peers.iter().any(|p| p.peer == *id))
                    .then_some(())
            }
        },
    )
    .await;
}

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_blob_is_fetched_verified_and_a_lying_provider_is_skipped() {
    let net = test_network("blob");
    let (_boot, peers) = mesh(&net, 3).await;
    let (honest, liar, fetcher) = (&peers[0], &peers[1], &peers[2]);

    let bytes = pseudo_random_bytes(50 * MIB as usize, 42);
    let blob = BlobId::of(&bytes);
    honest.store.put_blob(&bytes).unwrap();
    liar.store.put_blob(&bytes).unwrap();
    // The liar serves the true hashes (computed when the true bytes were
    // stored) with other bytes of the same length: one flipped bit in every
    // piece.
    let path = liar.store.blob_path(&blob).expect("liar holds the blob");
    let mut corrupted = bytes.clone();
    for piece in 0..50 {
        corrupted[piece * MIB as usize + 777] ^= 0x01;
    }
    std::fs::write(&path, &corrupted).unwrap();
    drop((bytes, corrupted));
    // Both providers reachable first: a fetch that cannot dial the liar
    // would skip it without a lie to catch.
    connect_all(fetcher, &[liar, honest]).await;

    // Both asked at once: the liar is caught at its first piece (its other
    // pieces in flight fail too, at most a window of them), penalised and
    // dropped; the honest peer serves everything else.
    let size = fetcher
        .client
        .fetch_blob_from(
            blob,
            Some(50 * MIB),
            vec![liar.key.peer_id(), honest.key.peer_id()],
            &fetcher.store,
        )
        .await
        .expect("fetched from the honest provider");
    assert_eq!(size, 50 * MIB);
    let got = fetcher
        .store
        .read_range(&blob, 0, size)
        .expect("fetched blob readable");
    assert_eq!(BlobId::of(&got), blob);
    let view = fetcher.client.peers().await.unwrap();
    let liar_rep = view
        .iter()
        .find(|p| p.peer == liar.key.peer_id())
        .map(|p| p.reputation);
    assert!(
        liar_rep.unwrap_or(0.0) < 0.0,
        "liar not penalised: {liar_rep:?}"
    );
    let (from_liar, from_honest) = (ranges_served(liar).await, ranges_served(honest).await);
    assert!(from_liar <= 8, "the liar served {from_liar} pieces");
    assert!(from_honest >= 50 - from_liar, "honest served {from_honest}");
    assert!(from_honest <= 50, "honest served {from_honest}");

    // Provider discovery through the DHT: the fetcher announced itself as a
    // provider, and a new peer finds and fetches it.
    honest.client.provide_blob(&blob).await.ok();
    let newcomer = spawn(&net, vec![_boot.addr.clone()], false).await;
    let client = newcomer.client.clone();
    let store = newcomer.store.clone();
    eventually("newcomer fetches through the DHT", DEADLINE, || {
        let (client, store) = (client.clone(), store.clone());
        async move { client.fetch_blob(blob, Some(50 * MIB), &store).await.ok() }
    })
    .await;
    assert!(newcomer.store.has_blob(&blob));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_comes_from_several_providers_at_once_and_a_fetch_resumes() {
    let net = test_network("blob-many");
    let (_boot, peers) = mesh(&net, 3).await;
    let (a, b, fetcher) = (&peers[0], &peers[1], &peers[2]);
    let bytes = pseudo_random_bytes(40 * MIB as usize, 7);
    let blob = BlobId::of(&bytes);
    a.store.put_blob(&bytes).unwrap();
    b.store.put_blob(&bytes).unwrap();
    connect_all(fetcher, &[a, b]).await;

    // The size is not given: the first provider proves it, then both serve.
    let size = fetcher
        .client
        .fetch_blob_from(
            blob,
            None,
            vec![a.key.peer_id(), b.key.peer_id()],
            &fetcher.store,
        )
        .await
        .expect("fetched");
    assert_eq!(size, 40 * MIB);
    let got = fetcher.store.read_range(&blob, 0, size).unwrap();
    assert!(got == bytes, "fetched bytes differ");
    let (from_a, from_b) = (ranges_served(a).await, ranges_served(b).await);
    assert_eq!(from_a + from_b, 40, "a served {from_a}, b {from_b}");
    assert!(from_a >= 8 && from_b >= 8, "a served {from_a}, b {from_b}");

    // An interrupted fetch (12 pieces verified, as by a fetch that stopped)
    // resumes: the provider is asked only for the other 28.
    let other = pseudo_random_bytes(40 * MIB as usize, 8);
    let other_id = BlobId::of(&other);
    a.store.put_blob(&other).unwrap();
    let before = ranges_served(a).await;
    {
        let partial = fetcher.store.partial_blob(other_id, 40 * MIB).unwrap();
        for (offset, len) in partial.missing().into_iter().take(12) {
            let (_, encoded) = a.store.encode_range(&other_id, offset, len.into()).unwrap();
            partial.write_piece(offset, len, &encoded).unwrap();
        }
    }
    fetcher
        .client
        .fetch_blob_from(
            other_id,
            Some(40 * MIB),
            vec![a.key.peer_id()],
            &fetcher.store,
        )
        .await
        .expect("resumed");
    assert_eq!(ranges_served(a).await - before, 28);
    let got = fetcher.store.read_range(&other_id, 0, 40 * MIB).unwrap();
    assert!(got == other, "resumed bytes differ");
}

/// A controller that keeps a verdict on a fact provides `verdicts/<fact>`;
/// a peer that was not listening when it was gossiped finds it with
/// `lookup_verdicts`, signature checked, and only verdicts about that fact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_on_a_fact_are_found_from_the_controller_that_keeps_them() {
    let net = test_network("verdicts");
    let (_boot, peers) = mesh(&net, 5).await;
    let (worker, controller, asker) = (&peers[0], &peers[1], &peers[4]);
    let signed = fact(&worker.key, ExprId([7; 32]), no_data());
    let fact_id = signed.id();
    controller.store.put_fact(&signed).expect("store accepts");
    let endorse = |about: FactId| {
        controller
            .key
            .secret
            .sign(oda_protocol::Endorsement {
                endorser: controller.key.public(),
                subject: oda_protocol::Subject::Fact(about),
                issued_at: 1,
                note: "re-computed: the same outcome".into(),
            })
            .expect("signs")
    };
    controller
        .store
        .put_endorsement(&endorse(fact_id))
        .expect("kept");
    controller.client.provide_verdicts(&fact_id).await;
    let found = eventually("the asker finds the endorsement", DEADLINE, || {
        let client = asker.client.clone();
        async move {
            let v = client.lookup_verdicts(&fact_id).await;
            (!v.endorsements.is_empty()).then_some(v)
        }
    })
    .await;
    assert_eq!(found.endorsements, vec![endorse(fact_id)]);
    assert!(found.disputes.is_empty());
    // A fact nobody gave a verdict on has none.
    let none = asker.client.lookup_verdicts(&FactId([9; 32])).await;
    assert!(none.endorsements.is_empty() && none.disputes.is_empty());
}
