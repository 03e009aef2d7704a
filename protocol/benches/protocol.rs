//! Micro benchmarks of the protocol crate: expression ids, fact signatures, and the
//! codec for every message type. Run with `cargo bench -p oda-protocol`.
//!
//! The inputs are realistic sizes: an expression with 10 arguments (one a list of
//! 20 `Output` references, as a reduce step over a fan-out has), a fact with two
//! outputs and a resolved input per reference, a 1 MiB blob chunk.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use oda_protocol::keys::signing_message;
use oda_protocol::manifest::Resources;
use oda_protocol::messages::{
    Assign, BlobRequest, BlobResponse, Capacity, Done, FactAnnounce, FactRequest, FactResponse,
    Gossip, JobAdvert, JobRequest, JobResponse, Offer,
};
use oda_protocol::{
    BlobId, Endorsement, ExprId, Expression, Fact, FactId, Outcome, OutputRef, ResolvedInput,
    RunnerClass, SecretKey, SignedFact, Subject, Usage, Value, Wire, WorkflowId,
};

/// Deterministic 32 bytes from a counter (ids in the benchmark need not be real hashes).
fn id(n: u32) -> [u8; 32] {
    *blake3::hash(&n.to_le_bytes()).as_bytes()
}

/// 10 arguments of every scalar kind plus a list of 20 `Output` references.
fn expression() -> Expression {
    let mut args = BTreeMap::new();
    let parts = (0..20)
        .map(|i| Value::Output {
            expr: ExprId(id(i)),
            name: "lightcurve".into(),
        })
        .collect();
    args.insert("parts".to_string(), Value::List(parts));
    args.insert("source".to_string(), Value::Str("Crab".into()));
    args.insert("instrument".to_string(), Value::Str("isgri".into()));
    args.insert("t_start".to_string(), Value::Float(58_000.25));
    args.insert("t_stop".to_string(), Value::Float(58_010.75));
    args.insert("e_min_kev".to_string(), Value::Float(20.0));
    args.insert("e_max_kev".to_string(), Value::Float(80.0));
    args.insert("bins".to_string(), Value::Int(1024));
    args.insert("barycentric".to_string(), Value::Bool(true));
    args.insert("catalog".to_string(), Value::Blob(BlobId(id(999))));
    Expression {
        workflow: WorkflowId(id(1_000)),
        args,
    }
}

/// A fact about `expression()` with two outputs and its 20 resolved inputs.
fn fact(key: &SecretKey, expr: &Expression) -> Fact {
    let outputs = [
        (
            "periodogram",
            OutputRef {
                blob: BlobId(id(2_001)),
                size: 1 << 20,
            },
        ),
        (
            "best_period",
            OutputRef {
                blob: BlobId(id(2_002)),
                size: 64,
            },
        ),
    ]
    .into_iter()
    .map(|(n, o)| (n.to_string(), o))
    .collect();
    Fact {
        expr: expr.id(),
        workflow: expr.workflow,
        outcome: Outcome::Success { outputs },
        worker: key.public(),
        runner_class: RunnerClass::Public,
        inputs: (0..20)
            .map(|i| ResolvedInput {
                expr: ExprId(id(i)),
                name: "lightcurve".into(),
                blob: BlobId(id(3_000 + i)),
                fact: FactId(id(5_000 + i)),
                signer: key.public(),
            })
            .collect(),
        started_at: 1_700_000_000_000,
        finished_at: 1_700_000_004_200,
        usage: Usage {
            cpu_ms: 4_100,
            peak_rss_kib: 180_000,
        },
        environment: id(4_000),
    }
}

fn key(n: u32) -> SecretKey {
    SecretKey::from_seed(id(10_000 + n))
}

fn ids_and_signatures(c: &mut Criterion) {
    let expr = expression();
    c.bench_function("expr_id/10_args_20_output_refs", |b| {
        b.iter(|| black_box(&expr).id())
    });

    let k = key(0);
    let body = fact(&k, &expr);
    c.bench_function("fact/sign", |b| {
        b.iter_batched(
            || body.clone(),
            |body| k.sign(body).expect("signer matches"),
            BatchSize::SmallInput,
        )
    });
    let signed = k.sign(body).expect("signer matches");
    c.bench_function("fact/verify", |b| {
        b.iter(|| black_box(&signed).verify().expect("valid"))
    });

    // 64 facts by 8 workers: what a node checks when a busy gossip window lands.
    let facts: Vec<SignedFact> = (0..64u32)
        .map(|i| {
            let k = key(i % 8);
            let mut f = fact(&k, &expr);
            f.started_at += u64::from(i);
            k.sign(f).expect("signer matches")
        })
        .collect();
    let mut group = c.benchmark_group("fact/verify_64");
    group.throughput(Throughput::Elements(64));
    group.bench_function("sequential_strict", |b| {
        b.iter(|| {
            for f in &facts {
                f.verify().expect("valid");
            }
        })
    });
    group.bench_function("batch", |b| {
        b.iter(|| {
            // What a batch verifier has to do from the wire types: build the
            // messages and parse the keys, then one multiscalar check.
            let messages: Vec<Vec<u8>> = facts.iter().map(|f| signing_message(&f.body)).collect();
            let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let signatures: Vec<ed25519_dalek::Signature> = facts
                .iter()
                .map(|f| ed25519_dalek::Signature::from_bytes(&f.signature.0))
                .collect();
            let keys: Vec<ed25519_dalek::VerifyingKey> = facts
                .iter()
                .map(|f| ed25519_dalek::VerifyingKey::from_bytes(&f.body.worker.0).expect("key"))
                .collect();
            ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).expect("valid batch")
        })
    });
    group.finish();
}

/// Encode and decode one message; the throughput is the encoded size.
fn codec_case<T: Wire>(c: &mut Criterion, name: &str, message: &T) {
    let bytes = message.encode().expect("encodes");
    let mut group = c.benchmark_group(format!("codec/{name}"));
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| {
        b.iter(|| black_box(message).encode().expect("encodes"))
    });
    group.bench_function("decode", |b| {
        b.iter(|| T::decode(black_box(&bytes)).expect("decodes"))
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let expr = expression();
    let k = key(0);
    let signed = k.sign(fact(&k, &expr)).expect("signer matches");
    let expert = key(100);
    let endorsement = expert
        .sign(Endorsement {
            endorser: expert.public(),
            subject: Subject::Workflow(expr.workflow),
            issued_at: 1_700_000_000_000,
            note: "reviewed for the INTEGRAL pipeline".into(),
        })
        .expect("signer matches");

    let requester = key(1);
    let advert = Gossip::JobAdvert(Box::new(
        requester
            .sign(JobAdvert {
                expr: expr.clone(),
                inputs: signed.body.inputs.clone(),
                requester: requester.public(),
                requirements: Resources::default(),
                deadline: 1_700_000_060_000,
                priority: 5,
                token: None,
                bundle: BlobId(id(5_000)),
                endorsements: vec![endorsement],
            })
            .expect("signer matches"),
    ));
    codec_case(c, "gossip_job_advert", &advert);
    codec_case(
        c,
        "gossip_fact_announce",
        &Gossip::FactAnnounce(
            k.sign(FactAnnounce {
                expr: expr.id(),
                fact_id: signed.id(),
                worker: k.public(),
            })
            .expect("signer matches"),
        ),
    );
    codec_case(
        c,
        "gossip_capacity",
        &Gossip::Capacity(Capacity {
            workflows: (0..16).map(|i| WorkflowId(id(6_000 + i))).collect(),
            blobs: (0..64).map(|i| BlobId(id(7_000 + i))).collect(),
            free_slots: 3,
            total_slots: 8,
        }),
    );
    codec_case(
        c,
        "job_request_offer",
        &JobRequest::Offer(Offer {
            expr: expr.id(),
            local_input_bytes: 1 << 30,
            free_slots: 2,
            expected_start_ms: 0,
            running: false,
        }),
    );
    codec_case(
        c,
        "job_request_done",
        &JobRequest::Done(Box::new(Done {
            expr: expr.id(),
            lease: 0x0123_4567_89ab_cdef,
            result: Ok(signed.clone()),
        })),
    );
    codec_case(
        c,
        "job_response_assign",
        &JobResponse::Assign(Assign {
            expr: expr.id(),
            lease: 0x0123_4567_89ab_cdef,
            ttl_ms: 30_000,
        }),
    );
    codec_case(c, "fact_request", &FactRequest::GetFacts(expr.id()));
    let four: Vec<SignedFact> = (0..4)
        .map(|i| {
            let k = key(i);
            k.sign(fact(&k, &expr)).expect("signer matches")
        })
        .collect();
    codec_case(c, "fact_response_4_facts", &FactResponse::Facts(four));
    codec_case(
        c,
        "blob_request",
        &BlobRequest {
            blob: BlobId(id(8_000)),
            offset: 5 << 20,
            len: 1 << 20,
        },
    );
    let chunk: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 251) as u8).collect();
    codec_case(
        c,
        "blob_response_1mib",
        &BlobResponse::Data {
            total: 1 << 30,
            encoded: chunk,
        },
    );
}

criterion_group!(benches, ids_and_signatures, codec);
criterion_main!(benches);
