//! Tests of the store against real sled databases and blob files in temp dirs.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use oda_protocol::{
    BlobId, Endorsement, ExprId, Expression, Fact, Manifest, Outcome, OutputRef, RunnerClass,
    SecretKey, SignedFact, Subject, Usage, Value, Workflow, WorkflowId,
};

use super::*;

fn open(dir: &Path, cap: u64) -> (Store, OpenReport) {
    Store::open(StoreConfig::new(dir.to_path_buf(), cap)).expect("open store")
}

fn key() -> SecretKey {
    SecretKey::from_seed([7; 32])
}

fn fact(expr: u8, outputs: &[(&str, BlobId, u64)]) -> SignedFact {
    let k = key();
    let outcome = if outputs.is_empty() {
        Outcome::AnalysisError {
            kind: "no_data".into(),
            message: "nothing in range".into(),
        }
    } else {
        Outcome::Success {
            outputs: outputs
                .iter()
                .map(|(n, blob, size)| {
                    (
                        n.to_string(),
                        OutputRef {
                            blob: *blob,
                            size: *size,
                        },
                    )
                })
                .collect(),
        }
    };
    k.sign(Fact {
        expr: ExprId([expr; 32]),
        workflow: WorkflowId([1; 32]),
        outcome,
        worker: k.public(),
        runner_class: RunnerClass::Public,
        inputs: vec![],
        started_at: 1_000,
        finished_at: 2_000,
        usage: Usage::default(),
        environment: [0; 32],
    })
    .unwrap()
}

fn workflow() -> Workflow {
    let manifest = Manifest::from_toml(
        r#"
        name = "echo"
        version = "1"
        [outputs.out]
        path = "out.txt"
        [executor]
        kind = "command"
        argv = ["echo", "hi"]
        "#,
    )
    .unwrap();
    Workflow::new(manifest, BTreeMap::new()).unwrap()
}

/// Every held fact, in one page.
fn all_held(store: &Store) -> Vec<SignedFact> {
    store.held_facts_after(None, usize::MAX).unwrap()
}

#[test]
fn held_facts_are_read_a_page_at_a_time_each_once_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1 << 20);
    let mut own = Vec::new();
    for i in 0..5u8 {
        let blob = store.put_blob(&[i; 3]).unwrap();
        let f = fact(i, &[("out", blob, 3)]);
        store.put_own_fact(&f).unwrap();
        own.push(f);
    }
    // A fact held by somebody else is not this node's to re-provide.
    store
        .put_fact(&fact(9, &[("out", BlobId::of(b"elsewhere"), 9)]))
        .unwrap();
    own.sort_by_key(|f| f.id());
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store.held_facts_after(after.as_ref(), 2).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|f| f.id());
        pages.push(page);
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(pages.concat(), own);
}

fn blob_files(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(&store.inner.blob_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "tmp")
        .collect();
    names.sort();
    names
}

fn temp_files(store: &Store) -> usize {
    fs::read_dir(&store.inner.tmp_dir).unwrap().count()
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<Store>();
    send_sync::<StoreError>();
    send::<BlobWriter>();
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, wf_id, ex_id, own, other, endorsement);
    {
        let (store, report) = open(dir.path(), 1 << 20);
        assert!(report.is_clean(), "{report:?}");
        a = store.put_blob(b"alpha").unwrap();
        b = store.put_blob(b"beta").unwrap();
        assert_eq!(a, BlobId::of(b"alpha"));
        store.pin(&a).unwrap();

        let wf = workflow();
        wf_id = store.put_workflow(&wf, b).unwrap();
        assert_eq!(wf_id, wf.id());
        let ex = Expression {
            workflow: wf_id,
            args: BTreeMap::from([("x".to_string(), Value::Int(3))]),
        };
        ex_id = store.put_expr(&ex).unwrap();

        own = fact(9, &[("out", a, 5)]);
        other = fact(9, &[("out", BlobId::of(b"elsewhere"), 9)]);
        assert!(store.put_own_fact(&own).unwrap());
        assert!(store.put_fact(&other).unwrap());
        assert!(!store.put_fact(&other).unwrap(), "second put is not new");

        endorsement = key()
            .sign(Endorsement {
                endorser: key().public(),
                subject: Subject::Workflow(wf_id),
                issued_at: 5,
                note: "fine".into(),
            })
            .unwrap();
        assert!(store.put_endorsement(&endorsement).unwrap());
        assert!(!store.put_endorsement(&endorsement).unwrap());
        store.flush().unwrap();
    }
    let (store, report) = open(dir.path(), 1 << 20);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(store.read_range(&a, 0, 5).unwrap(), b"alpha");
    assert_eq!(store.blob_size(&b), Some(4));
    let metas = store.list_blobs().unwrap();
    assert_eq!(metas.len(), 2);
    assert!(metas.iter().find(|m| m.id == a).unwrap().pinned);
    assert!(!metas.iter().find(|m| m.id == b).unwrap().pinned);

    assert_eq!(store.fact(&own.id()).unwrap().as_ref(), Some(&own));
    let mut for_expr = store.facts_for(&ExprId([9; 32])).unwrap();
    for_expr.sort_by_key(|f| f.id());
    let mut expected = vec![own.clone(), other.clone()];
    expected.sort_by_key(|f| f.id());
    assert_eq!(for_expr, expected);
    assert!(store.facts_for(&ExprId([8; 32])).unwrap().is_empty());
    assert_eq!(all_held(&store), vec![own.clone()]);
    assert!(store.is_held(&own.id()).unwrap());
    assert!(!store.is_held(&other.id()).unwrap());
    assert_eq!(store.fact_count().unwrap(), 2);

    let (wf, bundle) = store.workflow(&wf_id).unwrap().unwrap();
    assert_eq!((wf.id(), bundle), (wf_id, b));
    assert_eq!(store.workflows().unwrap().len(), 1);
    assert_eq!(store.expr(&ex_id).unwrap().unwrap().id(), ex_id);
    assert_eq!(
        store.endorsements_of(&Subject::Workflow(wf_id)).unwrap(),
        vec![endorsement]
    );
    assert!(store
        .endorsements_of(&Subject::Fact(own.id()))
        .unwrap()
        .is_empty());

    let stats = store.stats().unwrap();
    assert_eq!(
        stats,
        StoreStats {
            blobs: 2,
            blob_bytes: 9,
            pinned_blobs: 1,
            pinned_bytes: 5,
            cap_bytes: 1 << 20,
            facts: 2,
            held_facts: 1,
            workflows: 1,
            exprs: 1,
            endorsements: 1,
        }
    );
}

#[test]
fn a_blob_a_job_reads_is_never_evicted_until_its_guard_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 150);
    let input = store.put_blob(&[b'i'; 100]).unwrap();
    assert!(store.use_blob(&BlobId([9; 32])).is_none(), "absent blob");
    let first = store.use_blob(&input).unwrap();
    let second = store.use_blob(&input).unwrap();
    assert_eq!(first.path(), store.blob_path(&input).unwrap());
    // Over the cap with the input least recently used: the input stays.
    let other = store.put_blob(&[b'o'; 100]).unwrap();
    assert!(store.has_blob(&input) && first.path().exists());
    assert_eq!(store.blob_bytes(), 200, "nothing could be evicted");
    assert!(matches!(store.remove_blob(&input), Err(StoreError::InUse(id)) if id == input));
    // One of two guards gone: still in use.
    drop(first);
    assert!(matches!(
        store.remove_blob(&input),
        Err(StoreError::InUse(_))
    ));
    // Both gone: the least recently used blob goes first.
    drop(second);
    assert_eq!(store.gc().unwrap().evicted, vec![input]);
    assert!(!store.has_blob(&input) && store.has_blob(&other));
}

#[test]
fn eviction_is_lru_respects_pins_and_the_cap_and_demotes_held_facts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 300);
    let a = store.put_blob(&[b'a'; 100]).unwrap();
    let b = store.put_blob(&[b'b'; 100]).unwrap();
    let c = store.put_blob(&[b'c'; 100]).unwrap();
    store.pin(&a).unwrap();
    // b becomes more recently used than c.
    store.read_range(&b, 0, 1).unwrap();
    let held = fact(1, &[("out", c, 100)]);
    assert!(store.put_own_fact(&held).unwrap());

    // 400 > 300: the least recently used unpinned blob (c) goes, not the new one.
    let d = store.put_blob(&[b'd'; 100]).unwrap();
    assert!(!store.has_blob(&c));
    assert!(!store.blob_path(&c).is_some_and(|p| p.exists()));
    assert!(store.has_blob(&a) && store.has_blob(&b) && store.has_blob(&d));
    assert_eq!(store.blob_bytes(), 300);
    // The fact whose output was evicted is kept but no longer held.
    assert_eq!(store.fact(&held.id()).unwrap(), Some(held.clone()));
    assert!(!store.is_held(&held.id()).unwrap());
    assert!(all_held(&store).is_empty());

    // A big write: b then d are evicted, a is pinned, e was just written: over cap.
    let e = store.put_blob(&[b'e'; 250]).unwrap();
    assert!(!store.has_blob(&b) && !store.has_blob(&d));
    assert!(store.has_blob(&a) && store.has_blob(&e));
    assert_eq!(store.blob_bytes(), 350);

    // An explicit gc may evict e (nothing protects it); a stays.
    let report = store.gc().unwrap();
    assert_eq!(report.evicted, vec![e]);
    assert_eq!(report.freed_bytes, 250);
    assert_eq!(report.total_bytes_after, 100);
    assert!(!report.over_cap());

    // Everything pinned and above the cap: reported, not an error.
    let f = store.put_blob(&[b'f'; 250]).unwrap();
    store.pin(&f).unwrap();
    let report = store.gc().unwrap();
    assert!(report.evicted.is_empty());
    assert!(report.over_cap(), "{report:?}");
    assert_eq!(report.total_bytes_after, 350);
    assert!(matches!(store.remove_blob(&f), Err(StoreError::Pinned(id)) if id == f));
    store.unpin(&f).unwrap();
    assert!(store.remove_blob(&f).unwrap().is_empty());
    assert_eq!(blob_files(&store), vec![a.to_string()]);
}

#[test]
fn rewriting_a_blob_keeps_its_pin_and_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1000);
    let a = store.put_blob(b"same bytes").unwrap();
    store.pin(&a).unwrap();
    assert_eq!(store.put_blob(b"same bytes").unwrap(), a);
    assert_eq!(store.blob_bytes(), 10);
    assert!(store.list_blobs().unwrap()[0].pinned);
    assert_eq!(temp_files(&store), 0);
}

#[test]
fn interrupted_and_mismatched_writes_leave_no_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1 << 20);
    let mut w = store.blob_writer().unwrap();
    w.write(b"half of a blob").unwrap();
    assert_eq!(w.written(), 14);
    assert_eq!(temp_files(&store), 1);
    drop(w);
    assert_eq!(temp_files(&store), 0);
    assert!(blob_files(&store).is_empty());
    assert!(store.list_blobs().unwrap().is_empty());

    let expected = BlobId::of(b"what was announced");
    let mut w = store.blob_writer().unwrap();
    w.write(b"what was sent").unwrap();
    match w.finish(Some(expected)) {
        Err(StoreError::HashMismatch {
            expected: e,
            actual,
        }) => {
            assert_eq!(e, expected);
            assert_eq!(actual, BlobId::of(b"what was sent"));
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    assert_eq!(temp_files(&store), 0);
    assert!(blob_files(&store).is_empty());
    assert!(!store.has_blob(&BlobId::of(b"what was sent")));

    let mut w = store.blob_writer().unwrap();
    w.write(b"what was ").unwrap();
    w.write(b"sent").unwrap();
    let id = w.finish(Some(BlobId::of(b"what was sent"))).unwrap();
    assert_eq!(store.read_range(&id, 0, 13).unwrap(), b"what was sent");
}

#[test]
fn reopen_after_a_crash_repairs_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, lost, held, intact);
    {
        let (store, _) = open(dir.path(), 1 << 20);
        kept = store.put_blob(b"kept").unwrap();
        lost = store.put_blob(b"lost").unwrap();
        held = fact(2, &[("out", lost, 4)]);
        intact = fact(3, &[("out", kept, 4)]);
        store.put_own_fact(&held).unwrap();
        store.put_own_fact(&intact).unwrap();
        store.flush().unwrap();
    }
    let blobs = dir.path().join("blobs");
    // A write interrupted before its rename.
    fs::write(blobs.join("tmp").join("0123.tmp"), b"partial").unwrap();
    // Metadata whose file vanished (and a held fact using it).
    fs::remove_file(blobs.join(lost.to_string())).unwrap();
    // A file renamed into place whose metadata never made it: adopted.
    let orphan = BlobId::of(b"orphan");
    fs::write(blobs.join(orphan.to_string()), b"orphan").unwrap();
    // A file whose content does not match its name, and a stray file: deleted.
    fs::write(blobs.join(BlobId::of(b"x").to_string()), b"not x").unwrap();
    fs::write(blobs.join("notes.txt"), b"?").unwrap();

    let (store, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.temp_files_removed, 1, "{report:?}");
    assert_eq!(report.metas_without_file, 1, "{report:?}");
    assert_eq!(report.orphan_files_adopted, 1, "{report:?}");
    assert_eq!(report.orphan_files_removed, 2, "{report:?}");
    assert_eq!(report.facts_demoted, vec![held.id()]);
    assert!(report.gc.is_none());

    assert!(!store.has_blob(&lost));
    assert_eq!(store.read_range(&orphan, 0, 6).unwrap(), b"orphan");
    assert_eq!(store.blob_bytes(), 10);
    let mut expected = vec![kept.to_string(), orphan.to_string()];
    expected.sort();
    assert_eq!(blob_files(&store), expected);
    assert_eq!(temp_files(&store), 0);
    // The demoted fact is kept; the intact one is still held.
    assert_eq!(store.fact(&held.id()).unwrap(), Some(held));
    assert_eq!(all_held(&store), vec![intact]);
    drop(store);

    // A second open finds nothing more to do.
    let (_, report) = open(dir.path(), 1 << 20);
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn corrupt_records_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let (store, _) = open(dir.path(), 1 << 20);
        id = store.put_blob(b"bytes").unwrap();
        let t = &store.inner.t;
        t.facts.insert([5u8; 32], &b"garbage"[..]).unwrap();
        t.facts_by_expr
            .insert(&super::records::pair_key(&[6; 32], &[5; 32])[..], &[][..])
            .unwrap();
        t.blob_meta.insert(id.as_bytes(), &b"\xff"[..]).unwrap();
        t.exprs.insert([4u8; 32], &b""[..]).unwrap();
        store.flush().unwrap();
    }
    let (store, report) = open(dir.path(), 1 << 20);
    // The unreadable metadata is dropped and the file adopted again.
    assert_eq!(report.corrupt_metas_removed, 1, "{report:?}");
    assert_eq!(report.orphan_files_adopted, 1, "{report:?}");
    assert_eq!(store.blob_size(&id), Some(5));

    let err = store.fact(&oda_protocol::FactId([5; 32])).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { tree: "facts", key, .. } if *key == "05".repeat(32)),
        "{err}"
    );
    assert!(matches!(
        store.facts_for(&ExprId([6; 32])),
        Err(StoreError::Corrupt { tree: "facts", .. })
    ));
    assert!(matches!(
        store.expr(&ExprId([4; 32])),
        Err(StoreError::Corrupt { tree: "exprs", .. })
    ));
}

#[test]
fn ranged_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1 << 20);
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let id = store.put_blob(&data).unwrap();
    assert_eq!(store.read_range(&id, 10, 20).unwrap(), &data[10..30]);
    assert_eq!(store.read_range(&id, 990, 10).unwrap(), &data[990..]);
    assert!(store.read_range(&id, 1000, 0).unwrap().is_empty());
    for (offset, len) in [(995, 10), (1001, 0), (2000, 1), (u64::MAX, 2)] {
        match store.read_range(&id, offset, len) {
            Err(StoreError::RangeOutOfBounds { size: 1000, .. }) => {}
            other => panic!("{offset}+{len}: expected out of bounds, got {other:?}"),
        }
    }
    let msg = store.read_range(&id, 995, 10).unwrap_err().to_string();
    assert!(
        msg.contains("offset 995") && msg.contains("1000 bytes"),
        "{msg}"
    );
    assert!(matches!(
        store.read_range(&id, 0, MAX_RANGE_READ + 1),
        Err(StoreError::RangeTooLarge { .. })
    ));
    let missing = BlobId::of(b"missing");
    assert!(
        matches!(store.read_range(&missing, 0, 1), Err(StoreError::BlobNotFound(b)) if b == missing)
    );
    assert!(matches!(
        store.pin(&missing),
        Err(StoreError::BlobNotFound(_))
    ));
    assert_eq!(store.blob_path(&missing), None);
    assert_eq!(fs::read(store.blob_path(&id).unwrap()).unwrap(), data);
}

#[test]
fn put_fact_rejects_a_forged_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1 << 20);
    let mut forged = fact(1, &[]);
    forged.body.finished_at += 1;
    assert!(matches!(
        store.put_fact(&forged),
        Err(StoreError::BadFact { fact, .. }) if fact == forged.id()
    ));
    // Another key's signature over a fact naming our key.
    let mut stolen = fact(1, &[]);
    let other = SecretKey::from_seed([8; 32]);
    let mut body = stolen.body.clone();
    body.worker = other.public();
    stolen.signature = other.sign(body).unwrap().signature;
    assert!(matches!(
        store.put_fact(&stolen),
        Err(StoreError::BadFact { .. })
    ));
    assert!(matches!(
        store.put_own_fact(&stolen),
        Err(StoreError::BadFact { .. })
    ));
    assert_eq!(store.fact_count().unwrap(), 0);
    assert!(store.facts_for(&ExprId([1; 32])).unwrap().is_empty());

    let mut bad = key()
        .sign(Endorsement {
            endorser: key().public(),
            subject: Subject::Fact(forged.id()),
            issued_at: 1,
            note: String::new(),
        })
        .unwrap();
    bad.body.note = "changed".into();
    assert!(matches!(
        store.put_endorsement(&bad),
        Err(StoreError::BadEndorsement { .. })
    ));
}

#[test]
fn put_own_fact_refuses_missing_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1 << 20);
    let present = store.put_blob(b"present").unwrap();
    let absent = BlobId::of(b"absent");
    let f = fact(1, &[("a", present, 7), ("b", absent, 6)]);
    match store.put_own_fact(&f) {
        Err(StoreError::MissingOutput { fact, output, blob }) => {
            assert_eq!((fact, output.as_str(), blob), (f.id(), "b", absent));
        }
        other => panic!("expected a missing output, got {other:?}"),
    }
    assert_eq!(store.fact(&f.id()).unwrap(), None);
    assert!(all_held(&store).is_empty());

    store.put_blob(b"absent").unwrap();
    assert!(store.put_own_fact(&f).unwrap());
    assert_eq!(all_held(&store), vec![f.clone()]);
    // Evicting either output demotes it, once.
    assert_eq!(store.remove_blob(&absent).unwrap(), vec![f.id()]);
    assert!(store.remove_blob(&present).unwrap().is_empty());
    assert!(!store.is_held(&f.id()).unwrap());
    // A fact with an analysis error has no outputs and can always be held.
    assert!(store.put_own_fact(&fact(2, &[])).unwrap());
}

#[test]
fn import_file_streams_a_large_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1 << 30);
    let src = dir.path().join("input.bin");
    let mut file = fs::File::create(&src).unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut chunk = vec![0u8; 1 << 20];
    for i in 0..50u8 {
        chunk.fill(i);
        chunk[0] = i.wrapping_mul(7);
        file.write_all(&chunk).unwrap();
        hasher.update(&chunk);
    }
    drop(file);
    let id = store.import_file(&src).unwrap();
    assert_eq!(id, BlobId(*hasher.finalize().as_bytes()));
    assert_eq!(store.blob_size(&id), Some(50 << 20));
    assert_eq!(
        store.read_range(&id, (49 << 20) + 1, 2).unwrap(),
        vec![49, 49]
    );
    assert!(matches!(
        store.import_file(&dir.path().join("nope")),
        Err(StoreError::Io {
            op: "open file to import",
            ..
        })
    ));
}

#[test]
fn named_trees_for_other_modules() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), 1);
        assert!(matches!(
            store.tree("facts"),
            Err(StoreError::ReservedTree(_))
        ));
        assert!(matches!(
            store.tree("__sled__default"),
            Err(StoreError::ReservedTree(_))
        ));
        store.tree("jobs").unwrap().insert(b"k", b"v").unwrap();
        store.flush().unwrap();
    }
    let (store, _) = open(dir.path(), 1);
    assert_eq!(
        store.tree("jobs").unwrap().get(b"k").unwrap().unwrap(),
        b"v"
    );
}

#[test]
fn a_second_open_of_the_same_dir_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _) = open(dir.path(), 1);
    let err = Store::open(StoreConfig::new(dir.path().to_path_buf(), 1)).unwrap_err();
    assert!(matches!(err, StoreError::OpenDb { .. }), "{err}");
}

#[test]
fn lowering_the_cap_evicts_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b);
    {
        let (store, _) = open(dir.path(), 1000);
        a = store.put_blob(&[1; 100]).unwrap();
        b = store.put_blob(&[2; 100]).unwrap();
        store.flush().unwrap();
    }
    let (store, report) = open(dir.path(), 150);
    let gc = report.gc.expect("eviction at open");
    assert_eq!(gc.evicted, vec![a]);
    assert!(store.has_blob(&b) && !store.has_blob(&a));
}

/// The running counts equal a fresh scan of the store.
fn assert_counts_match_a_scan(store: &Store, step: &str) {
    let kept = store.stats().unwrap();
    store.recount().unwrap();
    assert_eq!(kept, store.stats().unwrap(), "after {step}");
}

#[test]
fn stats_are_kept_by_every_write_without_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 300);
    let a = store.put_blob(&[b'a'; 100]).unwrap();
    let c = store.put_blob(&[b'c'; 100]).unwrap();
    store.put_blob(&[b'a'; 100]).unwrap();
    store.pin(&a).unwrap();
    store.pin(&a).unwrap();
    assert_counts_match_a_scan(&store, "blobs written twice and pinned twice");
    let held = fact(1, &[("out", c, 100)]);
    assert!(store.put_own_fact(&held).unwrap());
    assert!(!store.put_own_fact(&held).unwrap());
    assert!(store.put_fact(&fact(2, &[])).unwrap());
    assert!(!store.put_fact(&fact(2, &[])).unwrap());
    let wf = workflow();
    store.put_workflow(&wf, a).unwrap();
    store.put_workflow(&wf, a).unwrap();
    let e = Expression {
        workflow: wf.id(),
        args: BTreeMap::new(),
    };
    store.put_expr(&e).unwrap();
    store.put_expr(&e).unwrap();
    assert_counts_match_a_scan(&store, "facts, workflows and expressions written twice");
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.facts, stats.held_facts, stats.workflows, stats.exprs),
        (2, 1, 1, 1)
    );
    assert_eq!(
        (stats.blobs, stats.pinned_blobs, stats.pinned_bytes),
        (2, 1, 100)
    );
    // Evicting c demotes the fact that held it.
    store.put_blob(&[b'd'; 150]).unwrap();
    assert!(!store.has_blob(&c));
    assert_counts_match_a_scan(&store, "an eviction that demoted a held fact");
    store.unpin(&a).unwrap();
    store.remove_blob(&a).unwrap();
    assert_counts_match_a_scan(&store, "an unpin and a removal");
    drop(store);
    let (store, _) = open(dir.path(), 300);
    assert_counts_match_a_scan(&store, "a reopen");
    assert_eq!(store.stats().unwrap().facts, 2);
}

/// Write `version` as the store's format version (as an older or newer
/// build would have left it).
fn set_format(dir: &Path, version: u32) {
    // sled's background thread may hold the lock of a store just dropped
    // for a moment: retry for up to 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::open(dir.join("db")) {
            Ok(db) => break db,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open the store's database: {e}"),
        }
    };
    db.open_tree(trees::STORE_META)
        .unwrap()
        .insert(FORMAT_KEY, &version.to_le_bytes())
        .unwrap();
    db.flush().unwrap();
}

#[test]
fn a_format_1_store_is_upgraded_dropping_its_facts_and_keeping_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, ex_id, held, endorsed_wf);
    {
        let (store, _) = open(dir.path(), 1 << 20);
        blob = store.put_blob(b"alpha").unwrap();
        endorsed_wf = store.put_workflow(&workflow(), blob).unwrap();
        ex_id = store
            .put_expr(&Expression {
                workflow: endorsed_wf,
                args: BTreeMap::new(),
            })
            .unwrap();
        held = fact(9, &[("out", blob, 5)]);
        store.put_own_fact(&held).unwrap();
        store.put_fact(&fact(8, &[])).unwrap();
        for subject in [Subject::Workflow(endorsed_wf), Subject::Fact(held.id())] {
            let e = key()
                .sign(Endorsement {
                    endorser: key().public(),
                    subject,
                    issued_at: 5,
                    note: String::new(),
                })
                .unwrap();
            store.put_endorsement(&e).unwrap();
        }
        store.flush().unwrap();
    }
    set_format(dir.path(), 1);
    let (store, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.facts_dropped_by_upgrade, 2);
    assert!(report.is_clean(), "an upgrade is not a repair: {report:?}");
    assert!(store.facts_for(&ExprId([9; 32])).unwrap().is_empty());
    assert!(all_held(&store).is_empty());
    assert_eq!(store.read_range(&blob, 0, 5).unwrap(), b"alpha");
    assert!(store.expr(&ex_id).unwrap().is_some());
    assert!(store.workflow(&endorsed_wf).unwrap().is_some());
    assert_eq!(
        store
            .endorsements_of(&Subject::Workflow(endorsed_wf))
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .endorsements_of(&Subject::Fact(held.id()))
        .unwrap()
        .is_empty());
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.facts, stats.held_facts, stats.endorsements),
        (0, 0, 1)
    );
    drop(store);
    // Upgraded once: the next open finds the current format.
    let (_, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.facts_dropped_by_upgrade, 0);
}

#[test]
fn a_format_2_store_keeps_its_jobs_with_a_quorum_of_one() {
    use crate::scheduler::jobs::{JobId, JobRecord, JobState, JobStore};
    use oda_protocol::Wire;
    let dir = tempfile::tempdir().unwrap();
    let record = JobRecord {
        id: JobId::random(),
        expr: ExprId([4; 32]),
        state: JobState::Queued,
        attempts: Vec::new(),
        created_at: 1,
        updated_at: 2,
        fact: None,
        from_cache: false,
        error: Some("why".into()),
        no_cache: true,
        quorum: 1,
    };
    {
        let (store, _) = open(dir.path(), 1 << 20);
        // A format-2 record: the same encoding without the quorum (its
        // last byte, the varint 1).
        let mut v2 = record.encode().unwrap();
        assert_eq!(v2.pop(), Some(1));
        store
            .tree(crate::store::JOBS_TREE)
            .unwrap()
            .insert(record.id.0, v2)
            .unwrap();
        store.flush().unwrap();
    }
    set_format(dir.path(), 2);
    for _ in 0..2 {
        // Upgraded at the first open; the second finds nothing to do.
        let (store, report) = open(dir.path(), 1 << 20);
        assert!(report.is_clean(), "{report:?}");
        let jobs = JobStore::open(&store).unwrap();
        assert_eq!(jobs.get(&record.id).unwrap(), Some(record.clone()));
    }
}

#[test]
fn disputes_are_kept_only_for_held_facts_once_per_key() {
    use oda_protocol::{Dispute, SecretKey, Signature};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1 << 20);
    let blob = store.put_blob(b"alpha").unwrap();
    let held = fact(9, &[("out", blob, 5)]);
    store.put_fact(&held).unwrap();
    let dispute = |by: &SecretKey, fact: FactId| {
        by.sign(Dispute {
            controller: by.public(),
            fact,
            expr: ExprId([9; 32]),
            observed: [("out".to_string(), BlobId([7; 32]))].into(),
            issued_at: 5,
            reason: "2 of 2 trusted workers agree on other outputs".into(),
        })
        .unwrap()
    };
    let (a, b) = (
        SecretKey::from_seed([21; 32]),
        SecretKey::from_seed([22; 32]),
    );
    assert!(store.put_dispute(&dispute(&a, held.id())).unwrap());
    assert!(
        !store.put_dispute(&dispute(&a, held.id())).unwrap(),
        "once per key"
    );
    assert!(store.put_dispute(&dispute(&b, held.id())).unwrap());
    assert!(
        !store.put_dispute(&dispute(&a, FactId([1; 32]))).unwrap(),
        "a fact not held here"
    );
    let mut forged = dispute(&a, held.id());
    forged.signature = Signature([0; 64]);
    assert!(matches!(
        store.put_dispute(&forged),
        Err(StoreError::BadDispute { .. })
    ));
    let kept = store.disputes_of(&held.id()).unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|d| d.body.fact == held.id()));
    for seed in 0..40u8 {
        let _ = store.put_dispute(&dispute(&SecretKey::from_seed([100 + seed; 32]), held.id()));
    }
    assert_eq!(
        store.disputes_of(&held.id()).unwrap().len(),
        super::catalog::MAX_DISPUTES_PER_FACT,
        "bounded per fact"
    );
    assert_eq!(
        store.all_disputes().unwrap().len(),
        super::catalog::MAX_DISPUTES_PER_FACT,
        "every dispute, of every fact"
    );

    // Endorsements of a fact are bounded per fact too.
    let endorse = |seed: u8| {
        let by = SecretKey::from_seed([seed; 32]);
        by.sign(oda_protocol::Endorsement {
            endorser: by.public(),
            subject: oda_protocol::Subject::Fact(held.id()),
            issued_at: 5,
            note: "re-computed: the same outcome".into(),
        })
        .unwrap()
    };
    assert!(store.put_endorsement(&endorse(1)).unwrap());
    assert!(!store.put_endorsement(&endorse(1)).unwrap(), "once");
    for seed in 2..40u8 {
        let _ = store.put_endorsement(&endorse(seed));
    }
    assert_eq!(
        store
            .endorsements_of(&oda_protocol::Subject::Fact(held.id()))
            .unwrap()
            .len(),
        super::catalog::MAX_ENDORSEMENTS_PER_FACT
    );
}

#[test]
fn a_store_of_a_newer_format_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 1 << 20));
    set_format(dir.path(), FORMAT_VERSION + 1);
    let err = Store::open(StoreConfig::new(dir.path().to_path_buf(), 1 << 20)).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedFormat { found, supported, .. }
            if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{err}"
    );
}
