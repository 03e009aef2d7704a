//! What a finished job left in its directory: declared outputs, or an analysis
//! exception in `oda-exception.json`.
//!
//! Nothing the job wrote is trusted. An output must be a regular file whose real
//! path (all symlinks resolved) lies inside the job directory, so a job cannot
//! publish a file of the worker (`out.txt -> /etc/shadow`) as its result. The
//! exception file must be a regular file (not a symlink) of at most
//! [`MAX_EXCEPTION_BYTES`], holding a JSON object with string fields `kind`
//! (1 to [`MAX_KIND_BYTES`] bytes) and `message`; other fields are ignored.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use oda_protocol::Manifest;

/// Name of the file, in the job directory, that reports an analysis exception.
pub const EXCEPTION_FILE: &str = "oda-exception.json";
/// Largest accepted exception file.
pub const MAX_EXCEPTION_BYTES: u64 = 64 * 1024;
/// Longest accepted exception kind.
pub const MAX_KIND_BYTES: usize = 256;

/// Find every declared output; the error names the first missing or refused
/// one and its path.
pub(super) fn outputs(
    manifest: &Manifest,
    workdir: &Path,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let root = std::fs::canonicalize(workdir).map_err(|e| {
        format!(
            "cannot resolve the job directory {}: {e}",
            workdir.display()
        )
    })?;
    let mut found = BTreeMap::new();
    for (name, spec) in &manifest.outputs {
        let declared = workdir.join(&spec.path);
        let problem = |what: String| {
            format!(
                "output `{name}` (path `{}` in the job directory): {what}",
                spec.path
            )
        };
        if let Err(e) = std::fs::symlink_metadata(&declared) {
            return Err(problem(if e.kind() == std::io::ErrorKind::NotFound {
                "the job exited successfully but did not write it".into()
            } else {
                format!("cannot inspect it: {e}")
            }));
        }
        let real = std::fs::canonicalize(&declared).map_err(|e| {
            problem(format!(
                "cannot resolve it (a dangling or looping symlink?): {e}"
            ))
        })?;
        if !real.starts_with(&root) {
            return Err(problem(format!(
                "it resolves to {}, outside the job directory; refusing it",
                real.display()
            )));
        }
        let meta =
            std::fs::metadata(&real).map_err(|e| problem(format!("cannot inspect it: {e}")))?;
        if !meta.is_file() {
            return Err(problem("it is not a regular file".into()));
        }
        found.insert(name.clone(), real);
    }
    Ok(found)
}

#[derive(serde::Deserialize)]
struct ExceptionFile {
    kind: String,
    message: String,
}

/// The analysis exception the job reported: `Ok(None)` if there is no exception
/// file, `Err` if there is one but it is not valid.
pub(super) fn exception(workdir: &Path) -> Result<Option<(String, String)>, String> {
    let path = workdir.join(EXCEPTION_FILE);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot inspect {EXCEPTION_FILE}: {e}")),
    };
    if !meta.is_file() {
        return Err(format!("{EXCEPTION_FILE} is not a regular file"));
    }
    if meta.len() > MAX_EXCEPTION_BYTES {
        return Err(format!(
            "{EXCEPTION_FILE} is {} bytes, more than the limit of {MAX_EXCEPTION_BYTES}",
            meta.len()
        ));
    }
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_EXCEPTION_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {EXCEPTION_FILE}: {e}"))?;
    let parsed: ExceptionFile = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{EXCEPTION_FILE} is not a JSON object with string fields `kind` and `message`: {e}"
        )
    })?;
    if parsed.kind.trim().is_empty() || parsed.kind.len() > MAX_KIND_BYTES {
        return Err(format!(
            "{EXCEPTION_FILE}: `kind` must be 1 to {MAX_KIND_BYTES} bytes and not blank"
        ));
    }
    Ok(Some((parsed.kind, parsed.message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(exception(dir.path()).unwrap(), None);
        let p = dir.path().join(EXCEPTION_FILE);
        std::fs::write(&p, r#"{"kind": "NoData", "message": "empty", "extra": 1}"#).unwrap();
        assert_eq!(
            exception(dir.path()).unwrap(),
            Some(("NoData".into(), "empty".into()))
        );
        std::fs::write(&p, r#"{"kind": 3, "message": "x"}"#).unwrap();
        assert!(exception(dir.path()).unwrap_err().contains("string fields"));
        std::fs::write(&p, r#"{"kind": " ", "message": "x"}"#).unwrap();
        assert!(exception(dir.path()).unwrap_err().contains("not blank"));
        std::fs::write(&p, vec![b' '; MAX_EXCEPTION_BYTES as usize + 1]).unwrap();
        assert!(exception(dir.path()).unwrap_err().contains("limit"));
        std::fs::remove_file(&p).unwrap();
        let secret = dir.path().join("elsewhere.json");
        std::fs::write(&secret, r#"{"kind": "K", "message": "m"}"#).unwrap();
        std::os::unix::fs::symlink(&secret, &p).unwrap();
        assert!(exception(dir.path())
            .unwrap_err()
            .contains("not a regular file"));
    }
}
