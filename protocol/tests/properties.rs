//! Property tests: codec round trips, decoder robustness and size limits,
//! expression-id invariance, and tamper evidence of every signed object.
#![allow(clippy::unwrap_used)]

mod common;

use std::fmt::Debug;
use std::sync::OnceLock;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use common::arb;
use oda_protocol::codec::limits;
use oda_protocol::messages::{
    BlobRequest, BlobResponse, FactRequest, FactResponse, Gossip, JobRequest, JobResponse,
};
use oda_protocol::{
    BlobId, DecodeError, Dispute, EncodeError, Endorsement, ExprId, Expression, Fact, FactId,
    GroupRoster, JobToken, Manifest, ManifestError, NetworkId, Outcome, OutputRef, PublicKey,
    ResolvedInput, RunnerClass, SecretKey, Signable, Signed, SignedDispute, SignedEndorsement,
    SignedFact, SignedGroupRoster, SignedJobToken, Subject, TokenScope, Topic, Value, Wire,
    Workflow, WorkflowId,
};

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// encode → decode → encode gives the same bytes (and so the same value; comparing
/// bytes also works for types holding floats).
fn round_trip<T: Wire + Debug>(value: &T) -> Result<(), TestCaseError> {
    let bytes = value
        .encode()
        .map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert!(bytes.len() <= T::MAX_SIZE);
    let back = T::decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(back.encode().unwrap(), bytes);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gossip_round_trips(m in arb::gossip()) { round_trip(&m)?; }
    #[test]
    fn job_request_round_trips(m in arb::job_request()) { round_trip(&m)?; }
    #[test]
    fn job_response_round_trips(m in arb::job_response()) { round_trip(&m)?; }
    #[test]
    fn fact_request_round_trips(m in arb::fact_request()) { round_trip(&m)?; }
    #[test]
    fn fact_response_round_trips(m in arb::fact_response()) { round_trip(&m)?; }
    #[test]
    fn blob_request_round_trips(m in arb::blob_request()) { round_trip(&m)?; }
    #[test]
    fn blob_response_round_trips(m in arb::blob_response()) { round_trip(&m)?; }
    #[test]
    fn signed_fact_round_trips(m in arb::signed(arb::fact())) { round_trip(&m)?; }
    #[test]
    fn signed_endorsement_round_trips(m in arb::signed(arb::endorsement())) { round_trip(&m)?; }
    #[test]
    fn signed_dispute_round_trips(m in arb::signed(arb::dispute())) { round_trip(&m)?; }
    #[test]
    fn signed_failure_round_trips(m in arb::signed(arb::failure())) { round_trip(&m)?; }
    #[test]
    fn signed_job_token_round_trips(m in arb::signed(arb::job_token())) { round_trip(&m)?; }
    #[test]
    fn signed_group_roster_round_trips(m in arb::signed(arb::group_roster())) { round_trip(&m)?; }
    #[test]
    fn workflow_round_trips(m in arb::workflow()) { round_trip(&m)?; }
    #[test]
    fn expression_round_trips(m in arb::expression()) { round_trip(&m)?; }
    #[test]
    fn workflow_bundle_round_trips(m in arb::workflow_bundle()) { round_trip(&m)?; }

    #[test]
    fn ids_round_trip_through_text(bytes in arb::bytes32()) {
        let e = ExprId(bytes);
        prop_assert_eq!(e.to_string().parse::<ExprId>().unwrap(), e);
        prop_assert_eq!(format!("{e:#}").parse::<ExprId>().unwrap(), e);
        let w = WorkflowId(bytes);
        prop_assert_eq!(format!("{w:#}").parse::<WorkflowId>().unwrap(), w);
        let b = BlobId(bytes);
        prop_assert_eq!(format!("{b:#}").parse::<BlobId>().unwrap(), b);
        let f = FactId(bytes);
        prop_assert_eq!(format!("{f:#}").parse::<FactId>().unwrap(), f);
        let k = PublicKey(bytes);
        prop_assert_eq!(k.to_string().parse::<PublicKey>().unwrap(), k);
        prop_assert_eq!(format!("pk:{k}").parse::<PublicKey>().unwrap(), k);
    }
}

// ---------------------------------------------------------------------------
// Decoders never panic.

/// Feed `bytes` to every decoder. Whatever decodes must re-encode to bytes that
/// decode to the same value (decoding may accept non-minimal varints, encoding
/// never produces them).
fn decode_everything(bytes: &[u8]) -> Result<(), TestCaseError> {
    fn one<T: Wire>(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(v) = T::decode(bytes) {
            let canonical = v.encode().unwrap();
            let again = T::decode(&canonical).unwrap();
            prop_assert_eq!(again.encode().unwrap(), canonical);
        }
        Ok(())
    }
    one::<Gossip>(bytes)?;
    one::<JobRequest>(bytes)?;
    one::<JobResponse>(bytes)?;
    one::<FactRequest>(bytes)?;
    one::<FactResponse>(bytes)?;
    one::<BlobRequest>(bytes)?;
    one::<BlobResponse>(bytes)?;
    one::<SignedFact>(bytes)?;
    one::<SignedEndorsement>(bytes)?;
    one::<SignedDispute>(bytes)?;
    one::<SignedJobToken>(bytes)?;
    one::<SignedGroupRoster>(bytes)?;
    one::<Workflow>(bytes)?;
    one::<Expression>(bytes)?;
    one::<oda_protocol::bundle::WorkflowBundle>(bytes)?;
    Ok(())
}

/// Every fixed encoding of the golden fixtures, as seeds for mutation.
fn seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        common::Fixtures::new()
            .wire_encodings()
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Edit::Flip(i, m)),
        (
            any::<Index>(),
            prop_oneof![
                Just(0u8),
                Just(1),
                Just(250),
                Just(251),
                Just(252),
                Just(253),
                Just(254),
                Just(255),
                any::<u8>()
            ]
        )
            .prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Remove),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    if bytes.is_empty() {
        return;
    }
    match edit {
        Edit::Flip(i, m) => {
            let i = i.index(bytes.len());
            bytes[i] ^= m;
        }
        Edit::Set(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Edit::Remove(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        Edit::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        decode_everything(&bytes)?;
    }

    #[test]
    fn mutated_encodings_never_panic(seed in any::<Index>(), edits in vec(edit(), 1..4)) {
        let mut bytes = seed.get(seeds()).clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        decode_everything(&bytes)?;
    }

    #[test]
    fn random_text_is_not_a_manifest(text in "\\PC{0,300}") {
        // Must not panic; random text is (overwhelmingly) not a valid manifest.
        prop_assert!(Manifest::from_toml(&text).is_err());
    }

    #[test]
    fn mangled_manifests_never_panic(
        drop in vec(prop::bool::weighted(0.05), 120),
        replace in proptest::option::of((any::<Index>(), any::<Index>())),
    ) {
        const ODD_VALUES: &[&str] = &[
            "\"\"", "-1", "0", "1e309", "nan", "inf", "-0.0", "[]", "[[1]]", "{}", "true",
            "\"../x\"", "\"/abs\"", "\"{\"", "\"}\"", "\"{nope}\"", "\"{spectra}x\"",
            "9223372036854775807", "-9223372036854775808", "\"(?x)a #\"", "\"[\"",
            "\"list\"", "\"output\"", "1979-05-27", "\"bl:zz\"", "[\"a\", 1]",
        ];
        let golden = std::fs::read_to_string(
            common::golden_dir().join("spectrum-fit/manifest.toml"),
        ).unwrap();
        let mut lines: Vec<String> = golden
            .lines()
            .zip(drop.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, d)| !**d)
            .map(|(l, _)| l.to_string())
            .collect();
        if let (Some((line, value)), false) = (replace, lines.is_empty()) {
            let i = line.index(lines.len());
            if let Some((key, _)) = lines[i].split_once('=') {
                lines[i] = format!("{key}= {}", value.get(ODD_VALUES));
            }
        }
        let text = lines.join("\n");
        if let Ok(m) = Manifest::from_toml(&text) {
            // Whatever is accepted is a consistent manifest.
            prop_assert!(!m.outputs.is_empty());
            prop_assert!(m.timeout_secs > 0);
        }
    }

    #[test]
    fn id_parsing_accepts_exactly_hex64(
        prefix in prop::sample::select(vec!["", "ex:", "wf:", "bl:", "fa:", "pk:", "EX:", ":", "ex::"]),
        hex in "[0-9a-fA-F]{60,68}|[0-9a-gA-G]{64}|\\PC{0,70}",
        pad in prop::sample::select(vec!["", " ", "\n"]),
    ) {
        let text = format!("{pad}{prefix}{hex}{pad}");
        let hex_ok = hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit());
        prop_assert_eq!(text.parse::<ExprId>().is_ok(), hex_ok && (prefix.is_empty() || prefix == "ex:"));
        prop_assert_eq!(text.parse::<WorkflowId>().is_ok(), hex_ok && (prefix.is_empty() || prefix == "wf:"));
        prop_assert_eq!(text.parse::<BlobId>().is_ok(), hex_ok && (prefix.is_empty() || prefix == "bl:"));
        prop_assert_eq!(text.parse::<FactId>().is_ok(), hex_ok && (prefix.is_empty() || prefix == "fa:"));
        prop_assert_eq!(text.parse::<PublicKey>().is_ok(), hex_ok && (prefix.is_empty() || prefix == "pk:"));
    }

    #[test]
    fn topics_and_network_ids_never_panic(net in "[a-z0-9-]{1,32}", topic in "\\PC{0,80}", wf in arb::workflow_id()) {
        let net: NetworkId = net.parse().unwrap();
        let _ = Topic::decode(&net, &topic);
        let _ = topic.parse::<NetworkId>();
        let t = Topic::jobs(&wf);
        prop_assert_eq!(Topic::decode(&net, &t.encode(&net)).unwrap(), t);
    }
}

// ---------------------------------------------------------------------------
// Size limits.

fn check_limits<T: Wire + Debug>() {
    let over = vec![0u8; T::MAX_SIZE + 1];
    assert_eq!(
        T::decode(&over).unwrap_err(),
        DecodeError::TooLarge {
            what: T::WHAT,
            len: T::MAX_SIZE + 1,
            limit: T::MAX_SIZE
        },
        "{}",
        T::WHAT
    );
    // Empty input is truncated, not a panic.
    assert!(
        matches!(T::decode(&[]), Err(DecodeError::Malformed { .. })),
        "{}",
        T::WHAT
    );
}

#[test]
fn every_decoder_refuses_oversized_input() {
    check_limits::<Gossip>();
    check_limits::<JobRequest>();
    check_limits::<JobResponse>();
    check_limits::<FactRequest>();
    check_limits::<FactResponse>();
    check_limits::<BlobRequest>();
    check_limits::<BlobResponse>();
    check_limits::<SignedFact>();
    check_limits::<SignedEndorsement>();
    check_limits::<SignedDispute>();
    check_limits::<SignedJobToken>();
    check_limits::<SignedGroupRoster>();
    check_limits::<Workflow>();
    check_limits::<Expression>();
    check_limits::<oda_protocol::bundle::WorkflowBundle>();
    assert_eq!(Gossip::MAX_SIZE, limits::GOSSIP);
    assert_eq!(JobRequest::MAX_SIZE, limits::JOB_MESSAGE);
    assert_eq!(FactResponse::MAX_SIZE, limits::FACT_MESSAGE);
    assert_eq!(FactRequest::MAX_SIZE, limits::SMALL_REQUEST);
    assert_eq!(BlobRequest::MAX_SIZE, limits::SMALL_REQUEST);
    assert_eq!(BlobResponse::MAX_SIZE, limits::BLOB_MESSAGE);
    assert_eq!(SignedFact::MAX_SIZE, limits::SIGNED_OBJECT);
    // Gossipsub's default transmit limit is 64 KiB including its own framing.
    const _: () = assert!(limits::GOSSIP < 64 * 1024);
}

#[test]
fn a_message_of_exactly_the_limit_decodes() {
    // Data variant (1 byte) + total 0 (1 byte) + length 252 u32 (5 bytes) + bytes.
    let n = limits::BLOB_MESSAGE - 7;
    let m = BlobResponse::Data {
        total: 0,
        encoded: vec![7; n],
    };
    let bytes = m.encode().unwrap();
    assert_eq!(bytes.len(), limits::BLOB_MESSAGE);
    assert_eq!(BlobResponse::decode(&bytes).unwrap(), m);
    let too_big = BlobResponse::Data {
        total: 0,
        encoded: vec![7; n + 1],
    };
    assert_eq!(
        too_big.encode().unwrap_err(),
        EncodeError::TooLarge {
            what: BlobResponse::WHAT,
            len: limits::BLOB_MESSAGE + 1,
            limit: limits::BLOB_MESSAGE
        }
    );
}

#[test]
fn oversized_manifest_is_refused_before_parsing() {
    let text = format!("# {}\n", "x".repeat(limits::MANIFEST_TOML));
    assert_eq!(
        Manifest::from_toml(&text).unwrap_err(),
        ManifestError::TooLarge(text.len())
    );
}

#[test]
fn trailing_and_truncated_bytes_are_errors() {
    let f = common::Fixtures::new();
    let mut bytes = f.fact.encode().unwrap();
    bytes.push(0);
    assert_eq!(
        SignedFact::decode(&bytes).unwrap_err(),
        DecodeError::TrailingBytes {
            what: SignedFact::WHAT,
            extra: 1
        }
    );
    bytes.truncate(bytes.len() - 2);
    assert!(matches!(
        SignedFact::decode(&bytes),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn lying_length_prefixes_fail_cleanly() {
    // BlobResponse::Data, total 0, then a byte string claiming 2^32-1 or 2^64-1 bytes.
    for len in [
        &[252u8, 0xff, 0xff, 0xff, 0xff][..],
        &[253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        &[252, 0x00, 0x00, 0x00, 0x03], // 48 MiB
    ] {
        let bytes = [&[0u8, 0][..], len, b"abc"].concat();
        assert!(matches!(
            BlobResponse::decode(&bytes),
            Err(DecodeError::Malformed { .. })
        ));
    }
    // A short message cannot make the decoder allocate what its length prefix
    // claims: the claim is refused before any allocation (bincode's limit is a
    // small multiple of the input length).
    let bytes = [&[0u8, 0, 252, 0x00, 0x00, 0x00, 0x03][..], b"abc"].concat();
    match BlobResponse::decode(&bytes) {
        Err(DecodeError::Malformed { reason, .. }) => {
            assert!(reason.contains("LimitExceeded"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // A FactResponse claiming 2^32-1 facts.
    assert!(FactResponse::decode(&[0, 252, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]).is_err());
    // An unknown enum variant.
    assert!(JobResponse::decode(&[3]).is_err());
    assert!(Gossip::decode(&[251, 3, 0]).is_err());
    // A bool that is neither 0 nor 1 (Manifest.deterministic is not reachable
    // cheaply; Value::Bool is).
    let mut ex = Expression {
        workflow: WorkflowId([0; 32]),
        args: [("b".to_string(), Value::Bool(true))].into(),
    }
    .encode()
    .unwrap();
    *ex.last_mut().unwrap() = 2;
    assert!(Expression::decode(&ex).is_err());
    // An Option tag that is neither 0 nor 1.
    let mut token = common::Fixtures::new().token_workflow.encode().unwrap();
    // JobToken: issuer 32, scope tag 1 + 32, expires_at varint (253 + 8), runner tag.
    let runner_tag = 32 + 1 + 32 + 9;
    assert_eq!(token[runner_tag], 0);
    token[runner_tag] = 2;
    assert!(SignedJobToken::decode(&token).is_err());
}

/// `bytes` with `n` copies of `prefix` (a one-item list header) inserted at `at`,
/// wrapping the value that starts there in `n` more levels of lists.
fn nest(bytes: &[u8], at: usize, n: usize, prefix: &[u8]) -> Vec<u8> {
    let mut out = bytes[..at].to_vec();
    for _ in 0..n {
        out.extend_from_slice(prefix);
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

/// Where two encodings first differ.
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap()
}

fn expression_with(v: Value) -> Expression {
    Expression {
        workflow: WorkflowId([0; 32]),
        args: [("a".to_string(), v)].into(),
    }
}

fn nested_value(levels: usize) -> Value {
    let mut v = Value::Null;
    for _ in 1..levels {
        v = Value::List(vec![v]);
    }
    v
}

/// Nested lists used to overflow the decoder's stack (a process abort, not an
/// error): 100 000 levels are 200 KB, well within the expression limit.
#[test]
fn deeply_nested_values_are_refused() {
    let max = limits::MAX_NESTING;
    // At the limit: decodes. One more level: an error.
    let ok = expression_with(nested_value(max)).encode().unwrap();
    assert_eq!(
        Expression::decode(&ok).unwrap(),
        expression_with(nested_value(max))
    );
    let deeper = expression_with(nested_value(max + 1)).encode().unwrap();
    let err = Expression::decode(&deeper).unwrap_err();
    assert!(
        err.to_string().contains("nested more than 32 levels"),
        "{err}"
    );
    // Far deeper, built as bytes (building the value itself would recurse too).
    let null = expression_with(Value::Null).encode().unwrap();
    let at = null.len() - 1; // the Null's variant byte
    for n in [1_000, 100_000] {
        let bytes = nest(&null, at, n, &[5, 1]);
        assert!(matches!(
            Expression::decode(&bytes),
            Err(DecodeError::Malformed { .. })
        ));
    }
    // The same inside a gossip message.
    let advert = |v: Value| {
        let mut g = common::Fixtures::new().gossip().remove(0).1;
        if let Gossip::JobAdvert(a) = &mut g {
            a.body.expr = expression_with(v);
        }
        g.encode().unwrap()
    };
    let (a, b) = (advert(Value::Int(0)), advert(Value::Int(1)));
    let at = first_difference(&a, &b) - 1; // the Int's variant byte
    let bytes = nest(&a, at, 25_000, &[5, 1]);
    assert!(bytes.len() <= limits::GOSSIP);
    assert!(Gossip::decode(&bytes).is_err());
    // Thread-local depth bookkeeping is restored after errors.
    assert!(Expression::decode(&ok).is_ok());
}

#[test]
fn deeply_nested_input_types_are_refused() {
    let workflow = |ty: oda_protocol::InputType| {
        let mut w = common::workflow("hello");
        w.manifest.inputs.insert(
            "x".into(),
            oda_protocol::InputSpec {
                ty,
                default: None,
                description: String::new(),
            },
        );
        w
    };
    let (a, b) = (
        workflow(oda_protocol::InputType::Bool).encode().unwrap(),
        workflow(oda_protocol::InputType::Blob).encode().unwrap(),
    );
    let at = first_difference(&a, &b); // the type's variant byte
                                       // One byte per level: a list type is variant 5 followed by its item type.
    let ok = nest(&a, at, limits::MAX_NESTING - 1, &[5]);
    assert!(Workflow::decode(&ok).is_ok());
    let deeper = nest(&a, at, limits::MAX_NESTING, &[5]);
    assert!(Workflow::decode(&deeper).is_err());
    let bytes = nest(&a, at, 400_000, &[5]);
    assert!(bytes.len() <= limits::WORKFLOW);
    assert!(matches!(
        Workflow::decode(&bytes),
        Err(DecodeError::Malformed { .. })
    ));
}

// ---------------------------------------------------------------------------
// Expression ids do not depend on how arguments were written.

fn full() -> &'static Workflow {
    static FULL: OnceLock<Workflow> = OnceLock::new();
    FULL.get_or_init(|| common::workflow("spectrum-fit"))
}

/// Valid arguments for every input of the golden `spectrum-fit` workflow.
fn full_args() -> impl Strategy<Value = Vec<(String, Value)>> {
    (
        "[A-Za-z0-9 +-]{1,12}",
        prop::sample::select(vec!["isgri", "jemx", "spi"]),
        15i64..=1000,
        prop_oneof![15.0f64..=1000.0, Just(15.0), Just(1000.0)],
        1i64..=10000,
        any::<bool>(),
        arb::blob_id(),
        vec(prop_oneof![0.0f64..1e6, Just(0.0)], 0..4),
        vec((arb::expr_id(), arb::name()), 0..3),
        (arb::expr_id(), arb::name()),
    )
        .prop_map(
            |(source, instrument, emin, emax, scw, bg, cal, thresholds, spectra, region)| {
                let out = |(expr, name): (ExprId, String)| Value::Output { expr, name };
                vec![
                    ("source".into(), Value::Str(source)),
                    ("instrument".into(), Value::Str(instrument.into())),
                    ("emin".into(), Value::Int(emin)),
                    ("emax".into(), Value::Float(emax)),
                    ("scw_count".into(), Value::Int(scw)),
                    ("with_background".into(), Value::Bool(bg)),
                    ("calibration".into(), Value::Blob(cal)),
                    (
                        "thresholds".into(),
                        Value::List(thresholds.into_iter().map(Value::Float).collect()),
                    ),
                    (
                        "spectra".into(),
                        Value::List(spectra.into_iter().map(out).collect()),
                    ),
                    ("region".into(), out(region)),
                ]
            },
        )
}

fn expr(args: Vec<(String, Value)>) -> Expression {
    let wf = full();
    Expression::new(wf.id(), &wf.manifest, args.into_iter().collect()).unwrap()
}

/// Rewrite a value in an equivalent, non-normal way: ints for integral floats,
/// `-0.0` for `0.0`, `bl:` strings for blobs.
fn denormalise(v: Value) -> Value {
    match v {
        Value::Float(0.0) => Value::Float(-0.0),
        Value::Float(x) if x.fract() == 0.0 && x.abs() < 1e15 => Value::Int(x as i64),
        Value::Blob(b) => Value::Str(format!("{b:#}")),
        Value::List(items) => Value::List(items.into_iter().map(denormalise).collect()),
        other => other,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn expr_id_ignores_argument_order(args in full_args().prop_shuffle()) {
        let mut sorted = args.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        prop_assert_eq!(expr(args).id(), expr(sorted).id());
    }

    #[test]
    fn explicit_default_equals_omitted(args in full_args(), omit in vec(any::<bool>(), 10)) {
        let spec = &full().manifest.inputs;
        let mut omitted = Vec::new();
        let mut explicit = Vec::new();
        for ((name, value), omit) in args.into_iter().zip(omit) {
            match (&spec[&name].default, omit) {
                (Some(default), true) => explicit.push((name, default.clone())),
                _ => {
                    omitted.push((name.clone(), value.clone()));
                    explicit.push((name, value));
                }
            }
        }
        let a = expr(omitted);
        let b = expr(explicit);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.id(), b.id());
    }

    #[test]
    fn equivalent_spellings_give_one_id(args in full_args()) {
        let normal = expr(args.clone());
        let other = expr(args.into_iter().map(|(n, v)| (n, denormalise(v))).collect());
        prop_assert_eq!(normal.id(), other.id());
        // A normalised expression passes `check`, also after a trip over the wire.
        let wf = full();
        normal.check(&wf.manifest).unwrap();
        Expression::decode(&normal.encode().unwrap()).unwrap().check(&wf.manifest).unwrap();
    }

    #[test]
    fn different_arguments_give_different_ids(a in full_args(), b in full_args()) {
        let (x, y) = (expr(a), expr(b));
        prop_assert_eq!(x.args == y.args, x.id() == y.id());
    }
}

#[test]
fn check_refuses_non_normal_forms() {
    let wf = full();
    let normal = expr(
        [
            ("source", Value::Str("Crab".into())),
            (
                "region",
                Value::Output {
                    expr: ExprId([1; 32]),
                    name: "r".into(),
                },
            ),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect(),
    );
    normal.check(&wf.manifest).unwrap();
    let with = |name: &str, v: Value| {
        let mut e = normal.clone();
        e.args.insert(name.into(), v);
        e
    };
    // An int where a float belongs, a `bl:` string where a blob belongs, a
    // missing default and `-0.0`: all change the id, so none is normal.
    for (what, bad) in [
        ("int for float", with("emin", Value::Int(20))),
        (
            "blob as text",
            with(
                "calibration",
                Value::Str(format!("{:#}", BlobId::of(b"hello"))),
            ),
        ),
        (
            "negative zero",
            with("thresholds", Value::List(vec![Value::Float(-0.0)])),
        ),
        ("missing default", {
            let mut e = normal.clone();
            e.args.remove("emin");
            e
        }),
    ] {
        assert_ne!(bad.id(), normal.id(), "{what}");
        assert!(bad.check(&wf.manifest).is_err(), "{what} passed check");
    }
}

// ---------------------------------------------------------------------------
// Signed objects: any change of content breaks the signature.

fn flip(bytes: &mut [u8; 32], salt: u64) {
    bytes[(salt % 32) as usize] ^= 1 << ((salt / 32) % 8);
}

fn bump(x: &mut u64, salt: u64) {
    *x = x.wrapping_add(1 + salt % 1000);
}

fn edit_text(s: &mut String, salt: u64) {
    if salt.is_multiple_of(2) || s.is_empty() {
        s.push(char::from(b'a' + (salt % 26) as u8));
    } else {
        s.pop();
    }
}

fn mutate_fact(f: &mut Fact, field: u8, salt: u64) {
    match field % 10 {
        0 => flip(&mut f.expr.0, salt),
        1 => flip(&mut f.workflow.0, salt),
        2 => match &mut f.outcome {
            Outcome::Success { .. } if salt.is_multiple_of(3) => {
                f.outcome = Outcome::AnalysisError {
                    kind: String::new(),
                    message: String::new(),
                }
            }
            Outcome::Success { outputs } => match outputs.values_mut().next() {
                Some(o) if salt.is_multiple_of(2) => bump(&mut o.size, salt),
                Some(o) => flip(&mut o.blob.0, salt),
                None => {
                    outputs.insert(
                        "x".into(),
                        OutputRef {
                            blob: BlobId([0; 32]),
                            size: 0,
                        },
                    );
                }
            },
            Outcome::AnalysisError { kind, message } => {
                if salt.is_multiple_of(2) {
                    edit_text(kind, salt / 2)
                } else {
                    edit_text(message, salt / 2)
                }
            }
        },
        3 => flip(&mut f.worker.0, salt),
        4 => {
            let all = RunnerClass::ALL;
            let i = all.iter().position(|c| *c == f.runner_class).unwrap();
            f.runner_class = all[(i + 1 + (salt % 5) as usize) % 6];
        }
        5 => match f.inputs.first_mut() {
            Some(_) if salt.is_multiple_of(3) => {
                f.inputs.pop();
            }
            Some(i) if salt % 4 == 1 => edit_text(&mut i.name, salt / 4),
            Some(i) if salt % 4 == 2 => flip(&mut i.fact.0, salt),
            Some(i) => flip(&mut i.blob.0, salt),
            None => f.inputs.push(ResolvedInput {
                expr: ExprId([0; 32]),
                name: String::new(),
                blob: BlobId([0; 32]),
                fact: FactId([0; 32]),
                signer: f.worker,
            }),
        },
        6 => bump(&mut f.started_at, salt),
        7 => bump(&mut f.finished_at, salt),
        8 => {
            if salt.is_multiple_of(2) {
                bump(&mut f.usage.cpu_ms, salt)
            } else {
                bump(&mut f.usage.peak_rss_kib, salt)
            }
        }
        _ => flip(&mut f.environment, salt),
    }
}

fn mutate_endorsement(e: &mut Endorsement, field: u8, salt: u64) {
    match field % 4 {
        0 => flip(&mut e.endorser.0, salt),
        1 => {
            e.subject = match (e.subject, salt % 2) {
                (Subject::Workflow(w), 0) => Subject::Fact(FactId(w.0)),
                (Subject::Fact(f), 0) => Subject::Workflow(WorkflowId(f.0)),
                (Subject::Workflow(mut w), _) => {
                    flip(&mut w.0, salt);
                    Subject::Workflow(w)
                }
                (Subject::Fact(mut f), _) => {
                    flip(&mut f.0, salt);
                    Subject::Fact(f)
                }
            }
        }
        2 => bump(&mut e.issued_at, salt),
        _ => edit_text(&mut e.note, salt),
    }
}

fn mutate_dispute(d: &mut Dispute, field: u8, salt: u64) {
    match field % 6 {
        0 => flip(&mut d.controller.0, salt),
        1 => flip(&mut d.fact.0, salt),
        2 => flip(&mut d.expr.0, salt),
        3 => {
            let first = d.observed.keys().next().cloned();
            match first {
                Some(k) if salt.is_multiple_of(2) => {
                    d.observed.remove(&k);
                }
                Some(k) => flip(&mut d.observed.get_mut(&k).unwrap().0, salt),
                None => {
                    d.observed.insert("Z".into(), BlobId([0; 32]));
                }
            }
        }
        4 => bump(&mut d.issued_at, salt),
        _ => edit_text(&mut d.reason, salt),
    }
}

fn mutate_token(t: &mut JobToken, field: u8, salt: u64) {
    match field % 5 {
        0 => flip(&mut t.issuer.0, salt),
        1 => match &mut t.scope {
            TokenScope::Exprs(set) if salt.is_multiple_of(3) => {
                t.scope =
                    TokenScope::Workflow(WorkflowId(set.iter().next().map_or([0; 32], |e| e.0)))
            }
            TokenScope::Exprs(set) => match set.iter().next().copied() {
                Some(e) if salt % 3 == 1 => {
                    set.remove(&e);
                }
                _ => {
                    let mut new = [0u8; 32];
                    flip(&mut new, salt);
                    while set.contains(&ExprId(new)) {
                        new[31] = new[31].wrapping_add(1);
                    }
                    set.insert(ExprId(new));
                }
            },
            TokenScope::Workflow(w) if salt.is_multiple_of(2) => {
                t.scope = TokenScope::Exprs([ExprId(w.0)].into())
            }
            TokenScope::Workflow(w) => flip(&mut w.0, salt),
        },
        2 => bump(&mut t.expires_at, salt),
        3 => {
            t.runner = match t.runner {
                Some(_) if salt.is_multiple_of(2) => None,
                Some(mut k) => {
                    flip(&mut k.0, salt);
                    Some(k)
                }
                None => Some(t.issuer),
            }
        }
        _ => bump(&mut t.nonce, salt),
    }
}

fn mutate_roster(r: &mut GroupRoster, field: u8, salt: u64) {
    match field % 5 {
        0 => flip(&mut r.owner.0, salt),
        1 => edit_text(&mut r.name, salt),
        2 => bump(&mut r.version, salt),
        3 => match r.members.iter().next().copied() {
            Some(k) if salt.is_multiple_of(2) => {
                r.members.remove(&k);
            }
            _ => {
                let mut new = r.owner;
                flip(&mut new.0, salt);
                while r.members.contains(&new) {
                    new.0[0] = new.0[0].wrapping_add(1);
                }
                r.members.insert(new);
            }
        },
        _ => bump(&mut r.issued_at, salt),
    }
}

/// Sign `body` as `key` (after making `key` its signer).
fn sign<T: Signable>(key: &SecretKey, mut body: T, set_signer: fn(&mut T, PublicKey)) -> Signed<T> {
    set_signer(&mut body, key.public());
    key.sign(body).unwrap()
}

/// Changing one field of the body, keeping the signature, must fail verification.
fn tampered_fails<T: Signable + Clone + PartialEq + Debug>(
    signed: &Signed<T>,
    mutate: impl Fn(&mut T),
) -> Result<(), TestCaseError> {
    signed.verify().unwrap();
    let mut body = signed.body.clone();
    mutate(&mut body);
    prop_assert_ne!(&body, &signed.body, "the mutation must change something");
    let tampered = Signed {
        body,
        signature: signed.signature,
    };
    prop_assert!(tampered.verify().is_err());
    Ok(())
}

/// Flipping any byte of the encoding either fails to decode, fails to verify, or
/// (never, in practice) decodes to the very same object.
fn flipped_fails<T>(signed: &Signed<T>, at: Index, mask: u8) -> Result<(), TestCaseError>
where
    T: Signable + PartialEq + Debug,
    Signed<T>: Wire,
{
    let mut bytes = signed.encode().unwrap();
    let i = at.index(bytes.len());
    bytes[i] ^= mask;
    if let Ok(decoded) = Signed::<T>::decode(&bytes) {
        if decoded != *signed {
            prop_assert!(
                decoded.verify().is_err(),
                "byte {i} ^ {mask:#04x} gave a different object that verifies: {decoded:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tampered_fact_fails(k in arb::secret_key(), body in arb::fact(), field: u8, salt: u64) {
        let s = sign(&k, body, |b, p| b.worker = p);
        tampered_fails(&s, |b| mutate_fact(b, field, salt))?;
    }

    #[test]
    fn tampered_endorsement_fails(k in arb::secret_key(), body in arb::endorsement(), field: u8, salt: u64) {
        let s = sign(&k, body, |b, p| b.endorser = p);
        tampered_fails(&s, |b| mutate_endorsement(b, field, salt))?;
    }

    #[test]
    fn tampered_dispute_fails(k in arb::secret_key(), body in arb::dispute(), field: u8, salt: u64) {
        let s = sign(&k, body, |b, p| b.controller = p);
        tampered_fails(&s, |b| mutate_dispute(b, field, salt))?;
    }

    #[test]
    fn tampered_job_token_fails(k in arb::secret_key(), body in arb::job_token(), field: u8, salt: u64) {
        let s = sign(&k, body, |b, p| b.issuer = p);
        tampered_fails(&s, |b| mutate_token(b, field, salt))?;
    }

    #[test]
    fn tampered_group_roster_fails(k in arb::secret_key(), body in arb::group_roster(), field: u8, salt: u64) {
        let s = sign(&k, body, |b, p| b.owner = p);
        tampered_fails(&s, |b| mutate_roster(b, field, salt))?;
    }

    #[test]
    fn flipped_fact_fails(k in arb::secret_key(), body in arb::fact(), at: Index, mask in 1..=255u8) {
        flipped_fails(&sign(&k, body, |b, p| b.worker = p), at, mask)?;
    }

    #[test]
    fn flipped_endorsement_fails(k in arb::secret_key(), body in arb::endorsement(), at: Index, mask in 1..=255u8) {
        flipped_fails(&sign(&k, body, |b, p| b.endorser = p), at, mask)?;
    }

    #[test]
    fn flipped_dispute_fails(k in arb::secret_key(), body in arb::dispute(), at: Index, mask in 1..=255u8) {
        flipped_fails(&sign(&k, body, |b, p| b.controller = p), at, mask)?;
    }

    #[test]
    fn flipped_job_token_fails(k in arb::secret_key(), body in arb::job_token(), at: Index, mask in 1..=255u8) {
        flipped_fails(&sign(&k, body, |b, p| b.issuer = p), at, mask)?;
    }

    #[test]
    fn flipped_group_roster_fails(k in arb::secret_key(), body in arb::group_roster(), at: Index, mask in 1..=255u8) {
        flipped_fails(&sign(&k, body, |b, p| b.owner = p), at, mask)?;
    }
}

#[test]
fn every_field_of_the_golden_fact_is_signed() {
    let f = common::Fixtures::new();
    for field in 0..10 {
        for salt in 0..6 {
            let mut body = f.fact.body.clone();
            mutate_fact(&mut body, field, salt);
            assert_ne!(body, f.fact.body);
            let tampered = Signed {
                body,
                signature: f.fact.signature,
            };
            assert!(tampered.verify().is_err(), "field {field} salt {salt}");
        }
    }
    // And the unchanged fixtures verify.
    f.fact.verify().unwrap();
    f.fact_error.verify().unwrap();
    f.endorse_workflow.verify().unwrap();
    f.endorse_fact.verify().unwrap();
    f.dispute.verify().unwrap();
    f.token_exprs.verify().unwrap();
    f.token_workflow.verify().unwrap();
    f.roster.verify().unwrap();
}

/// The human-readable (JSON) form of values and input types, used by the node
/// API and the CLI: variant names, ids as hex. Decoding goes through the
/// nesting guard and must accept exactly what encoding produces.
#[test]
fn json_form_of_values_and_input_types() {
    let id = "ab".repeat(32);
    let v = Value::List(vec![
        Value::Null,
        Value::Bool(true),
        Value::Int(-3),
        Value::Float(1.5),
        Value::Str("x".into()),
        Value::Blob(BlobId([0xab; 32])),
        Value::Output {
            expr: ExprId([0xab; 32]),
            name: "fit".into(),
        },
    ]);
    let json = serde_json::to_string(&v).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"List":["Null",{{"Bool":true}},{{"Int":-3}},{{"Float":1.5}},{{"Str":"x"}},{{"Blob":"{id}"}},{{"Output":{{"expr":"{id}","name":"fit"}}}}]}}"#
        )
    );
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), v);
    let ty = oda_protocol::InputType::List {
        items: Box::new(oda_protocol::InputType::Float {
            min: Some(0.0),
            max: None,
        }),
    };
    let json = serde_json::to_string(&ty).unwrap();
    assert_eq!(
        json,
        r#"{"List":{"items":{"Float":{"min":0.0,"max":null}}}}"#
    );
    assert_eq!(
        serde_json::from_str::<oda_protocol::InputType>(&json).unwrap(),
        ty
    );
    let deep = format!("{}\"Null\"{}", "{\"List\":[".repeat(40), "]}".repeat(40));
    assert!(serde_json::from_str::<Value>(&deep).is_err());
}

#[test]
fn a_bundle_of_exactly_the_limit_decodes() {
    use oda_protocol::bundle::WorkflowBundle;
    let manifest_toml =
        std::fs::read_to_string(common::golden_dir().join("spectrum-fit/manifest.toml")).unwrap();
    let mut files = std::collections::BTreeMap::new();
    files.insert("fit.py".to_string(), serde_bytes::ByteBuf::new());
    let small = WorkflowBundle {
        manifest_toml: manifest_toml.clone(),
        files: files.clone(),
    };
    // Grow one file so that the encoding is exactly the limit (its length
    // prefix is 9 bytes once it holds 2^32 bytes or more, 5 bytes here).
    let n = limits::BUNDLE - small.encode().unwrap().len() - 4;
    files.insert(
        "fit.py".to_string(),
        serde_bytes::ByteBuf::from(vec![1u8; n]),
    );
    let big = WorkflowBundle {
        manifest_toml,
        files,
    };
    let bytes = big.encode().unwrap();
    assert_eq!(bytes.len(), limits::BUNDLE);
    assert_eq!(WorkflowBundle::decode(&bytes).unwrap(), big);
}

#[test]
fn the_largest_fact_and_blob_requests_fit_the_small_request_limit() {
    let blob = BlobRequest {
        blob: oda_protocol::BlobId([0xff; 32]),
        offset: u64::MAX,
        len: u32::MAX,
    };
    let len = blob.encode().expect("fits").len();
    assert!(len <= limits::SMALL_REQUEST, "{len}");
    let fact = FactRequest::GetFacts(oda_protocol::ExprId([0xff; 32]));
    assert_eq!(fact.encode().expect("fits").len(), 33);
}
