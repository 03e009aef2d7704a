//! The other tool a user would pick instead for many small tasks: Ray, a
//! local head started by `ray.init(num_cpus=2)`, so tasks run in 2 worker
//! processes. Used only when `python3 -c "import ray"` works; the benchmark
//! never installs it (`pip install ray` does). Run by [`crate::python`].
//!
//! Ray is kept on loopback and off the network (the benchmark machine may have
//! no internet, and must not wait for it):
//!
//! - `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`: the node's address is 127.0.0.1.
//!   Otherwise Ray replaces a loopback `_node_ip_address` with the machine's
//!   routable address (found by "connecting" a UDP socket to 8.8.8.8) and its
//!   servers listen on every interface; with it, each one listens on
//!   127.0.0.1 only.
//! - `RAY_USAGE_STATS_ENABLED=0`, and the report URL pointed at a closed
//!   loopback port should anything still send one: no usage statistics.
//! - A closed loopback port as the HTTP(S) proxy, loopback exempt: Ray's
//!   dashboard process (started even with `include_dashboard=False`) asks the
//!   Azure, GCP and AWS metadata services (169.254.169.254,
//!   `metadata.google.internal`) which cloud it runs on even with usage
//!   statistics off; through the proxy those requests fail at once, without a
//!   DNS query or a packet leaving the machine. Ray's own gRPC ignores proxies.
//! - `address="local"`: a new local head, never a cluster named by
//!   `RAY_ADDRESS`; `_temp_dir`: its session files in the scratch directory.

use crate::python::Peer;

/// Ray.
pub const RAY: Peer = Peer {
    name: "Ray",
    short: "Ray",
    key: "ray",
    module: "ray",
    install: "pip install ray",
    cluster: "local `ray.init(num_cpus=2)`, 2 worker processes",
    round_trip_call: "`ray.get(f.remote())`",
    batch_call: "one `ray.get`",
    script: SCRIPT,
    env: &[
        ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
        ("RAY_USAGE_STATS_ENABLED", "0"),
        ("RAY_USAGE_STATS_REPORT_URL", "http://127.0.0.1:9/"),
        ("http_proxy", "http://127.0.0.1:9"),
        ("https_proxy", "http://127.0.0.1:9"),
        ("HTTP_PROXY", "http://127.0.0.1:9"),
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
        ("no_proxy", "127.0.0.1,localhost,::1"),
        ("NO_PROXY", "127.0.0.1,localhost,::1"),
    ],
};

const SCRIPT: &str = r#"
import json, sys, time, logging
import ray

@ray.remote
def nothing(_=None):
    return None

def main(tasks, map_tasks, scratch):
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             _node_ip_address="127.0.0.1", _temp_dir=scratch,
             log_to_driver=False, logging_level=logging.ERROR)
    try:
        for _ in range(20):  # warm-up: function exported, workers connected
            ray.get(nothing.remote())
        rt = []
        for _ in range(tasks):
            t = time.perf_counter()
            ray.get(nothing.remote())
            rt.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        ray.get([nothing.remote() for _ in range(map_tasks)])
        elapsed = time.perf_counter() - t
    finally:
        ray.shutdown()
    print(json.dumps({"round_trip_ms": rt, "map_seconds": elapsed}))

if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
"#;
