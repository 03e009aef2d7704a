//! oda-tests: multi-process tests with real `oda-node` and `oda` binaries on
//! loopback (the tests are in `tests/tests/`).
//!
//! # Where the binaries come from
//!
//! Cargo gives an integration test the path of its own package's binaries
//! only, so these tests find `oda-node` and `oda` next to the test executable:
//! `target/<profile>/deps/<test>` → `target/<profile>/oda-node`. `cargo test
//! --workspace` builds both (the `node` and `cli` packages have integration
//! tests of their own, which makes Cargo build their binaries first). When
//! running this crate alone, build them first:
//!
//! ```sh
//! cargo build -p oda-node -p oda-cli && cargo test -p oda-tests
//! ```
//!
//! `ODA_TEST_BIN_DIR` overrides the directory. A missing binary fails the
//! test with a message saying this.
//!
//! # The harness
//!
//! [`NodeProc`] is one `oda-node run` process with its own temporary data dir,
//! initialised with `oda-node init`, its config edited (unique network id,
//! TCP on 127.0.0.1 port 0, API on 127.0.0.1:0), and readiness found by
//! polling `node.json` and `api.addr` with a deadline — never by sleeping. The
//! process is stopped (SIGTERM, then SIGKILL) when the guard drops; if the
//! test is failing at that moment, the node's log is printed.
//! [`oda`] runs the command line with a timeout.

pub mod control;
pub mod images;
pub mod slurm;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oda_node::config::{files, Config};
use oda_node::runtime::RuntimeInfo;

/// How long a node may take to write its addresses.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long one `oda` command may take.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(180);

/// The directory holding the built binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ODA_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable is in a directory");
    // target/debug/deps/<test> → target/debug
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The path of a built binary; panics with how to build it if it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{name} not found at {}: build it first with `cargo build -p oda-node -p oda-cli` \
         (`cargo test --workspace` builds it), or set ODA_TEST_BIN_DIR",
        path.display()
    );
    path
}

/// The example workflows folder of this repository.
pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/workflows")
        .canonicalize()
        .expect("examples/workflows exists")
}

/// A network id unique to this test and process (at most 32 characters).
pub fn network_id(test: &str) -> String {
    let short: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("t-{short}-{}", std::process::id())
}

/// Whether this process runs as root (`/proc/self` belongs to its
/// effective user).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// What an `oda` command did.
#[derive(Debug)]
pub struct Output {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Standard output parsed as JSON; panics with both streams if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e})\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panic unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Run a program with a deadline; its output is collected in temporary files
/// (no pipe can fill up). Panics if it runs past the deadline.
pub fn run_with_deadline(mut cmd: Command, deadline: Duration) -> Output {
    let out = tempfile::tempfile().expect("temp file");
    let err = tempfile::tempfile().expect("temp file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone file"))
        .stderr(err.try_clone().expect("clone file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the command") {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} ran longer than {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                read_all(out),
                read_all(err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: read_all(out),
        stderr: read_all(err),
    }
}

fn read_all(mut f: std::fs::File) -> String {
    use std::io::Seek;
    let mut s = String::new();
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = f.read_to_string(&mut s);
    s
}

/// Run `oda --data-dir DIR ARGS...`.
pub fn oda(data_dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("oda"));
    cmd.arg("--data-dir").arg(data_dir).args(args);
    cmd.env_remove("ODA_API").env_remove("ODA_API_TOKEN");
    run_with_deadline(cmd, COMMAND_DEADLINE)
}

/// A node's data dir made by `oda-node init`, with the config set for tests.
pub struct DataDir(tempfile::TempDir);

impl DataDir {
    /// `oda-node init` a fresh data dir (named with `prefix`), then set the
    /// config to `network`, TCP on 127.0.0.1 port 0 and the API on
    /// 127.0.0.1:0, and let `edit` change it further.
    pub fn init(prefix: &str, network: &str, edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("a temporary data dir can be created");
        let mut cmd = Command::new(bin("oda-node"));
        cmd.arg("init").arg("--data-dir").arg(dir.path());
        cmd.arg("--network").arg(network);
        run_with_deadline(cmd, Duration::from_secs(30)).expect_code(0);
        let data = Self(dir);
        data.edit(|c| {
            c.network = network.to_string();
            c.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
            c.api.listen = "127.0.0.1:0".into();
            edit(c);
        });
        data
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Edit `config.toml` (takes effect at the next start).
    pub fn edit(&self, edit: impl FnOnce(&mut Config)) {
        let path = self.path().join(files::CONFIG);
        let mut cfg = Config::load(&path).expect("config.toml loads");
        edit(&mut cfg);
        std::fs::write(&path, toml::to_string(&cfg).expect("the config serialises"))
            .expect("config.toml can be written");
    }

    /// The API token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.path().join(files::API_TOKEN))
            .expect("api.token exists")
            .trim()
            .to_string()
    }
}

/// One `oda-node` process and its data dir. Stopped on drop.
pub struct NodeProc {
    /// The data dir.
    pub dir: DataDir,
    /// A name for messages.
    pub name: String,
    child: Option<Child>,
    /// Its `node.json`, once started.
    pub info: Option<RuntimeInfo>,
    /// Its API address (`127.0.0.1:port`), once started.
    pub api: Option<String>,
}

impl NodeProc {
    /// `oda-node init` a fresh data dir, then let `edit` change the config
    /// (already set to: `network`, TCP on 127.0.0.1 port 0, API on 127.0.0.1:0).
    pub fn init(name: &str, network: &str, edit: impl FnOnce(&mut Config)) -> Self {
        Self {
            dir: DataDir::init(&format!("oda-{name}-"), network, edit),
            name: name.to_string(),
            child: None,
            info: None,
            api: None,
        }
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Edit the config before [`NodeProc::start`].
    pub fn edit(&self, edit: impl FnOnce(&mut Config)) {
        self.dir.edit(edit)
    }

    fn log_path(&self) -> PathBuf {
        self.path().join("node.log")
    }

    /// Start `oda-node run` and wait (polling, with a deadline) until it has
    /// written its listen addresses and API address.
    pub fn start(&mut self) -> &RuntimeInfo {
        self.start_with_env(&[])
    }

    /// [`NodeProc::start`] with extra environment variables (e.g. the
    /// `SLURM_CONF` of a test cluster).
    pub fn start_with_env(&mut self, env: &[(&str, &std::ffi::OsStr)]) -> &RuntimeInfo {
        let log = std::fs::File::create(self.log_path()).expect("log file");
        // A relative --data-dir (from the parent directory), as people type
        // it: paths the node hands to job processes must still resolve.
        let parent = self.path().parent().expect("temp dirs have a parent");
        let relative = self.path().file_name().expect("temp dirs have a name");
        let child = Command::new(bin("oda-node"))
            .current_dir(parent)
            .arg("run")
            .arg("--data-dir")
            .arg(relative)
            .env(
                "ODA_LOG",
                "info,oda_node=debug,libp2p=warn,libp2p_gossipsub=error",
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("oda-node starts");
        self.child = Some(child);
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "node {} exited at start with {status}\n{}",
                    self.name,
                    self.log()
                );
            }
            if let Some((info, api)) = ready_files(self.path(), self.pid()) {
                self.info = Some(info);
                self.api = Some(api);
                break;
            }
            assert!(
                Instant::now() < end,
                "node {} did not write node.json and api.addr within {START_DEADLINE:?}\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.info.as_ref().expect("just set")
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its public key (hex), once started.
    pub fn public_key(&self) -> String {
        self.info.as_ref().expect("started").public_key.clone()
    }

    /// Its first listen address (with `/p2p/<id>`), once started.
    pub fn addr(&self) -> String {
        self.info.as_ref().expect("started").listen[0].clone()
    }

    /// The API token.
    pub fn token(&self) -> String {
        self.dir.token()
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Wait up to `deadline` for the node to exit by itself; its exit
    /// status, or `None` if it still runs.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL. Returns whether it exited
    /// successfully on SIGTERM.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        #[cfg(unix)]
        {
            use nix::sys::signal::{kill, Signal};
            use nix::unistd::Pid;
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(status)) = child.try_wait() {
                    return status.success();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Run `oda` against this node.
    pub fn oda(&self, args: &[&str]) -> Output {
        oda(self.path(), args)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(300);
            eprintln!(
                "----- log of node {} ({}, last {} lines) -----\n{}\n----- end of log of {} -----",
                self.name,
                self.path().display(),
                lines.len() - from,
                lines[from..].join("\n"),
                self.name
            );
        }
    }
}

/// `node.json` (written by the process `pid`, with listen addresses) and
/// `api.addr` of a data dir, once the node has written both.
pub fn ready_files(dir: &std::path::Path, pid: Option<u32>) -> Option<(RuntimeInfo, String)> {
    let info = std::fs::read(dir.join(files::RUNTIME))
        .ok()
        .and_then(|b| serde_json::from_slice::<RuntimeInfo>(&b).ok())
        .filter(|i| !i.listen.is_empty() && Some(i.pid) == pid)?;
    let api = std::fs::read_to_string(dir.join(files::API_ADDR))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())?;
    Some((info, api))
}
