//! The job's process environment, program lookup, and the environment digest
//! recorded in facts.
//!
//! **Environment variables.** A job does not inherit the node's environment
//! (which may hold secrets). It gets only [`PASSED_THROUGH`] from the node (when
//! set), then the manifest's `executor.env`, then `ODA_WORKDIR` (absolute job
//! directory) and `ODA_BUNDLE` (absolute bundle directory), which the manifest
//! cannot override.
//!
//! **Program lookup.** After the argv template is filled, a program containing a
//! `/` is a path (relative paths are relative to the job directory); a bare name
//! is looked up in the `PATH` the job gets, and must be an executable regular
//! file.
//!
//! **Environment digest.** [`environment_digest`] is the BLAKE3 (key-derivation
//! mode, context [`DIGEST_CONTEXT`]) of, each as a length-prefixed field: the
//! executor kind; the program as this worker resolves it; the OS, OS family and
//! CPU architecture of this build. The program is resolved like this:
//! a template `argv[0]` with placeholders (such as `{bundle}/run.sh`) is taken
//! as written, prefixed `template:` (what it names is covered by the workflow
//! id); a bare name is looked up in `PATH` and canonicalised (symlinks resolved,
//! so `python3` → `/usr/bin/python3.11` distinguishes interpreter versions);
//! an absolute path is canonicalised; a program that cannot be found gives
//! `unresolved:<name>`. Executors without an argv program use their tool:
//! `cwl` → `cwltool`, and `container` adds the image reference. Two workers with
//! the same digest ran the job with the same kind of tool on the same kind of
//! machine; the digest says nothing about library versions.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oda_protocol::manifest::parse_arg;
use oda_protocol::{Executor, Manifest};

/// Variables copied from the node's environment into every job, when set.
pub const PASSED_THROUGH: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// BLAKE3 key-derivation context of [`environment_digest`].
pub const DIGEST_CONTEXT: &str = "oda-mesh v1 environment-digest";

/// Name of the variable holding the job directory.
pub const ODA_WORKDIR: &str = "ODA_WORKDIR";
/// Name of the variable holding the bundle directory.
pub const ODA_BUNDLE: &str = "ODA_BUNDLE";

/// The variables a `command` job runs with, in the order they are set (later
/// entries win).
pub(super) fn job_env(
    manifest_env: &std::collections::BTreeMap<String, String>,
    workdir: &Path,
    bundle: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = PASSED_THROUGH
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v)))
        .collect();
    env.extend(
        manifest_env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env.push((ODA_WORKDIR.into(), workdir.as_os_str().to_owned()));
    env.push((ODA_BUNDLE.into(), bundle.as_os_str().to_owned()));
    env
}

/// The value of `PATH` in `env` (the last one set).
pub(super) fn path_of(env: &[(OsString, OsString)]) -> Option<&OsStr> {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str())
}

/// Find the file to execute for `program`: a path (relative to `cwd`) if it
/// contains a `/`, else the first executable regular file of that name in
/// `path`. The error says what was searched.
pub(super) fn resolve_program(
    program: &OsStr,
    path: Option<&OsStr>,
    cwd: &Path,
) -> Result<PathBuf, String> {
    let as_path = Path::new(program);
    if program.is_empty() {
        return Err("the program (argv[0]) is empty after filling the template".into());
    }
    if program.as_encoded_bytes().contains(&b'/') {
        return Ok(if as_path.is_absolute() {
            as_path.to_path_buf()
        } else {
            cwd.join(as_path)
        });
    }
    let Some(path) = path else {
        return Err(format!(
            "cannot start `{}`: it is not a path and no PATH is set to look it up",
            as_path.display()
        ));
    };
    std::env::split_paths(path)
        .map(|dir| dir.join(as_path))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| {
            format!(
                "cannot start `{}`: no executable of that name on PATH `{}`; install it on this worker or name it by absolute path",
                as_path.display(),
                path.to_string_lossy()
            )
        })
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A digest of the execution environment a job of this manifest gets on this
/// worker; see the module documentation for exactly what it covers.
pub fn environment_digest(manifest: &Manifest) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(DIGEST_CONTEXT);
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    let exec = &manifest.executor;
    field(exec.kind().as_bytes());
    let program = match exec {
        Executor::Cwl { .. } => describe_program("cwltool"),
        _ => exec
            .argv()
            .and_then(|argv| argv.first())
            .map(|p| describe_program(p))
            .unwrap_or_else(|| "none".into()),
    };
    field(program.as_bytes());
    if let Executor::Container { image, engine, .. } = exec {
        field(image.as_bytes());
        field(engine.as_deref().unwrap_or("").as_bytes());
    }
    field(std::env::consts::OS.as_bytes());
    field(std::env::consts::FAMILY.as_bytes());
    field(std::env::consts::ARCH.as_bytes());
    *h.finalize().as_bytes()
}

/// How this worker resolves the program template `argv0`, as text.
fn describe_program(argv0: &str) -> String {
    let has_placeholder = parse_arg(argv0).map_or(true, |parts| {
        parts
            .iter()
            .any(|p| matches!(p, oda_protocol::manifest::ArgPart::Placeholder(_)))
    });
    if has_placeholder {
        return format!("template:{argv0}");
    }
    let unescaped = argv0.replace("{{", "{").replace("}}", "}");
    if unescaped.contains('/') && !Path::new(&unescaped).is_absolute() {
        // Relative to the job directory, which differs per job.
        return format!("relative:{unescaped}");
    }
    let path = std::env::var_os("PATH");
    resolve_program(OsStr::new(&unescaped), path.as_deref(), Path::new("/"))
        .and_then(|p| std::fs::canonicalize(p).map_err(|e| e.to_string()))
        .map(|p| format!("path:{}", p.display()))
        .unwrap_or_else(|_| format!("unresolved:{unescaped}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_lookup_uses_path_and_explains_failure() {
        let path = std::env::var_os("PATH");
        let sh = resolve_program(OsStr::new("sh"), path.as_deref(), Path::new("/w")).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        let rel = resolve_program(OsStr::new("./x.sh"), path.as_deref(), Path::new("/w")).unwrap();
        assert_eq!(rel, Path::new("/w/./x.sh"));
        let e = resolve_program(
            OsStr::new("oda-surely-not-a-program"),
            path.as_deref(),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.contains("no executable of that name on PATH"), "{e}");
        let e = resolve_program(OsStr::new("sh"), None, Path::new("/")).unwrap_err();
        assert!(e.contains("no PATH"), "{e}");
    }

    #[test]
    fn environment_digest_depends_on_the_program() {
        let m = |argv0: &str| {
            Manifest::from_toml(&format!(
                "name = \"t\"\nversion = \"1\"\n[outputs.o]\npath = \"o\"\n[executor]\nkind = \"command\"\nargv = [\"{argv0}\", \"x\"]\n"
            ))
            .unwrap()
        };
        let a = environment_digest(&m("sh"));
        assert_eq!(a, environment_digest(&m("sh")));
        assert_ne!(a, environment_digest(&m("python3")));
        assert_ne!(a, environment_digest(&m("{bundle}/run.sh")));
        assert_eq!(describe_program("{bundle}/x"), "template:{bundle}/x");
        assert!(describe_program("sh").starts_with("path:/"));
        assert_eq!(
            describe_program("oda-surely-not-a-program"),
            "unresolved:oda-surely-not-a-program"
        );
    }
}
