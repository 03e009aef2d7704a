//! Container images for the tests, made from this machine's own files (no
//! registry is reachable): `podman import` of a tar of a small root file
//! system. Needs root and Debian's podman.

use std::process::Command;

/// A local image holding the system's `python3` (`/usr/bin/python3`, its
/// standard library without the test suite, and the shared libraries `ldd`
/// names for it and its extension modules) and an empty `/tmp`, imported
/// once per machine; its name.
pub fn python_image() -> String {
    let name = "localhost/oda-test-python:1".to_string();
    let exists = Command::new("podman")
        .args(["image", "exists", &name])
        .status()
        .expect("podman for the container tests (apt install podman)");
    if exists.success() {
        return name;
    }
    let python = std::fs::canonicalize("/usr/bin/python3").expect("the system's python3");
    let version = python
        .file_name()
        .and_then(|n| n.to_str())
        .expect("python3's name")
        .to_string();
    let mut paths = vec![
        "usr/bin/python3".to_string(),
        python.to_str().expect("utf-8 path")[1..].to_string(),
        format!("usr/lib/{version}"),
    ];
    // Libraries of the interpreter and of the modules the examples load.
    let dynload = format!("/usr/lib/{version}/lib-dynload");
    let mut binaries = vec![python.clone()];
    binaries.extend(
        std::fs::read_dir(&dynload)
            .expect("lib-dynload")
            .flatten()
            .map(|e| e.path()),
    );
    let mut libs = std::collections::BTreeSet::new();
    for bin in &binaries {
        let out = Command::new("ldd").arg(bin).output().expect("ldd");
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if word.starts_with('/') && std::path::Path::new(word).exists() {
                libs.insert(word[1..].to_string());
            }
        }
    }
    paths.extend(libs);
    let dir = tempfile::tempdir().expect("temp dir");
    // An empty /tmp of the image's own.
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(staging.join("tmp")).expect("staging dir");
    let tar = dir.path().join("python.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg("/")
        .arg("--exclude")
        .arg(format!("usr/lib/{version}/test"))
        .arg("--exclude")
        .arg("__pycache__")
        .arg("-chf")
        .arg(&tar)
        .args(&paths)
        .arg("-C")
        .arg(&staging)
        .arg("tmp")
        .status()
        .expect("tar");
    assert!(status.success(), "tar of the python image failed");
    let out = Command::new("podman")
        .arg("import")
        .arg(&tar)
        .arg(&name)
        .output()
        .expect("podman import");
    assert!(out.status.success(), "podman import: {out:?}");
    name
}
