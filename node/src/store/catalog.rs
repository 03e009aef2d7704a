//! Workflows (with their bundle blob), expressions and endorsements: small,
//! content-addressed records that are never evicted.

use oda_protocol::{
    BlobId, ExprId, Expression, FactId, SignedDispute, SignedEndorsement, Subject, Workflow,
    WorkflowId,
};

use super::counts;
use super::error::StoreError;
use super::records::{decode, encode, id_at, key_id, subject_prefix, trees, WorkflowRecord};
use super::Store;

/// Most disputes kept per fact (one per disputing key).
pub const MAX_DISPUTES_PER_FACT: usize = 16;

/// Most endorsements kept per fact.
pub const MAX_ENDORSEMENTS_PER_FACT: usize = 16;

impl Store {
    /// Store a workflow and the blob holding its bundle; returns its id. Storing
    /// it again replaces the bundle reference.
    pub fn put_workflow(&self, wf: &Workflow, bundle: BlobId) -> Result<WorkflowId, StoreError> {
        let id = wf.id();
        let rec = WorkflowRecord {
            workflow: wf.clone(),
            bundle,
        };
        let bytes = encode(trees::WORKFLOWS, &rec)?;
        let old = self
            .inner
            .t
            .workflows
            .insert(id.as_bytes(), bytes)
            .map_err(StoreError::db("write workflow"))?;
        counts::added(&self.inner.counts.workflows, old.is_none());
        Ok(id)
    }

    /// The workflow with this id and its bundle blob.
    pub fn workflow(&self, id: &WorkflowId) -> Result<Option<(Workflow, BlobId)>, StoreError> {
        let key = id.as_bytes();
        match self
            .inner
            .t
            .workflows
            .get(key)
            .map_err(StoreError::db("read workflow"))?
        {
            Some(v) => {
                let rec = decode_workflow(key, &v)?;
                Ok(Some((rec.workflow, rec.bundle)))
            }
            None => Ok(None),
        }
    }

    /// Every workflow, ordered by id.
    pub fn workflows(&self) -> Result<Vec<(WorkflowId, Workflow, BlobId)>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.t.workflows.iter() {
            let (k, v) = item.map_err(StoreError::db("list workflows"))?;
            let id = WorkflowId(key_id(trees::WORKFLOWS, &k)?);
            let rec = decode_workflow(&k, &v)?;
            out.push((id, rec.workflow, rec.bundle));
        }
        Ok(out)
    }

    /// Store an expression; returns its id.
    pub fn put_expr(&self, e: &Expression) -> Result<ExprId, StoreError> {
        let id = e.id();
        let bytes = encode(trees::EXPRS, e)?;
        let old = self
            .inner
            .t
            .exprs
            .insert(id.as_bytes(), bytes)
            .map_err(StoreError::db("write expression"))?;
        counts::added(&self.inner.counts.exprs, old.is_none());
        Ok(id)
    }

    /// The expression with this id.
    pub fn expr(&self, id: &ExprId) -> Result<Option<Expression>, StoreError> {
        let key = id.as_bytes();
        let Some(v) = self
            .inner
            .t
            .exprs
            .get(key)
            .map_err(StoreError::db("read expression"))?
        else {
            return Ok(None);
        };
        let e: Expression = decode(trees::EXPRS, key, &v)?;
        if e.id() != *id {
            return Err(StoreError::corrupt(
                trees::EXPRS,
                key,
                format!("the stored expression has id {}", e.id()),
            ));
        }
        Ok(Some(e))
    }

    /// Call `each` with every stored expression of `workflow` (a scan of
    /// all expressions: for diagnostics such as `oda why`); the first error,
    /// of the store or of `each`, ends the scan.
    pub fn exprs_of<E: From<StoreError>>(
        &self,
        workflow: &WorkflowId,
        mut each: impl FnMut(ExprId, Expression) -> Result<(), E>,
    ) -> Result<(), E> {
        for item in self.inner.t.exprs.iter() {
            let (k, v) = item.map_err(StoreError::db("list expressions"))?;
            let e: Expression = decode(trees::EXPRS, &k, &v)?;
            if e.workflow == *workflow {
                each(ExprId(key_id(trees::EXPRS, &k)?), e)?;
            }
        }
        Ok(())
    }

    /// Store an endorsement, after checking its signature. Returns `true` if it was
    /// not stored before; `false` also when its subject has
    /// [`MAX_ENDORSEMENTS_PER_FACT`] endorsements already and is a fact.
    pub fn put_endorsement(&self, e: &SignedEndorsement) -> Result<bool, StoreError> {
        e.verify()
            .map_err(|source| StoreError::BadEndorsement { source })?;
        let prefix = subject_prefix(&e.body.subject);
        if matches!(e.body.subject, Subject::Fact(_))
            && self.inner.t.endorsements.scan_prefix(prefix).count() >= MAX_ENDORSEMENTS_PER_FACT
        {
            return Ok(false);
        }
        let bytes = encode(trees::ENDORSEMENTS, e)?;
        let mut key = prefix.to_vec();
        key.extend_from_slice(blake3::hash(&bytes).as_bytes());
        let swapped = self
            .inner
            .t
            .endorsements
            .compare_and_swap(key, None::<&[u8]>, Some(bytes))
            .map_err(StoreError::db("write endorsement"))?;
        counts::added(&self.inner.counts.endorsements, swapped.is_ok());
        Ok(swapped.is_ok())
    }

    /// Store a dispute of a fact this store holds, after checking its
    /// signature. `Ok(true)` if it is new; `Ok(false)` if that key disputed
    /// the fact before, the fact is not here (disputes of facts a node does
    /// not hold would let anyone fill its disk), or the fact has
    /// [`MAX_DISPUTES_PER_FACT`] disputes already.
    pub fn put_dispute(&self, d: &SignedDispute) -> Result<bool, StoreError> {
        d.verify()
            .map_err(|source| StoreError::BadDispute { source })?;
        let held = self.fact(&d.body.fact)?;
        if held.is_none_or(|f| f.body.expr != d.body.expr) {
            return Ok(false);
        }
        let disputes = &self.inner.t.disputes;
        if disputes.scan_prefix(d.body.fact.0).count() >= MAX_DISPUTES_PER_FACT {
            return Ok(false);
        }
        let key = [d.body.fact.0, d.body.controller.0].concat();
        let swapped = disputes
            .compare_and_swap(key, None::<&[u8]>, Some(encode(trees::DISPUTES, d)?))
            .map_err(StoreError::db("write dispute"))?;
        Ok(swapped.is_ok())
    }

    /// Every dispute held here (at most [`MAX_DISPUTES_PER_FACT`] per held
    /// fact).
    pub fn all_disputes(&self) -> Result<Vec<SignedDispute>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.t.disputes.iter() {
            let (k, v) = item.map_err(StoreError::db("scan disputes"))?;
            out.push(decode(trees::DISPUTES, &k, &v)?);
        }
        Ok(out)
    }

    /// Every dispute of `fact` held here.
    pub fn disputes_of(&self, fact: &FactId) -> Result<Vec<SignedDispute>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.t.disputes.scan_prefix(fact.0) {
            let (k, v) = item.map_err(StoreError::db("scan disputes"))?;
            let d: SignedDispute = decode(trees::DISPUTES, &k, &v)?;
            if d.body.fact != *fact || k[32..] != d.body.controller.0 {
                return Err(StoreError::corrupt(
                    trees::DISPUTES,
                    &k,
                    "the dispute is about another fact or by another key than its key says",
                ));
            }
            out.push(d);
        }
        Ok(out)
    }

    /// Every endorsement of `subject`.
    pub fn endorsements_of(&self, subject: &Subject) -> Result<Vec<SignedEndorsement>, StoreError> {
        let prefix = subject_prefix(subject);
        let mut out = Vec::new();
        for item in self.inner.t.endorsements.scan_prefix(prefix) {
            let (k, v) = item.map_err(StoreError::db("scan endorsements"))?;
            let digest = id_at(trees::ENDORSEMENTS, &k, prefix.len())?;
            if k.len() != prefix.len() + 32 || blake3::hash(&v).as_bytes() != &digest {
                return Err(StoreError::corrupt(
                    trees::ENDORSEMENTS,
                    &k,
                    "the key does not match the record",
                ));
            }
            let e: SignedEndorsement = decode(trees::ENDORSEMENTS, &k, &v)?;
            if e.body.subject != *subject {
                return Err(StoreError::corrupt(
                    trees::ENDORSEMENTS,
                    &k,
                    "the endorsement is about another subject than its key says",
                ));
            }
            out.push(e);
        }
        Ok(out)
    }
}

fn decode_workflow(key: &[u8], bytes: &[u8]) -> Result<WorkflowRecord, StoreError> {
    let rec: WorkflowRecord = decode(trees::WORKFLOWS, key, bytes)?;
    let id = rec.workflow.id();
    if id.as_bytes()[..] != *key {
        return Err(StoreError::corrupt(
            trees::WORKFLOWS,
            key,
            format!("the stored workflow has id {id}"),
        ));
    }
    Ok(rec)
}
