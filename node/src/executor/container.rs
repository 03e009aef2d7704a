//! The `container` executor: the filled argv run in the manifest's image by
//! podman (or docker), as the job's main process.
//!
//! **The container.** `ENGINE run --name oda-job-<random> --network none`,
//! `--memory` and `--cpus` from the manifest's resources, the open-files and
//! process limits of the worker itself (`--ulimit nofile=…`, `nproc=…`: the
//! engine's defaults exceed the hard limits of many hosts, and the OCI runtime
//! then refuses to start), the bundle and each input file bound read-only and
//! the job directory read-write, each at the same path as on the host (so
//! the filled argv's paths hold inside), the job directory as working
//! directory, `ODA_WORKDIR` and `ODA_BUNDLE` set, then the image and the argv.
//! The image is used as named: pin it by digest (`name@sha256:…`) for
//! reproducible results (the environment digest records the reference).
//!
//! **After.** The engine is asked whether the kernel killed the container
//! for its memory (`inspect … {{.State.OOMKilled}}`): if so the run is the
//! analysis error `oda.memory_exceeded`; then the container is removed.
//! [`Remove`] removes it too when the run is cancelled or dropped (killing
//! the `run` client alone would leave the container running).

use std::ffi::OsString;
use std::path::Path;

use oda_protocol::manifest::Resources;

/// Engines tried, in order, when the manifest names none.
pub(super) const ENGINES: [&str; 2] = ["podman", "docker"];

/// A fresh container name.
pub(super) fn name() -> String {
    format!("oda-job-{:016x}", rand::random::<u64>())
}

/// The worker's own open-files and process limits (soft, hard), passed to
/// the container; `None` when they cannot be read.
pub(super) fn host_limits() -> Option<((u64, u64), (u64, u64))> {
    use nix::sys::resource::{getrlimit, Resource};
    Some((
        getrlimit(Resource::RLIMIT_NOFILE).ok()?,
        getrlimit(Resource::RLIMIT_NPROC).ok()?,
    ))
}

/// Most processes a container is given: engines fail to set larger
/// `nproc` limits on some hosts even below the hard limit.
pub(super) const MAX_NPROC: u64 = 4096;

/// What one container run needs besides the engine.
pub(super) struct Spec<'a> {
    /// The container's name.
    pub name: &'a str,
    /// The image.
    pub image: &'a str,
    /// The filled argv (run in the image).
    pub argv: &'a [OsString],
    /// The manifest's resources.
    pub resources: &'a Resources,
    /// The bundle, bound read-only.
    pub bundle: &'a Path,
    /// The job directory, bound read-write.
    pub workdir: &'a Path,
    /// Input files, bound read-only.
    pub inputs: &'a [&'a Path],
    /// The worker's (nofile, nproc) limits, (soft, hard) each.
    pub limits: Option<((u64, u64), (u64, u64))>,
}

/// The engine's arguments (after its name) for `spec`.
pub(super) fn run_args(spec: &Spec<'_>) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "run".into(),
        "--name".into(),
        spec.name.into(),
        "--network".into(),
        "none".into(),
        "--memory".into(),
        format!("{}m", spec.resources.memory_mb).into(),
        "--cpus".into(),
        spec.resources.cpus.to_string().into(),
    ];
    if let Some(((nofile_soft, nofile_hard), (_, nproc_hard))) = spec.limits {
        let nproc = nproc_hard.min(MAX_NPROC);
        a.push("--ulimit".into());
        a.push(format!("nofile={}:{nofile_hard}", nofile_soft.min(nofile_hard)).into());
        a.push("--ulimit".into());
        a.push(format!("nproc={nproc}:{nproc}").into());
    }
    let mut bind = |path: &Path, mode: &str| {
        let mut v = path.as_os_str().to_owned();
        v.push(":");
        v.push(path);
        v.push(mode);
        a.push("--volume".into());
        a.push(v);
    };
    bind(spec.bundle, ":ro");
    for input in spec.inputs {
        bind(input, ":ro");
    }
    bind(spec.workdir, ":rw");
    let mut env = |name: &str, value: &Path| {
        let mut v = OsString::from(format!("{name}="));
        v.push(value);
        a.push("--env".into());
        a.push(v);
    };
    env(super::ODA_WORKDIR, spec.workdir);
    env(super::ODA_BUNDLE, spec.bundle);
    a.push("--workdir".into());
    a.push(spec.workdir.into());
    a.push(spec.image.into());
    a.extend(spec.argv.iter().cloned());
    a
}

/// Whether the kernel killed the container for its memory (as the engine
/// reports it; `false` when it cannot say).
pub(super) async fn oom_killed(c: &Remove) -> bool {
    tokio::process::Command::new(&c.engine)
        .args(["inspect", "--format", "{{.State.OOMKilled}}", &c.name])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

/// Removes the container (`ENGINE rm -f NAME`) when dropped.
pub(super) struct Remove {
    /// The engine.
    pub engine: OsString,
    /// The container.
    pub name: String,
}

impl Drop for Remove {
    fn drop(&mut self) {
        super::process::run_quietly(&self.engine, &["rm", "-f", &self.name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_has_no_network_its_limits_and_the_job_paths_at_the_same_place() {
        let resources = Resources {
            cpus: 2,
            memory_mb: 300,
            gpus: 0,
        };
        let input = Path::new("/data/blobs/ab");
        let inputs = [input];
        let argv: Vec<OsString> = vec!["sh".into(), "-c".into(), "echo hi > out".into()];
        let spec = Spec {
            name: "oda-job-1",
            image: "localhost/tools@sha256:00",
            argv: &argv,
            resources: &resources,
            bundle: Path::new("/data/jobs/1/bundle"),
            workdir: Path::new("/data/jobs/1/work"),
            inputs: &inputs,
            limits: Some(((1024, 20000), (96369, 96369))),
        };
        let a: Vec<String> = run_args(&spec)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let pairs: Vec<(&str, &str)> = a
            .windows(2)
            .map(|w| (w[0].as_str(), w[1].as_str()))
            .collect();
        for expected in [
            ("--network", "none"),
            ("--memory", "300m"),
            ("--cpus", "2"),
            ("--ulimit", "nofile=1024:20000"),
            ("--ulimit", "nproc=4096:4096"),
            ("--volume", "/data/jobs/1/bundle:/data/jobs/1/bundle:ro"),
            ("--volume", "/data/blobs/ab:/data/blobs/ab:ro"),
            ("--volume", "/data/jobs/1/work:/data/jobs/1/work:rw"),
            ("--workdir", "/data/jobs/1/work"),
            ("--env", "ODA_WORKDIR=/data/jobs/1/work"),
        ] {
            assert!(pairs.contains(&expected), "{expected:?} missing: {a:?}");
        }
        assert_eq!(
            &a[a.len() - 4..],
            ["localhost/tools@sha256:00", "sh", "-c", "echo hi > out"]
        );
        // Only the job directory is writable.
        let writable = a.iter().filter(|x| x.ends_with(":rw")).count();
        assert_eq!(writable, 1);
    }
}
