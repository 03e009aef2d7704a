//! What a worker checks of an advert before it runs the job, so that the
//! fact it signs says only what it knows: the expression is in normal form
//! for the workflow's manifest, the advert's inputs are exactly the
//! expression's `Output` arguments, and each input is backed by the signed
//! fact it names (found in the store, asked of the requester, or looked up
//! in the mesh), whose output is the blob the advert gives. A requester
//! cannot make an honest worker compute on bytes of its choosing and sign
//! the result as if they were the real upstream output. The shape rule is a
//! pure function ([`shape_error`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use oda_protocol::messages::JobAdvert;
use oda_protocol::{Expression, ResolvedInput};

use super::Ctx;
use crate::identity::peer_id_of;
use crate::scheduler::input_facts;

/// Why `inputs` do not fit `expr`'s `Output` arguments, if they do not: one
/// input per `(expression, output name)` argument, no others, sorted (the
/// order a fact's inputs are signed in).
pub(super) fn shape_error(expr: &Expression, inputs: &[ResolvedInput]) -> Option<String> {
    let wanted = expr.output_refs();
    let given: BTreeSet<_> = inputs.iter().map(|i| (i.expr, i.name.clone())).collect();
    if let Some((e, name)) = wanted.difference(&given).next() {
        return Some(format!(
            "the advert gives no input for output {name:?} of {e}"
        ));
    }
    if let Some((e, name)) = given.difference(&wanted).next() {
        return Some(format!(
            "the advert gives an input for output {name:?} of {e}, which the expression does not use"
        ));
    }
    if inputs.len() != wanted.len() || !inputs.windows(2).all(|w| w[0] < w[1]) {
        return Some("the advert's inputs are repeated or not sorted".into());
    }
    None
}

/// Why the advert cannot be run as advertised, when that shows without
/// asking anyone: its expression is not in normal form for a workflow this
/// store holds, or its inputs do not fit the expression (sled reads, served
/// from its cache, as the workflow's trust is looked up).
pub(super) fn unfit(ctx: &Ctx, advert: &JobAdvert) -> Option<String> {
    if let Ok(Some((workflow, _))) = ctx.parts.store.workflow(&advert.expr.workflow) {
        if let Err(e) = advert.expr.check(&workflow.manifest) {
            return Some(format!("the expression does not fit the workflow: {e}"));
        }
        if let Err(e) = ctx.parts.cfg.executors.check(&workflow.manifest.executor) {
            return Some(e);
        }
    }
    shape_error(&advert.expr, &advert.inputs)
}

/// Check the advert's expression against `manifest` and every input
/// against the fact it names (looked up in the store, at the requester, then
/// in the mesh; kept in the store: they are the provenance of the fact this
/// worker will sign).
pub(super) async fn verify(
    ctx: &Arc<Ctx>,
    advert: &JobAdvert,
    manifest: &oda_protocol::Manifest,
) -> Result<(), String> {
    advert
        .expr
        .check(manifest)
        .map_err(|e| format!("the advert's expression does not fit the workflow: {e}"))?;
    if let Some(problem) = shape_error(&advert.expr, &advert.inputs) {
        return Err(problem);
    }
    let requester = peer_id_of(&advert.requester);
    for input in &advert.inputs {
        input_facts::checked(&ctx.parts.store, &ctx.parts.client, input, requester).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oda_protocol::{BlobId, ExprId, FactId, SecretKey, Value, WorkflowId};
    use std::collections::BTreeMap;

    fn input(expr: u8, name: &str) -> ResolvedInput {
        ResolvedInput {
            expr: ExprId([expr; 32]),
            name: name.into(),
            blob: BlobId([9; 32]),
            fact: FactId([expr; 32]),
            signer: SecretKey::from_seed([1; 32]).public(),
        }
    }

    fn output(expr: u8, name: &str) -> Value {
        Value::Output {
            expr: ExprId([expr; 32]),
            name: name.into(),
        }
    }

    #[test]
    fn inputs_must_be_exactly_the_output_arguments_sorted() {
        let expr = Expression {
            workflow: WorkflowId([0; 32]),
            args: BTreeMap::from([
                ("a".to_string(), output(1, "events")),
                (
                    "b".to_string(),
                    Value::List(vec![output(2, "lc"), Value::Int(3)]),
                ),
            ]),
        };
        let good = vec![input(1, "events"), input(2, "lc")];
        assert_eq!(shape_error(&expr, &good), None);

        let missing = shape_error(&expr, &good[..1]).expect("missing");
        assert!(missing.contains("no input for output \"lc\""), "{missing}");
        let mut extra = good.clone();
        extra.push(input(3, "spectrum"));
        let extra = shape_error(&expr, &extra).expect("extra");
        assert!(extra.contains("\"spectrum\""), "{extra}");
        let reversed: Vec<_> = good.iter().rev().cloned().collect();
        assert!(shape_error(&expr, &reversed).is_some(), "unsorted");
        let mut repeated = good.clone();
        repeated.push(ResolvedInput {
            blob: BlobId([8; 32]),
            ..input(2, "lc")
        });
        repeated.sort();
        assert!(shape_error(&expr, &repeated).is_some(), "repeated");

        let no_refs = Expression {
            workflow: WorkflowId([0; 32]),
            args: BTreeMap::new(),
        };
        assert_eq!(shape_error(&no_refs, &[]), None);
    }
}
