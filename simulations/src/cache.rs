//! Remote cache hit: a fact with a 1 KiB output, held by one peer of a mesh,
//! resolved from another peer as a requester does (`Client::lookup_facts_until` a
//! fact by the trusted signer); and the same lookup
//! from fresh peers (cold routing table, empty record store).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use oda_node::identity::NodeKey;
use oda_node::network::Client;
use oda_protocol::{
    BlobId, ExprId, Fact, Outcome as FactOutcome, OutputRef, RunnerClass, SignedFact, Usage,
    WorkflowId,
};

use crate::mesh::{eventually, mesh, spawn, Peer, XorShift};
use crate::report::Outcome;
use crate::stats::{ms, Latency};
use crate::{network_id, Sizes};

/// A successful fact about `expr` by `key` with one output.
pub fn fact(key: &NodeKey, expr: ExprId, output: BlobId, size: u64) -> SignedFact {
    let outputs = [("out".to_string(), OutputRef { blob: output, size })].into();
    key.secret
        .sign(Fact {
            expr,
            workflow: WorkflowId(*blake3::hash(b"oda-bench workflow").as_bytes()),
            outcome: FactOutcome::Success { outputs },
            worker: key.public(),
            runner_class: RunnerClass::Public,
            inputs: vec![],
            started_at: 1_000,
            finished_at: 2_000,
            usage: Usage::default(),
            environment: [0; 32],
        })
        .expect("the fact names the signing key as its worker")
}

/// Figures of the remote-cache benchmark.
#[derive(Debug, Clone)]
pub struct CacheFigures {
    /// Warm lookups from a peer that joined after the fact was published
    /// (it holds no replica of the record).
    pub warm: Latency,
    /// The same from a peer holding a replica of the record.
    pub replica: Latency,
    /// The provider query alone (part of every lookup), from the same peer.
    pub providers: Latency,
    /// A fresh peer's first lookup, after it has identified the bootstrap.
    pub cold: Latency,
    /// A fresh peer's start until it has identified the bootstrap.
    pub join: Latency,
    /// Cold lookups that found nothing on the first try.
    pub cold_misses: usize,
}

/// A new peer joined through `boot`, once it has identified it; and how long
/// that took.
async fn fresh_peer(
    net: &oda_protocol::NetworkId,
    boot: &Peer,
    index: usize,
) -> anyhow::Result<(Peer, Duration)> {
    let t = Instant::now();
    let fresh = spawn(net, vec![boot.addr.clone()], false, index, None).await?;
    let boot = boot.peer_id();
    eventually(
        "a fresh peer identifies the bootstrap",
        Duration::from_secs(30),
        || {
            let c = fresh.client.clone();
            async move {
                let ps = c.peers().await.ok()?;
                ps.iter()
                    .any(|p| p.peer == boot && p.agent.is_some())
                    .then_some(())
            }
        },
    )
    .await?;
    Ok((fresh, t.elapsed()))
}

/// Run it with `sizes.cache_nodes`, `cache_asks`, `cold_peers`.
pub async fn measure(sizes: &Sizes) -> anyhow::Result<CacheFigures> {
    let net = network_id("cache");
    let peers = mesh(&net, sizes.cache_nodes, 2, 0x5eed, None).await?;
    let holder = &peers[1];
    let member = &peers[peers.len() - 1];

    let mut output = vec![0u8; 1024];
    XorShift(42).fill(&mut output);
    let blob = holder.store.put_blob(&output).context("store the output")?;
    let expr = ExprId(*blake3::hash(b"oda-bench remote cache hit").as_bytes());
    let signed = fact(&holder.key, expr, blob, output.len() as u64);
    holder
        .store
        .put_own_fact(&signed)
        .context("store the fact")?;
    holder
        .client
        .publish_fact(&signed)
        .await
        .context("publish the fact")?;
    // Until the provider and the record have spread, a lookup may miss.
    eventually(
        "a mesh peer finds the fact",
        Duration::from_secs(60),
        || {
            let (client, signed) = (member.client.clone(), signed.clone());
            async move {
                client
                    .lookup_facts(expr)
                    .await
                    .ok()?
                    .contains(&signed)
                    .then_some(())
            }
        },
    )
    .await?;

    // What a requester's cache check does: stop at the first fact by a
    // signer it trusts (here the holder).
    let signer = holder.key.public();
    let trusted = move |f: &oda_protocol::SignedFact| f.body.worker == signer;
    let asks = |asker: Client| {
        let signed = signed.clone();
        async move {
            let mut took = Vec::with_capacity(sizes.cache_asks);
            for _ in 0..sizes.cache_asks {
                let t = Instant::now();
                let facts = asker.lookup_facts_until(expr, &trusted).await;
                took.push(t.elapsed());
                if !facts.contains(&signed) {
                    bail!("a warm lookup missed the fact");
                }
            }
            Ok(took)
        }
    };
    // A peer of the mesh when the fact was published holds a replica of its
    // record (replication 20 ≥ the mesh): `get_record` answers locally.
    let replica = asks(member.client.clone()).await?;
    // A peer that joined afterwards holds none: every ask goes to the network.
    let (asker, _) = fresh_peer(&net, &peers[0], 999).await?;
    let warm = asks(asker.client.clone()).await?;
    let mut providers = Vec::new();
    for _ in 0..(sizes.cache_asks / 10).max(5) {
        let t = Instant::now();
        let found = asker.client.blob_providers(&blob).await?;
        providers.push(t.elapsed());
        if !found.contains(&holder.peer_id()) {
            bail!("the provider query missed the holder");
        }
    }

    let (mut cold, mut join, mut cold_misses) = (Vec::new(), Vec::new(), 0);
    for i in 0..sizes.cold_peers {
        let (fresh, joined) = fresh_peer(&net, &peers[0], 1_000 + i).await?;
        join.push(joined);
        let t = Instant::now();
        let facts = fresh.client.lookup_facts_until(expr, &trusted).await;
        cold.push(t.elapsed());
        if !facts.contains(&signed) {
            cold_misses += 1;
        }
    }
    let none = || anyhow::anyhow!("no samples");
    Ok(CacheFigures {
        warm: Latency::of(&warm).ok_or_else(none)?,
        replica: Latency::of(&replica).ok_or_else(none)?,
        providers: Latency::of(&providers).ok_or_else(none)?,
        cold: Latency::of(&cold).ok_or_else(none)?,
        join: Latency::of(&join).ok_or_else(none)?,
        cold_misses,
    })
}

/// The table rows.
pub fn outcomes(sizes: &Sizes, f: &CacheFigures) -> Vec<Outcome> {
    let mut warm = Outcome::new(
        "remote cache hit",
        format!(
            "{} peers + bootstrap, 1 KiB output held by one; `lookup_facts_until` a trusted fact from another, {} asks",
            sizes.cache_nodes, f.warm.n
        ),
    );
    warm.mesh = f.warm.brief();
    warm.limit = format!("provider query alone: p50 {} ms", ms(f.providers.p50_ms));
    warm.ratio = format!(
        "{:.1}× the provider query",
        f.warm.p50_ms / f.providers.p50_ms
    );
    warm.figure("p50", f.warm.p50_ms, "ms")
        .figure("p99", f.warm.p99_ms, "ms")
        .figure("providers_p50", f.providers.p50_ms, "ms")
        .figure("providers_p99", f.providers.p99_ms, "ms")
        .figure("replica_p50", f.replica.p50_ms, "ms")
        .figure("replica_p99", f.replica.p99_ms, "ms");
    warm.notes.push(format!(
        "the asker joined after the fact was published, so it holds neither the fact nor a \
         replica of its DHT record: its first ask walks the DHT (a record query that ends at \
         the first valid record by the trusted signer), and each later one is a `GetFacts` to \
         the peer that signed that record, remembered by the asker's network (the DHT is \
         walked again only if that peer does not answer with a trusted fact within 250 ms); \
         a peer that was in the mesh at publication holds a replica (replication 20) and \
         answers from it: p50 {} ms, p99 {} ms",
        ms(f.replica.p50_ms),
        ms(f.replica.p99_ms)
    ));

    let mut cold = Outcome::new(
        "cold DHT lookup",
        format!(
            "{} fresh peers, each joins through the bootstrap and looks the fact up once",
            f.cold.n
        ),
    );
    cold.mesh = format!("{}; join {}", f.cold.brief(), ms(f.join.p50_ms) + " ms p50");
    cold.limit = format!("warm lookup p50 {} ms", ms(f.warm.p50_ms));
    cold.ratio = format!("{:.1}× warm", f.cold.p50_ms / f.warm.p50_ms);
    cold.figure("p50", f.cold.p50_ms, "ms")
        .figure("p99", f.cold.p99_ms, "ms")
        .figure("join_p50", f.join.p50_ms, "ms")
        .figure("misses", f.cold_misses as f64, "lookups");
    if f.cold_misses > 0 {
        cold.notes.push(format!(
            "{} of {} cold lookups found nothing on the first try",
            f.cold_misses, f.cold.n
        ));
    }
    vec![warm, cold]
}
