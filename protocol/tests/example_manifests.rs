//! Every example workflow under `examples/workflows/` parses and validates with
//! `Manifest::from_toml`, bundles files that exist, and forms a `Workflow`.

use std::fs;
use std::path::PathBuf;

use oda_protocol::{BlobId, Executor, Manifest, Workflow};

/// File name of a workflow's manifest inside its folder.
const MANIFEST_FILE: &str = "oda-workflow.toml";

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/workflows")
}

#[test]
fn example_manifests_parse_and_bundle_their_files() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(examples_dir())
        .expect("examples/workflows exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 4,
        "expected at least 4 example workflows, found {dirs:?}"
    );
    for dir in &dirs {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).expect("manifest is readable");
        let manifest =
            Manifest::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let folder = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 folder name");
        assert_eq!(
            manifest.name,
            folder,
            "{}: name is not the folder name",
            path.display()
        );
        assert!(
            !manifest.description.is_empty(),
            "{}: no description",
            path.display()
        );
        assert!(
            manifest.deterministic,
            "{}: not deterministic",
            path.display()
        );
        // Runnable on a worker with python3 (the pipeline) or cwltool
        // (`byte_count`, the `cwl` executor's example).
        assert!(
            matches!(
                manifest.executor,
                Executor::Command { .. } | Executor::Cwl { .. }
            ),
            "{}: neither a command nor a cwl executor",
            path.display()
        );
        for (name, spec) in &manifest.inputs {
            assert!(
                !spec.description.is_empty(),
                "{}: input {name} has no description",
                path.display()
            );
        }
        let files = manifest
            .files
            .iter()
            .map(|f| {
                let bytes = fs::read(dir.join(f))
                    .unwrap_or_else(|e| panic!("{}: bundled file {f}: {e}", path.display()));
                (f.clone(), BlobId::of(&bytes))
            })
            .collect();
        Workflow::new(manifest, files).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
