//! [`WorkflowBundle`]: a workflow's manifest text and bundled files in one blob,
//! so that a worker can fetch a workflow it trusts from the mesh.
//!
//! A bundle is an ordinary blob (its [`crate::BlobId`] is the BLAKE3 of its
//! [`Wire`] encoding). Its bytes may come from an untrusted peer, so a receiver
//! never uses a bundle because of where it came from: it rebuilds the
//! [`Workflow`] with [`WorkflowBundle::workflow`] (which parses and validates the
//! manifest and hashes every file) and accepts the bundle only if
//! `bundle.workflow()?.id()` equals the [`WorkflowId`] it trusts
//! ([`WorkflowBundle::verify`]).
//!
//! The manifest text is carried as written by the author (comments and all); the
//! workflow id covers only its canonical parsed form, so two bundles that differ
//! only in manifest formatting verify against the same id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec::{limits, Wire};
use crate::ids::{BlobId, WorkflowId};
use crate::manifest::{is_safe_relative_path, Manifest, ManifestError, Workflow};

/// A workflow's manifest text and the bytes of every file it bundles.
///
/// Wire note: the encoding of this struct is the bundle blob; adding, removing or
/// reordering a field changes every bundle's blob id (not the workflow id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowBundle {
    /// The manifest TOML exactly as written in the workflow folder.
    pub manifest_toml: String,
    /// Bundled files: safe relative path → bytes. Keys must equal the manifest's
    /// `files`.
    pub files: BTreeMap<String, ByteBuf>,
}

/// Why a bundle does not yield a valid workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The manifest text is not a valid manifest.
    #[error("workflow bundle: {0}")]
    Manifest(#[from] ManifestError),
    /// The manifest declares a file the bundle does not carry.
    #[error("workflow bundle lacks the file {0:?} that its manifest declares in `files`")]
    MissingFile(String),
    /// The bundle carries a file the manifest does not declare.
    #[error(
        "workflow bundle carries the file {0:?}, which its manifest does not declare in `files`"
    )]
    ExtraFile(String),
    /// A file path is not a safe relative path.
    #[error("workflow bundle carries a file with the unsafe path {0:?}")]
    UnsafePath(String),
    /// The bundle is a valid workflow, but not the one expected.
    #[error("workflow bundle is workflow {found:#}, not the expected {expected:#}: its manifest or files differ; refusing it")]
    WrongWorkflow {
        /// The id the caller trusts.
        expected: WorkflowId,
        /// The id of the workflow the bundle actually holds.
        found: WorkflowId,
    },
}

impl WorkflowBundle {
    /// Parse the manifest, hash every file and build the [`Workflow`]. Fails if
    /// the manifest is invalid or the files do not match its `files` exactly.
    pub fn workflow(&self) -> Result<Workflow, BundleError> {
        let manifest = Manifest::from_toml(&self.manifest_toml)?;
        if let Some(path) = self.files.keys().find(|p| !is_safe_relative_path(p)) {
            return Err(BundleError::UnsafePath(path.clone()));
        }
        if let Some(missing) = manifest.files.iter().find(|f| !self.files.contains_key(*f)) {
            return Err(BundleError::MissingFile(missing.clone()));
        }
        if let Some(extra) = self.files.keys().find(|f| !manifest.files.contains(*f)) {
            return Err(BundleError::ExtraFile(extra.clone()));
        }
        let hashes = self
            .files
            .iter()
            .map(|(path, bytes)| (path.clone(), BlobId::of(bytes)))
            .collect();
        Ok(Workflow::new(manifest, hashes)?)
    }

    /// [`WorkflowBundle::workflow`], accepted only if its id is `expected`. This
    /// is how a bundle fetched from an untrusted peer is checked.
    pub fn verify(&self, expected: &WorkflowId) -> Result<Workflow, BundleError> {
        let wf = self.workflow()?;
        let found = wf.id();
        if &found != expected {
            return Err(BundleError::WrongWorkflow {
                expected: *expected,
                found,
            });
        }
        Ok(wf)
    }

    /// Total number of file bytes carried.
    pub fn file_bytes(&self) -> u64 {
        self.files.values().map(|b| b.len() as u64).sum()
    }
}

impl Wire for WorkflowBundle {
    const WHAT: &'static str = "workflow bundle";
    const MAX_SIZE: usize = limits::BUNDLE;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
name = "fit"
version = "1"
files = ["run.py", "lib/util.py"]
[outputs.result]
path = "out.txt"
[executor]
kind = "command"
argv = ["python3", "{bundle}/run.py"]
"#;

    fn bundle() -> WorkflowBundle {
        let mut files = BTreeMap::new();
        files.insert("run.py".into(), ByteBuf::from(b"print(1)\n".to_vec()));
        files.insert("lib/util.py".into(), ByteBuf::from(b"X = 2\n".to_vec()));
        WorkflowBundle {
            manifest_toml: MANIFEST.into(),
            files,
        }
    }

    #[test]
    fn bundle_round_trips_and_verifies() {
        let b = bundle();
        let bytes = b.encode().unwrap();
        let back = WorkflowBundle::decode(&bytes).unwrap();
        assert_eq!(back, b);
        let wf = back.workflow().unwrap();
        assert_eq!(wf.files["run.py"], BlobId::of(b"print(1)\n"));
        assert_eq!(back.verify(&wf.id()).unwrap(), wf);
        assert_eq!(b.file_bytes(), 15);
    }

    #[test]
    fn bundle_with_altered_file_is_refused() {
        let b = bundle();
        let id = b.workflow().unwrap().id();
        let mut evil = b.clone();
        evil.files
            .insert("run.py".into(), ByteBuf::from(b"import os\n".to_vec()));
        let e = evil.verify(&id).unwrap_err();
        assert!(matches!(e, BundleError::WrongWorkflow { expected, .. } if expected == id));
        assert!(e.to_string().contains("not the expected"), "{e}");
    }

    #[test]
    fn bundle_formatting_of_manifest_does_not_change_the_id() {
        let b = bundle();
        let mut c = b.clone();
        c.manifest_toml = format!("# a comment\n{MANIFEST}");
        assert_ne!(b.encode().unwrap(), c.encode().unwrap());
        assert_eq!(b.workflow().unwrap().id(), c.workflow().unwrap().id());
    }

    #[test]
    fn bundle_files_must_match_the_manifest() {
        let mut b = bundle();
        b.files.remove("lib/util.py");
        assert_eq!(
            b.workflow().unwrap_err(),
            BundleError::MissingFile("lib/util.py".into())
        );
        let mut b = bundle();
        b.files.insert("extra.txt".into(), ByteBuf::new());
        assert_eq!(
            b.workflow().unwrap_err(),
            BundleError::ExtraFile("extra.txt".into())
        );
        let mut b = bundle();
        b.files.insert("../etc/passwd".into(), ByteBuf::new());
        assert_eq!(
            b.workflow().unwrap_err(),
            BundleError::UnsafePath("../etc/passwd".into())
        );
        let mut b = bundle();
        b.manifest_toml = MANIFEST.replace("version = \"1\"", "version = \"\"");
        let e = b.workflow().unwrap_err();
        assert!(e.to_string().contains("`version`"), "{e}");
    }

    #[test]
    fn bundle_decoder_enforces_its_limit() {
        let too_big = vec![0u8; limits::BUNDLE + 1];
        assert!(matches!(
            WorkflowBundle::decode(&too_big),
            Err(crate::DecodeError::TooLarge { limit, .. }) if limit == limits::BUNDLE
        ));
        let mut b = bundle();
        b.files
            .insert("big.bin".into(), ByteBuf::from(vec![7u8; limits::BUNDLE]));
        assert!(matches!(
            b.encode(),
            Err(crate::EncodeError::TooLarge { .. })
        ));
    }
}
