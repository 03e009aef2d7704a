//! proptest strategies for every protocol type. Values are structurally arbitrary
//! (not necessarily valid: signatures are random bytes unless a strategy says it
//! signs), floats are finite, collections are small so encodings stay well under
//! every size limit.

use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;

use oda_protocol::manifest::{OutputSpec, Resources};
use oda_protocol::messages::{
    Assign, BlobRequest, BlobResponse, Cancel, Capacity, DeclineReason, Done, FactAnnounce,
    FactRequest, FactResponse, Gossip, JobAdvert, JobRequest, JobResponse, Offer, Progress,
    RunFailure,
};
use oda_protocol::{
    BlobId, Dispute, Endorsement, Executor, ExprId, Expression, Fact, FactId, Failure, GroupRoster,
    InputSpec, InputType, JobToken, Manifest, Outcome, OutputRef, PublicKey, ResolvedInput,
    RunnerClass, SecretKey, Signature, Signed, Subject, TokenScope, Usage, Value, Workflow,
    WorkflowId,
};

pub fn bytes32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

pub fn workflow_id() -> impl Strategy<Value = WorkflowId> {
    bytes32().prop_map(WorkflowId)
}

pub fn expr_id() -> impl Strategy<Value = ExprId> {
    bytes32().prop_map(ExprId)
}

pub fn blob_id() -> impl Strategy<Value = BlobId> {
    bytes32().prop_map(BlobId)
}

pub fn fact_id() -> impl Strategy<Value = FactId> {
    bytes32().prop_map(FactId)
}

/// 32 arbitrary bytes: usually not a valid ed25519 point, which is fine for codec tests.
pub fn public_key() -> impl Strategy<Value = PublicKey> {
    bytes32().prop_map(PublicKey)
}

pub fn signature() -> impl Strategy<Value = Signature> {
    any::<[u8; 64]>().prop_map(Signature)
}

pub fn secret_key() -> impl Strategy<Value = SecretKey> {
    bytes32().prop_map(SecretKey::from_seed)
}

/// Any text without control characters, including non-ASCII.
pub fn text() -> impl Strategy<Value = String> {
    "\\PC{0,16}"
}

pub fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,8}"
}

/// Finite floats of both signs, including `-0.0` and subnormals.
pub fn finite() -> impl Strategy<Value = f64> {
    use proptest::num::f64 as f;
    f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO
}

pub fn finite32() -> impl Strategy<Value = f32> {
    use proptest::num::f32 as f;
    f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO
}

pub fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        finite().prop_map(Value::Float),
        text().prop_map(Value::Str),
        blob_id().prop_map(Value::Blob),
        (expr_id(), name()).prop_map(|(expr, name)| Value::Output { expr, name }),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| vec(inner, 0..4).prop_map(Value::List))
}

pub fn expression() -> impl Strategy<Value = Expression> {
    (workflow_id(), btree_map(name(), value(), 0..5))
        .prop_map(|(workflow, args)| Expression { workflow, args })
}

fn scalar_type() -> impl Strategy<Value = InputType> {
    prop_oneof![
        (option::of("[a-z]{1,5}"), vec(text(), 0..3))
            .prop_map(|(pattern, choices)| InputType::Str { pattern, choices }),
        (option::of(any::<i64>()), option::of(any::<i64>()))
            .prop_map(|(min, max)| InputType::Int { min, max }),
        (option::of(finite()), option::of(finite()))
            .prop_map(|(min, max)| InputType::Float { min, max }),
        Just(InputType::Bool),
        Just(InputType::Blob),
        Just(InputType::Output),
    ]
}

pub fn input_type() -> impl Strategy<Value = InputType> {
    prop_oneof![
        3 => scalar_type(),
        1 => scalar_type().prop_map(|t| InputType::List { items: Box::new(t) }),
    ]
}

pub fn input_spec() -> impl Strategy<Value = InputSpec> {
    (input_type(), option::of(value()), text()).prop_map(|(ty, default, description)| InputSpec {
        ty,
        default,
        description,
    })
}

pub fn executor() -> impl Strategy<Value = Executor> {
    prop_oneof![
        (vec(text(), 0..4), btree_map(name(), text(), 0..3))
            .prop_map(|(argv, env)| Executor::Command { argv, env }),
        (
            vec(text(), 0..3),
            option::of(text()),
            option::of(text()),
            vec(text(), 0..2)
        )
            .prop_map(|(argv, partition, account, sbatch_args)| Executor::Slurm {
                argv,
                partition,
                account,
                sbatch_args
            }),
        (text(), vec(text(), 0..3), option::of(text())).prop_map(|(image, argv, engine)| {
            Executor::Container {
                image,
                argv,
                engine,
            }
        }),
        text().prop_map(|document| Executor::Cwl { document }),
    ]
}

pub fn resources() -> impl Strategy<Value = Resources> {
    (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(cpus, memory_mb, gpus)| Resources {
        cpus,
        memory_mb,
        gpus,
    })
}

pub fn manifest() -> impl Strategy<Value = Manifest> {
    (
        name(),
        text(),
        text(),
        btree_map(name(), input_spec(), 0..4),
        btree_map(
            name(),
            (text(), text()).prop_map(|(path, description)| OutputSpec { path, description }),
            0..3,
        ),
        executor(),
        any::<u64>(),
        resources(),
        any::<bool>(),
        btree_set(text(), 0..3),
    )
        .prop_map(
            |(
                name,
                version,
                description,
                inputs,
                outputs,
                executor,
                timeout_secs,
                resources,
                deterministic,
                files,
            )| Manifest {
                name,
                version,
                description,
                inputs,
                outputs,
                executor,
                timeout_secs,
                resources,
                deterministic,
                files,
            },
        )
}

pub fn workflow() -> impl Strategy<Value = Workflow> {
    (manifest(), btree_map(text(), blob_id(), 0..3))
        .prop_map(|(manifest, files)| Workflow { manifest, files })
}

pub fn runner_class() -> impl Strategy<Value = RunnerClass> {
    prop_oneof![
        Just(RunnerClass::Public),
        Just(RunnerClass::Group),
        Just(RunnerClass::User),
        Just(RunnerClass::Session),
        Just(RunnerClass::Job),
        Just(RunnerClass::Anonymous),
    ]
}

pub fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        btree_map(
            name(),
            (blob_id(), any::<u64>()).prop_map(|(blob, size)| OutputRef { blob, size }),
            0..3
        )
        .prop_map(|outputs| Outcome::Success { outputs }),
        (text(), text()).prop_map(|(kind, message)| Outcome::AnalysisError { kind, message }),
    ]
}

pub fn resolved_input() -> impl Strategy<Value = ResolvedInput> {
    (expr_id(), name(), blob_id(), fact_id(), public_key()).prop_map(
        |(expr, name, blob, fact, signer)| ResolvedInput {
            expr,
            name,
            blob,
            fact,
            signer,
        },
    )
}

pub fn fact() -> impl Strategy<Value = Fact> {
    (
        expr_id(),
        workflow_id(),
        outcome(),
        public_key(),
        runner_class(),
        vec(resolved_input(), 0..3),
        any::<u64>(),
        any::<u64>(),
        (any::<u64>(), any::<u64>()).prop_map(|(cpu_ms, peak_rss_kib)| Usage {
            cpu_ms,
            peak_rss_kib,
        }),
        bytes32(),
    )
        .prop_map(
            |(
                expr,
                workflow,
                outcome,
                worker,
                runner_class,
                inputs,
                started_at,
                finished_at,
                usage,
                environment,
            )| Fact {
                expr,
                workflow,
                outcome,
                worker,
                runner_class,
                inputs,
                started_at,
                finished_at,
                usage,
                environment,
            },
        )
}

pub fn subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        workflow_id().prop_map(Subject::Workflow),
        fact_id().prop_map(Subject::Fact),
    ]
}

pub fn endorsement() -> impl Strategy<Value = Endorsement> {
    (public_key(), subject(), any::<u64>(), text()).prop_map(
        |(endorser, subject, issued_at, note)| Endorsement {
            endorser,
            subject,
            issued_at,
            note,
        },
    )
}

pub fn failure() -> impl Strategy<Value = Failure> {
    (
        public_key(),
        expr_id(),
        workflow_id(),
        vec(resolved_input(), 0..3),
        any::<u64>(),
        text(),
        text(),
    )
        .prop_map(
            |(worker, expr, workflow, inputs, at, reason, log_tail)| Failure {
                worker,
                expr,
                workflow,
                inputs,
                at,
                reason,
                log_tail,
            },
        )
}

pub fn dispute() -> impl Strategy<Value = Dispute> {
    (
        public_key(),
        fact_id(),
        expr_id(),
        btree_map(name(), blob_id(), 0..3),
        any::<u64>(),
        text(),
    )
        .prop_map(
            |(controller, fact, expr, observed, issued_at, reason)| Dispute {
                controller,
                fact,
                expr,
                observed,
                issued_at,
                reason,
            },
        )
}

pub fn token_scope() -> impl Strategy<Value = TokenScope> {
    prop_oneof![
        btree_set(expr_id(), 0..4).prop_map(TokenScope::Exprs),
        workflow_id().prop_map(TokenScope::Workflow),
    ]
}

pub fn job_token() -> impl Strategy<Value = JobToken> {
    (
        public_key(),
        token_scope(),
        any::<u64>(),
        option::of(public_key()),
        any::<u64>(),
    )
        .prop_map(|(issuer, scope, expires_at, runner, nonce)| JobToken {
            issuer,
            scope,
            expires_at,
            runner,
            nonce,
        })
}

pub fn group_roster() -> impl Strategy<Value = GroupRoster> {
    (
        public_key(),
        text(),
        any::<u64>(),
        btree_set(public_key(), 0..4),
        any::<u64>(),
    )
        .prop_map(|(owner, name, version, members, issued_at)| GroupRoster {
            owner,
            name,
            version,
            members,
            issued_at,
        })
}

/// A body with a random (invalid) signature: for codec tests only.
pub fn signed<T: std::fmt::Debug>(
    body: impl Strategy<Value = T>,
) -> impl Strategy<Value = Signed<T>> {
    (body, signature()).prop_map(|(body, signature)| Signed { body, signature })
}

pub fn job_advert() -> impl Strategy<Value = JobAdvert> {
    (
        expression(),
        vec(resolved_input(), 0..3),
        public_key(),
        resources(),
        any::<u64>(),
        any::<u8>(),
        option::of(signed(job_token())),
        blob_id(),
        vec(signed(endorsement()), 0..2),
    )
        .prop_map(
            |(
                expr,
                inputs,
                requester,
                requirements,
                deadline,
                priority,
                token,
                bundle,
                endorsements,
            )| {
                JobAdvert {
                    expr,
                    inputs,
                    requester,
                    requirements,
                    deadline,
                    priority,
                    token,
                    bundle,
                    endorsements,
                }
            },
        )
}

pub fn gossip() -> impl Strategy<Value = Gossip> {
    prop_oneof![
        signed(job_advert()).prop_map(|a| Gossip::JobAdvert(Box::new(a))),
        signed(
            (expr_id(), fact_id(), public_key()).prop_map(|(expr, fact_id, worker)| {
                FactAnnounce {
                    expr,
                    fact_id,
                    worker,
                }
            })
        )
        .prop_map(Gossip::FactAnnounce),
        (
            vec(workflow_id(), 0..4),
            vec(blob_id(), 0..4),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(workflows, blobs, free_slots, total_slots)| {
                Gossip::Capacity(Capacity {
                    workflows,
                    blobs,
                    free_slots,
                    total_slots,
                })
            }),
        signed(failure()).prop_map(|f| Gossip::Failure(Box::new(f))),
        signed(dispute()).prop_map(|d| Gossip::Dispute(Box::new(d))),
        signed(endorsement()).prop_map(|e| Gossip::Endorsement(Box::new(e))),
    ]
}

pub fn job_request() -> impl Strategy<Value = JobRequest> {
    prop_oneof![
        (
            expr_id(),
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(
                |(expr, local_input_bytes, free_slots, expected_start_ms, running)| {
                    JobRequest::Offer(Offer {
                        expr,
                        local_input_bytes,
                        free_slots,
                        expected_start_ms,
                        running,
                    })
                }
            ),
        (expr_id(), any::<u64>(), option::of(finite32()), text()).prop_map(
            |(expr, lease, fraction, message)| {
                JobRequest::Progress(Progress {
                    expr,
                    lease,
                    fraction,
                    message,
                })
            }
        ),
        (
            expr_id(),
            any::<u64>(),
            prop_oneof![
                signed(fact()).prop_map(Ok),
                (text(), text())
                    .prop_map(|(message, log_tail)| Err(RunFailure { message, log_tail })),
            ]
        )
            .prop_map(|(expr, lease, result)| JobRequest::Done(Box::new(Done {
                expr,
                lease,
                result
            }))),
        (expr_id(), any::<u64>())
            .prop_map(|(expr, lease)| JobRequest::Cancel(Cancel { expr, lease })),
    ]
}

pub fn job_response() -> impl Strategy<Value = JobResponse> {
    prop_oneof![
        (expr_id(), any::<u64>(), any::<u64>()).prop_map(|(expr, lease, ttl_ms)| {
            JobResponse::Assign(Assign {
                expr,
                lease,
                ttl_ms,
            })
        }),
        prop_oneof![
            Just(DeclineReason::NotNeeded),
            Just(DeclineReason::UntrustedWorkflow),
            Just(DeclineReason::NotAllowed),
            Just(DeclineReason::Busy),
            text().prop_map(DeclineReason::Other),
        ]
        .prop_map(JobResponse::Decline),
        Just(JobResponse::Ack),
    ]
}

pub fn fact_request() -> impl Strategy<Value = FactRequest> {
    prop_oneof![
        expr_id().prop_map(FactRequest::GetFacts),
        fact_id().prop_map(FactRequest::GetVerdicts),
    ]
}

pub fn fact_response() -> impl Strategy<Value = FactResponse> {
    prop_oneof![
        vec(signed(fact()), 0..3).prop_map(FactResponse::Facts),
        (
            vec(signed(endorsement()), 0..3),
            vec(signed(dispute()), 0..3)
        )
            .prop_map(|(endorsements, disputes)| FactResponse::Verdicts {
                endorsements,
                disputes
            }),
    ]
}

pub fn blob_request() -> impl Strategy<Value = BlobRequest> {
    (blob_id(), any::<u64>(), any::<u32>()).prop_map(|(blob, offset, len)| BlobRequest {
        blob,
        offset,
        len,
    })
}

pub fn blob_response() -> impl Strategy<Value = BlobResponse> {
    prop_oneof![
        (any::<u64>(), vec(any::<u8>(), 0..64))
            .prop_map(|(total, encoded)| BlobResponse::Data { total, encoded }),
        Just(BlobResponse::NotFound),
        text().prop_map(BlobResponse::BadRange),
    ]
}

pub fn workflow_bundle() -> impl Strategy<Value = oda_protocol::bundle::WorkflowBundle> {
    (
        "\\PC{0,64}",
        btree_map(text(), vec(any::<u8>(), 0..32), 0..3),
    )
        .prop_map(
            |(manifest_toml, files)| oda_protocol::bundle::WorkflowBundle {
                manifest_toml,
                files: files
                    .into_iter()
                    .map(|(k, v)| (k, serde_bytes::ByteBuf::from(v)))
                    .collect(),
            },
        )
}
