//! `oda` without a node: every command's `--help` shows an example, usage
//! errors exit 2, and an unreachable node exits 3 with the hint to start one.
//! (End-to-end tests with real nodes are in the `oda-tests` crate, `tests/`.)

use std::process::Command;

const ODA: &str = env!("CARGO_BIN_EXE_oda");

fn oda(args: &[&str], data_dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(ODA)
        .args(args)
        .env("ODA_DATA_DIR", data_dir)
        .env_remove("ODA_API")
        .env_remove("ODA_API_TOKEN")
        .output()
        .expect("oda runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_command_has_help_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &[],
        &["submit"],
        &["status"],
        &["wait"],
        &["logs"],
        &["cancel"],
        &["jobs"],
        &["prov"],
        &["why"],
        &["completions"],
        &["man"],
        &["node"],
        &["credits"],
        &["get"],
        &["workflow"],
        &["workflow", "add"],
        &["workflow", "ls"],
        &["workflow", "show"],
        &["workflow", "endorse"],
        &["peers"],
        &["cache"],
        &["cache", "ls"],
        &["cache", "pin"],
        &["cache", "unpin"],
        &["cache", "gc"],
        &["cache", "stats"],
        &["key"],
        &["key", "show"],
        &["trust"],
        &["trust", "ls"],
        &["trust", "import"],
        &["trust", "add"],
        &["trust", "rm"],
        &["trust", "show"],
        &["group"],
        &["group", "sign"],
        &["facts"],
        &["demo"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let (code, stdout, stderr) = oda(&args, dir.path());
        assert_eq!(code, 0, "oda {args:?}: {stderr}");
        assert!(
            stdout.contains("Example: oda"),
            "oda {args:?} has no example:\n{stdout}"
        );
        assert!(
            stdout.contains("--json"),
            "oda {args:?} lacks --json:\n{stdout}"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_no_node_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = oda(&["submit"], dir.path());
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = oda(&["submit", "events", "-a", "no-equals"], dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("NAME=VALUE"), "{stderr}");
    let (code, _, stderr) = oda(&["frobnicate"], dir.path());
    assert_eq!(code, 2, "{stderr}");

    let (code, stdout, stderr) = oda(&["jobs"], dir.path());
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains("no node is running"), "{stderr}");
    assert!(
        stderr.contains("hint: start a node first: `oda-node init && oda-node run`"),
        "{stderr}"
    );
    let (code, stdout, _) = oda(&["--json", "peers"], dir.path());
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["exit_code"], 3);
}

#[test]
fn completion_scripts_are_generated_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = oda(&["completions", shell], dir.path());
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["submit", "prov", "why"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
    let (code, _, err) = oda(&["completions", "tcsh"], dir.path());
    assert_eq!(code, 2, "{err}");
}

#[test]
fn man_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let (code, out, err) = oda(&["man", pages.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("man pages written"), "{out}");
    let top = std::fs::read_to_string(pages.join("oda.1")).unwrap();
    assert!(top.contains(".TH oda"), "not a man page: {top}");
    let submit = std::fs::read_to_string(pages.join("oda-submit.1")).unwrap();
    assert!(
        submit.contains("sweep") && submit.contains("quorum"),
        "{submit}"
    );
    assert!(pages.join("oda-workflow-add.1").exists());
    // A path that cannot be a directory: an error, exit 1.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let (code, _, err) = oda(&["man", file.to_str().unwrap()], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("cannot write man pages"), "{err}");
}
