//! The node's configuration file (`config.toml` in the data dir): serde structs
//! with `deny_unknown_fields`, the commented default file that `oda-node init`
//! writes, and validation that names the offending field.

use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use oda_protocol::{NetworkId, PublicKey, RunnerClass, WorkflowId};
use serde::{Deserialize, Serialize};

/// Environment variable overriding the data directory.
pub const DATA_DIR_ENV: &str = "ODA_DATA_DIR";

/// File names inside the data directory.
pub mod files {
    /// The node's ed25519 seed (hex, mode 0600).
    pub const KEY: &str = "node.key";
    /// The configuration.
    pub const CONFIG: &str = "config.toml";
    /// Written at start: peer id and listen addresses (JSON).
    pub const RUNTIME: &str = "node.json";
    /// The store (sled database and blob files).
    pub const STORE: &str = "store";
    /// The local API's bearer token (hex, mode 0600).
    pub const API_TOKEN: &str = "api.token";
    /// Written at start: the local API's socket address (`127.0.0.1:5801`).
    pub const API_ADDR: &str = "api.addr";
}

/// The platform's default data directory (e.g. `~/.local/share/oda-mesh` on Linux),
/// unless `ODA_DATA_DIR` is set.
pub fn default_data_dir() -> Result<PathBuf, ConfigError> {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("org", "oda-hub", "oda-mesh")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or(ConfigError::NoHome)
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Network id, part of every protocol and topic name. Default `main`.
    pub network: String,
    /// Listen addresses. Default TCP and QUIC on port 4001, all interfaces.
    pub listen: Vec<String>,
    /// Peers to join through: bootstrap nodes or any known peer, as multiaddrs
    /// ending in `/p2p/<peer id>`. Default: none.
    pub peers: Vec<String>,
    /// Run as the platform's bootstrap node (relay server, higher connection
    /// limits). Default false.
    pub bootstrap: bool,
    /// Serve the DHT (Kademlia server mode). Default true; turn off behind NAT.
    pub dht_server: bool,
    /// Most established connections. Default 256 (bootstrap: at least 2048).
    pub max_connections: u32,
    /// Connections idle for 10 s beyond this many peers are closed (except
    /// configured peers and gossip-mesh peers; never on a bootstrap node).
    /// Default 32.
    pub target_peers: u32,
    /// Store settings.
    pub store: StoreSection,
    /// Worker settings.
    pub worker: WorkerSection,
    /// Trust settings.
    pub trust: TrustSection,
    /// Controller settings.
    pub controller: ControllerSection,
    /// Requester settings.
    pub scheduler: SchedulerSection,
    /// Local API settings.
    pub api: ApiSection,
}

/// `[api]`: the local HTTP API used by the `oda` command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Socket address to listen on; must be a loopback address (the API is for
    /// this machine only). Port 0 picks a free port. Default `127.0.0.1:5801`.
    pub listen: String,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5801".into(),
        }
    }
}

/// `[worker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Offer compute to the mesh. Default false.
    pub enabled: bool,
    /// Concurrent jobs. Default 2.
    pub slots: u32,
    /// Whom to serve: "public" (anyone), "user" (only `owners`), "group"
    /// (the members of `groups`) or "session" (only `session_key`, until
    /// `session_until`, when the node stops). Default "public".
    pub runner_class: String,
    /// Owner public keys (hex), for the "user" class. Default none.
    pub owners: Vec<String>,
    /// Groups served by the "group" class, as `"<owner key hex>/<name>"`;
    /// their members (and owners) come from the newest roster of each
    /// imported with `oda trust import`. Default none.
    pub groups: Vec<String>,
    /// The one requester key (hex) served by the "session" class. Default none.
    pub session_key: String,
    /// When the "session" class's session ends, RFC 3339 (e.g.
    /// `"2026-12-05T18:00:00Z"`): no job is taken after it and the node
    /// stops. Default none.
    pub session_until: String,
    /// Workflow ids to listen for besides those added locally; they run only
    /// when endorsed by a trusted expert. Default none.
    pub workflows: Vec<String>,
    /// Whose jobs run in the bubblewrap sandbox (no network, read-only
    /// system, only the job directory writable): "off", "others" (jobs of
    /// requesters other than this node and its `owners`) or "all". The node
    /// refuses to start when `bwrap` is missing. Default "off".
    pub sandbox: String,
    /// Extra directories a sandboxed job may read (absolute), e.g. a Conda
    /// or pyenv installation its interpreter lives in. Default none.
    pub sandbox_paths: Vec<String>,
}

/// `[trust]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSection {
    /// Public keys (hex) whose facts this node accepts as results, besides its
    /// own; also the workers it assigns jobs to. Default none.
    pub keys: Vec<String>,
    /// Public keys (hex) of experts whose workflow endorsements the worker
    /// accepts. Default none.
    pub experts: Vec<String>,
    /// Groups whose members' facts this node accepts, as
    /// `"<owner key hex>/<group name>"`; the members are those of the newest
    /// signed roster of the group imported (`oda trust import`). Default none.
    pub groups: Vec<String>,
    /// How many distinct trusted workers must agree on a result (the same
    /// outcome and output bytes) before the requester accepts it; 1 takes
    /// any trusted worker's result. Default 1, at most
    /// [`MAX_QUORUM`](crate::scheduler::MAX_QUORUM).
    pub quorum: u32,
    /// Public keys (hex) of controllers whose verdicts this node heeds: a
    /// fact one of them endorsed is trusted (whoever signed it), a fact one
    /// of them disputed is not, nor is any other fact by its signer unless
    /// a controller endorsed it. Default none.
    pub controllers: Vec<String>,
}

impl Default for TrustSection {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            experts: Vec::new(),
            groups: Vec::new(),
            quorum: 1,
            controllers: Vec::new(),
        }
    }
}

/// `[controller]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerSection {
    /// Re-compute samples of the facts other workers announce for the
    /// deterministic workflows this node holds, and publish an endorsement
    /// or a dispute of each. Default false.
    pub enabled: bool,
    /// The lowest share of a worker's facts re-computed, however long its
    /// record of agreement (a worker with no record is sampled at 1).
    /// Default 0.05, between 0.001 and 1.
    pub min_rate: f64,
    /// Re-computations at the same time; samples beyond it wait, and those
    /// beyond [`crate::scheduler::controller::MAX_WAITING`] are skipped. Default 2.
    pub concurrent: u32,
}

impl Default for ControllerSection {
    fn default() -> Self {
        Self {
            enabled: false,
            min_rate: 0.05,
            concurrent: 2,
        }
    }
}

/// Longest offer window a requester may keep: well inside the time a
/// worker waits for the answer to its offer
/// ([`oda_protocol::messages::OFFER_ANSWER_MS`]).
pub const MAX_OFFER_WINDOW_MS: u64 = 2_000;

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// Collect offers this long after the first, ms. Default 300, at most
    /// 2000 (workers wait 5 s for the answer to an offer).
    pub offer_window_ms: u64,
    /// A job fails when no trusted worker offers within this long while it is
    /// advertised (busy workers queue adverts and offer when a slot frees),
    /// ms. Default 600000 (10 minutes).
    pub offer_timeout_ms: u64,
    /// A lease ends without a heartbeat for this long, ms. Default 10000.
    pub lease_ttl_ms: u64,
    /// Most attempts per expression. Default 3.
    pub max_attempts: u32,
    /// Most jobs of one workflow advertised at a time; the others stay
    /// queued until one is assigned. Default 256.
    pub max_open_adverts: usize,
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            enabled: false,
            slots: 2,
            runner_class: "public".into(),
            owners: Vec::new(),
            groups: Vec::new(),
            session_key: String::new(),
            session_until: String::new(),
            workflows: Vec::new(),
            sandbox: "off".into(),
            sandbox_paths: Vec::new(),
        }
    }
}

impl Default for SchedulerSection {
    fn default() -> Self {
        let d = crate::scheduler::SchedulerConfig::default();
        Self {
            offer_window_ms: d.offer_window_ms,
            offer_timeout_ms: d.offer_timeout_ms,
            lease_ttl_ms: d.lease_ttl_ms,
            max_attempts: d.max_attempts,
            max_open_adverts: d.max_open_adverts,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Cap on cached blob bytes, MiB; least recently used unpinned blobs are
    /// evicted above it. Default 10240 (10 GiB).
    pub blob_cap_mb: u64,
    /// Memory for the database's cache of records, MiB. Default 32.
    pub cache_mb: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: "main".into(),
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
            ],
            peers: Vec::new(),
            bootstrap: false,
            dht_server: true,
            max_connections: 256,
            target_peers: 32,
            store: StoreSection::default(),
            worker: WorkerSection::default(),
            trust: TrustSection::default(),
            controller: ControllerSection::default(),
            scheduler: SchedulerSection::default(),
            api: ApiSection::default(),
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            blob_cap_mb: 10240,
            cache_mb: crate::store::StoreConfig::DEFAULT_CACHE_BYTES >> 20,
        }
    }
}

/// The configuration after validation, in typed form.
#[derive(Debug, Clone)]
pub struct Validated {
    /// Network id.
    pub network: NetworkId,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through.
    pub peers: Vec<Multiaddr>,
    /// Bootstrap mode.
    pub bootstrap: bool,
    /// DHT server mode.
    pub dht_server: bool,
    /// Connection cap.
    pub max_connections: u32,
    /// Idle connections beyond this many peers are closed.
    pub target_peers: u32,
    /// Blob cache cap in bytes.
    pub blob_cap_bytes: u64,
    /// The database's record cache in bytes.
    pub store_cache_bytes: u64,
    /// Worker settings, if this node computes (jobs_dir filled by the runtime).
    pub worker: Option<WorkerSettings>,
    /// Keys whose facts are accepted.
    pub trusted_keys: Vec<PublicKey>,
    /// Keys whose workflow endorsements are accepted.
    pub trusted_experts: Vec<PublicKey>,
    /// Groups whose members' facts are accepted: (owner key, name).
    pub trusted_groups: Vec<(PublicKey, String)>,
    /// Controllers whose endorsements and disputes of facts are heeded.
    pub controllers: Vec<PublicKey>,
    /// Controller settings, if this node re-computes samples.
    pub controller: Option<crate::scheduler::controller::ControllerConfig>,
    /// Requester settings.
    pub scheduler: crate::scheduler::SchedulerConfig,
}

/// Validated `[worker]` settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Concurrent jobs.
    pub slots: u32,
    /// Whom it serves.
    pub serves: crate::scheduler::worker::Serves,
    /// Extra workflows to listen for.
    pub workflows: Vec<WorkflowId>,
    /// Whose jobs run in the sandbox.
    pub sandbox: crate::executor::SandboxMode,
    /// Extra read-only paths of the sandbox (absolute).
    pub sandbox_paths: Vec<PathBuf>,
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No home directory to derive the default data dir from.
    #[error("cannot find a home directory for the default data dir; pass --data-dir or set {DATA_DIR_ENV}")]
    NoHome,
    /// Cannot read the file.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML error (unknown field, wrong type), with line and column.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A field has an invalid value.
    #[error("config field `{field}`: {problem}")]
    Field {
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Public keys (hex) of the list `name`; an error names the bad entry.
fn parse_keys(name: &str, list: &[String]) -> Result<Vec<PublicKey>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, k)| {
            k.parse::<PublicKey>()
                .map_err(|e| field(format!("{name}[{i}]"), e.to_string()))
        })
        .collect()
}

/// `[worker] sandbox` and `sandbox_paths`, checked.
fn worker_sandbox(
    w: &WorkerSection,
) -> Result<(crate::executor::SandboxMode, Vec<PathBuf>), ConfigError> {
    use crate::executor::SandboxMode;
    let mode = match w.sandbox.as_str() {
        "off" => SandboxMode::Off,
        "others" => SandboxMode::Others,
        "all" => SandboxMode::All,
        other => {
            return Err(field(
                "worker.sandbox",
                format!(
                    "{} is not supported; use \"off\", \"others\" or \"all\"",
                    crate::api::quoted(other)
                ),
            ))
        }
    };
    let paths = w
        .sandbox_paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = PathBuf::from(p);
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(field(
                    format!("worker.sandbox_paths[{i}]"),
                    format!("{} is not an absolute path", crate::api::quoted(p)),
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok((mode, paths))
}

/// Whom a `[worker]` serves, checked: each class's settings present, and
/// none of another class's.
fn worker_serves(w: &WorkerSection) -> Result<crate::scheduler::worker::Serves, ConfigError> {
    use crate::scheduler::worker::{Serves, Session};
    let class = match w.runner_class.as_str() {
        "public" => RunnerClass::Public,
        "user" => RunnerClass::User,
        "group" => RunnerClass::Group,
        "session" => RunnerClass::Session,
        "job" => {
            return Err(field(
                "worker.runner_class",
                "a \"job\" runner is started with `oda-node execute --expr ID`, not configured",
            ))
        }
        other => {
            return Err(field(
                "worker.runner_class",
                format!(
                    "{other:?} is not supported; use \"public\", \"user\", \"group\" or \"session\""
                ),
            ))
        }
    };
    let only_for = |name: &str, set: bool, for_class: RunnerClass| {
        if set && class != for_class {
            return Err(field(
                format!("worker.{name}"),
                format!(
                    "is only for runner_class = \"{}\" (this worker is \"{}\")",
                    for_class.name(),
                    class.name()
                ),
            ));
        }
        Ok(())
    };
    only_for("owners", !w.owners.is_empty(), RunnerClass::User)?;
    only_for("groups", !w.groups.is_empty(), RunnerClass::Group)?;
    only_for(
        "session_key",
        !w.session_key.is_empty(),
        RunnerClass::Session,
    )?;
    only_for(
        "session_until",
        !w.session_until.is_empty(),
        RunnerClass::Session,
    )?;
    let groups = w
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| parse_group(g).map_err(|e| field(format!("worker.groups[{i}]"), e)))
        .collect::<Result<_, _>>()?;
    if class == RunnerClass::Group && w.groups.is_empty() {
        return Err(field(
            "worker.groups",
            "a \"group\" worker needs at least one group (\"<owner key hex>/<name>\")",
        ));
    }
    let session = if class == RunnerClass::Session {
        let requester = w.session_key.parse::<PublicKey>().map_err(|e| {
            field(
                "worker.session_key",
                format!("a \"session\" worker needs the requester's key (hex): {e}"),
            )
        })?;
        let until = humantime::parse_rfc3339_weak(w.session_until.trim()).map_err(|e| {
            field(
                "worker.session_until",
                format!(
                    "a \"session\" worker needs its end as RFC 3339, e.g. \"2026-12-05T18:00:00Z\": {e}"
                ),
            )
        })?;
        let until_ms = until
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Some(Session {
            requester,
            until_ms,
        })
    } else {
        None
    };
    Ok(Serves {
        class,
        owners: parse_keys("worker.owners", &w.owners)?
            .into_iter()
            .collect(),
        groups,
        session,
        job: None,
    })
}

impl Config {
    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parse config text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().to_string())
    }

    /// Check every field and convert to typed values.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let network = self
            .network
            .parse::<NetworkId>()
            .map_err(|e| field("network", e.to_string()))?;
        let addrs = |name: &str, list: &[String]| -> Result<Vec<Multiaddr>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse::<Multiaddr>().map_err(|e| {
                        field(
                            format!("{name}[{i}]"),
                            format!("{a:?} is not a multiaddr: {e}"),
                        )
                    })
                })
                .collect()
        };
        let listen = addrs("listen", &self.listen)?;
        if listen.is_empty() {
            return Err(field("listen", "must list at least one address"));
        }
        let peers = addrs("peers", &self.peers)?;
        if self.max_connections < 8 {
            return Err(field("max_connections", "must be at least 8"));
        }
        if self.target_peers < 4 || self.target_peers > self.max_connections {
            return Err(field(
                "target_peers",
                "must be at least 4 and at most max_connections",
            ));
        }
        if self.store.blob_cap_mb == 0 {
            return Err(field("store.blob_cap_mb", "must be at least 1"));
        }
        if self.store.cache_mb == 0 || self.store.cache_mb > 64 * 1024 {
            return Err(field("store.cache_mb", "must be between 1 and 65536"));
        }
        let worker = if self.worker.enabled {
            let w = &self.worker;
            if w.slots == 0 || w.slots > 1024 {
                return Err(field("worker.slots", "must be between 1 and 1024"));
            }
            let serves = worker_serves(w)?;
            let workflows = w
                .workflows
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    id.parse::<WorkflowId>()
                        .map_err(|e| field(format!("worker.workflows[{i}]"), e.to_string()))
                })
                .collect::<Result<_, _>>()?;
            let (sandbox, sandbox_paths) = worker_sandbox(w)?;
            Some(WorkerSettings {
                slots: w.slots,
                serves,
                workflows,
                sandbox,
                sandbox_paths,
            })
        } else {
            None
        };
        let sc = &self.scheduler;
        if sc.max_attempts == 0 || sc.max_attempts > 100 {
            return Err(field("scheduler.max_attempts", "must be between 1 and 100"));
        }
        if sc.max_open_adverts == 0 || sc.max_open_adverts > 100_000 {
            return Err(field(
                "scheduler.max_open_adverts",
                "must be between 1 and 100000",
            ));
        }
        if sc.lease_ttl_ms < 200 {
            return Err(field("scheduler.lease_ttl_ms", "must be at least 200"));
        }
        if sc.offer_window_ms > MAX_OFFER_WINDOW_MS {
            return Err(field(
                "scheduler.offer_window_ms",
                format!(
                    "must be at most {MAX_OFFER_WINDOW_MS} (workers wait {} ms for the answer to an offer)",
                    oda_protocol::messages::OFFER_ANSWER_MS
                ),
            ));
        }
        let quorum = self.trust.quorum.max(1);
        if quorum > crate::scheduler::MAX_QUORUM {
            return Err(field(
                "trust.quorum",
                format!("must be at most {}", crate::scheduler::MAX_QUORUM),
            ));
        }
        let cs = &self.controller;
        if !(0.001..=1.0).contains(&cs.min_rate) {
            return Err(field("controller.min_rate", "must be between 0.001 and 1"));
        }
        if cs.concurrent == 0 || cs.concurrent > 64 {
            return Err(field("controller.concurrent", "must be between 1 and 64"));
        }
        let controller = cs
            .enabled
            .then_some(crate::scheduler::controller::ControllerConfig {
                min_rate: cs.min_rate,
                concurrent: cs.concurrent as usize,
            });
        if sc.offer_timeout_ms < sc.offer_window_ms {
            return Err(field(
                "scheduler.offer_timeout_ms",
                "must not be below offer_window_ms",
            ));
        }
        let scheduler = crate::scheduler::SchedulerConfig {
            offer_window_ms: sc.offer_window_ms,
            offer_timeout_ms: sc.offer_timeout_ms,
            lease_ttl_ms: sc.lease_ttl_ms,
            max_attempts: sc.max_attempts,
            max_open_adverts: sc.max_open_adverts,
            quorum,
            ..Default::default()
        };
        self.api_listen()?;
        let max_connections = if self.bootstrap {
            self.max_connections.max(2048)
        } else {
            self.max_connections
        };
        Ok(Validated {
            network,
            listen,
            peers,
            bootstrap: self.bootstrap,
            dht_server: self.dht_server || self.bootstrap,
            max_connections,
            target_peers: self.target_peers,
            blob_cap_bytes: self.store.blob_cap_mb.saturating_mul(1024 * 1024),
            store_cache_bytes: self.store.cache_mb.saturating_mul(1024 * 1024),
            worker,
            trusted_keys: parse_keys("trust.keys", &self.trust.keys)?,
            trusted_experts: parse_keys("trust.experts", &self.trust.experts)?,
            trusted_groups: self
                .trust
                .groups
                .iter()
                .enumerate()
                .map(|(i, g)| parse_group(g).map_err(|e| field(format!("trust.groups[{i}]"), e)))
                .collect::<Result<_, _>>()?,
            controllers: parse_keys("trust.controllers", &self.trust.controllers)?,
            controller,
            scheduler,
        })
    }
}

/// Longest group name, bytes.
pub const MAX_GROUP_NAME: usize = 128;

/// Whether `name` can name a group: 1 to [`MAX_GROUP_NAME`] bytes.
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_GROUP_NAME
}

/// A group named as `<owner key hex>/<name>`.
pub fn parse_group(text: &str) -> Result<(PublicKey, String), String> {
    let (owner, name) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not <owner key hex>/<group name>"))?;
    let owner = owner
        .parse::<PublicKey>()
        .map_err(|e| format!("owner key of {text:?}: {e}"))?;
    if !valid_group_name(name) {
        return Err(format!(
            "group name of {text:?} must be 1 to {MAX_GROUP_NAME} bytes"
        ));
    }
    Ok((owner, name.to_string()))
}

impl Config {
    /// The local API's listen address, refused unless it is a loopback address.
    pub fn api_listen(&self) -> Result<std::net::SocketAddr, ConfigError> {
        let addr: std::net::SocketAddr = self.api.listen.trim().parse().map_err(|e| {
            field(
                "api.listen",
                format!(
                    "{:?} is not a socket address like \"127.0.0.1:5801\": {e}",
                    self.api.listen
                ),
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(field(
                "api.listen",
                format!(
                    "{addr} is not a loopback address; the API is for this machine only (use 127.0.0.1 or [::1])"
                ),
            ));
        }
        Ok(addr)
    }
}

/// The file `oda-node init` writes: every field with its default and a comment.
pub const DEFAULT_CONFIG_TOML: &str = r#"# ODA mesh node configuration. Every field is shown with its default value.
# Unknown fields are an error. Command-line flags of `oda-node run` override these.

# Network id: part of every protocol and topic name, so test meshes never mix
# with the real one. 1-32 of a-z, 0-9 and '-'.
network = "main"

# Addresses to listen on (multiaddrs). Port 0 picks a free port.
listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]

# Peers to join through: the platform's bootstrap nodes or any peer you know,
# as multiaddrs ending in /p2p/<peer id>. `oda-node run --peer ADDR` adds more.
peers = []

# Run as the platform's bootstrap node: relay server for NATed peers, DHT
# server, at least 2048 connections.
bootstrap = false

# Serve the DHT (Kademlia server mode). Turn off on machines behind NAT that
# others cannot reach.
dht_server = true

# Most established connections.
max_connections = 256

# Keep about this many peers: connections idle for 10 s beyond it are closed
# (configured peers and gossip-mesh peers stay; a bootstrap node keeps all).
target_peers = 32

[store]
# Cap on cached blob bytes, in MiB. Above it, the least recently used blobs
# that are not pinned are evicted.
blob_cap_mb = 10240
# Memory for the database's cache of records (facts, expressions, job
# records), in MiB. More keeps a large store's records in memory; reads
# beyond it go to the file and the OS page cache.
cache_mb = 32

[worker]
# Offer compute to the mesh.
enabled = false
# Jobs run at the same time.
slots = 2
# Whom to serve: "public" (anyone), "user" (only the owner keys below),
# "group" (the members of the groups below) or "session" (one requester key
# until an end, when the node stops). Facts record the class.
runner_class = "public"
# Owner public keys (hex) for the "user" class.
owners = []
# Groups for the "group" class, as "<owner key hex>/<name>": their members
# come from the newest roster of each imported with `oda trust import`.
groups = []
# The requester key (hex) and the end of the session (RFC 3339, e.g.
# "2026-12-05T18:00:00Z") for the "session" class.
session_key = ""
session_until = ""
# Workflow ids to listen for besides those added here with `oda workflow add`;
# they run only when endorsed by a key in [trust] experts.
workflows = []
# Run jobs in the bubblewrap sandbox (no network, read-only system, only the
# job directory writable): "off", "others" (jobs of requesters other than this
# node and its owners; recommended for a worker serving others) or "all". The
# node does not start when `bwrap` is missing (Debian: apt install bubblewrap).
sandbox = "off"
# Extra directories a sandboxed job may read, e.g. a Conda or pyenv
# installation its interpreter lives in.
sandbox_paths = []

[trust]
# Public keys (hex) whose facts this node accepts as results, besides its own.
# Jobs are only assigned to workers whose key is listed here.
keys = []
# Public keys (hex) of experts whose workflow endorsements the worker accepts.
experts = []
# Groups whose members' facts this node accepts, as "<owner key hex>/<name>";
# members come from the newest roster signed by the owner that this node
# imported (`oda trust import ROSTER`).
groups = []
# How many distinct trusted workers must agree on a result (same outcome, same
# output bytes) before it is accepted; 1 accepts any trusted worker's result.
quorum = 1
# Public keys (hex) of controllers whose verdicts this node heeds: a fact one
# of them endorsed is trusted whoever signed it; a fact one of them disputed
# is not, nor is any other fact by its signer unless a controller endorsed it.
controllers = []

[controller]
# Re-compute samples of the facts other workers announce for the
# deterministic workflows added here, and publish an endorsement (same
# outputs) or a dispute (other outputs) of each.
enabled = false
# The lowest share of a worker's facts re-computed: a worker without a record
# here is sampled every time, less as its agreements grow, every time again
# after a dispute.
min_rate = 0.05
# Re-computations at the same time.
concurrent = 2

[scheduler]
# Collect offers this long after the first one, in ms (at most 2000: workers
# wait 5 s for the answer to an offer).
offer_window_ms = 300
# A job waits advertised this long for a trusted worker to offer (busy workers
# queue adverts and offer when a slot frees), then fails, in ms.
offer_timeout_ms = 600000
# A lease ends when no heartbeat arrives for this long, in ms.
lease_ttl_ms = 10000
# Most attempts (assignments to workers) per expression.
max_attempts = 3
# Most jobs of one workflow advertised at a time (waiting for offers); the
# others stay queued and are advertised as these are assigned. Each open
# advert is re-published until a worker takes it.
max_open_adverts = 256

[api]
# The local HTTP API (used by the `oda` command line), on a loopback address
# only; requests need the bearer token in api.token in the data dir. Port 0
# picks a free port; the address in use is written to api.addr.
listen = "127.0.0.1:5801"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_to_the_defaults() {
        assert_eq!(
            Config::parse(DEFAULT_CONFIG_TOML).unwrap(),
            Config::default()
        );
        Config::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::parse("netwrk = \"x\"").unwrap_err();
        assert!(e.contains("unknown field `netwrk`"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        let e = Config::parse("max_connections = \"many\"").unwrap_err();
        assert!(e.contains("max_connections"), "{e}");

        let c = Config {
            peers: vec!["not an address".into()],
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`peers[0]`"), "{e}");
        let c = Config {
            network: "Main Net".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("`network`"));
        // The error of the default config with one field edited.
        let rejected = |edit: fn(&mut Config)| {
            let mut c = Config::default();
            edit(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(rejected(|c| c.store.blob_cap_mb = 0).contains("`store.blob_cap_mb`"));
        assert!(rejected(|c| c.store.cache_mb = 0).contains("`store.cache_mb`"));
        assert!(
            rejected(|c| c.scheduler.max_open_adverts = 0).contains("`scheduler.max_open_adverts`")
        );
        assert!(rejected(|c| c.trust.quorum = 17).contains("`trust.quorum`"));
        let mut c = Config::default();
        c.trust.quorum = 3;
        assert_eq!(c.validate().unwrap().scheduler.quorum, 3);
        c.trust.quorum = 0;
        assert_eq!(c.validate().unwrap().scheduler.quorum, 1, "0 means 1");
        assert!(rejected(|c| c.controller.min_rate = 0.0).contains("`controller.min_rate`"));
        assert!(rejected(|c| c.controller.min_rate = 1.5).contains("`controller.min_rate`"));
        assert!(rejected(|c| c.controller.concurrent = 0).contains("`controller.concurrent`"));
        assert!(
            rejected(|c| c.trust.controllers = vec!["zz".into()]).contains("`trust.controllers")
        );
        assert!(Config::default().validate().unwrap().controller.is_none());
        c.controller.enabled = true;
        let on = c.validate().unwrap().controller.expect("enabled");
        assert_eq!((on.min_rate, on.concurrent), (0.05, 2));
    }

    #[test]
    fn each_runner_class_needs_its_own_settings_and_no_others() {
        let key = "ab".repeat(32);
        let worker = |edit: &dyn Fn(&mut WorkerSection)| {
            let mut c = Config::default();
            c.worker.enabled = true;
            edit(&mut c.worker);
            c.validate().map(|v| v.worker.expect("enabled").serves)
        };
        let error = |edit: &dyn Fn(&mut WorkerSection)| worker(edit).unwrap_err().to_string();
        let e = error(&|w| w.runner_class = "anonymous".into());
        assert!(
            e.contains("`worker.runner_class`") && e.contains("\"group\""),
            "{e}"
        );
        let e = error(&|w| w.runner_class = "job".into());
        assert!(e.contains("oda-node execute"), "{e}");
        let e = error(&|w| w.runner_class = "group".into());
        assert!(
            e.contains("`worker.groups`") && e.contains("at least one"),
            "{e}"
        );
        let e = error(&|w| {
            w.runner_class = "group".into();
            w.groups = vec!["nogroup".into()];
        });
        assert!(e.contains("`worker.groups[0]`"), "{e}");
        let e = error(&|w| w.groups = vec![format!("{}/team", "ab".repeat(32))]);
        assert!(
            e.contains("`worker.groups`") && e.contains("only for runner_class = \"group\""),
            "{e}"
        );
        let e = error(&|w| w.owners = vec!["ab".repeat(32)]);
        assert!(
            e.contains("`worker.owners`") && e.contains("\"public\""),
            "{e}"
        );
        let e = error(&|w| w.runner_class = "session".into());
        assert!(e.contains("`worker.session_key`"), "{e}");
        let e = error(&|w| {
            w.runner_class = "session".into();
            w.session_key = "ab".repeat(32);
            w.session_until = "tomorrow".into();
        });
        assert!(
            e.contains("`worker.session_until`") && e.contains("RFC 3339"),
            "{e}"
        );
        let session = worker(&|w| {
            w.runner_class = "session".into();
            w.session_key = "ab".repeat(32);
            w.session_until = "2030-01-02T03:04:05Z".into();
        })
        .unwrap()
        .session
        .expect("a session");
        assert_eq!(session.until_ms, 1_893_553_445_000);
        assert_eq!(session.requester.to_string(), key);
        let group = worker(&|w| {
            w.runner_class = "group".into();
            w.groups = vec![format!("{}/team", "ab".repeat(32))];
        })
        .unwrap();
        assert_eq!(group.class, RunnerClass::Group);
        assert_eq!(group.groups.len(), 1);
    }

    #[test]
    fn the_sandbox_setting_names_its_modes_and_wants_absolute_paths() {
        use crate::executor::SandboxMode;
        let worker = |edit: &dyn Fn(&mut WorkerSection)| {
            let mut c = Config::default();
            c.worker.enabled = true;
            edit(&mut c.worker);
            c.validate().map(|v| {
                let w = v.worker.expect("enabled");
                (w.sandbox, w.sandbox_paths)
            })
        };
        assert_eq!(worker(&|_| {}).unwrap(), (SandboxMode::Off, vec![]));
        let (mode, paths) = worker(&|w| {
            w.sandbox = "others".into();
            w.sandbox_paths = vec!["/opt/conda".into()];
        })
        .unwrap();
        assert_eq!(mode, SandboxMode::Others);
        assert_eq!(paths, [PathBuf::from("/opt/conda")]);
        let e = worker(&|w| w.sandbox = "yes".into())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`worker.sandbox`") && e.contains("\"others\""),
            "{e}"
        );
        let e = worker(&|w| w.sandbox_paths = vec!["conda".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`worker.sandbox_paths[0]`") && e.contains("absolute"),
            "{e}"
        );
    }

    #[test]
    fn api_listen_must_be_loopback() {
        let mut c = Config::default();
        assert_eq!(c.api_listen().unwrap(), "127.0.0.1:5801".parse().unwrap());
        c.api.listen = "[::1]:0".into();
        c.validate().unwrap();
        c.api.listen = "0.0.0.0:5801".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`api.listen`") && e.contains("loopback"), "{e}");
        c.api.listen = "localhost".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`api.listen`"), "{e}");
    }
}
