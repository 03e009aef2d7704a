//! Signed facts for unit tests: a fact by a key about a made-up expression,
//! computed from other facts' outputs, so trust and provenance rules can be
//! tested without running anything.

use oda_protocol::{
    BlobId, ExprId, Fact, Outcome, OutputRef, ResolvedInput, RunnerClass, SecretKey, SignedFact,
    Usage, WorkflowId,
};

/// A fact by `by` about expression `[expr; 32]` whose output "out" is blob
/// `[expr; 32]`, computed from the output "out" of each of `inputs`.
pub fn fact(by: &SecretKey, expr: u8, inputs: &[&SignedFact]) -> SignedFact {
    fact_saying(by, expr, expr, inputs)
}

/// [`fact`] whose output "out" is blob `[output; 32]`.
pub fn fact_saying(by: &SecretKey, expr: u8, output: u8, inputs: &[&SignedFact]) -> SignedFact {
    let mut inputs: Vec<ResolvedInput> = inputs
        .iter()
        .map(|f| ResolvedInput::from_fact(f, "out").expect("the input fact has an output \"out\""))
        .collect();
    inputs.sort();
    by.sign(Fact {
        expr: ExprId([expr; 32]),
        workflow: WorkflowId([0; 32]),
        outcome: Outcome::Success {
            outputs: [(
                "out".to_string(),
                OutputRef {
                    blob: BlobId([output; 32]),
                    size: 1,
                },
            )]
            .into(),
        },
        worker: by.public(),
        runner_class: RunnerClass::Public,
        inputs,
        started_at: 1,
        finished_at: 2,
        usage: Usage::default(),
        environment: [0; 32],
    })
    .expect("the fact names its signer")
}

/// A fact by `by` about `expr`, with one output "out" (blob `[9; 32]`).
pub fn fact_about(by: &SecretKey, expr: ExprId, workflow: WorkflowId) -> SignedFact {
    let mut f = fact(by, 9, &[]).body;
    f.expr = expr;
    f.workflow = workflow;
    by.sign(f).expect("the fact names its signer")
}
