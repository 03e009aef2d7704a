//! Shared checks for the fuzz targets. Each target feeds arbitrary bytes to one
//! decoder; whatever decodes must survive a canonical round trip and every
//! operation a node performs on a received value, without panicking.

use oda_protocol::bundle::WorkflowBundle;
use oda_protocol::{Expression, Manifest, Signable, Signed, Wire, Workflow};

/// The golden `spectrum-fit` manifest: received expressions are checked against
/// it, which exercises argument validation with arbitrary values.
pub const GOLDEN_MANIFEST: &str = include_str!("../../tests/golden/spectrum-fit/manifest.toml");

/// Decode `data` as `T`; if that works, the value must re-encode canonically and
/// decode again to the same bytes.
pub fn round_trip<T: Wire>(data: &[u8]) -> Option<T> {
    let value = T::decode(data).ok()?;
    let canonical = value
        .encode()
        .expect("a decoded value re-encodes within its limit");
    let again = T::decode(&canonical).expect("a canonical encoding decodes");
    assert_eq!(
        again.encode().expect("re-encodes"),
        canonical,
        "canonical encoding is stable"
    );
    Some(value)
}

/// Decode a signed object and verify it (the result does not matter, only that
/// nothing panics).
pub fn signed<T: Signable>(data: &[u8]) -> Option<Signed<T>>
where
    Signed<T>: Wire,
{
    let value = round_trip::<Signed<T>>(data)?;
    let _ = value.verify();
    Some(value)
}

/// A decoded expression: compute its id and dependencies, check it against the
/// golden manifest.
pub fn expression(data: &[u8]) {
    if let Some(e) = round_trip::<Expression>(data) {
        let _ = e.id();
        let _ = e.dependencies();
        let _ = e.output_refs();
        if let Ok(m) = Manifest::from_toml(GOLDEN_MANIFEST) {
            let _ = e.check(&m);
        }
    }
}

/// A decoded workflow: compute its id, and check an empty expression against it.
pub fn workflow(data: &[u8]) {
    if let Some(w) = round_trip::<Workflow>(data) {
        let id = w.id();
        let _ = Expression::new(id, &w.manifest, Default::default());
        let _ = w.manifest.required_inputs().count();
    }
}

/// Manifest TOML: parse and validate; if accepted, build a workflow and an
/// expression of the defaults.
pub fn manifest_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Manifest::from_toml(text) {
        let files = m
            .files
            .iter()
            .map(|f| (f.clone(), oda_protocol::BlobId::of(f.as_bytes())))
            .collect();
        let w = Workflow::new(m, files).expect("declared files are provided");
        // A manifest within the TOML limit can still encode to more than the
        // workflow limit (long default lists grow: `1,` is 2 bytes of TOML, 9
        // encoded), so encoding may refuse it; it must not panic.
        if let Ok(bytes) = w.encode() {
            assert_eq!(Workflow::decode(&bytes).expect("decodes").id(), w.id());
        }
        if let Ok(e) = Expression::new(w.id(), &w.manifest, Default::default()) {
            e.check(&w.manifest)
                .expect("a fresh expression is in normal form");
        }
    }
}

/// A workflow bundle (bytes a worker fetched from an untrusted peer): rebuild
/// the workflow and verify it against its own id and against another one.
pub fn bundle(data: &[u8]) {
    if let Some(b) = round_trip::<WorkflowBundle>(data) {
        let _ = b.file_bytes();
        if let Ok(w) = b.workflow() {
            assert_eq!(b.verify(&w.id()).expect("verifies against its own id"), w);
            assert!(b.verify(&oda_protocol::WorkflowId([0; 32])).is_err());
        }
    }
}
