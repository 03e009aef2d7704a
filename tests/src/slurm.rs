//! A single-node SLURM cluster for the `slurm` executor's tests: `munged`
//! (started if none answers), then `slurmctld` and `slurmd` in the
//! foreground, as root, with a private `slurm.conf` in a temporary
//! directory (free ports, state and logs there too). Dropping it stops both
//! daemons. Needs root and Debian's `slurm-wlm` and `munge`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running test cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

impl Cluster {
    /// Start the cluster and wait (polling, 60 s at most) until its node is
    /// idle. Panics, saying what failed, when a daemon does not come up.
    pub fn start() -> Self {
        ensure_munge();
        let dir = tempfile::tempdir().expect("temp dir");
        let host = short_hostname();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (ctld_port, d_port) = (free_port(), free_port());
        let p = dir.path().to_path_buf();
        for sub in ["state", "spool", "log", "run"] {
            std::fs::create_dir(p.join(sub)).expect("slurm dirs");
        }
        let conf = format!(
            "ClusterName=odatest\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n\
             AuthType=auth/munge\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
             SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\n\
             SchedulerType=sched/backfill\nStateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/run/slurmctld.pid\nSlurmdPidFile={d}/run/slurmd.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
             SlurmctldPort={ctld_port}\nSlurmdPort={d_port}\nReturnToService=2\nMpiDefault=none\n\
             JobAcctGatherType=jobacct_gather/none\nMinJobAge=600\n\
             NodeName={host} CPUs={cpus} RealMemory=2000 State=UNKNOWN\n\
             PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            d = p.display()
        );
        let p = p.as_path();
        std::fs::write(p.join("slurm.conf"), conf).expect("slurm.conf");
        let mut cluster = Self {
            dir,
            daemons: Vec::new(),
        };
        for daemon in ["/usr/sbin/slurmctld", "/usr/sbin/slurmd"] {
            let child = Command::new(daemon)
                .arg("-D")
                .env("SLURM_CONF", cluster.conf())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {daemon}: {e} (apt install slurm-wlm)"));
            cluster.daemons.push(child);
        }
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new("sinfo")
                .args(["-h", "-o", "%T"])
                .env("SLURM_CONF", cluster.conf())
                .output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle") {
                return cluster;
            }
            assert!(
                Instant::now() < end,
                "the test SLURM node is not idle after 60 s; logs in {}:\n{}",
                p.display(),
                std::fs::read_to_string(p.join("log/slurmctld.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its `slurm.conf` (the value of `SLURM_CONF` for its clients).
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// Its state, spool and log directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Start `munged` unless a credential can already be made.
fn ensure_munge() {
    let works = || {
        Command::new("munge")
            .arg("-n")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works() {
        return;
    }
    std::fs::create_dir_all("/run/munge").expect("/run/munge");
    let _ = Command::new("chown")
        .args(["munge:munge", "/run/munge"])
        .status();
    let started = Command::new("runuser")
        .args(["-u", "munge", "--", "/usr/sbin/munged"])
        .status()
        .unwrap_or_else(|e| panic!("cannot start munged: {e} (apt install munge)"));
    assert!(started.success(), "munged did not start: {started}");
    let end = Instant::now() + Duration::from_secs(20);
    while !works() {
        assert!(
            Instant::now() < end,
            "munge does not work 20 s after munged started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn short_hostname() -> String {
    let out = Command::new("hostname")
        .arg("-s")
        .output()
        .expect("hostname");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
