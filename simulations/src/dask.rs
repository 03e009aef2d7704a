//! The tool a user would pick instead for many small tasks: Dask distributed,
//! a `LocalCluster` with 2 worker processes on this machine. Used only when
//! `python3 -c "import distributed"` works; the benchmark never installs it
//! (`pip install 'dask[distributed]'` does). Run by [`crate::python`].

use crate::python::Peer;

/// Dask distributed.
pub const DASK: Peer = Peer {
    name: "Dask distributed",
    short: "Dask",
    key: "dask",
    module: "distributed",
    install: "pip install 'dask[distributed]'",
    cluster: "LocalCluster, 2 worker processes",
    round_trip_call: "`submit(f).result()`",
    batch_call: "map",
    script: SCRIPT,
    env: &[],
};

const SCRIPT: &str = r#"
import json, sys, time, logging
from distributed import Client, LocalCluster

def nothing(_=None):
    return None

def main(tasks, map_tasks, scratch):
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1",
                      local_directory=scratch) as cluster, \
         Client(cluster) as client:
        for _ in range(20):  # warm-up: function shipped, workers connected
            client.submit(nothing, pure=False).result()
        rt = []
        for _ in range(tasks):
            t = time.perf_counter()
            client.submit(nothing, pure=False).result()
            rt.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        client.gather(client.map(nothing, range(map_tasks), pure=False))
        elapsed = time.perf_counter() - t
    print(json.dumps({"round_trip_ms": rt, "map_seconds": elapsed}))

if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
"#;
