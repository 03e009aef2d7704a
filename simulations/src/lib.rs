//! `oda-simulations`: in-process ODA meshes on loopback, and the measurements
//! behind `oda-bench` (see `docs/benchmarks.md`).
//!
//! Every benchmark starts what it needs itself (real libp2p swarms on
//! `127.0.0.1`, real sled stores in temp dirs, real executor processes), takes
//! a [`Sizes`] so that the CI smoke test can run it in seconds, and returns a
//! [`report::Outcome`]: the mesh's figures next to the physical limit measured
//! in the same run and, where one exists, the figures of the tools a user would
//! pick instead (Dask distributed and Ray).
//!
//! - [`mesh`]: network-only peers (`oda_node::network::new`), topologies.
//! - [`cache`]: remote cache hit and cold DHT lookup.
//! - [`jobs`]: trivial job round trip and throughput with `runtime::Node`s.
//! - [`blob`]: verified blob transfer against raw loopback TCP.
//! - [`gossip`]: time until every node of a 50/100-node mesh has a message.
//! - [`process`]: the machine's fork/exec ceiling, idle `oda-node` RSS.
//! - [`python`]: those tools, each run as a Python script under a deadline:
//!   [`dask`] (Dask distributed) and [`ray`] (Ray), the same trivial-task
//!   figures.
//! - [`stats`], [`report`]: percentiles, the Markdown table and the JSON.
//! - [`suite`]: the whole run, shared by `oda-bench` and the smoke test.

pub mod blob;
pub mod cache;
pub mod dask;
pub mod flood;
pub mod gossip;
pub mod jobs;
pub mod loaded;
pub mod mesh;
pub mod process;
pub mod python;
pub mod ray;
pub mod report;
pub mod stats;
pub mod suite;

/// Problem sizes of one run. [`Sizes::full`] is what `docs/benchmarks.md`
/// reports; [`Sizes::quick`] finishes in seconds (CI smoke, `--quick`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sizes {
    /// Whether these are the tiny smoke-test sizes.
    pub quick: bool,
    /// Peers in the remote-cache mesh (besides the bootstrap).
    pub cache_nodes: usize,
    /// Lookups of the cached fact from one peer.
    pub cache_asks: usize,
    /// Fresh peers, one cold lookup each.
    pub cold_peers: usize,
    /// Workers in the job meshes.
    pub workers: usize,
    /// Sequential trivial jobs.
    pub sequential_jobs: usize,
    /// Jobs submitted at once.
    pub burst_jobs: usize,
    /// Sequential honest jobs before and during the advert flood.
    pub flood_jobs: usize,
    /// The flood's adverts per second.
    pub flood_rate: u64,
    /// Seconds each fork/exec loop runs.
    pub fork_secs: f64,
    /// Bytes moved by the blob and TCP transfers.
    pub blob_bytes: u64,
    /// Mesh sizes of the gossip benchmark.
    pub gossip_nodes: Vec<usize>,
    /// Messages timed per gossip mesh.
    pub gossip_messages: usize,
    /// How long a gossip mesh must go without re-arranging its connections
    /// before it counts as settled (longer than a connection's idle grace
    /// before it may be trimmed, 10 s, plus the 5 s maintenance tick).
    pub gossip_quiet: std::time::Duration,
    /// Seconds the idle node sits before its RSS is read.
    pub idle_secs: f64,
    /// Facts in the loaded node's store.
    pub loaded_facts: usize,
    /// Job records in the loaded node's store.
    pub loaded_jobs: usize,
    /// Sequential tasks of each Python peer (Dask, Ray).
    pub peer_tasks: usize,
    /// Tasks in each Python peer's throughput batch.
    pub peer_map: usize,
}

impl Sizes {
    /// The sizes the issue asks for, scaled down where noted in the report.
    pub fn full() -> Self {
        Self {
            quick: false,
            cache_nodes: 20,
            cache_asks: 1_000,
            cold_peers: 20,
            workers: 4,
            sequential_jobs: 500,
            burst_jobs: 5_000,
            flood_jobs: 100,
            flood_rate: 1_000,
            fork_secs: 3.0,
            blob_bytes: 1 << 30,
            gossip_nodes: vec![50, 100],
            gossip_messages: 20,
            gossip_quiet: std::time::Duration::from_secs(16),
            idle_secs: 2.0,
            loaded_facts: 100_000,
            loaded_jobs: 10_000,
            peer_tasks: 500,
            peer_map: 10_000,
        }
    }

    /// Tiny sizes for a smoke run (seconds, not minutes).
    pub fn quick() -> Self {
        Self {
            quick: true,
            cache_nodes: 4,
            cache_asks: 20,
            cold_peers: 2,
            workers: 2,
            sequential_jobs: 5,
            burst_jobs: 20,
            flood_jobs: 3,
            flood_rate: 100,
            fork_secs: 0.3,
            blob_bytes: 8 << 20,
            gossip_nodes: vec![8],
            gossip_messages: 3,
            gossip_quiet: std::time::Duration::from_secs(2),
            idle_secs: 0.5,
            loaded_facts: 500,
            loaded_jobs: 50,
            peer_tasks: 20,
            peer_map: 200,
        }
    }
}

/// A network id unique to this process and benchmark (1-32 of `a-z0-9-`).
pub fn network_id(name: &str) -> oda_protocol::NetworkId {
    let mut id = format!("b-{name}-{}", std::process::id());
    id.truncate(32);
    id.parse().expect("a-z, digits and '-' only, at most 32")
}
