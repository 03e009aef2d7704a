//! `rogue`: a misbehaving mesh peer for the abuse scenario of
//! `tests/tests/faults.rs`, built on `oda-node`'s own network module with its
//! own key. It
//!
//! 1. answers every job advert with an attractive `Offer` and ignores the
//!    `Assign` (no heartbeat, no result): a broken lease;
//! 2. after its first assignment, floods malformed gossip on the facts topic
//!    and the workflow's jobs topic (random bytes, and fact announcements
//!    naming another worker);
//! 3. then puts forged fact records in the DHT with `put_raw_record`: a fact
//!    with a bad signature under the advertised expression's key, and validly
//!    signed facts under mismatched keys.
//!
//! Usage: `rogue --dir DIR --network NET --workflow wf:HEX --peer ADDR...
//! [--garbage N] [--lifetime-secs S] [--go-file PATH]`; with `--go-file`,
//! steps 2 and 3 wait until that file exists. The key is `DIR/node.key` (created if
//! missing). It prints what it does to stdout, one line per action, for the
//! test to read: `ready <peer id>`, `garbage <topic> <count>`,
//! `offered <expr>`, `assigned <expr> <lease>`, `offer-answer <expr> <what>`,
//! `forged <kind> key=<expr> fact=<expr> result=<ok|error>`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oda_node::identity::{peer_id_of, NodeKey};
use oda_node::network::{self, Client, NetworkConfig, NetworkEvent};
use oda_node::store::{Store, StoreConfig};
use oda_protocol::messages::{FactAnnounce, Gossip, JobAdvert, JobRequest, JobResponse, Offer};
use oda_protocol::names::Topic;
use oda_protocol::{
    BlobId, ExprId, Fact, FactId, Outcome, OutputRef, PublicKey, RunnerClass, Usage, Wire,
    WorkflowId,
};

struct Args {
    dir: PathBuf,
    network: String,
    workflow: WorkflowId,
    peers: Vec<String>,
    garbage: usize,
    lifetime: Duration,
    go_file: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut dir = None;
    let mut network = None;
    let mut workflow = None;
    let mut peers = Vec::new();
    let mut garbage = 20;
    let mut lifetime = 600;
    let mut go_file = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| fail(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value())),
            "--network" => network = Some(value()),
            "--workflow" => {
                workflow = Some(
                    value()
                        .parse::<WorkflowId>()
                        .unwrap_or_else(|e| fail(&format!("--workflow: {e}"))),
                )
            }
            "--peer" => peers.push(value()),
            "--go-file" => go_file = Some(PathBuf::from(value())),
            "--garbage" => {
                garbage = value()
                    .parse()
                    .unwrap_or_else(|e| fail(&format!("--garbage: {e}")))
            }
            "--lifetime-secs" => {
                lifetime = value()
                    .parse()
                    .unwrap_or_else(|e| fail(&format!("--lifetime-secs: {e}")))
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    Args {
        dir: dir.unwrap_or_else(|| fail("--dir is required")),
        network: network.unwrap_or_else(|| fail("--network is required")),
        workflow: workflow.unwrap_or_else(|| fail("--workflow is required")),
        peers,
        garbage,
        lifetime: Duration::from_secs(lifetime),
        go_file,
    }
}

fn fail(message: &str) -> ! {
    eprintln!("rogue: {message}");
    std::process::exit(2)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Deterministic junk (xorshift), different for each `seed`.
fn junk(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect()
}

/// An expression id nobody computes.
fn fake_expr(label: &str) -> ExprId {
    ExprId(BlobId::of(format!("rogue fake expression {label}").as_bytes()).0)
}

fn fact_about(key: &NodeKey, expr: ExprId, workflow: WorkflowId) -> oda_protocol::SignedFact {
    let forged_output = b"forged result".to_vec();
    let mut outputs = BTreeMap::new();
    outputs.insert(
        "out".to_string(),
        OutputRef {
            blob: BlobId::of(&forged_output),
            size: forged_output.len() as u64,
        },
    );
    key.secret
        .sign(Fact {
            expr,
            workflow,
            outcome: Outcome::Success { outputs },
            worker: key.public(),
            runner_class: RunnerClass::Public,
            inputs: Vec::new(),
            started_at: 1,
            finished_at: 2,
            usage: Usage::default(),
            environment: [0; 32],
        })
        .unwrap_or_else(|e| fail(&format!("cannot sign: {e}")))
}

async fn put(client: &Client, kind: &str, key_expr: ExprId, fact: &oda_protocol::SignedFact) {
    let value = fact
        .encode()
        .unwrap_or_else(|e| fail(&format!("cannot encode a fact: {e}")));
    let key = format!("fact/{key_expr}").into_bytes();
    let result = match client.put_raw_record(key, value).await {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error ({e})"),
    };
    say(&format!(
        "forged {kind} key={key_expr:#} fact={:#} result={result}",
        fact.body.expr
    ));
}

/// Put the forged records for `expr` (the advertised expression).
async fn forge(client: &Client, key: &NodeKey, expr: ExprId, workflow: WorkflowId) {
    // A bad signature: signed, then changed.
    let mut bad = fact_about(key, expr, workflow);
    bad.body.finished_at += 1;
    put(client, "bad-signature", expr, &bad).await;
    // Valid signatures under keys that name other expressions.
    let other = fake_expr("signed-elsewhere");
    let valid_other = fact_about(key, other, workflow);
    put(client, "mismatched-key", expr, &valid_other).await;
    put(
        client,
        "mismatched-key",
        fake_expr("record-key"),
        &valid_other,
    )
    .await;
}

async fn flood(
    client: &Client,
    topic: Topic,
    name: &str,
    count: usize,
    seed: u64,
    other: PublicKey,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    let mut i = 0u64;
    while sent < count && Instant::now() < deadline {
        let bytes = if i % 5 == 4 {
            // Well formed, but announcing a fact as somebody else (who
            // never signed it).
            Gossip::FactAnnounce(oda_protocol::Signed {
                body: FactAnnounce {
                    expr: fake_expr("announce"),
                    fact_id: FactId([i as u8; 32]),
                    worker: other,
                },
                signature: oda_protocol::Signature([7; 64]),
            })
            .encode()
            .unwrap_or_else(|e| fail(&format!("cannot encode: {e}")))
        } else {
            junk(seed + i, 16 + (i as usize * 37) % 900)
        };
        i += 1;
        match client.publish_raw(topic.clone(), bytes).await {
            Ok(()) => sent += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    say(&format!("garbage {name} {sent}"));
}

/// What every offer task needs.
#[derive(Clone)]
struct Ctx {
    client: Client,
    key: NodeKey,
    jobs_topic: Topic,
    garbage: usize,
    /// A key the garbage announcements impersonate.
    impersonated: PublicKey,
    /// Set at the first assignment: forging and flooding happen once.
    attacked: Arc<AtomicBool>,
    /// Flood and forge only once this file exists.
    go_file: Option<PathBuf>,
}

async fn offer(ctx: Ctx, advert: Box<JobAdvert>) {
    let client = &ctx.client;
    let (requester, expr, workflow) = (advert.requester, advert.expr.id(), advert.expr.workflow);
    let Some(peer) = peer_id_of(&requester) else {
        return;
    };
    let offer = Offer {
        expr,
        // Looks like the best worker there is.
        local_input_bytes: 1 << 40,
        free_slots: 64,
        expected_start_ms: 0,
        running: false,
    };
    say(&format!("offered {expr:#}"));
    match client.send_job(peer, JobRequest::Offer(offer)).await {
        Ok(JobResponse::Assign(a)) => {
            // Take the lease and never run it: no heartbeat, no result.
            say(&format!("assigned {:#} {}", a.expr, a.lease));
            if !ctx.attacked.swap(true, Ordering::SeqCst) {
                // The test observes the broken lease's penalty first.
                if let Some(go) = &ctx.go_file {
                    let until = Instant::now() + Duration::from_secs(120);
                    while !go.exists() && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                // Garbage first: the forged records below get this peer
                // banned, and a banned peer cannot publish anything.
                let (n, other) = (ctx.garbage, ctx.impersonated);
                flood(client, Topic::Facts, "facts", n, 1, other).await;
                flood(client, ctx.jobs_topic.clone(), "jobs", n, 1_000_000, other).await;
                forge(client, &ctx.key, expr, workflow).await;
            }
        }
        Ok(other) => say(&format!("offer-answer {expr:#} {other:?}")),
        Err(e) => say(&format!("offer-answer {expr:#} error {e}")),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.dir).unwrap_or_else(|e| fail(&format!("--dir: {e}")));
    let key_path = args.dir.join("node.key");
    let key = if key_path.exists() {
        NodeKey::load(&key_path)
    } else {
        let k = NodeKey::generate();
        k.save(&key_path, false).map(|()| k)
    }
    .unwrap_or_else(|e| fail(&format!("key: {e}")));
    let (store, _) = Store::open(StoreConfig::new(args.dir.join("store"), 1 << 30))
        .unwrap_or_else(|e| fail(&format!("store: {e}")));
    let net = args
        .network
        .parse()
        .unwrap_or_else(|e| fail(&format!("--network: {e}")));
    let listen = "/ip4/127.0.0.1/tcp/0"
        .parse()
        .unwrap_or_else(|e| fail(&format!("listen address: {e}")));
    let mut cfg = NetworkConfig::new(net, vec![listen]);
    cfg.peers = args
        .peers
        .iter()
        .map(|p| {
            p.parse()
                .unwrap_or_else(|e| fail(&format!("--peer {p}: {e}")))
        })
        .collect();
    let (client, inbox, event_loop) =
        network::new(&key, cfg, store).unwrap_or_else(|e| fail(&format!("network: {e}")));
    // Job requests (cancels) are left unanswered: the control queue is dropped.
    let mut events = inbox.gossip;
    tokio::spawn(event_loop.run(Default::default()));
    let jobs_topic = Topic::jobs(&args.workflow);
    client
        .subscribe(jobs_topic.clone())
        .await
        .unwrap_or_else(|e| fail(&format!("subscribe: {e}")));
    say(&format!("ready {}", key.peer_id()));

    let end = Instant::now() + args.lifetime;
    let ctx = Ctx {
        client: client.clone(),
        key: key.clone(),
        jobs_topic,
        garbage: args.garbage,
        impersonated: NodeKey::generate().public(),
        attacked: Arc::new(AtomicBool::new(false)),
        go_file: args.go_file.clone(),
    };
    while Instant::now() < end {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = tokio::time::sleep_until(end.into()) => None,
        };
        let Some(event) = event else { break };
        if let NetworkEvent::Gossip {
            message: Gossip::JobAdvert(advert),
            ..
        } = event
        {
            tokio::spawn(offer(ctx.clone(), Box::new(advert.body)));
        }
    }
}
