//! Golden vectors: fixed manifests, expressions, facts, signed objects and messages
//! must keep their ids and encodings byte for byte. Any change that would change
//! what goes on the wire fails here.
//!
//! The expected values live in `tests/golden/vectors.toml`. After a deliberate
//! wire change (a new protocol major version), regenerate them with
//!
//! ```sh
//! ODA_BLESS=1 cargo test -p oda-protocol --test golden
//! ```
//!
//! and commit the file together with the change and a note in `docs/protocol.md`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::{key, Fixtures, CONTROLLER, EXPERT, GROUP_OWNER, REQUESTER, RUNNER, WORKER};
use oda_protocol::codec::config;
use oda_protocol::ids::contexts;
use oda_protocol::keys::signing_message;
use oda_protocol::messages::{BlobRequest, FactRequest, JobResponse, Progress};
use oda_protocol::{
    BlobId, Endorsement, NetworkId, PublicKey, RunnerClass, Signable, Signature, SignedEndorsement,
    Topic, Wire,
};

type Sections = BTreeMap<String, BTreeMap<String, String>>;

fn canonical<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).unwrap()
}

/// Every pinned value, computed by the current code.
fn actual(f: &Fixtures) -> Sections {
    let mut s = Sections::new();
    let mut put = |section: &str, name: &str, value: String| {
        let old = s
            .entry(section.to_string())
            .or_default()
            .insert(name.to_string(), value);
        assert!(old.is_none(), "duplicate golden name {section}.{name}");
    };

    for (seed, role) in [
        (WORKER, "worker"),
        (REQUESTER, "requester"),
        (EXPERT, "expert"),
        (CONTROLLER, "controller"),
        (GROUP_OWNER, "group_owner"),
        (RUNNER, "runner"),
    ] {
        put(
            "public_keys",
            &format!("seed_{seed:02x}_{role}"),
            key(seed).public().to_string(),
        );
    }

    put("ids", "blob_empty", BlobId::of(b"").to_string());
    put("ids", "blob_hello", BlobId::of(b"hello").to_string());
    put("ids", "workflow_spectrum_fit", f.wf_full.id().to_string());
    put("ids", "workflow_hello", f.wf_hello.id().to_string());
    put(
        "ids",
        "workflow_bundle_spectrum_fit",
        BlobId::of(&f.bundle_full.encode().unwrap()).to_string(),
    );
    put("ids", "workflow_greet", f.wf_greet.id().to_string());
    put("ids", "expr_greet", f.ex_greet.id().to_string());
    put("ids", "expr_hello", f.ex_hello.id().to_string());
    put("ids", "expr_crab", f.ex_crab.id().to_string());
    put("ids", "expr_cyg", f.ex_cyg.id().to_string());
    put("ids", "expr_fanin", f.ex_fanin.id().to_string());
    put("ids", "fact", f.fact.id().to_string());
    put("ids", "fact_analysis_error", f.fact_error.id().to_string());

    // The exact bytes that are hashed (ids) or signed (after the signing prefix).
    put(
        "canonical",
        "workflow_hello",
        hex::encode(canonical(&f.wf_hello)),
    );
    put(
        "canonical",
        "expr_hello",
        hex::encode(canonical(&f.ex_hello)),
    );
    put(
        "canonical",
        "workflow_greet",
        hex::encode(canonical(&f.wf_greet)),
    );
    put(
        "canonical",
        "expr_greet",
        hex::encode(canonical(&f.ex_greet)),
    );
    put("canonical", "expr_crab", hex::encode(canonical(&f.ex_crab)));
    put("canonical", "fact", hex::encode(canonical(&f.fact.body)));

    put(
        "signing_messages",
        "endorsement_workflow",
        hex::encode(signing_message(&f.endorse_workflow.body)),
    );
    put(
        "signing_messages",
        "group_roster",
        hex::encode(signing_message(&f.roster.body)),
    );

    for (name, bytes) in f.wire_encodings() {
        put("wire", &name, hex::encode(bytes));
    }

    // One workflow per executor kind besides `command` (the fixtures'),
    // and one fact per runner class: the same body as `signed_fact` but
    // for the class.
    for kind in ["slurm", "container", "cwl"] {
        let wf = common::workflow(&format!("executor-{kind}"));
        assert_eq!(wf.manifest.executor.kind(), kind);
        let name = format!("workflow_executor_{kind}");
        put("ids", &name, wf.id().to_string());
        put("wire", &name, hex::encode(wf.encode().unwrap()));
    }
    for class in RunnerClass::ALL {
        let mut body = f.fact.body.clone();
        body.runner_class = class;
        let fact = key(WORKER).sign(body).unwrap();
        let name = format!("fact_runner_{}", class.name());
        put("ids", &name, fact.id().to_string());
        put(
            "wire",
            &format!("signed_{name}"),
            hex::encode(fact.encode().unwrap()),
        );
    }

    for (name, bytes) in must_reject(f) {
        put("must_reject", name, hex::encode(bytes));
    }

    let net = NetworkId::main();
    put("names", "kad_protocol", net.kad_protocol());
    put("names", "job_protocol", net.job_protocol());
    put("names", "fact_protocol", net.fact_protocol());
    put("names", "blob_protocol", net.blob_protocol());
    put("names", "identify_protocol", net.identify_protocol());
    put(
        "names",
        "jobs_topic_spectrum_fit",
        Topic::jobs(&f.wf_full.id()).encode(&net),
    );
    put("names", "facts_topic", Topic::Facts.encode(&net));
    put("names", "capacity_topic", Topic::Capacity.encode(&net));
    s
}

const HEADER: &str = "\
# Golden vectors of the ODA mesh wire format (protocol major version 1).
# Checked by protocol/tests/golden.rs; inputs are protocol/tests/common/mod.rs and
# the workflows in this folder. Do not edit by hand. After a deliberate wire change:
#   ODA_BLESS=1 cargo test -p oda-protocol --test golden
# Public keys, ids and byte strings are lowercase hex.

";

#[test]
fn golden_vectors_match() {
    let fixtures = Fixtures::new();
    let actual = actual(&fixtures);
    let path = common::golden_dir().join("vectors.toml");
    if std::env::var("ODA_BLESS").as_deref() == Ok("1") {
        let text = format!("{HEADER}{}", toml::to_string(&actual).unwrap());
        fs::write(&path, text).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; generate it with ODA_BLESS=1",
            path.display()
        )
    });
    let expected: Sections = toml::from_str(&text).unwrap();
    let mut problems = Vec::new();
    for (section, entries) in &expected {
        for (name, want) in entries {
            match actual.get(section).and_then(|s| s.get(name)) {
                None => problems.push(format!("{section}.{name}: no longer produced")),
                Some(got) if got != want => problems.push(format!(
                    "{section}.{name}:\n    expected {want}\n    got      {got}"
                )),
                Some(_) => {}
            }
        }
    }
    for (section, entries) in &actual {
        for name in entries.keys() {
            if !expected.get(section).is_some_and(|s| s.contains_key(name)) {
                problems.push(format!("{section}.{name}: new, not in the golden file"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the wire format changed ({} differences). If this is deliberate, bump the \
         protocol major version, rerun with ODA_BLESS=1 and commit {}:\n{}",
        problems.len(),
        path.display(),
        problems.join("\n")
    );
}

/// The group order L of ed25519, little-endian.
const ORDER_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Signed endorsements (wire encoding) that every verifier must refuse,
/// each a variation of the golden workflow endorsement by the expert key.
fn must_reject(f: &Fixtures) -> Vec<(&'static str, Vec<u8>)> {
    let good = &f.endorse_workflow;
    let with = |body: Endorsement, signature: [u8; 64]| {
        SignedEndorsement {
            body,
            signature: Signature(signature),
        }
        .encode()
        .unwrap()
    };
    // S + L: the same scalar unreduced (RFC 8032 requires S < L).
    let mut unreduced = good.signature.0;
    let mut carry = 0u16;
    for (s, l) in unreduced[32..].iter_mut().zip(ORDER_L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    // The identity point as key, R = identity and S = 0 satisfy the
    // cofactorless equation [S]B = R + [k]A for every message: only the
    // small-order check refuses them. Also with the identity encoded
    // non-canonically (y = p + 1).
    let identity = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };
    let identity_noncanonical = {
        let mut b = [0xffu8; 32];
        b[0] = 0xee;
        b[31] = 0x7f;
        b
    };
    let small_order = |key: [u8; 32]| {
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity);
        with(
            Endorsement {
                endorser: PublicKey(key),
                ..good.body.clone()
            },
            sig,
        )
    };
    // The right key over the right body, but in another type's context.
    let expert = ed25519_dalek::SigningKey::from_bytes(&[common::EXPERT; 32]);
    let mut other_context = b"oda-mesh v1 sign fact\0".to_vec();
    other_context.extend_from_slice(&canonical(&good.body));
    let wrong_context = {
        use ed25519_dalek::Signer;
        expert.sign(&other_context).to_bytes()
    };
    // Signed by the controller's key while naming the expert.
    let by_other = key(CONTROLLER)
        .sign(Endorsement {
            endorser: key(CONTROLLER).public(),
            ..good.body.clone()
        })
        .unwrap()
        .signature
        .0;
    // One byte of the body changed after signing.
    let mut edited = good.body.clone();
    edited.note.replace_range(0..1, "R");
    vec![
        ("s_not_reduced", with(good.body.clone(), unreduced)),
        ("small_order_key_and_r", small_order(identity)),
        (
            "small_order_key_noncanonical",
            small_order(identity_noncanonical),
        ),
        ("other_context", with(good.body.clone(), wrong_context)),
        ("signed_by_another_key", with(good.body.clone(), by_other)),
        ("body_changed", with(edited, good.signature.0)),
    ]
}

/// Every `must_reject` vector decodes (it is well-formed) and fails
/// verification; the golden endorsement they vary verifies.
#[test]
fn must_reject_vectors_are_refused() {
    let f = Fixtures::new();
    f.endorse_workflow.verify().unwrap();
    for (name, bytes) in must_reject(&f) {
        let decoded = SignedEndorsement::decode(&bytes)
            .unwrap_or_else(|e| panic!("{name}: well-formed, but: {e}"));
        assert!(decoded.verify().is_err(), "{name} verified");
        if name == "small_order_key_and_r" {
            // What the vector is for: a verifier without the small-order
            // checks (ed25519-dalek's non-strict `verify`) accepts it.
            let lax = ed25519_dalek::VerifyingKey::from_bytes(&decoded.body.endorser.0).unwrap();
            let sig = ed25519_dalek::Signature::from_bytes(&decoded.signature.0);
            use ed25519_dalek::Verifier;
            assert!(lax.verify(&signing_message(&decoded.body), &sig).is_ok());
        }
    }
}

/// A bundle rebuilds exactly the workflow it was made from.
#[test]
fn bundles_verify_against_their_workflow() {
    let f = Fixtures::new();
    assert_eq!(f.bundle_full.verify(&f.wf_full.id()).unwrap(), f.wf_full);
    assert_eq!(f.bundle_hello.verify(&f.wf_hello.id()).unwrap(), f.wf_hello);
    assert!(f.bundle_hello.verify(&f.wf_full.id()).is_err());
}

/// BLAKE3 reference values, independent of this crate.
#[test]
fn blob_ids_are_plain_blake3() {
    assert_eq!(
        BlobId::of(b"").to_string(),
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    );
    assert_eq!(
        BlobId::of(b"hello").to_string(),
        "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
    );
}

/// Each structured id is BLAKE3 in key-derivation mode, with the type's context,
/// over the canonical encoding, which is also the type's wire encoding.
#[test]
fn ids_are_derive_key_over_canonical_bytes() {
    let f = Fixtures::new();
    for wf in [&f.wf_full, &f.wf_hello, &f.wf_greet] {
        let bytes = wf.encode().unwrap();
        assert_eq!(bytes, canonical(wf));
        assert_eq!(wf.id().0, blake3::derive_key(contexts::WORKFLOW, &bytes));
    }
    for ex in [&f.ex_hello, &f.ex_greet, &f.ex_crab, &f.ex_cyg, &f.ex_fanin] {
        let bytes = ex.encode().unwrap();
        assert_eq!(ex.id().0, blake3::derive_key(contexts::EXPRESSION, &bytes));
    }
    for fact in [&f.fact, &f.fact_error] {
        let body = canonical(&fact.body);
        assert_eq!(fact.id().0, blake3::derive_key(contexts::FACT, &body));
        // A signed object is its body followed by the 64 signature bytes.
        let wire = fact.encode().unwrap();
        assert_eq!(wire, [body, fact.signature.0.to_vec()].concat());
    }
    assert_eq!(contexts::WORKFLOW, "oda-mesh v1 workflow-id");
    assert_eq!(contexts::EXPRESSION, "oda-mesh v1 expression-id");
    // v2 since a fact names the input fact behind each input.
    assert_eq!(contexts::FACT, "oda-mesh v2 fact-id");
}

/// The signed message is `"oda-mesh v1 sign " || context || 0x00 || canonical(body)`,
/// and the signature is plain ed25519 over it.
#[test]
fn signatures_are_ed25519_over_the_signing_message() {
    use ed25519_dalek::{Signature, VerifyingKey};
    let f = Fixtures::new();
    fn check<T: Signable + serde::Serialize>(
        body: &T,
        sig: &oda_protocol::Signature,
        context: &str,
    ) {
        let expected = [
            b"oda-mesh v1 sign ".as_slice(),
            context.as_bytes(),
            &[0],
            &canonical(body),
        ]
        .concat();
        assert_eq!(signing_message(body), expected);
        assert_eq!(T::CONTEXT, context);
        let key = VerifyingKey::from_bytes(&body.signer().0).unwrap();
        key.verify_strict(&expected, &Signature::from_bytes(&sig.0))
            .unwrap();
    }
    check(&f.fact.body, &f.fact.signature, "fact");
    check(
        &f.endorse_workflow.body,
        &f.endorse_workflow.signature,
        "endorsement",
    );
    check(&f.dispute.body, &f.dispute.signature, "dispute");
    check(&f.failure.body, &f.failure.signature, "failure");
    check(&f.token_exprs.body, &f.token_exprs.signature, "job-token");
    check(&f.roster.body, &f.roster.signature, "group-roster");
}

/// Defaults, argument order, ints for floats and `-0.0` do not change an ExprId.
#[test]
fn normalisation_gives_one_id() {
    let f = Fixtures::new();
    assert_eq!(f.ex_crab, f.ex_crab_explicit);
    assert_eq!(f.ex_crab.id(), f.ex_crab_explicit.id());
    assert_eq!(f.ex_fanin.id(), f.ex_fanin_normal.id());
    assert_eq!(
        canonical(&f.ex_fanin),
        canonical(&f.ex_fanin_normal),
        "-0.0 and 15 must be stored as 0.0 and 15.0"
    );
    let calibration = &f.wf_full.manifest.inputs["calibration"];
    assert_eq!(
        calibration.default,
        Some(oda_protocol::Value::Blob(BlobId::of(b"hello")))
    );
    assert_eq!(
        f.ex_fanin.dependencies(),
        [f.ex_hello.id(), f.ex_crab.id(), f.ex_cyg.id()].into()
    );
}

/// A few encodings written out by hand from the format description in
/// docs/protocol.md, without bincode.
#[test]
fn hand_written_encodings() {
    let id = BlobId::of(b"hello");
    let expr = oda_protocol::ExprId(id.0);
    // Unit variant: its index as a varint.
    assert_eq!(JobResponse::Ack.encode().unwrap(), [2]);
    // Newtype variant: index, then the 32 id bytes with no length prefix.
    assert_eq!(
        FactRequest::GetFacts(expr).encode().unwrap(),
        [&[0u8][..], &id.0].concat()
    );
    // Struct: fields in order; u64 1 is one byte; u32 2^20 is 252 + 4 LE bytes.
    let req = BlobRequest {
        blob: id,
        offset: 1,
        len: 1 << 20,
    };
    assert_eq!(
        req.encode().unwrap(),
        [&id.0[..], &[1], &[252, 0x00, 0x00, 0x10, 0x00]].concat()
    );
    // Option<f32>: tag 1 then 4 LE bytes; u64 300 is 251 + 2 LE bytes; String
    // is a varint length then UTF-8.
    let p = oda_protocol::messages::JobRequest::Progress(Progress {
        expr,
        lease: 300,
        fraction: Some(0.25),
        message: "é".into(),
    });
    assert_eq!(
        p.encode().unwrap(),
        [
            &[1u8][..],
            &id.0,
            &[251, 0x2c, 0x01],
            &[1, 0x00, 0x00, 0x80, 0x3e],
            &[2, 0xc3, 0xa9],
        ]
        .concat()
    );
    // i64 is zigzag: 0 → 0, -1 → 1, 1 → 2, i64::MIN → u64::MAX (253 + 8 bytes).
    let int = |i: i64| canonical(&oda_protocol::Value::Int(i));
    assert_eq!(int(0), [2, 0]);
    assert_eq!(int(-1), [2, 1]);
    assert_eq!(int(1), [2, 2]);
    assert_eq!(int(125), [2, 250]);
    // zigzag(-126) = 251 no longer fits in one byte: 251 then u16 LE.
    assert_eq!(int(-126), [2, 251, 251, 0]);
    assert_eq!(
        int(i64::MIN),
        [&[2u8, 253][..], &u64::MAX.to_le_bytes()].concat()
    );
    // f64: 8 LE bytes of the IEEE 754 value.
    assert_eq!(
        canonical(&oda_protocol::Value::Float(1.0)),
        [&[3u8][..], &1.0f64.to_le_bytes()].concat()
    );
}

/// The worked example in docs/protocol.md uses the golden `greet` workflow.
#[test]
fn worked_example_in_docs_matches() {
    let f = Fixtures::new();
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = fs::read_to_string(doc_path).unwrap();
    let manifest = fs::read_to_string(common::golden_dir().join("greet/manifest.toml")).unwrap();
    for line in manifest.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            doc.contains(line),
            "docs/protocol.md lacks manifest line {line:?}"
        );
    }
    // Hex in the doc may be split over lines and grouped with spaces.
    let flat: String = doc.split_whitespace().collect();
    for (what, value) in [
        ("WorkflowId", f.wf_greet.id().to_string()),
        ("canonical workflow", hex::encode(canonical(&f.wf_greet))),
        ("ExprId", f.ex_greet.id().to_string()),
        ("canonical expression", hex::encode(canonical(&f.ex_greet))),
    ] {
        assert!(
            flat.contains(&value),
            "docs/protocol.md lacks the {what} {value}"
        );
    }
}
