//! The workflow registry: workflow folders on disk, their bundles in the store,
//! and which workflows this node's owner added.
//!
//! A **workflow folder** holds the manifest, [`MANIFEST_FILE`], and the files it
//! lists in `files` (paths relative to the folder). [`load_folder`] reads it
//! into a [`Workflow`] and its [`WorkflowBundle`]; a bundled file must be a
//! regular file whose real path (symlinks resolved) stays inside the folder, and
//! the bundle must fit in [`limits::BUNDLE`].
//!
//! [`add`] stores the bundle as a pinned blob, the workflow with it, and marks the
//! workflow as **added by the owner** (the sled tree [`LOCAL_TREE`]), which the
//! worker trusts without an endorsement. [`install_bundle`] accepts a bundle
//! fetched from the mesh only if it rebuilds into the expected workflow id
//! (records it in [`INSTALLED_TREE`]; such bundles are not pinned and may be
//! evicted: fetch them again). [`materialise`] writes a stored workflow's files
//! (and its manifest, as [`MANIFEST_FILE`]) into a directory for a job.
//! [`find`] looks a workflow up by id or by name.
//!
//! Both trees map a `WorkflowId` (32 bytes) to a stamp: 8 bytes, big-endian,
//! Unix milliseconds of the add or install, made strictly greater than every
//! stamp already recorded so that "newest" is well defined within one store.

use std::io::Read;
use std::path::{Path, PathBuf};

use oda_protocol::codec::limits;
use oda_protocol::{
    BlobId, BundleError, DecodeError, EncodeError, IdParseError, ManifestError, Wire, Workflow,
    WorkflowBundle, WorkflowId,
};

use crate::store::{Store, StoreError};

/// File name of the manifest in a workflow folder.
pub const MANIFEST_FILE: &str = "oda-workflow.toml";
/// sled tree of workflows added by this node's owner: id → stamp.
pub const LOCAL_TREE: &str = "workflows_local";
/// sled tree of workflows installed from a verified bundle: id → stamp.
pub const INSTALLED_TREE: &str = "workflows_installed";

/// What went wrong with a workflow folder, bundle or lookup.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The folder has no manifest file.
    #[error("{} has no workflow manifest: expected a file named `{MANIFEST_FILE}`{hint}", .dir.display())]
    NoManifest {
        /// The folder.
        dir: PathBuf,
        /// A hint, if a likely manifest under another name was found.
        hint: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid; the message names the field (or TOML line).
    #[error("{}: {source}", .path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ManifestError,
    },
    /// A file listed in the manifest's `files` cannot be bundled.
    #[error("{}: `files` entry {file:?} {problem}", .manifest.display())]
    BadFile {
        /// The manifest file.
        manifest: PathBuf,
        /// The entry, as listed.
        file: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The bundled files together exceed the bundle limit.
    #[error("{}: the bundled files reach {bytes} bytes at {file:?}, more than the bundle limit of {limit} bytes; keep large data out of the workflow and pass it as a blob input", .manifest.display())]
    TooLarge {
        /// The manifest file.
        manifest: PathBuf,
        /// The file at which the limit was passed.
        file: String,
        /// Bytes counted so far.
        bytes: u64,
        /// [`limits::BUNDLE`].
        limit: usize,
    },
    /// The bundle does not make a valid workflow, or not the expected one.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle cannot be encoded (it is too large).
    #[error("cannot encode the workflow bundle: {0}")]
    Encode(#[from] EncodeError),
    /// A stored bundle blob does not decode.
    #[error("blob {blob:#} is not a valid workflow bundle: {source}")]
    Decode {
        /// The blob.
        blob: BlobId,
        /// The codec's error.
        #[source]
        source: DecodeError,
    },
    /// The bundle blob is not in the store (never fetched, or evicted).
    #[error("workflow bundle blob {0:#} is not in the store; fetch it first")]
    BundleMissing(BlobId),
    /// The workflow is not in the store.
    #[error("workflow {0:#} is not in the store")]
    UnknownWorkflow(WorkflowId),
    /// The blocking task that reads the folder failed.
    #[error("the task adding the workflow failed: {0}")]
    Task(String),
    /// Writing a materialised file failed.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A `wf:` id could not be parsed.
    #[error("{0}")]
    BadId(#[from] IdParseError),
    /// Several workflows share a name and none was added last.
    #[error("{name:?} names {} workflows ({}); give the id instead", .ids.len(), ids_text(.ids))]
    Ambiguous {
        /// The name asked for.
        name: String,
        /// Every workflow with that name.
        ids: Vec<WorkflowId>,
    },
    /// A registry record is malformed.
    #[error("corrupt record in tree `{tree}` at key {key}: {reason}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// The key, in hex.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A registry tree failed.
    #[error("workflow registry database: cannot {op}: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
}

fn ids_text(ids: &[WorkflowId]) -> String {
    ids.iter()
        .map(|id| format!("{id:#}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn db(op: &'static str) -> impl FnOnce(sled::Error) -> RegistryError {
    move |source| RegistryError::Db { op, source }
}

/// Read a workflow folder: its manifest and every file it lists.
pub fn load_folder(dir: &Path) -> Result<(Workflow, WorkflowBundle), RegistryError> {
    let root = std::fs::canonicalize(dir).map_err(|source| RegistryError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        let hint = if dir.join("manifest.toml").exists() {
            format!(" (found `manifest.toml`: rename it to `{MANIFEST_FILE}`)")
        } else {
            String::new()
        };
        return Err(RegistryError::NoManifest {
            dir: dir.to_path_buf(),
            hint,
        });
    }
    let manifest_bytes =
        read_inside(&root, MANIFEST_FILE, limits::MANIFEST_TOML as u64).map_err(|problem| {
            RegistryError::BadFile {
                manifest: manifest_path.clone(),
                file: MANIFEST_FILE.into(),
                problem: problem.to_string(),
            }
        })?;
    let manifest_toml = String::from_utf8(manifest_bytes).map_err(|_| RegistryError::Read {
        path: manifest_path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"),
    })?;
    let manifest = oda_protocol::Manifest::from_toml(&manifest_toml).map_err(|source| {
        RegistryError::Manifest {
            path: manifest_path.clone(),
            source,
        }
    })?;
    let mut files = std::collections::BTreeMap::new();
    let mut total = manifest_toml.len() as u64;
    for rel in &manifest.files {
        let left = (limits::BUNDLE as u64).saturating_sub(total);
        let bytes = read_inside(&root, rel, left).map_err(|problem| match problem {
            Problem::TooLarge(size) => RegistryError::TooLarge {
                manifest: manifest_path.clone(),
                file: rel.clone(),
                bytes: total + size,
                limit: limits::BUNDLE,
            },
            other => RegistryError::BadFile {
                manifest: manifest_path.clone(),
                file: rel.clone(),
                problem: other.to_string(),
            },
        })?;
        total += bytes.len() as u64;
        files.insert(rel.clone(), serde_bytes::ByteBuf::from(bytes));
    }
    let bundle = WorkflowBundle {
        manifest_toml,
        files,
    };
    let workflow = bundle.workflow()?;
    Ok((workflow, bundle))
}

/// Why a file inside a folder cannot be read.
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("does not exist")]
    Missing,
    #[error("resolves to {}, outside the workflow folder", .0.display())]
    Escapes(PathBuf),
    #[error("is not a regular file")]
    NotAFile,
    #[error("is {0} bytes, too large")]
    TooLarge(u64),
    #[error("cannot be read: {0}")]
    Io(std::io::Error),
}

/// Read `root/rel`, which must resolve inside `root`, be a regular file and hold
/// at most `max` bytes.
fn read_inside(root: &Path, rel: &str, max: u64) -> Result<Vec<u8>, Problem> {
    let path = root.join(rel);
    let real = std::fs::canonicalize(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Problem::Missing
        } else {
            Problem::Io(e)
        }
    })?;
    if !real.starts_with(root) {
        return Err(Problem::Escapes(real));
    }
    // Check before opening: opening a FIFO (or a device) can block forever.
    if !std::fs::metadata(&real).map_err(Problem::Io)?.is_file() {
        return Err(Problem::NotAFile);
    }
    let file = std::fs::File::open(&real).map_err(Problem::Io)?;
    let meta = file.metadata().map_err(Problem::Io)?;
    if !meta.is_file() {
        return Err(Problem::NotAFile);
    }
    if meta.len() > max {
        return Err(Problem::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(Problem::Io)?;
    if bytes.len() as u64 > max {
        return Err(Problem::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Add the workflow folder `dir` as trusted by this node's owner: store its
/// bundle as a pinned blob and the workflow, and mark it as added locally.
/// Adding the same folder again is harmless and makes it the newest of its name.
pub fn add(store: &Store, dir: &Path) -> Result<WorkflowId, RegistryError> {
    let (workflow, bundle) = load_folder(dir)?;
    let bytes = bundle.encode()?;
    let blob = store.put_blob(&bytes)?;
    store.pin(&blob)?;
    let id = store.put_workflow(&workflow, blob)?;
    stamp(store, LOCAL_TREE, &id)?;
    tracing::info!(workflow = %id, name = %workflow.manifest.name, version = %workflow.manifest.version, "workflow added");
    Ok(id)
}

/// Whether this node's owner added the workflow (with [`add`]).
pub fn is_local(store: &Store, id: &WorkflowId) -> Result<bool, RegistryError> {
    store
        .tree(LOCAL_TREE)?
        .contains_key(id.as_bytes())
        .map_err(db("read local workflows"))
}

/// Install a workflow from a bundle blob already in the store (fetched from the
/// mesh): decode it, check that it is the workflow `expected`, store the
/// workflow. A bundle that is not exactly `expected` is refused.
pub fn install_bundle(
    store: &Store,
    expected: &WorkflowId,
    bundle_blob: &BlobId,
) -> Result<Workflow, RegistryError> {
    let bundle = read_bundle(store, bundle_blob)?;
    let workflow = bundle.verify(expected)?;
    store.put_workflow(&workflow, *bundle_blob)?;
    stamp(store, INSTALLED_TREE, expected)?;
    tracing::info!(workflow = %expected, name = %workflow.manifest.name, "workflow installed from a verified bundle");
    Ok(workflow)
}

/// Write the stored workflow's bundled files, and its manifest as
/// [`MANIFEST_FILE`], into `into` (created if missing), with mode 0644. The
/// bundle is verified against `id` first. Existing files of the same names are
/// replaced. The files are not synced to the disk: the directory is a job's
/// scratch copy, removed after the job and written again after a crash.
pub fn materialise(store: &Store, id: &WorkflowId, into: &Path) -> Result<(), RegistryError> {
    let (_, blob) = store
        .workflow(id)?
        .ok_or(RegistryError::UnknownWorkflow(*id))?;
    let bundle = read_bundle(store, &blob)?;
    bundle.verify(id)?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RegistryError::Write { path, source }
    };
    std::fs::create_dir_all(into).map_err(write_err(into))?;
    if !bundle.files.contains_key(MANIFEST_FILE) {
        write_file(&into.join(MANIFEST_FILE), bundle.manifest_toml.as_bytes())
            .map_err(write_err(&into.join(MANIFEST_FILE)))?;
    }
    for (rel, bytes) in &bundle.files {
        // `verify` checked that every path is a safe relative path.
        let path = into.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        write_file(&path, bytes).map_err(write_err(&path))?;
    }
    Ok(())
}

/// Replace `path` with a new file (never writing through an existing symlink).
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(bytes)
}

/// Find a workflow by `wf:<hex>`, bare hex, or name. Among workflows sharing a
/// name, the one added or installed last wins; if that is not decided (several
/// were stored without [`add`] or [`install_bundle`]), the error lists them.
pub fn find(
    store: &Store,
    name_or_id: &str,
) -> Result<Option<(WorkflowId, Workflow)>, RegistryError> {
    let text = name_or_id.trim();
    if text.starts_with(&format!("{}:", WorkflowId::PREFIX)) {
        let id: WorkflowId = text.parse()?;
        return Ok(store.workflow(&id)?.map(|(wf, _)| (id, wf)));
    }
    if let Ok(id) = text.parse::<WorkflowId>() {
        if let Some((wf, _)) = store.workflow(&id)? {
            return Ok(Some((id, wf)));
        }
    }
    let mut candidates: Vec<(u64, WorkflowId, Workflow)> = Vec::new();
    for (id, wf, _) in store.workflows()? {
        if wf.manifest.name == text {
            candidates.push((newest_stamp(store, &id)?, id, wf));
        }
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    match candidates.as_slice() {
        [] => Ok(None),
        [(_, id, wf)] => Ok(Some((*id, wf.clone()))),
        [(first, id, wf), (second, ..), ..] if first > second => Ok(Some((*id, wf.clone()))),
        _ => Err(RegistryError::Ambiguous {
            name: text.to_string(),
            ids: candidates.iter().map(|(_, id, _)| *id).collect(),
        }),
    }
}

/// Decode the bundle in `blob`, refusing files over the bundle limit unread.
fn read_bundle(store: &Store, blob: &BlobId) -> Result<WorkflowBundle, RegistryError> {
    let path = store
        .blob_path(blob)
        .ok_or(RegistryError::BundleMissing(*blob))?;
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RegistryError::BundleMissing(*blob))
        }
        Err(source) => return Err(RegistryError::Read { path, source }),
    };
    let mut bytes = Vec::new();
    file.take(limits::BUNDLE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| RegistryError::Read {
            path: path.clone(),
            source,
        })?;
    WorkflowBundle::decode(&bytes).map_err(|source| RegistryError::Decode {
        blob: *blob,
        source,
    })
}

/// Record `id` in `tree` with a stamp newer than every recorded one.
fn stamp(store: &Store, tree: &'static str, id: &WorkflowId) -> Result<(), RegistryError> {
    let latest = [LOCAL_TREE, INSTALLED_TREE]
        .iter()
        .map(|t| max_stamp(store, t))
        .try_fold(0u64, |acc, s| s.map(|s| acc.max(s)))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let value = now.max(latest.saturating_add(1));
    store
        .tree(tree)?
        .insert(id.as_bytes(), &value.to_be_bytes())
        .map_err(db("record workflow"))?;
    Ok(())
}

fn max_stamp(store: &Store, tree: &'static str) -> Result<u64, RegistryError> {
    let mut max = 0;
    for item in store.tree(tree)?.iter() {
        let (k, v) = item.map_err(db("list workflows"))?;
        max = max.max(decode_stamp(tree, &k, &v)?);
    }
    Ok(max)
}

/// The newest stamp of `id` in either tree (0 if none).
fn newest_stamp(store: &Store, id: &WorkflowId) -> Result<u64, RegistryError> {
    let mut newest = 0;
    for tree in [LOCAL_TREE, INSTALLED_TREE] {
        if let Some(v) = store
            .tree(tree)?
            .get(id.as_bytes())
            .map_err(db("read workflow record"))?
        {
            newest = newest.max(decode_stamp(tree, id.as_bytes(), &v)?);
        }
    }
    Ok(newest)
}

fn decode_stamp(tree: &'static str, key: &[u8], v: &[u8]) -> Result<u64, RegistryError> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| RegistryError::Corrupt {
            tree,
            key: hex::encode(key),
            reason: "stamp is not 8 bytes",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    const MANIFEST: &str = r#"
name = "spectrum"
version = "1.0"
files = ["run.py", "lib/util.py"]
[inputs.emin]
type = "float"
default = 20.0
[outputs.spectrum]
path = "spectrum.txt"
[executor]
kind = "command"
argv = ["python3", "{bundle}/run.py", "{emin}"]
"#;

    fn open_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(StoreConfig::new(dir.path().join("store"), 1 << 30)).unwrap();
        (dir, store)
    }

    /// A workflow folder under `root/name` with `manifest` and its two files.
    fn folder(root: &Path, name: &str, manifest: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), manifest).unwrap();
        std::fs::write(dir.join("run.py"), "import sys\nprint(sys.argv)\n").unwrap();
        std::fs::write(dir.join("lib/util.py"), b"\x00\x01binary\xff").unwrap();
        dir
    }

    fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().display().to_string();
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn registry_folder_round_trip() {
        let (tmp, store) = open_store();
        let src = folder(tmp.path(), "src", MANIFEST);
        let id = add(&store, &src).unwrap();
        assert!(is_local(&store, &id).unwrap());
        let (wf, blob) = store.workflow(&id).unwrap().unwrap();
        assert_eq!(wf.id(), id);
        assert!(store
            .list_blobs()
            .unwrap()
            .iter()
            .any(|m| m.id == blob && m.pinned));
        let out = tmp.path().join("job/bundle");
        materialise(&store, &id, &out).unwrap();
        assert_eq!(read_tree(&out), read_tree(&src));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("lib/util.py"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        // Materialising again replaces the files.
        std::fs::write(out.join("run.py"), "tampered").unwrap();
        materialise(&store, &id, &out).unwrap();
        assert_eq!(read_tree(&out), read_tree(&src));
        let e = materialise(&store, &WorkflowId([3; 32]), &out).unwrap_err();
        assert!(matches!(e, RegistryError::UnknownWorkflow(_)), "{e}");
    }

    #[test]
    fn registry_id_is_stable_for_identical_folders() {
        let (tmp, store) = open_store();
        let a = folder(tmp.path(), "a", MANIFEST);
        let b = folder(tmp.path(), "elsewhere/b", MANIFEST);
        let (wa, ba) = load_folder(&a).unwrap();
        let (wb, bb) = load_folder(&b).unwrap();
        assert_eq!(wa.id(), wb.id());
        assert_eq!(ba.encode().unwrap(), bb.encode().unwrap());
        assert_eq!(add(&store, &a).unwrap(), add(&store, &b).unwrap());
        std::fs::write(b.join("run.py"), "print('changed')\n").unwrap();
        assert_ne!(load_folder(&b).unwrap().0.id(), wa.id());
    }

    #[test]
    fn registry_refuses_an_altered_bundle() {
        let (tmp, store) = open_store();
        let src = folder(tmp.path(), "src", MANIFEST);
        let (wf, bundle) = load_folder(&src).unwrap();
        let expected = wf.id();
        let mut evil = bundle.clone();
        evil.files.insert(
            "run.py".into(),
            serde_bytes::ByteBuf::from(b"import os; os.system('curl evil')\n".to_vec()),
        );
        let evil_blob = store.put_blob(&evil.encode().unwrap()).unwrap();
        let e = install_bundle(&store, &expected, &evil_blob).unwrap_err();
        assert!(
            matches!(e, RegistryError::Bundle(BundleError::WrongWorkflow { .. })),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{expected:#}")) && msg.contains("refusing"),
            "{msg}"
        );
        assert!(store.workflow(&expected).unwrap().is_none());

        let junk = store.put_blob(b"not a bundle").unwrap();
        let e = install_bundle(&store, &expected, &junk).unwrap_err();
        assert!(matches!(e, RegistryError::Decode { .. }), "{e}");
        let absent = BlobId::of(b"never stored");
        let e = install_bundle(&store, &expected, &absent).unwrap_err();
        assert!(matches!(e, RegistryError::BundleMissing(_)), "{e}");

        // The genuine bundle installs, and is not "local".
        let good = store.put_blob(&bundle.encode().unwrap()).unwrap();
        let installed = install_bundle(&store, &expected, &good).unwrap();
        assert_eq!(installed, wf);
        assert!(!is_local(&store, &expected).unwrap());
        let out = tmp.path().join("m");
        materialise(&store, &expected, &out).unwrap();
        assert_eq!(read_tree(&out), read_tree(&src));
    }

    #[test]
    fn registry_errors_name_the_file_and_field() {
        let (tmp, _) = open_store();
        let dir = folder(
            tmp.path(),
            "bad",
            &MANIFEST.replace("default = 20.0", "default = \"x\""),
        );
        let e = load_folder(&dir).unwrap_err().to_string();
        assert!(
            e.contains(MANIFEST_FILE) && e.contains("inputs.emin.default"),
            "{e}"
        );

        let dir = folder(tmp.path(), "unknown", &format!("{MANIFEST}\ncolour = 1\n"));
        let e = load_folder(&dir).unwrap_err().to_string();
        assert!(e.contains(MANIFEST_FILE) && e.contains("colour"), "{e}");

        let dir = folder(tmp.path(), "missing", MANIFEST);
        std::fs::remove_file(dir.join("lib/util.py")).unwrap();
        let e = load_folder(&dir).unwrap_err().to_string();
        assert!(
            e.contains("\"lib/util.py\"") && e.contains("does not exist"),
            "{e}"
        );

        let dir = folder(tmp.path(), "escape", MANIFEST);
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "key").unwrap();
        std::fs::remove_file(dir.join("run.py")).unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("run.py")).unwrap();
        let e = load_folder(&dir).unwrap_err().to_string();
        assert!(
            e.contains("\"run.py\"") && e.contains("outside the workflow folder"),
            "{e}"
        );

        // A symlink inside the folder is followed.
        let dir = folder(tmp.path(), "inside", MANIFEST);
        std::fs::rename(dir.join("run.py"), dir.join("real.py")).unwrap();
        std::os::unix::fs::symlink("real.py", dir.join("run.py")).unwrap();
        assert!(load_folder(&dir).is_ok());

        let dir = folder(tmp.path(), "dir", MANIFEST);
        std::fs::remove_file(dir.join("run.py")).unwrap();
        std::fs::create_dir(dir.join("run.py")).unwrap();
        let e = load_folder(&dir).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");

        let dir = tmp.path().join("old-name");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("manifest.toml"), MANIFEST).unwrap();
        let e = load_folder(&dir).unwrap_err().to_string();
        assert!(e.contains(MANIFEST_FILE) && e.contains("rename"), "{e}");
    }

    #[test]
    fn registry_refuses_a_bundle_over_the_limit() {
        let (tmp, _) = open_store();
        let dir = folder(tmp.path(), "big", MANIFEST);
        let f = std::fs::File::create(dir.join("run.py")).unwrap();
        f.set_len(limits::BUNDLE as u64 + 1).unwrap();
        let e = load_folder(&dir).unwrap_err();
        assert!(matches!(e, RegistryError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("run.py"), "{e}");
    }

    #[test]
    fn registry_find_by_name_and_id() {
        let (tmp, store) = open_store();
        let v1 = add(&store, &folder(tmp.path(), "v1", MANIFEST)).unwrap();
        let v2 = add(
            &store,
            &folder(tmp.path(), "v2", &MANIFEST.replace("1.0", "2.0")),
        )
        .unwrap();
        assert_ne!(v1, v2);
        assert_eq!(find(&store, "spectrum").unwrap().unwrap().0, v2);
        assert_eq!(find(&store, &format!("{v1:#}")).unwrap().unwrap().0, v1);
        assert_eq!(find(&store, &v1.to_string()).unwrap().unwrap().0, v1);
        assert!(find(&store, "nothing-like-it").unwrap().is_none());
        assert!(find(&store, &format!("{:#}", WorkflowId([5; 32])))
            .unwrap()
            .is_none());
        assert!(matches!(
            find(&store, "wf:123"),
            Err(RegistryError::BadId(_))
        ));
        // Adding v1 again makes it the newest.
        add(&store, &tmp.path().join("v1")).unwrap();
        assert_eq!(find(&store, "spectrum").unwrap().unwrap().0, v1);

        // Workflows stored without a registry record are ambiguous by name.
        let (tmp2, store2) = open_store();
        for (i, v) in ["a", "b"].iter().enumerate() {
            let (wf, bundle) = load_folder(&folder(
                tmp2.path(),
                &format!("f{i}"),
                &MANIFEST.replace("1.0", v),
            ))
            .unwrap();
            let blob = store2.put_blob(&bundle.encode().unwrap()).unwrap();
            store2.put_workflow(&wf, blob).unwrap();
        }
        let e = find(&store2, "spectrum").unwrap_err();
        assert!(
            matches!(&e, RegistryError::Ambiguous { ids, .. } if ids.len() == 2),
            "{e}"
        );
    }
}
