//! Shared fixtures for the integration tests: fixed keys, the golden workflows,
//! one fixed instance of every signed object and wire message, and proptest
//! strategies for every protocol type.
//!
//! Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod arb;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use oda_protocol::bundle::WorkflowBundle;
use oda_protocol::messages::{
    Assign, BlobRequest, BlobResponse, Cancel, Capacity, DeclineReason, Done, FactAnnounce,
    FactRequest, FactResponse, Gossip, JobAdvert, JobRequest, JobResponse, Offer, Progress,
    RunFailure,
};
use oda_protocol::{
    BlobId, Dispute, Endorsement, Expression, Fact, FactId, Failure, GroupRoster, JobToken,
    Manifest, Outcome, OutputRef, ResolvedInput, RunnerClass, SecretKey, SignedDispute,
    SignedEndorsement, SignedFact, SignedFailure, SignedGroupRoster, SignedJobToken, Subject,
    TokenScope, Usage, Value, Wire, Workflow,
};

/// Seeds of the fixed keys. ed25519 signing is deterministic, so every signature
/// made with these keys is reproducible.
pub const WORKER: u8 = 1;
/// Requester (issues job tokens, receives offers).
pub const REQUESTER: u8 = 2;
/// Expert (endorses workflows).
pub const EXPERT: u8 = 3;
/// Controller (endorses or disputes facts).
pub const CONTROLLER: u8 = 4;
/// Owner of a group roster.
pub const GROUP_OWNER: u8 = 5;
/// An anonymous runner bound by a job token; also a group member.
pub const RUNNER: u8 = 6;

/// The key whose 32-byte seed is `[seed; 32]`.
pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

/// 2026-01-01T00:00:00Z in Unix milliseconds: every fixed timestamp is near it.
pub const T0: u64 = 1_767_225_600_000;

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Load `tests/golden/<name>/manifest.toml` and hash its bundled files.
pub fn workflow(name: &str) -> Workflow {
    let dir = golden_dir().join(name);
    let text = fs::read_to_string(dir.join("manifest.toml")).expect("golden manifest exists");
    let manifest = Manifest::from_toml(&text).expect("golden manifest is valid");
    let files = manifest
        .files
        .iter()
        .map(|f| {
            let bytes = fs::read(dir.join(f)).expect("golden bundled file exists");
            (f.clone(), BlobId::of(&bytes))
        })
        .collect();
    Workflow::new(manifest, files).expect("golden files match the manifest")
}

/// The bundle of `tests/golden/<name>/`: its manifest text and bundled files.
pub fn bundle(name: &str) -> WorkflowBundle {
    let dir = golden_dir().join(name);
    let manifest_toml =
        fs::read_to_string(dir.join("manifest.toml")).expect("golden manifest exists");
    let manifest = Manifest::from_toml(&manifest_toml).expect("golden manifest is valid");
    let files = manifest
        .files
        .iter()
        .map(|f| {
            let bytes = fs::read(dir.join(f)).expect("golden bundled file exists");
            (f.clone(), serde_bytes::ByteBuf::from(bytes))
        })
        .collect();
    WorkflowBundle {
        manifest_toml,
        files,
    }
}

pub fn args(pairs: Vec<(&str, Value)>) -> BTreeMap<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

pub fn output(expr: &Expression, name: &str) -> Value {
    Value::Output {
        expr: expr.id(),
        name: name.to_string(),
    }
}

/// One fixed instance of everything the golden vectors pin.
pub struct Fixtures {
    pub wf_full: Workflow,
    pub wf_hello: Workflow,
    /// The bundles of `wf_full` and `wf_hello`.
    pub bundle_full: WorkflowBundle,
    pub bundle_hello: WorkflowBundle,
    /// The worked example of docs/protocol.md.
    pub wf_greet: Workflow,
    /// `greet` with `times = 3` (and `who` defaulted to "world").
    pub ex_greet: Expression,
    /// `hello` with no arguments.
    pub ex_hello: Expression,
    /// `spectrum-fit` with only the required arguments; `region` is an output of
    /// `ex_hello`; every other argument is a default.
    pub ex_crab: Expression,
    /// Same with every argument given explicitly, equal to the defaults.
    pub ex_crab_explicit: Expression,
    /// `spectrum-fit` for another source.
    pub ex_cyg: Expression,
    /// Fan-in: `spectra` is a list of the outputs of `ex_crab` and `ex_cyg`;
    /// `thresholds` is given as `[-0.0, 3]` and `emin` as the integer 15.
    pub ex_fanin: Expression,
    /// `ex_fanin` written in normal form (`[0.0, 3.0]`, `15.0`).
    pub ex_fanin_normal: Expression,
    pub fact: SignedFact,
    pub fact_error: SignedFact,
    pub endorse_workflow: SignedEndorsement,
    pub endorse_fact: SignedEndorsement,
    pub dispute: SignedDispute,
    /// `ex_crab` failing on the worker, on the inputs of `fact`.
    pub failure: SignedFailure,
    pub token_exprs: SignedJobToken,
    pub token_workflow: SignedJobToken,
    pub roster: SignedGroupRoster,
}

impl Fixtures {
    pub fn new() -> Self {
        let wf_full = workflow("spectrum-fit");
        let wf_hello = workflow("hello");
        let wf_greet = workflow("greet");
        let ex_greet = Expression::new(
            wf_greet.id(),
            &wf_greet.manifest,
            args(vec![("times", Value::Int(3))]),
        )
        .unwrap();
        let (full_id, full) = (wf_full.id(), &wf_full.manifest);
        let ex_hello = Expression::new(wf_hello.id(), &wf_hello.manifest, BTreeMap::new()).unwrap();
        let region = output(&ex_hello, "greeting");
        let ex_crab = Expression::new(
            full_id,
            full,
            args(vec![
                ("source", Value::Str("Crab".into())),
                ("region", region.clone()),
            ]),
        )
        .unwrap();
        let ex_crab_explicit = Expression::new(
            full_id,
            full,
            args(vec![
                ("source", Value::Str("Crab".into())),
                ("region", region.clone()),
                ("instrument", Value::Str("isgri".into())),
                ("emin", Value::Float(20.0)),
                ("emax", Value::Int(200)),
                ("scw_count", Value::Int(100)),
                ("with_background", Value::Bool(false)),
                ("calibration", Value::Blob(BlobId::of(b"hello"))),
                (
                    "thresholds",
                    Value::List(vec![Value::Float(1.0), Value::Float(2.5)]),
                ),
                ("spectra", Value::List(vec![])),
            ]),
        )
        .unwrap();
        let ex_cyg = Expression::new(
            full_id,
            full,
            args(vec![
                ("source", Value::Str("Cyg X-1".into())),
                ("region", region.clone()),
            ]),
        )
        .unwrap();
        let fanin_args = |thresholds: Vec<Value>, emin: Value| {
            args(vec![
                ("source", Value::Str("Crab".into())),
                ("region", region.clone()),
                ("instrument", Value::Str("jemx".into())),
                ("emin", emin),
                ("scw_count", Value::Int(5000)),
                ("with_background", Value::Bool(true)),
                ("calibration", Value::Blob(BlobId::of(b""))),
                ("thresholds", Value::List(thresholds)),
                (
                    "spectra",
                    Value::List(vec![output(&ex_crab, "fit"), output(&ex_cyg, "fit")]),
                ),
            ])
        };
        let ex_fanin = Expression::new(
            full_id,
            full,
            fanin_args(vec![Value::Float(-0.0), Value::Int(3)], Value::Int(15)),
        )
        .unwrap();
        let ex_fanin_normal = Expression::new(
            full_id,
            full,
            fanin_args(
                vec![Value::Float(0.0), Value::Float(3.0)],
                Value::Float(15.0),
            ),
        )
        .unwrap();

        let worker = key(WORKER);
        let fact_body = Fact {
            expr: ex_crab.id(),
            workflow: full_id,
            outcome: Outcome::Success {
                outputs: [
                    (
                        "fit".to_string(),
                        OutputRef {
                            blob: BlobId::of(b"{\"index\": 2.1}"),
                            size: 14,
                        },
                    ),
                    (
                        "log".to_string(),
                        OutputRef {
                            blob: BlobId::of(b"ok\n"),
                            size: 3,
                        },
                    ),
                ]
                .into(),
            },
            worker: worker.public(),
            runner_class: RunnerClass::Public,
            inputs: vec![ResolvedInput {
                expr: ex_hello.id(),
                name: "greeting".into(),
                blob: BlobId::of(b""),
                // A made-up input fact: only its id and signer are encoded.
                fact: FactId(*BlobId::of(b"input fact").as_bytes()),
                signer: worker.public(),
            }],
            started_at: T0,
            finished_at: T0 + 60_000,
            usage: Usage {
                cpu_ms: 59_000,
                peak_rss_kib: 204_800,
            },
            environment: *BlobId::of(b"python 3.12; numpy 2.1").as_bytes(),
        };
        let fact = worker.sign(fact_body).unwrap();
        let fact_error = worker
            .sign(Fact {
                expr: ex_hello.id(),
                workflow: wf_hello.id(),
                outcome: Outcome::AnalysisError {
                    kind: "NoData".into(),
                    message: "no science windows in this time range".into(),
                },
                worker: worker.public(),
                runner_class: RunnerClass::Anonymous,
                inputs: vec![],
                started_at: T0 + 1,
                finished_at: T0 + 1,
                usage: Usage::default(),
                environment: [0; 32],
            })
            .unwrap();
        let expert = key(EXPERT);
        let endorse_workflow = expert
            .sign(Endorsement {
                endorser: expert.public(),
                subject: Subject::Workflow(full_id),
                issued_at: T0 + 2,
                note: "reviewed spectrum-fit 1.2.0".into(),
            })
            .unwrap();
        let controller = key(CONTROLLER);
        let endorse_fact = controller
            .sign(Endorsement {
                endorser: controller.public(),
                subject: Subject::Fact(fact.id()),
                issued_at: T0 + 3,
                note: String::new(),
            })
            .unwrap();
        let dispute = controller
            .sign(Dispute {
                controller: controller.public(),
                fact: fact.id(),
                expr: ex_crab.id(),
                observed: [
                    ("fit".to_string(), BlobId::of(b"{\"index\": 2.2}")),
                    ("log".to_string(), BlobId::of(b"ok\n")),
                ]
                .into(),
                issued_at: T0 + 4,
                reason: "output fit differs".into(),
            })
            .unwrap();
        let failure = worker
            .sign(Failure {
                worker: worker.public(),
                expr: ex_crab.id(),
                workflow: ex_crab.workflow,
                inputs: fact.body.inputs.clone(),
                at: T0 + 6,
                reason: "killed by signal 11 (SIGSEGV)".into(),
                log_tail: "fitting 3 components\nSegmentation fault\n".into(),
            })
            .unwrap();
        let requester = key(REQUESTER);
        let token_exprs = requester
            .sign(JobToken {
                issuer: requester.public(),
                scope: TokenScope::Exprs([ex_crab.id(), ex_fanin.id()].into()),
                expires_at: T0 + 3_600_000,
                runner: Some(key(RUNNER).public()),
                nonce: 0x0123_4567_89ab_cdef,
            })
            .unwrap();
        let token_workflow = requester
            .sign(JobToken {
                issuer: requester.public(),
                scope: TokenScope::Workflow(wf_hello.id()),
                expires_at: T0 + 60_000,
                runner: None,
                nonce: 7,
            })
            .unwrap();
        let owner = key(GROUP_OWNER);
        let roster = owner
            .sign(GroupRoster {
                owner: owner.public(),
                name: "integral-team".into(),
                version: 3,
                members: [worker.public(), key(RUNNER).public()].into(),
                issued_at: T0 + 5,
            })
            .unwrap();
        Self {
            wf_full,
            wf_hello,
            bundle_full: bundle("spectrum-fit"),
            bundle_hello: bundle("hello"),
            wf_greet,
            ex_greet,
            ex_hello,
            ex_crab,
            ex_crab_explicit,
            ex_cyg,
            ex_fanin,
            ex_fanin_normal,
            fact,
            fact_error,
            endorse_workflow,
            endorse_fact,
            dispute,
            failure,
            token_exprs,
            token_workflow,
            roster,
        }
    }

    pub fn gossip(&self) -> Vec<(&'static str, Gossip)> {
        let f = self;
        vec![
            (
                "gossip_job_advert",
                Gossip::JobAdvert(Box::new(
                    key(REQUESTER)
                        .sign(JobAdvert {
                            expr: f.ex_crab.clone(),
                            inputs: f.fact.body.inputs.clone(),
                            requester: key(REQUESTER).public(),
                            requirements: f.wf_full.manifest.resources.clone(),
                            deadline: T0 + 30_000,
                            priority: 5,
                            token: Some(f.token_workflow.clone()),
                            bundle: BlobId::of(&f.bundle_full.encode().expect("bundle encodes")),
                            endorsements: vec![f.endorse_workflow.clone()],
                        })
                        .expect("signs"),
                )),
            ),
            (
                "gossip_fact_announce",
                Gossip::FactAnnounce(
                    key(WORKER)
                        .sign(FactAnnounce {
                            expr: f.ex_crab.id(),
                            fact_id: f.fact.id(),
                            worker: key(WORKER).public(),
                        })
                        .expect("signs"),
                ),
            ),
            (
                "gossip_capacity",
                Gossip::Capacity(Capacity {
                    workflows: vec![f.wf_full.id(), f.wf_hello.id()],
                    blobs: vec![BlobId::of(b"hello")],
                    free_slots: 3,
                    total_slots: 4,
                }),
            ),
            (
                "gossip_failure",
                Gossip::Failure(Box::new(f.failure.clone())),
            ),
            (
                "gossip_dispute",
                Gossip::Dispute(Box::new(f.dispute.clone())),
            ),
            (
                "gossip_endorsement",
                Gossip::Endorsement(Box::new(f.endorse_fact.clone())),
            ),
        ]
    }

    pub fn job_requests(&self) -> Vec<(&'static str, JobRequest)> {
        let expr = self.ex_crab.id();
        vec![
            (
                "job_request_offer",
                JobRequest::Offer(Offer {
                    expr,
                    local_input_bytes: 1 << 20,
                    free_slots: 2,
                    expected_start_ms: 250,
                    running: false,
                }),
            ),
            (
                "job_request_progress",
                JobRequest::Progress(Progress {
                    expr,
                    lease: 42,
                    fraction: Some(0.25),
                    message: "fitting".into(),
                }),
            ),
            (
                "job_request_progress_unknown",
                JobRequest::Progress(Progress {
                    expr,
                    lease: 42,
                    fraction: None,
                    message: String::new(),
                }),
            ),
            (
                "job_request_done_fact",
                JobRequest::Done(Box::new(Done {
                    expr,
                    lease: 42,
                    result: Ok(self.fact.clone()),
                })),
            ),
            (
                "job_request_done_failure",
                JobRequest::Done(Box::new(Done {
                    expr,
                    lease: 43,
                    result: Err(RunFailure {
                        message: "exit status 137".into(),
                        log_tail: "Killed\n".into(),
                    }),
                })),
            ),
            (
                "job_request_cancel",
                JobRequest::Cancel(Cancel { expr, lease: 42 }),
            ),
        ]
    }

    pub fn job_responses(&self) -> Vec<(&'static str, JobResponse)> {
        vec![
            (
                "job_response_assign",
                JobResponse::Assign(Assign {
                    expr: self.ex_crab.id(),
                    lease: 42,
                    ttl_ms: 30_000,
                }),
            ),
            (
                "job_response_decline_not_needed",
                JobResponse::Decline(DeclineReason::NotNeeded),
            ),
            (
                "job_response_decline_untrusted_workflow",
                JobResponse::Decline(DeclineReason::UntrustedWorkflow),
            ),
            (
                "job_response_decline_not_allowed",
                JobResponse::Decline(DeclineReason::NotAllowed),
            ),
            (
                "job_response_decline_busy",
                JobResponse::Decline(DeclineReason::Busy),
            ),
            (
                "job_response_decline_other",
                JobResponse::Decline(DeclineReason::Other("disk full".into())),
            ),
            ("job_response_ack", JobResponse::Ack),
        ]
    }

    pub fn fact_requests(&self) -> Vec<(&'static str, FactRequest)> {
        vec![
            (
                "fact_request_get_facts",
                FactRequest::GetFacts(self.ex_crab.id()),
            ),
            (
                "fact_request_get_verdicts",
                FactRequest::GetVerdicts(self.fact.id()),
            ),
        ]
    }

    pub fn fact_responses(&self) -> Vec<(&'static str, FactResponse)> {
        vec![
            (
                "fact_response_facts",
                FactResponse::Facts(vec![self.fact.clone(), self.fact_error.clone()]),
            ),
            ("fact_response_empty", FactResponse::Facts(vec![])),
            (
                "fact_response_verdicts",
                FactResponse::Verdicts {
                    endorsements: vec![self.endorse_fact.clone()],
                    disputes: vec![self.dispute.clone()],
                },
            ),
        ]
    }

    pub fn blob_requests(&self) -> Vec<(&'static str, BlobRequest)> {
        vec![(
            "blob_request",
            BlobRequest {
                blob: BlobId::of(b"hello"),
                offset: 1,
                len: 1 << 20,
            },
        )]
    }

    pub fn blob_responses(&self) -> Vec<(&'static str, BlobResponse)> {
        vec![
            (
                "blob_response_data",
                BlobResponse::Data {
                    total: 5,
                    encoded: b"ello".to_vec(),
                },
            ),
            ("blob_response_not_found", BlobResponse::NotFound),
            (
                "blob_response_bad_range",
                BlobResponse::BadRange("offset 9 is past the end (5 bytes)".into()),
            ),
        ]
    }

    /// The wire encoding of every fixed signed object and message, by name.
    pub fn wire_encodings(&self) -> Vec<(String, Vec<u8>)> {
        fn enc<T: Wire>(name: &str, v: &T) -> (String, Vec<u8>) {
            (name.to_string(), v.encode().expect("fixture encodes"))
        }
        let mut out = vec![
            enc("workflow_spectrum_fit", &self.wf_full),
            enc("workflow_hello", &self.wf_hello),
            enc("workflow_bundle_hello", &self.bundle_hello),
            enc("expr_hello", &self.ex_hello),
            enc("expr_crab", &self.ex_crab),
            enc("expr_fanin", &self.ex_fanin),
            enc("signed_fact", &self.fact),
            enc("signed_fact_analysis_error", &self.fact_error),
            enc("signed_endorsement_workflow", &self.endorse_workflow),
            enc("signed_endorsement_fact", &self.endorse_fact),
            enc("signed_dispute", &self.dispute),
            enc("signed_failure", &self.failure),
            enc("signed_job_token_exprs", &self.token_exprs),
            enc("signed_job_token_workflow", &self.token_workflow),
            enc("signed_group_roster", &self.roster),
        ];
        out.extend(self.gossip().iter().map(|(n, m)| enc(n, m)));
        out.extend(self.job_requests().iter().map(|(n, m)| enc(n, m)));
        out.extend(self.job_responses().iter().map(|(n, m)| enc(n, m)));
        out.extend(self.fact_requests().iter().map(|(n, m)| enc(n, m)));
        out.extend(self.fact_responses().iter().map(|(n, m)| enc(n, m)));
        out.extend(self.blob_requests().iter().map(|(n, m)| enc(n, m)));
        out.extend(self.blob_responses().iter().map(|(n, m)| enc(n, m)));
        out
    }
}

impl Default for Fixtures {
    fn default() -> Self {
        Self::new()
    }
}

/// A set of the given ids, for token scopes.
pub fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}
