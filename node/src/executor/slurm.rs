//! The `slurm` executor: the filled argv run as a SLURM batch job.
//!
//! **Submission.** A batch script in the job's `.oda` directory exports the
//! job's environment and `exec`s the argv (every word single-quoted: no
//! shell expansion of arguments). `sbatch --parsable --export=NONE` submits
//! it with `--chdir` the job directory, `--output`/`--error` the job's log
//! files, `--cpus-per-task` and `--mem` from the manifest's resources,
//! `--time` its `timeout_secs` rounded up to minutes, and the executor's
//! `partition`, `account` and `sbatch_args`. The job directory must be on a
//! file system the allocation sees (the worker's data dir on a shared file
//! system, or a single-node cluster).
//!
//! **Following.** Every [`POLL`] `scontrol show job` says whether the job is
//! still queued or running, and then its final state and exit code: `COMPLETED`/`FAILED` → the exit code, judged like a
//! local process's; `TIMEOUT` → timed out; `OUT_OF_MEMORY` → the analysis
//! error of an exceeded `memory_mb`; `CANCELLED` and the rest → failed,
//! naming the state. Cancelling the run (or dropping it) runs `scancel`.
//! SLURM accounts for CPU and memory; the usage reported is 0.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use oda_protocol::Manifest;

/// The tools the executor needs on `PATH`.
pub(super) const TOOLS: [&str; 3] = ["sbatch", "scontrol", "scancel"];
/// How often the job's state is asked.
pub(super) const POLL: Duration = Duration::from_millis(250);
/// The batch script, in the job's `.oda` directory.
pub(super) const SCRIPT: &str = "slurm-job.sh";

/// `text` as one single-quoted shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The batch script: `export`s of `env`, then `exec` of `argv`.
pub(super) fn script(argv: &[OsString], env: &[(OsString, OsString)]) -> Result<String, String> {
    let utf8 = |s: &OsString| {
        s.to_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{s:?} is not UTF-8, which a SLURM batch script needs"))
    };
    let mut out = String::from("#!/bin/sh\n");
    for (name, value) in env {
        let name = utf8(name)?;
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "environment variable name {name:?} is not valid in a shell"
            ));
        }
        out.push_str(&format!("export {name}={}\n", quote(&utf8(value)?)));
    }
    let words = argv
        .iter()
        .map(|a| utf8(a).map(|a| quote(&a)))
        .collect::<Result<Vec<_>, _>>()?;
    out.push_str(&format!("exec {}\n", words.join(" ")));
    Ok(out)
}

/// `sbatch`'s arguments for the job in `workdir` (its `.oda` holding the
/// script and the log files).
pub(super) fn sbatch_args(manifest: &Manifest, workdir: &Path, oda_dir: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--parsable".into(),
        "--export=NONE".into(),
        format!("--job-name=oda-{}", manifest.name).into(),
    ];
    let mut with = |flag: &str, value: &Path| {
        let mut s = OsString::from(flag);
        s.push(value);
        a.push(s);
    };
    with("--chdir=", workdir);
    with("--output=", &oda_dir.join("stdout"));
    with("--error=", &oda_dir.join("stderr"));
    let r = &manifest.resources;
    a.push(format!("--cpus-per-task={}", r.cpus).into());
    a.push(format!("--mem={}M", r.memory_mb).into());
    a.push(format!("--time={}", manifest.timeout_secs.div_ceil(60).max(1)).into());
    if let oda_protocol::Executor::Slurm {
        partition,
        account,
        sbatch_args,
        ..
    } = &manifest.executor
    {
        if let Some(p) = partition {
            a.push(format!("--partition={p}").into());
        }
        if let Some(acc) = account {
            a.push(format!("--account={acc}").into());
        }
        a.extend(sbatch_args.iter().map(OsString::from));
    }
    a.push(oda_dir.join(SCRIPT).into());
    a
}

/// The job id in `sbatch --parsable`'s output (`ID` or `ID;CLUSTER`).
pub(super) fn job_id(stdout: &str) -> Result<u64, String> {
    let first = stdout.trim().split(';').next().unwrap_or_default();
    first
        .parse()
        .map_err(|_| format!("sbatch printed {:?}, not a job id", stdout.trim()))
}

/// How a SLURM job ended, from `scontrol show job`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ended {
    /// It ran to its end with this exit code (`COMPLETED` or `FAILED`).
    Exited(i32),
    /// `TIMEOUT`.
    TimedOut,
    /// `OUT_OF_MEMORY`.
    OutOfMemory,
    /// Any other final state (`CANCELLED`, `NODE_FAIL`, `PREEMPTED`, …).
    Other(String),
}

/// The final state in `scontrol show job`'s text, if the job is over.
pub(super) fn ended(scontrol: &str) -> Option<Ended> {
    let field = |name: &str| {
        scontrol
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    let state = field("JobState=")?;
    let code = field("ExitCode=")
        .and_then(|c| c.split(':').next().and_then(|n| n.parse().ok()))
        .unwrap_or(-1);
    Some(match state.as_str() {
        "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED"
        | "RESIZING" | "STAGE_OUT" | "SIGNALING" => return None,
        "COMPLETED" | "FAILED" => Ended::Exited(code),
        "TIMEOUT" => Ended::TimedOut,
        "OUT_OF_MEMORY" => Ended::OutOfMemory,
        other => Ended::Other(other.to_string()),
    })
}

/// `scancel`s the job when dropped while armed (the run was cancelled, or
/// its future dropped).
pub(super) struct Scancel {
    /// The job.
    pub id: u64,
    /// Whether the job may still run.
    pub armed: bool,
}

impl Drop for Scancel {
    fn drop(&mut self) {
        if self.armed {
            super::process::run_quietly("scancel".as_ref(), &[&self.id.to_string()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_quotes_every_word_and_exports_the_environment() {
        let argv: Vec<OsString> = vec!["python3".into(), "it's $HOME; `id`".into(), "".into()];
        let env: Vec<(OsString, OsString)> = vec![("PATH".into(), "/usr/bin:/bin".into())];
        let s = script(&argv, &env).unwrap();
        assert_eq!(
            s,
            "#!/bin/sh\nexport PATH='/usr/bin:/bin'\nexec 'python3' 'it'\\''s $HOME; `id`' ''\n"
        );
        let bad: Vec<(OsString, OsString)> = vec![("A B".into(), "x".into())];
        assert!(script(&argv, &bad).unwrap_err().contains("not valid"));
    }

    #[test]
    fn sbatch_gets_the_resources_and_the_executors_settings() {
        let m = Manifest::from_toml(
            "name = \"fit\"\nversion = \"1\"\ntimeout_secs = 61\n[resources]\ncpus = 2\nmemory_mb = 300\n[outputs.o]\npath = \"o\"\n[executor]\nkind = \"slurm\"\nargv = [\"x\"]\npartition = \"short\"\nsbatch_args = [\"--qos=low\"]\n",
        )
        .unwrap();
        let a: Vec<String> = sbatch_args(&m, Path::new("/j/w"), Path::new("/j/w/.oda"))
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        for expected in [
            "--parsable",
            "--export=NONE",
            "--chdir=/j/w",
            "--output=/j/w/.oda/stdout",
            "--cpus-per-task=2",
            "--mem=300M",
            "--time=2",
            "--partition=short",
            "--qos=low",
        ] {
            assert!(a.iter().any(|x| x == expected), "{expected} missing: {a:?}");
        }
        assert_eq!(a.last().map(String::as_str), Some("/j/w/.oda/slurm-job.sh"));
    }

    #[test]
    fn job_ids_and_final_states_are_read_from_the_tools() {
        assert_eq!(job_id("42\n"), Ok(42));
        assert_eq!(job_id("42;oda\n"), Ok(42));
        assert!(job_id("sbatch: error").is_err());
        let show = |state: &str, code: &str| {
            format!("JobId=7 JobName=oda-x\n   JobState={state} Reason=None Dependency=(null)\n   ExitCode={code}\n")
        };
        assert_eq!(ended(&show("RUNNING", "0:0")), None);
        assert_eq!(ended(&show("PENDING", "0:0")), None);
        assert_eq!(ended(&show("COMPLETED", "0:0")), Some(Ended::Exited(0)));
        assert_eq!(ended(&show("FAILED", "3:0")), Some(Ended::Exited(3)));
        assert_eq!(ended(&show("TIMEOUT", "0:15")), Some(Ended::TimedOut));
        assert_eq!(
            ended(&show("OUT_OF_MEMORY", "0:125")),
            Some(Ended::OutOfMemory)
        );
        assert_eq!(
            ended(&show("NODE_FAIL", "0:0")),
            Some(Ended::Other("NODE_FAIL".into()))
        );
        assert_eq!(ended("garbage"), None);
    }
}
