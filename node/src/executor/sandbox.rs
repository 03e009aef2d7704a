//! The sandbox a job runs in when it comes from someone the worker's owner
//! does not vouch for: bubblewrap (`bwrap`) around the job's program.
//!
//! **What a sandboxed job sees.** A new, empty root file system with, read-only,
//! the system directories ([`SYSTEM_DIRS`], those that exist), the entries of
//! `/etc` that programs need to start and look names up ([`ETC_ENTRIES`]; not
//! `shadow`, `ssh/`, `ssl/private` and the like), the operator's extra read-only
//! paths (`[worker] sandbox_paths`, e.g. a Conda or pyenv installation), the
//! workflow's bundle and each input blob file, at the paths the job's argv names;
//! read-write only its job directory; a fresh `/proc`, a minimal `/dev`, an empty
//! `/tmp`; `HOME` is its job directory. Not the node's data directory (its key,
//! its store), not the worker user's home, not other jobs.
//!
//! **What it can reach.** Nothing: every namespace bwrap supports is unshared
//! (`--unshare-all`: network, IPC, PID, UTS, cgroup, user where permitted), so
//! its only network interface is an unconfigured loopback of its own. It gets a
//! new session (no terminal to inject into), no capabilities even when the
//! worker runs as root, and dies with the worker (`--die-with-parent`); as the
//! PID namespace's first process dies, every process of the job dies with it.
//!
//! [`Sandbox::wrap`] is a pure function from the job's paths to bwrap's
//! arguments; the `process` module starts the result like any job.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// System directories bound read-only when they exist.
/// (`/opt` is not among them: add what a workflow needs there to
/// `[worker] sandbox_paths`.)
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Entries of `/etc` bound read-only when they exist: the dynamic loader's
/// cache, users and groups (names, not passwords), name service, time zone,
/// alternatives (Debian's `awk`, `editor`, …), public certificates.
pub const ETC_ENTRIES: &[&str] = &[
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/ssl/certs",
    "/etc/timezone",
];

/// Whose jobs run in the sandbox (`[worker] sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// No job (the default).
    #[default]
    Off,
    /// Jobs of requesters other than this node and its owners.
    Others,
    /// Every job, this node's own too.
    All,
}

impl SandboxMode {
    /// The config value's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Others => "others",
            Self::All => "all",
        }
    }

    /// Whether a job of a requester runs sandboxed: `vouched` when the
    /// requester is this node or one of its owners.
    pub fn applies(self, vouched: bool) -> bool {
        match self {
            Self::Off => false,
            Self::Others => !vouched,
            Self::All => true,
        }
    }
}

/// A worker's sandbox setting, checked when the worker starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxPolicy {
    /// Whose jobs are sandboxed.
    pub mode: SandboxMode,
    /// The sandbox, found at start unless `mode` is `Off`.
    pub sandbox: Option<Sandbox>,
}

impl SandboxPolicy {
    /// Find bubblewrap in `path` when `mode` needs it; the error says what
    /// to install.
    pub fn start(
        mode: SandboxMode,
        extra: Vec<PathBuf>,
        path: Option<&std::ffi::OsStr>,
    ) -> Result<Self, String> {
        let sandbox = match mode {
            SandboxMode::Off => None,
            SandboxMode::Others | SandboxMode::All => Some(Sandbox::find(path, extra)?),
        };
        Ok(Self { mode, sandbox })
    }

    /// The sandbox a job runs in: `vouched` when its requester is this node
    /// or one of its owners.
    pub fn for_job(&self, vouched: bool) -> Option<&Sandbox> {
        self.sandbox.as_ref().filter(|_| self.mode.applies(vouched))
    }
}

/// A found `bwrap` and the extra read-only paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The `bwrap` program.
    pub bwrap: PathBuf,
    /// The operator's extra read-only paths (absolute).
    pub extra: Vec<PathBuf>,
}

/// The paths of one job that the sandbox shows.
#[derive(Debug, Clone, Copy)]
pub struct JobPaths<'a> {
    /// The bundle (read-only).
    pub bundle: &'a Path,
    /// The job directory (read-write; the job's cwd and `HOME`).
    pub workdir: &'a Path,
    /// Input blob files (read-only).
    pub inputs: &'a [&'a Path],
}

impl Sandbox {
    /// Find `bwrap` in `path` (a `PATH` value) and check that it starts;
    /// `extra` paths must be absolute. The error says what to install or fix.
    pub fn find(path: Option<&std::ffi::OsStr>, extra: Vec<PathBuf>) -> Result<Self, String> {
        if let Some(p) = extra.iter().find(|p| !p.is_absolute()) {
            return Err(format!("sandbox path {} is not absolute", p.display()));
        }
        let bwrap = path
            .into_iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("bwrap"))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                "the sandbox needs bubblewrap: no `bwrap` on PATH (Debian: apt install bubblewrap)"
                    .to_string()
            })?;
        let version = std::process::Command::new(&bwrap)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
        if !version.status.success() {
            return Err(format!(
                "{} --version failed: {}",
                bwrap.display(),
                String::from_utf8_lossy(&version.stderr).trim()
            ));
        }
        Ok(Self { bwrap, extra })
    }

    /// Whether `program` (an absolute path) is visible inside the sandbox of
    /// a job with `paths`.
    pub fn shows(&self, program: &Path, paths: &JobPaths<'_>) -> bool {
        let visible = SYSTEM_DIRS
            .iter()
            .map(Path::new)
            .chain(self.extra.iter().map(PathBuf::as_path))
            .chain([paths.bundle, paths.workdir]);
        visible.into_iter().any(|dir| program.starts_with(dir))
    }

    /// bwrap's argv (after the program) to run `program` with `args`
    /// (argv\[1..\]) in the sandbox of a job with `paths`. Mounts are made in
    /// order: `/tmp` before anything under it.
    pub fn wrap(&self, program: &Path, args: &[OsString], paths: &JobPaths<'_>) -> Vec<OsString> {
        let mut a: Vec<OsString> = [
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let mut bind = |how: &str, path: &Path| {
            a.push(how.into());
            a.push(path.into());
            a.push(path.into());
        };
        for dir in SYSTEM_DIRS.iter().chain(ETC_ENTRIES) {
            bind("--ro-bind-try", Path::new(dir));
        }
        for dir in &self.extra {
            bind("--ro-bind-try", dir);
        }
        bind("--ro-bind", paths.bundle);
        for input in paths.inputs {
            bind("--ro-bind", input);
        }
        bind("--bind", paths.workdir);
        a.extend([
            "--chdir".into(),
            paths.workdir.into(),
            "--setenv".into(),
            "HOME".into(),
            paths.workdir.into(),
            "--".into(),
            program.into(),
        ]);
        a.extend(args.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox {
            bwrap: "/usr/bin/bwrap".into(),
            extra: vec!["/opt/conda".into()],
        }
    }

    #[test]
    fn only_others_jobs_are_sandboxed_in_others_mode() {
        assert!(!SandboxMode::Off.applies(false));
        assert!(!SandboxMode::Off.applies(true));
        assert!(SandboxMode::Others.applies(false));
        assert!(!SandboxMode::Others.applies(true));
        assert!(SandboxMode::All.applies(true));
        assert!(SandboxMode::All.applies(false));
    }

    #[test]
    fn the_job_gets_no_network_and_only_its_directory_writable() {
        let input = Path::new("/data/oda/blobs/ab/cd");
        let inputs = [input];
        let paths = JobPaths {
            bundle: Path::new("/data/oda/jobs/1/bundle"),
            workdir: Path::new("/data/oda/jobs/1/work"),
            inputs: &inputs,
        };
        let args = sandbox().wrap(Path::new("/usr/bin/python3"), &["-V".into()], &paths);
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"--unshare-all".to_string()));
        assert!(!args.iter().any(|a| a == "--share-net"));
        // The only writable bind is the job directory.
        let writable: Vec<&String> = args
            .windows(2)
            .filter(|w| w[0] == "--bind")
            .map(|w| &w[1])
            .collect();
        assert_eq!(writable, ["/data/oda/jobs/1/work"]);
        for ro in ["/data/oda/jobs/1/bundle", "/data/oda/blobs/ab/cd"] {
            assert!(
                args.windows(2).any(|w| w[0] == "--ro-bind" && w[1] == ro),
                "{ro} is not bound read-only: {args:?}"
            );
        }
        // Nothing else of the data dir, and no secrets of /etc.
        assert!(!args
            .iter()
            .any(|a| a == "/data/oda" || a.contains("shadow")));
        // /tmp is mounted before anything that may lie under it.
        let tmp = args.iter().position(|a| a == "/tmp");
        let work = args.iter().position(|a| a == "/data/oda/jobs/1/work");
        assert!(tmp < work);
        // The program and its arguments come last, after `--`.
        assert_eq!(&args[args.len() - 3..], ["--", "/usr/bin/python3", "-V"]);
        assert!(args
            .windows(3)
            .any(|w| w == ["--setenv", "HOME", "/data/oda/jobs/1/work"]));
    }

    #[test]
    fn a_program_outside_the_visible_paths_is_not_shown() {
        let paths = JobPaths {
            bundle: Path::new("/j/bundle"),
            workdir: Path::new("/j/work"),
            inputs: &[],
        };
        let s = sandbox();
        assert!(s.shows(Path::new("/usr/bin/python3"), &paths));
        assert!(s.shows(Path::new("/opt/conda/bin/python3"), &paths));
        assert!(s.shows(Path::new("/j/bundle/run.sh"), &paths));
        assert!(!s.shows(Path::new("/root/.pyenv/shims/python3"), &paths));
        // A prefix of a name is not a parent directory.
        assert!(!s.shows(Path::new("/usrx/bin/tool"), &paths));
    }

    #[test]
    fn relative_extra_paths_are_refused() {
        let e = Sandbox::find(None, vec!["conda".into()]).unwrap_err();
        assert!(e.contains("not absolute"), "{e}");
    }
}
