//! Jobs end to end with in-process nodes on loopback and real executor
//! processes (python3): compute once, cache hits local and remote, DAGs,
//! analysis exceptions, crash retries, single-flight, worker loss, trust.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, test_network};
use libp2p::Multiaddr;
use oda_node::config::{Validated, WorkerSettings};
use oda_node::identity::NodeKey;
use oda_node::runtime::Node;
use oda_node::scheduler::worker::Serves;
use oda_node::scheduler::{JobRecord, JobState, SchedulerConfig};
use oda_protocol::{ExprId, Expression, NetworkId, Outcome, PublicKey, Value, WorkflowId};

const DEADLINE: Duration = Duration::from_secs(90);

struct Mesh {
    _boot: Node,
    requester: Node,
    workers: Vec<Node>,
    _dirs: Vec<tempfile::TempDir>,
    marker_dir: tempfile::TempDir,
    net: NetworkId,
    boot_addr: Multiaddr,
    worker_keys: Vec<PublicKey>,
}

fn settings(
    net: &NetworkId,
    peers: Vec<Multiaddr>,
    worker: bool,
    trusted: Vec<PublicKey>,
) -> Validated {
    Validated {
        network: net.clone(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        peers,
        bootstrap: false,
        dht_server: true,
        max_connections: 256,
        target_peers: 32,
        blob_cap_bytes: 1 << 32,
        store_cache_bytes: oda_node::store::StoreConfig::DEFAULT_CACHE_BYTES,
        worker: worker.then(|| WorkerSettings {
            slots: 2,
            serves: Serves::public(),
            workflows: vec![],
            sandbox: Default::default(),
            sandbox_paths: vec![],
        }),
        trusted_keys: trusted,
        trusted_experts: vec![],
        trusted_groups: vec![],
        controllers: vec![],
        controller: None,
        scheduler: SchedulerConfig {
            offer_window_ms: 150,
            offer_timeout_ms: 8_000,
            readvertise_ms: 400,
            lease_ttl_ms: 1_500,
            max_attempts: 3,
            backoff_ms: 100,
            max_open_adverts: 256,
            quorum: 1,
        },
    }
}

async fn start(
    net: &NetworkId,
    peers: Vec<Multiaddr>,
    worker: bool,
    trusted: Vec<PublicKey>,
    key: NodeKey,
) -> (Node, tempfile::TempDir) {
    start_with(net, peers, worker, trusted, key, |_| {}).await
}

/// [`start`] with the test settings changed by `tweak`.
async fn start_with(
    net: &NetworkId,
    peers: Vec<Multiaddr>,
    worker: bool,
    trusted: Vec<PublicKey>,
    key: NodeKey,
    tweak: impl FnOnce(&mut Validated),
) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = settings(net, peers, worker, trusted);
    tweak(&mut cfg);
    let node = Node::start(dir.path(), key, &cfg)
        .await
        .expect("node starts");
    (node, dir)
}

async fn addr_of(node: &Node) -> Multiaddr {
    node.wait_listening(Duration::from_secs(10))
        .await
        .into_iter()
        .next()
        .expect("listening")
}

/// Bootstrap, one requester, `n` workers; every workflow in `workflows` is
/// added on the requester and on every worker.
async fn mesh(name: &str, n: usize, workflows: &[&Path]) -> Mesh {
    let net = test_network(name);
    let mut dirs = Vec::new();
    let (boot, d) = start(&net, vec![], false, vec![], NodeKey::generate()).await;
    dirs.push(d);
    let boot_addr = addr_of(&boot).await;
    let worker_keys: Vec<NodeKey> = (0..n).map(|_| NodeKey::generate()).collect();
    let trusted: Vec<PublicKey> = worker_keys.iter().map(|k| k.public()).collect();
    let mut workers = Vec::new();
    for key in worker_keys {
        let (w, d) = start(&net, vec![boot_addr.clone()], true, vec![], key).await;
        for wf in workflows {
            w.add_workflow(wf).await.expect("workflow added on worker");
        }
        workers.push(w);
        dirs.push(d);
    }
    let (requester, d) = start(
        &net,
        vec![boot_addr.clone()],
        false,
        trusted.clone(),
        NodeKey::generate(),
    )
    .await;
    for wf in workflows {
        requester
            .add_workflow(wf)
            .await
            .expect("workflow added on requester");
    }
    dirs.push(d);
    let client = boot.client.clone();
    eventually("everyone joined", DEADLINE, || {
        let c = client.clone();
        async move { (c.peers().await.ok()?.len() > n).then_some(()) }
    })
    .await;
    Mesh {
        _boot: boot,
        requester,
        workers,
        _dirs: dirs,
        marker_dir: tempfile::tempdir().expect("temp dir"),
        net,
        boot_addr,
        worker_keys: trusted,
    }
}

/// Write a python workflow folder. The script gets the workflow's argv; every
/// run appends one line to `<marker_dir>/<name>` so executions are counted.
fn workflow(
    root: &Path,
    marker_dir: &Path,
    name: &str,
    inputs: &str,
    argv: &str,
    script: &str,
) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let manifest = format!(
        r#"name = "{name}"
version = "1"
files = ["step.py"]
timeout_secs = 60
{inputs}
[outputs.out]
path = "out.txt"

[executor]
kind = "command"
argv = {argv}
env = {{ MARKER = "{marker}" }}
"#,
        marker = marker_dir.join(name).display()
    );
    std::fs::write(dir.join("oda-workflow.toml"), manifest).expect("write manifest");
    let prelude = "import os, sys, json, time\nwith open(os.environ['MARKER'], 'a') as m:\n    m.write('run\\n')\n";
    std::fs::write(dir.join("step.py"), format!("{prelude}{script}")).expect("write script");
    dir
}

/// A mesh of `n` workers (and a requester) with a workflow `name` whose run
/// writes `factor * x` to its output `out`, except on the first worker, which
/// lies (writes `forged`). Also returns the workflow folder and the temp
/// dirs to keep.
async fn mesh_with_a_liar(
    name: &str,
    n: usize,
    factor: i64,
) -> (Mesh, PathBuf, (tempfile::TempDir, tempfile::TempDir)) {
    let root = tempfile::tempdir().expect("temp dir");
    let markers = tempfile::tempdir().expect("temp dir");
    // A run sits in <data dir>/jobs/<lease>/work: the liar is the worker
    // whose data dir holds a file `liar`.
    let script = format!(
        "liar = os.path.exists(os.path.join('..', '..', '..', 'liar'))\nopen('out.txt', 'w').write('forged' if liar else str({factor} * int(sys.argv[1])))\n"
    );
    let workflow = int_workflow(root.path(), markers.path(), name, &script);
    let m = mesh(name, n, &[&workflow]).await;
    // `_dirs`: the bootstrap's, then each worker's.
    std::fs::write(m._dirs[1].path().join("liar"), "").expect("mark the liar");
    (m, workflow, (root, markers))
}

/// `advert` as gossip, signed by `key` (its requester).
fn advert_gossip(
    key: &NodeKey,
    advert: oda_protocol::messages::JobAdvert,
) -> oda_protocol::messages::Gossip {
    let signed = key.secret.sign(advert).expect("the advert names this key");
    oda_protocol::messages::Gossip::JobAdvert(Box::new(signed))
}

/// A workflow with one int input `x`, passed as the script's only argument.
fn int_workflow(root: &Path, marker_dir: &Path, name: &str, script: &str) -> PathBuf {
    workflow(
        root,
        marker_dir,
        name,
        "[inputs.x]\ntype = \"int\"",
        r#"["python3", "{bundle}/step.py", "{x}"]"#,
        script,
    )
}

/// A workflow with one blob input `src`, passed as the script's only argument.
fn blob_workflow(root: &Path, marker_dir: &Path, name: &str, script: &str) -> PathBuf {
    workflow(
        root,
        marker_dir,
        name,
        "[inputs.src]\ntype = \"blob\"",
        r#"["python3", "{bundle}/step.py", "{src}"]"#,
        script,
    )
}

/// The `out` output of `e`, as an argument.
fn out_of(e: &Expression) -> Value {
    Value::Output {
        expr: e.id(),
        name: "out".into(),
    }
}

fn executions(marker_dir: &Path, name: &str) -> usize {
    std::fs::read_to_string(marker_dir.join(name))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn expression(node: &Node, workflow: &WorkflowId, args: &[(&str, Value)]) -> Expression {
    let (wf, _) = node
        .store
        .workflow(workflow)
        .expect("store")
        .expect("workflow known");
    let args: BTreeMap<String, Value> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Expression::new(*workflow, &wf.manifest, args).expect("valid expression")
}

async fn run(node: &Node, e: &Expression) -> JobRecord {
    run_as(node, e, false).await
}

/// [`run`], skipping the caches (and failure records) when `no_cache`.
async fn run_as(node: &Node, e: &Expression, no_cache: bool) -> JobRecord {
    let job = node.requester.submit(e, no_cache).await.expect("submitted");
    let done = node
        .requester
        .wait(&job.id, DEADLINE)
        .await
        .expect("status")
        .expect("job exists");
    assert!(
        done.state.is_terminal(),
        "job did not finish in time: {done:?}"
    );
    done
}

async fn output_text(node: &Node, record: &JobRecord) -> String {
    let fact = node
        .store
        .fact(&record.fact.expect("has a fact"))
        .expect("store")
        .expect("fact stored");
    let Outcome::Success { outputs } = &fact.body.outcome else {
        panic!("not a success: {:?}", fact.body.outcome)
    };
    let out = outputs["out"];
    node.client
        .fetch_blob(out.blob, Some(out.size), &node.store)
        .await
        .expect("output fetched");
    let bytes = node
        .store
        .read_range(&out.blob, 0, out.size)
        .expect("readable");
    String::from_utf8(bytes).expect("utf-8")
}

const DOUBLE: &str = "x = int(sys.argv[1])\nif x == 13:\n    print('unlucky input, crashing', file=sys.stderr)\n    sys.exit(3)\nif x < 0:\n    json.dump({'kind': 'NoData', 'message': 'negative'}, open('oda-exception.json', 'w'))\n    sys.exit(1)\nopen('out.txt', 'w').write(str(2 * x))\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn computed_once_signed_then_served_from_cache_locally_and_remotely() {
    let root = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    let dir = int_workflow(root.path(), markers.path(), "double", DOUBLE);
    let m = mesh("once", 3, &[&dir]).await;
    let wf = m.requester.add_workflow(&dir).await.unwrap();
    let e = expression(&m.requester, &wf, &[("x", Value::Int(21))]);

    let first = run(&m.requester, &e).await;
    assert_eq!(first.state, JobState::Done, "{first:?}");
    assert!(!first.from_cache);
    assert_eq!(output_text(&m.requester, &first).await, "42");
    assert_eq!(executions(markers.path(), "double"), 1);
    let fact = m
        .requester
        .store
        .fact(&first.fact.unwrap())
        .unwrap()
        .unwrap();
    fact.verify_for(&e.id()).expect("signature verifies");
    assert!(
        m.worker_keys.contains(&fact.body.worker),
        "signed by a worker"
    );
    let ran_on: Vec<u64> = m
        .workers
        .iter()
        .map(|w| w.worker.as_ref().unwrap().executions())
        .collect();
    let runner = ran_on
        .iter()
        .position(|n| *n == 1)
        .expect("one worker ran it");
    assert_eq!(
        m.workers[runner].key.public(),
        fact.body.worker,
        "signed by the worker that ran it"
    );

    // Same node again: local cache, no execution.
    let again = run(&m.requester, &e).await;
    assert_eq!(again.state, JobState::Done);
    assert!(again.from_cache);
    assert_eq!(executions(markers.path(), "double"), 1);

    // Another requester: mesh cache, no execution.
    let (other, _d) = start(
        &m.net,
        vec![m.boot_addr.clone()],
        false,
        m.worker_keys.clone(),
        NodeKey::generate(),
    )
    .await;
    other.add_workflow(&dir).await.unwrap();
    let remote = run(&other, &e).await;
    assert_eq!(remote.state, JobState::Done, "{remote:?}");
    assert!(remote.from_cache, "served from the mesh");
    assert_eq!(output_text(&other, &remote).await, "42");
    assert_eq!(executions(markers.path(), "double"), 1);
    drop(m.marker_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analysis_errors_are_cached_and_crashes_retried_then_reported() {
    let root = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    let dir = int_workflow(root.path(), markers.path(), "double", DOUBLE);
    let m = mesh("errors", 3, &[&dir]).await;
    let wf = m.requester.add_workflow(&dir).await.unwrap();

    let neg = expression(&m.requester, &wf, &[("x", Value::Int(-1))]);
    let first = run(&m.requester, &neg).await;
    assert_eq!(first.state, JobState::Failed);
    assert!(
        first.error.as_deref().unwrap_or("").contains("NoData"),
        "{first:?}"
    );
    assert!(first.fact.is_some(), "an analysis error is a fact");
    let second = run(&m.requester, &neg).await;
    assert!(second.from_cache && second.fact == first.fact, "{second:?}");
    assert_eq!(
        executions(markers.path(), "double"),
        1,
        "no recompute of an analysis error"
    );

    // Two more requesters, in the mesh before the crash (so they hear the
    // workers' failure records).
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(
            start(
                &m.net,
                vec![m.boot_addr.clone()],
                false,
                m.worker_keys.clone(),
                NodeKey::generate(),
            )
            .await,
        );
    }
    let crash = expression(&m.requester, &wf, &[("x", Value::Int(13))]);
    let failed = run(&m.requester, &crash).await;
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.fact.is_none(), "a crash is not cached");
    assert_eq!(failed.attempts.len(), 3, "{failed:?}");
    let workers: std::collections::HashSet<&str> =
        failed.attempts.iter().map(|a| a.worker.as_str()).collect();
    assert_eq!(
        workers.len(),
        3,
        "each attempt on another worker: {:?}",
        failed.attempts
    );
    assert!(
        failed
            .attempts
            .iter()
            .all(|a| a.log_tail.contains("unlucky input")),
        "{:?}",
        failed.attempts
    );
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or("")
            .contains("exited with status 3"),
        "{failed:?}"
    );
    assert_eq!(executions(markers.path(), "double"), 4);

    // No retry storm: the other requesters know that three trusted workers
    // failed it and fail at once, naming them, without running it again.
    for (other, _) in &others {
        other.add_workflow(&dir).await.expect("workflow added");
        eventually("the failure records arrive", DEADLINE, || async {
            (other.requester.failures(crash.id()).await.len() == 3).then_some(())
        })
        .await;
        let refused = run(other, &crash).await;
        assert_eq!(refused.state, JobState::Failed, "{refused:?}");
        let error = refused.error.as_deref().unwrap_or("");
        assert!(
            error.starts_with("failed without a result on 3 workers"),
            "{error}"
        );
        assert!(error.contains("exited with status 3"), "{error}");
        assert!(refused.attempts.is_empty(), "{refused:?}");
    }
    assert_eq!(
        executions(markers.path(), "double"),
        4,
        "run 3 times in the whole mesh"
    );
    // --no-cache runs it again.
    let (other, _) = &others[0];
    let forced = run_as(other, &crash, true).await;
    assert_eq!(forced.state, JobState::Failed, "{forced:?}");
    assert!(!forced.attempts.is_empty(), "{forced:?}");
    assert!(executions(markers.path(), "double") > 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dag_with_fan_out_and_reduce_computes_each_node_once_and_concurrent_requests_share() {
    let root = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    let gen = workflow(
        root.path(),
        markers.path(),
        "gen",
        "[inputs.i]\ntype = \"int\"",
        r#"["python3", "{bundle}/step.py", "{i}"]"#,
        "open('out.txt', 'w').write(sys.argv[1])\n",
    );
    let inc = blob_workflow(
        root.path(),
        markers.path(),
        "inc",
        "open('out.txt', 'w').write(str(int(open(sys.argv[1]).read()) + 1))\n",
    );
    let sum = workflow(
        root.path(),
        markers.path(),
        "sum",
        "[inputs.parts]\ntype = \"list\"\nitems = \"blob\"",
        r#"["python3", "{bundle}/step.py", "{parts}"]"#,
        "open('out.txt', 'w').write(str(sum(int(open(p).read()) for p in sys.argv[1:])))\n",
    );
    let m = mesh("dag", 3, &[&gen, &inc, &sum]).await;
    let r = &m.requester;
    let (gen_id, inc_id, sum_id) = (
        r.add_workflow(&gen).await.unwrap(),
        r.add_workflow(&inc).await.unwrap(),
        r.add_workflow(&sum).await.unwrap(),
    );
    let mut parts = Vec::new();
    for i in 0..10 {
        let g = expression(r, &gen_id, &[("i", Value::Int(i))]);
        r.store.put_expr(&g).unwrap();
        let n = expression(r, &inc_id, &[("src", out_of(&g))]);
        r.store.put_expr(&n).unwrap();
        parts.push(out_of(&n));
    }
    let total = expression(r, &sum_id, &[("parts", Value::List(parts))]);

    // 20 concurrent identical submissions share one resolution.
    let mut jobs = Vec::new();
    for _ in 0..20 {
        jobs.push(r.requester.submit(&total, false).await.unwrap());
    }
    let mut results = Vec::new();
    for job in &jobs {
        results.push(r.requester.wait(&job.id, DEADLINE).await.unwrap().unwrap());
    }
    for res in &results {
        assert_eq!(res.state, JobState::Done, "{res:?}");
        assert_eq!(res.fact, results[0].fact);
    }
    // sum over i of (i + 1) = 55
    assert_eq!(output_text(r, &results[0]).await, "55");
    assert_eq!(executions(markers.path(), "gen"), 10);
    assert_eq!(executions(markers.path(), "inc"), 10);
    assert_eq!(executions(markers.path(), "sum"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_worker_is_replaced_and_untrusted_workflows_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    let slow = int_workflow(
        root.path(),
        markers.path(),
        "slow",
        "time.sleep(2)\nopen('out.txt', 'w').write(sys.argv[1])\n",
    );
    let mut m = mesh("lost", 2, &[&slow]).await;
    let wf = m.requester.add_workflow(&slow).await.unwrap();

    // A third worker that listens for the workflow but neither added it nor
    // trusts an expert endorsing it: it must decline.
    let stranger_key = NodeKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = settings(&m.net, vec![m.boot_addr.clone()], true, vec![]);
    if let Some(w) = cfg.worker.as_mut() {
        w.workflows = vec![wf];
    }
    let stranger = Node::start(dir.path(), stranger_key, &cfg).await.unwrap();

    let e = expression(&m.requester, &wf, &[("x", Value::Int(7))]);
    let job = m.requester.requester.submit(&e, false).await.unwrap();
    // Wait until a worker is running it, then take that worker away.
    let requester = m.requester.requester.clone();
    let running_on = eventually("assigned", DEADLINE, || {
        let requester = requester.clone();
        let id = job.id;
        async move {
            match requester.status(&id).ok()??.state {
                JobState::Assigned { worker } | JobState::Running { worker } => Some(worker),
                _ => None,
            }
        }
    })
    .await;
    let idx = m
        .workers
        .iter()
        .position(|w| w.peer_id().to_string() == running_on)
        .expect("a mesh worker");
    let lost = m.workers.remove(idx);
    lost.shutdown().await.unwrap();

    let done = m
        .requester
        .requester
        .wait(&job.id, DEADLINE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert!(
        done.attempts
            .iter()
            .any(|a| a.outcome.contains("lease expired")),
        "{:?}",
        done.attempts
    );
    let fact = m
        .requester
        .store
        .fact(&done.fact.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        fact.body.worker,
        m.workers[0].key.public(),
        "finished on the remaining worker"
    );
    assert_eq!(
        m.requester.store.facts_for(&e.id()).unwrap().len(),
        1,
        "exactly one trusted fact"
    );

    let s = stranger.worker.as_ref().unwrap();
    assert_eq!(
        s.executions(),
        0,
        "the stranger never ran an untrusted workflow"
    );
    assert!(
        s.declined() > 0,
        "the stranger saw the advert and declined it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_works_while_advertised_and_while_running() {
    let root = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    let slow = int_workflow(
        root.path(),
        markers.path(),
        "slow",
        "time.sleep(30)\nopen('out.txt', 'w').write(sys.argv[1])\n",
    );
    let nobody = int_workflow(
        root.path(),
        markers.path(),
        "nobody",
        "open('out.txt', 'w').write('x')\n",
    );
    let m = mesh("cancel", 1, &[&slow]).await;
    let r = &m.requester;
    let slow_id = r.add_workflow(&slow).await.unwrap();
    // Only the requester has this workflow: the job stays advertised.
    let nobody_id = r.add_workflow(&nobody).await.unwrap();

    let waiting = r
        .requester
        .submit(&expression(r, &nobody_id, &[("x", Value::Int(1))]), false)
        .await
        .unwrap();
    let running = r
        .requester
        .submit(&expression(r, &slow_id, &[("x", Value::Int(1))]), false)
        .await
        .unwrap();
    for (job, want) in [(waiting.id, "advertised"), (running.id, "running")] {
        let requester = r.requester.clone();
        eventually(want, DEADLINE, || {
            let requester = requester.clone();
            async move { (requester.status(&job).ok()??.state.name() == want).then_some(()) }
        })
        .await;
        let cancelled = r.requester.cancel(&job).await.unwrap().unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        let after = r.requester.wait(&job, DEADLINE).await.unwrap().unwrap();
        assert_eq!(after.state, JobState::Cancelled, "{after:?}");
        assert!(after.fact.is_none());
    }
    // The worker stopped the run: its slot comes back well before the 30 s sleep ends.
    let worker = m.workers[0].worker.clone().unwrap();
    eventually(
        "worker slot freed by the cancel",
        Duration::from_secs(15),
        || {
            let worker = worker.clone();
            async move { (worker.free_slots() == 2).then_some(()) }
        },
    )
    .await;
    assert_eq!(executions(markers.path(), "nobody"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_requester_joins_a_computation_in_flight_instead_of_repeating_it() {
    let root = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    let slow = int_workflow(
        root.path(),
        markers.path(),
        "slow",
        "time.sleep(3)\nopen('out.txt', 'w').write(sys.argv[1])\n",
    );
    let m = mesh("join", 2, &[&slow]).await;
    let (second, _d) = start(
        &m.net,
        vec![m.boot_addr.clone()],
        false,
        m.worker_keys.clone(),
        NodeKey::generate(),
    )
    .await;
    let wf = m.requester.add_workflow(&slow).await.unwrap();
    second.add_workflow(&slow).await.unwrap();
    let e = expression(&m.requester, &wf, &[("x", Value::Int(5))]);

    let first = m.requester.requester.submit(&e, false).await.unwrap();
    let requester = m.requester.requester.clone();
    eventually("first job running", DEADLINE, || {
        let requester = requester.clone();
        async move { (requester.status(&first.id).ok()??.state.name() == "running").then_some(()) }
    })
    .await;
    let joined = run(&second, &e).await;
    let done = m
        .requester
        .requester
        .wait(&first.id, DEADLINE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(joined.state, JobState::Done, "{joined:?}");
    // The second requester was attached to the run already in progress (or
    // waited for its fact): one execution, one fact, for both.
    assert_eq!(joined.fact, done.fact);
    assert_eq!(executions(markers.path(), "slow"), 1);
}

/// A bootstrap, one worker (2 slots) and a requester that trusts it, with
/// the requester's scheduler settings adjusted by `tune`, and a workflow
/// `name` (0.2 s a job) added on both; returns once both have joined and a
/// probe job has gone through.
struct OneWorker {
    boot: Node,
    worker: Node,
    requester: Node,
    wf: WorkflowId,
    workflow_dir: PathBuf,
    net: NetworkId,
    markers: tempfile::TempDir,
    worker_dir: tempfile::TempDir,
    _dirs: Vec<tempfile::TempDir>,
}

async fn one_worker(name: &str, tune: impl FnOnce(&mut SchedulerConfig)) -> OneWorker {
    let root = tempfile::tempdir().expect("temp dir");
    let markers = tempfile::tempdir().expect("temp dir");
    let short = int_workflow(
        root.path(),
        markers.path(),
        name,
        "time.sleep(0.2)\nopen('out.txt', 'w').write(sys.argv[1])\n",
    );
    let net = test_network(name);
    let (boot, bd) = start(&net, vec![], false, vec![], NodeKey::generate()).await;
    let boot_addr = addr_of(&boot).await;
    let worker_key = NodeKey::generate();
    let trusted = vec![worker_key.public()];
    let (worker, wd) = start(&net, vec![boot_addr.clone()], true, vec![], worker_key).await;
    worker
        .add_workflow(&short)
        .await
        .expect("workflow added on worker");
    let mut cfg = settings(&net, vec![boot_addr], false, trusted);
    tune(&mut cfg.scheduler);
    let dir = tempfile::tempdir().expect("temp dir");
    let requester = Node::start(dir.path(), NodeKey::generate(), &cfg)
        .await
        .expect("requester starts");
    let wf = requester
        .add_workflow(&short)
        .await
        .expect("workflow added on requester");
    let client = boot.client.clone();
    eventually("everyone joined", DEADLINE, || {
        let c = client.clone();
        async move { (c.peers().await.ok()?.len() >= 2).then_some(()) }
    })
    .await;
    // Subscriptions travel with the first gossip heartbeat after connecting;
    // an advert published before the worker's subscription is known is lost.
    let probe = expression(&requester, &wf, &[("x", Value::Int(-1))]);
    run(&requester, &probe).await;
    OneWorker {
        boot,
        worker,
        requester,
        wf,
        workflow_dir: short,
        net,
        markers,
        worker_dir: wd,
        _dirs: vec![root, bd, dir],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_beyond_the_free_slots_wait_in_the_worker_backlog_and_all_finish() {
    // The requester publishes each advert once and not again for minutes:
    // only the worker's backlog can get the jobs beyond its two slots done.
    let m = one_worker("backlog", |s| {
        s.readvertise_ms = 300_000;
        s.offer_timeout_ms = 300_000;
    })
    .await;
    let mut jobs: Vec<JobRecord> = Vec::new();
    for x in 0..10 {
        let e = expression(&m.requester, &m.wf, &[("x", Value::Int(x))]);
        jobs.push(m.requester.requester.submit(&e, false).await.unwrap());
    }
    for job in &jobs {
        let done = m
            .requester
            .requester
            .wait(&job.id, DEADLINE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.state, JobState::Done, "{done:?}");
        assert!(done.attempts.is_empty(), "no failed attempt: {done:?}");
    }
    assert_eq!(
        executions(m.markers.path(), "backlog"),
        11,
        "each job ran once"
    );
    assert_eq!(m.worker.worker.as_ref().unwrap().backlog_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_is_advertised_a_window_at_a_time_and_all_of_it_finishes() {
    const WINDOW: usize = 3;
    let m = one_worker("window", |s| s.max_open_adverts = WINDOW).await;
    let mut ids = Vec::new();
    for x in 0..12 {
        let e = expression(&m.requester, &m.wf, &[("x", Value::Int(x))]);
        ids.push(m.requester.requester.submit(&e, false).await.unwrap().id);
    }
    // Sample the job table until every job has ended. An auction that
    // closes lets the next one open before its own job is marked assigned,
    // so up to one per worker slot (2) may show `advertised` beside the
    // window's; without the window all twelve would.
    let mut most_advertised = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let records = m.requester.requester.list().unwrap();
        let ours: Vec<&JobRecord> = records.iter().filter(|r| ids.contains(&r.id)).collect();
        let advertised = ours
            .iter()
            .filter(|r| r.state == JobState::Advertised)
            .count();
        most_advertised = most_advertised.max(advertised);
        if ours.iter().all(|r| r.state.is_terminal()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the burst did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        most_advertised <= WINDOW + 2,
        "{most_advertised} jobs were advertised at once with a window of {WINDOW}"
    );
    for id in &ids {
        let r = m.requester.requester.status(id).unwrap().unwrap();
        assert_eq!(r.state, JobState::Done, "{r:?}");
    }
    assert_eq!(
        executions(m.markers.path(), "window"),
        13,
        "each job ran once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_worker_re_announces_its_results_to_a_mesh_that_forgot_them() {
    let m = one_worker("reannounce", |_| {}).await;
    let e = expression(&m.requester, &m.wf, &[("x", Value::Int(7))]);
    let first = run(&m.requester, &e).await;
    assert_eq!(first.state, JobState::Done, "{first:?}");
    let key = m.worker.key.clone();
    let OneWorker {
        boot,
        worker,
        requester,
        workflow_dir,
        net,
        markers,
        worker_dir,
        ..
    } = m;
    for node in [requester, worker, boot] {
        node.shutdown().await.expect("node shuts down");
    }
    // A new mesh (bootstrap and requester with empty stores) remembers
    // nothing; the worker restarts on its data dir and joins it.
    let (boot, _bd) = start(&net, vec![], false, vec![], NodeKey::generate()).await;
    let boot_addr = addr_of(&boot).await;
    let worker = Node::start(
        worker_dir.path(),
        key.clone(),
        &settings(&net, vec![boot_addr.clone()], true, vec![]),
    )
    .await
    .expect("worker restarts");
    let (requester, _rd) = start(
        &net,
        vec![boot_addr],
        false,
        vec![key.public()],
        NodeKey::generate(),
    )
    .await;
    requester.add_workflow(&workflow_dir).await.unwrap();
    let client = requester.client.clone();
    let (id, signer) = (e.id(), key.public());
    let found = eventually(
        "the re-announced fact is found in the new mesh",
        DEADLINE,
        || {
            let c = client.clone();
            async move {
                let facts = c.lookup_facts(id).await.ok()?;
                facts.into_iter().find(|f| f.body.worker == signer)
            }
        },
    )
    .await;
    assert_eq!(Some(found.id()), first.fact);
    let again = run(&requester, &e).await;
    assert_eq!(again.state, JobState::Done, "{again:?}");
    assert!(again.from_cache, "served from the mesh cache: {again:?}");
    assert_eq!(
        executions(markers.path(), "reannounce"),
        2,
        "the probe and the first run only"
    );
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_nobody_can_run_fails_after_the_offer_timeout_with_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    let lonely = int_workflow(
        root.path(),
        markers.path(),
        "lonely",
        "open('out.txt', 'w').write('x')\n",
    );
    // No worker in the mesh: the advert is never answered.
    let m = mesh("nooffer", 0, &[&lonely]).await;
    let wf = m.requester.add_workflow(&lonely).await.unwrap();
    let e = expression(&m.requester, &wf, &[("x", Value::Int(1))]);
    let done = run(&m.requester, &e).await;
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    let error = done.error.unwrap_or_default();
    assert!(
        error.contains("no trusted worker offered within 8 s"),
        "{error}"
    );
    assert!(
        done.attempts.is_empty(),
        "waiting is not an attempt: {:?}",
        done.attempts
    );
    assert_eq!(executions(markers.path(), "lonely"), 0);
}

/// A mesh of `n` workers running `gen` (an int `x`, writing `gen_script`'s
/// output) and `count` (the length of its blob input `src`), both added on
/// the requester: the mesh, its workflow folders and markers, and the ids.
struct GenCount {
    m: Mesh,
    root: tempfile::TempDir,
    markers: tempfile::TempDir,
    gen_id: WorkflowId,
    count_id: WorkflowId,
}

async fn gen_and_count(name: &str, n: usize, gen_script: &str) -> GenCount {
    let root = tempfile::tempdir().expect("temp dir");
    let markers = tempfile::tempdir().expect("temp dir");
    let gen = int_workflow(root.path(), markers.path(), "gen", gen_script);
    let count = blob_workflow(
        root.path(),
        markers.path(),
        "count",
        "open('out.txt', 'w').write(str(len(open(sys.argv[1]).read())))\n",
    );
    let m = mesh(name, n, &[&gen, &count]).await;
    let (gen_id, count_id) = (
        m.requester.add_workflow(&gen).await.expect("gen added"),
        m.requester.add_workflow(&count).await.expect("count added"),
    );
    GenCount {
        m,
        root,
        markers,
        gen_id,
        count_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_goes_to_the_worker_that_holds_its_input() {
    let gc = gen_and_count(
        "locality",
        3,
        "open('out.txt', 'w').write(sys.argv[1] * 1000)\n",
    )
    .await;
    let (m, gen_id, count_id) = (&gc.m, gc.gen_id, gc.count_id);
    let r = &m.requester;
    for x in 1..=5 {
        let g = expression(r, &gen_id, &[("x", Value::Int(x))]);
        let made = run(r, &g).await;
        assert_eq!(made.state, JobState::Done, "{made:?}");
        let c = expression(r, &count_id, &[("src", out_of(&g))]);
        let counted = run(r, &c).await;
        assert_eq!(counted.state, JobState::Done, "{counted:?}");
        let worker_of = |record: &JobRecord| {
            r.store
                .fact(&record.fact.expect("has a fact"))
                .unwrap()
                .unwrap()
                .body
                .worker
        };
        assert_eq!(
            worker_of(&counted),
            worker_of(&made),
            "job {x} ran where its input was"
        );
    }
}

/// A node alone, with its worker enabled and no network at all (no listen
/// address, no peer): its own worker competes for its own adverts, so it
/// computes what it is asked, including a DAG and a cancellation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_node_with_a_worker_computes_its_own_jobs_without_any_network() {
    let root = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    let double = int_workflow(root.path(), markers.path(), "double", DOUBLE);
    let length = blob_workflow(
        root.path(),
        markers.path(),
        "length",
        "open('out.txt', 'w').write(str(len(open(sys.argv[1]).read())))\n",
    );
    let slow = int_workflow(
        root.path(),
        markers.path(),
        "slow",
        "time.sleep(30)\nopen('out.txt', 'w').write(sys.argv[1])\n",
    );
    let net = test_network("alone");
    let dir = tempfile::tempdir().unwrap();
    let key = NodeKey::generate();
    let mut cfg = settings(&net, vec![], true, vec![]);
    cfg.listen = vec![];
    let node = Node::start(dir.path(), key.clone(), &cfg)
        .await
        .expect("node starts");
    let wf = node.add_workflow(&double).await.unwrap();
    let e = expression(&node, &wf, &[("x", Value::Int(21))]);

    let first = run(&node, &e).await;
    assert_eq!(first.state, JobState::Done, "{first:?}");
    assert!(!first.from_cache);
    assert_eq!(output_text(&node, &first).await, "42");
    let fact = node.store.fact(&first.fact.unwrap()).unwrap().unwrap();
    assert_eq!(fact.body.worker, key.public(), "signed by the node itself");
    assert_eq!(node.worker.as_ref().unwrap().executions(), 1);

    // A DAG: the input is computed first, by the same worker.
    let len_wf = node.add_workflow(&length).await.unwrap();
    let e2 = expression(&node, &len_wf, &[("src", out_of(&e))]);
    let second = run(&node, &e2).await;
    assert_eq!(second.state, JobState::Done, "{second:?}");
    assert_eq!(output_text(&node, &second).await, "2");
    assert_eq!(executions(markers.path(), "double"), 1);
    assert_eq!(executions(markers.path(), "length"), 1);

    // Cancelling a running job reaches the local worker, which stops the run
    // and frees its slot.
    let slow_wf = node.add_workflow(&slow).await.unwrap();
    let e3 = expression(&node, &slow_wf, &[("x", Value::Int(1))]);
    let job = node.requester.submit(&e3, false).await.unwrap();
    let requester = node.requester.clone();
    eventually("slow job running", DEADLINE, || {
        let requester = requester.clone();
        async move { (requester.status(&job.id).ok()??.state.name() == "running").then_some(()) }
    })
    .await;
    node.requester.cancel(&job.id).await.unwrap();
    let worker = node.worker.clone().unwrap();
    eventually("the slot is free again", Duration::from_secs(20), || {
        let worker = worker.clone();
        async move { (worker.free_slots() == 2).then_some(()) }
    })
    .await;
    let cancelled = node.requester.status(&job.id).unwrap().unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    node.shutdown().await.unwrap();
}

/// A peer R does not trust plays requester: it advertises `count(src = g's
/// output)` itself and assigns the job to the honest worker W.
struct Attacker {
    peer: common::Peer,
    /// `Done` results W sends it.
    results: tokio::sync::mpsc::Receiver<Result<oda_protocol::SignedFact, String>>,
}

impl Attacker {
    /// Joins `m` and assigns every offer it gets.
    async fn join(m: &Mesh) -> Self {
        Self::join_answering(m, true).await
    }

    /// Joins `m`; with `answer_offers` false it holds every offer unanswered
    /// (as a slot squatter does).
    async fn join_answering(m: &Mesh, answer_offers: bool) -> Self {
        use oda_protocol::messages::{Assign, JobRequest, JobResponse};
        let mut peer = common::spawn(&m.net, vec![m.boot_addr.clone()], false).await;
        let (tx, results) = tokio::sync::mpsc::channel(8);
        let (client, mut control) = (
            peer.client.clone(),
            std::mem::replace(&mut peer.control, tokio::sync::mpsc::channel(1).1),
        );
        // Assign every offer (or hold it), acknowledge heartbeats, pass
        // results on.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(event) = control.recv().await {
                let oda_node::network::NetworkEvent::JobRequest { request, reply, .. } = event
                else {
                    continue;
                };
                let response = match request {
                    JobRequest::Offer(_) if !answer_offers => {
                        held.push(reply);
                        continue;
                    }
                    JobRequest::Offer(offer) => JobResponse::Assign(Assign {
                        expr: offer.expr,
                        lease: 7,
                        ttl_ms: 20_000,
                    }),
                    JobRequest::Done(done) => {
                        let _ = tx.send(done.result.map_err(|f| f.message)).await;
                        JobResponse::Ack
                    }
                    _ => JobResponse::Ack,
                };
                client.respond_job(reply, response).await;
            }
        });
        Self { peer, results }
    }

    /// The attacker's advert of `expr` with `inputs` (its workflow is one R holds).
    fn advert(
        &self,
        r: &Node,
        expr: &Expression,
        inputs: Vec<oda_protocol::ResolvedInput>,
    ) -> oda_protocol::messages::JobAdvert {
        let (wf, bundle) = r
            .store
            .workflow(&expr.workflow)
            .expect("store")
            .expect("workflow known");
        oda_protocol::messages::JobAdvert {
            expr: expr.clone(),
            inputs,
            requester: self.peer.key.public(),
            requirements: wf.manifest.resources.clone(),
            deadline: oda_node::scheduler::jobs::now_ms() + 60_000,
            priority: 0,
            token: None,
            bundle,
            endorsements: vec![],
        }
    }

    /// Publish `advert` on its workflow's jobs topic (an error while W is
    /// not yet known to subscribe is expected: the caller publishes again).
    async fn publish(&self, advert: &oda_protocol::messages::JobAdvert) {
        let topic = oda_protocol::names::Topic::jobs(&advert.expr.workflow);
        let _ = self
            .peer
            .client
            .publish(topic, advert_gossip(&self.peer.key, advert.clone()))
            .await;
    }

    /// Advertise `expr` with `inputs` (again until a result comes) and
    /// return W's result.
    async fn run(
        &mut self,
        r: &Node,
        expr: &Expression,
        inputs: Vec<oda_protocol::ResolvedInput>,
    ) -> Result<oda_protocol::SignedFact, String> {
        let advert = self.advert(r, expr, inputs);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            self.publish(&advert).await;
            match tokio::time::timeout(Duration::from_millis(500), self.results.recv()).await {
                Ok(Some(result)) => return result,
                Ok(None) => panic!("the attacker's RPC task stopped"),
                Err(_) => assert!(tokio::time::Instant::now() < deadline, "W never answered"),
            }
        }
    }
}

/// A worker never offers for (so never runs or signs) an advert whose
/// expression is not in normal form for the workflow's manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_advert_not_in_normal_form_is_never_offered_for() {
    let gc = gen_and_count("unnormal", 1, "open('out.txt', 'w').write(sys.argv[1])\n").await;
    let (m, markers, gen_id) = (&gc.m, &gc.markers, gc.gen_id);
    let r = &m.requester;
    let w = m.workers[0].worker.as_ref().expect("a worker");
    let mut attacker = Attacker::join(m).await;
    // `x` is an int in the manifest; a string would reach the command line.
    let bad = Expression {
        workflow: gen_id,
        args: BTreeMap::from([("x".to_string(), Value::Str("7; rm -rf ~".into()))]),
    };
    assert!(bad
        .check(&r.store.workflow(&gen_id).unwrap().unwrap().0.manifest)
        .is_err());
    let advert = attacker.advert(r, &bad, vec![]);
    let before = w.declined();
    eventually("W declines the advert", DEADLINE, || async {
        attacker.publish(&advert).await;
        (w.declined() > before).then_some(())
    })
    .await;
    assert!(attacker.results.try_recv().is_err(), "no result was sent");
    assert_eq!(executions(markers.path(), "gen"), 0, "gen never ran");
}

/// Inputs are facts, not claims: a peer that advertises a job with bytes of
/// its choosing as an upstream output cannot make an honest worker sign a
/// result that a requester would take as computed from the real upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_inputs_are_refused_by_the_worker_or_never_trusted_by_requesters() {
    use oda_protocol::{Fact, OutputRef, ResolvedInput, Usage};
    let gc = gen_and_count("poison", 1, "open('out.txt', 'w').write(sys.argv[1] * 3)\n").await;
    let (m, markers, gen_id, count_id) = (&gc.m, &gc.markers, gc.gen_id, gc.count_id);
    let r = &m.requester;
    // The real upstream: W computes gen(x = 7) = "777" for R.
    let g = expression(r, &gen_id, &[("x", Value::Int(7))]);
    let made = run(r, &g).await;
    assert_eq!(made.state, JobState::Done, "{made:?}");
    let real = r.store.fact(&made.fact.unwrap()).unwrap().unwrap();
    let c = expression(r, &count_id, &[("src", out_of(&g))]);

    let mut attacker = Attacker::join(m).await;
    let forged_bytes = b"forged events, many more bytes than the real ones";
    let forged = attacker.peer.store.put_blob(forged_bytes).unwrap();
    // Fetchable: without the check, W would run on these bytes.
    attacker.peer.client.provide_blob(&forged).await.ok();

    // 1. A lie: W's own fact for g, with other bytes. W refuses to run it.
    let lie = ResolvedInput {
        blob: forged,
        ..ResolvedInput::from_fact(&real, "out").unwrap()
    };
    let refused = attacker.run(r, &c, vec![lie]).await.unwrap_err();
    assert!(
        refused.contains(&format!("not {forged}")),
        "W says which bytes do not match: {refused}"
    );
    assert_eq!(executions(markers.path(), "count"), 0, "count never ran");

    // 2. The attacker signs its own fact for g naming its bytes. W checks
    // that fact, runs on it and says so in the fact it signs.
    let key = attacker.peer.key.clone();
    let own = key
        .secret
        .sign(Fact {
            outcome: Outcome::Success {
                outputs: [(
                    "out".to_string(),
                    OutputRef {
                        blob: forged,
                        size: forged_bytes.len() as u64,
                    },
                )]
                .into(),
            },
            worker: key.public(),
            inputs: vec![],
            usage: Usage::default(),
            ..real.body.clone()
        })
        .unwrap();
    attacker.peer.store.put_own_fact(&own).unwrap();
    attacker.peer.client.publish_fact(&own).await.ok();
    let signed = attacker
        .run(r, &c, vec![ResolvedInput::from_fact(&own, "out").unwrap()])
        .await
        .expect("W computes on an input fact that verifies");
    assert_eq!(signed.body.inputs[0].signer, key.public());
    assert_eq!(executions(markers.path(), "count"), 1);

    // R trusts W, not the attacker: W's fact about c rests on an untrusted
    // input, so R computes c from the real g, and W does not hand back the
    // fact it signed for the attacker.
    let counted = run(r, &c).await;
    assert_eq!(counted.state, JobState::Done, "{counted:?}");
    assert!(!counted.from_cache, "{counted:?}");
    assert_ne!(counted.fact, Some(signed.id()));
    assert_eq!(output_text(r, &counted).await, "3");
    let fact = r.store.fact(&counted.fact.unwrap()).unwrap().unwrap();
    assert_eq!(
        fact.body.inputs,
        vec![ResolvedInput::from_fact(&real, "out").unwrap()]
    );
    assert_eq!(executions(markers.path(), "count"), 2);
}

/// Phantom progress: a peer R does not trust keeps sending heartbeats with
/// made-up lease ids for the expression R asks for. R neither adopts that
/// "run" nor declines honest offers because of it: the job is computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_heartbeats_from_an_untrusted_peer_do_not_hold_a_job_back() {
    use oda_protocol::messages::{JobRequest, JobResponse, Progress};
    let gc = gen_and_count("phantom", 1, "open('out.txt', 'w').write(sys.argv[1])\n").await;
    let (m, gen_id) = (&gc.m, gc.gen_id);
    let r = &m.requester;
    let g = expression(r, &gen_id, &[("x", Value::Int(11))]);
    let attacker = Attacker::join(m).await;
    let (client, to, expr) = (attacker.peer.client.clone(), r.key.peer_id(), g.id());
    let beat = move |expr| {
        JobRequest::Progress(Progress {
            expr,
            lease: rand::random(),
            fraction: Some(0.5),
            message: "running, honest".into(),
        })
    };
    // Connected to R (answered) before the job starts.
    let r_addr = r.client.listen_addrs().await.expect("R listens")[0].clone();
    attacker.peer.client.dial(r_addr).await.expect("dialled");
    eventually("R answers the attacker", DEADLINE, || {
        let client = client.clone();
        async move { client.send_job(to, beat(ExprId([0; 32]))).await.ok() }
    })
    .await;
    let (answers_tx, mut answers) = tokio::sync::mpsc::channel(1 << 16);
    // Made-up heartbeats one after the other (each awaits its answer), from
    // before the job starts to its end.
    let spam = tokio::spawn(async move {
        loop {
            if let Ok(answer) = client.send_job(to, beat(expr)).await {
                let _ = answers_tx.try_send(answer);
            }
        }
    });
    let made = run(r, &g).await;
    spam.abort();
    assert_eq!(made.state, JobState::Done, "{made:?}");
    assert_eq!(output_text(r, &made).await, "11");
    let mut acked = 0;
    while let Ok(answer) = answers.try_recv() {
        acked += usize::from(answer == JobResponse::Ack);
    }
    assert_eq!(acked, 0, "no made-up heartbeat was acknowledged");
}

/// Slot squatting, expression squatting and advert floods: a peer R does
/// not trust advertises 50 new jobs a second at the highest priority, for a
/// workflow the worker runs, re-advertises the very expression R is about
/// to ask for each time, and never answers the worker's offers. R's job is
/// still computed: R does not wait for a stranger's advert of its
/// expression; an unanswered offer frees its slot after `OFFER_ANSWER_MS`,
/// after which the squatter's adverts are not taken for a while; R's advert,
/// heard while the expression was offered to the squatter, waits in the
/// backlog; and requesters take turns there whatever priority they claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_adverts_that_never_answer_offers_does_not_starve_an_honest_job() {
    let gc = gen_and_count("squat", 1, "open('out.txt', 'w').write(sys.argv[1])\n").await;
    let (m, gen_id) = (&gc.m, gc.gen_id);
    // A requester that waits 20 s for an offer: long enough for the 5 s an
    // unanswered offer holds a slot on a loaded machine, far shorter than
    // the squat lasts without the defences (30 s an offer, again and again).
    let (r, _data) = start_with(
        &m.net,
        vec![m.boot_addr.clone()],
        false,
        m.worker_keys.clone(),
        NodeKey::generate(),
        |c| c.scheduler.offer_timeout_ms = 20_000,
    )
    .await;
    let r = &r;
    r.add_workflow(&gc.root.path().join("gen"))
        .await
        .expect("gen added");
    let w = m.workers[0].worker.as_ref().expect("a worker");
    let attacker = Attacker::join_answering(m, false).await;
    // W must be able to reach the attacker with its offers (else it takes
    // it for unreachable at once and never squats): connect them.
    let w_addr = addr_of(&m.workers[0]).await;
    let (w_client, attacker_id) = (m.workers[0].client.clone(), attacker.peer.key.peer_id());
    eventually("W is connected to the attacker", DEADLINE, || {
        let (w_client, a_client, w_addr) = (
            w_client.clone(),
            attacker.peer.client.clone(),
            w_addr.clone(),
        );
        async move {
            if w_client
                .peers()
                .await
                .ok()?
                .iter()
                .any(|p| p.peer == attacker_id)
            {
                return Some(());
            }
            let _ = a_client.dial(w_addr).await;
            None
        }
    })
    .await;
    let g = expression(r, &gen_id, &[("x", Value::Int(5))]);
    let squatted = attacker.advert(r, &g, vec![]);
    let adverts: Vec<_> = (0..2_000)
        .map(|i| {
            let mut a = attacker.advert(
                r,
                &expression(r, &gen_id, &[("x", Value::Int(10_000 + i))]),
                vec![],
            );
            a.priority = 255;
            a
        })
        .collect();
    let flood = {
        let attacker_client = attacker.peer.client.clone();
        let attacker_key = attacker.peer.key.clone();
        tokio::spawn(async move {
            for (i, advert) in adverts.into_iter().enumerate() {
                // A new deadline makes each re-advertisement a new message.
                let again = oda_protocol::messages::JobAdvert {
                    deadline: squatted.deadline + i as u64,
                    ..squatted.clone()
                };
                for advert in [again, advert] {
                    let topic = oda_protocol::names::Topic::jobs(&advert.expr.workflow);
                    let gossip = advert_gossip(&attacker_key, advert);
                    let _ = attacker_client.publish(topic, gossip).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // The squat is on: one slot of W holds an unanswered offer to the
    // attacker and its other adverts wait in the backlog. Never both slots:
    // a worker waits on at most one offer per requester.
    eventually("W's slot squatted", DEADLINE, || async {
        (w.free_slots() == 1 && w.backlog_len() > 0).then_some(())
    })
    .await;
    // While the flood goes on (its adverts pile up in the backlog), the
    // other slot stays free for honest requesters.
    let end = tokio::time::Instant::now() + DEADLINE;
    while w.backlog_len() < 20 {
        assert!(tokio::time::Instant::now() < end, "the flood stalled");
        assert_eq!(w.free_slots(), 1, "the attacker holds one slot at most");
        tokio::task::yield_now().await;
    }
    let made = run(r, &g).await;
    flood.abort();
    assert_eq!(made.state, JobState::Done, "{made:?}");
    assert_eq!(output_text(r, &made).await, "5");
}

/// Group trust: a requester that names a group trusts the workers its
/// newest signed roster lists, and only those; a new roster version moves
/// trust (old results by a removed member are no longer taken), and the
/// imported roster is kept across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_roster_decides_whose_results_are_trusted_and_a_new_version_moves_trust() {
    use oda_node::scheduler::trust::RosterImport;
    use oda_protocol::GroupRoster;
    let gc = gen_and_count("groups", 2, "open('out.txt', 'w').write(sys.argv[1])\n").await;
    let (m, gen_id) = (&gc.m, gc.gen_id);
    let (w1, w2) = (m.worker_keys[0], m.worker_keys[1]);
    let admin = NodeKey::generate();
    let roster = |version: u64, member: PublicKey| {
        admin
            .secret
            .sign(GroupRoster {
                owner: admin.public(),
                name: "integral-team".into(),
                version,
                members: [member].into(),
                issued_at: version,
            })
            .expect("signs")
    };
    let group = (admin.public(), "integral-team".to_string());
    let key = NodeKey::generate();
    let data = tempfile::tempdir().expect("temp dir");
    let cfg = {
        let mut c = settings(&m.net, vec![m.boot_addr.clone()], false, vec![]);
        c.trusted_groups = vec![group];
        c
    };
    let r = Node::start(data.path(), key.clone(), &cfg)
        .await
        .expect("starts");
    let gen_dir = gc.root.path().join("gen");
    r.add_workflow(&gen_dir).await.expect("gen added");
    let worker_of = |r: &Node, job: &JobRecord| {
        let fact = r.store.fact(&job.fact.expect("a fact")).unwrap().unwrap();
        (fact.body.worker, fact)
    };

    assert_eq!(
        r.import_roster(roster(1, w1)).await,
        Ok(RosterImport::Newer)
    );
    let g1 = expression(&r, &gen_id, &[("x", Value::Int(1))]);
    let first = run(&r, &g1).await;
    assert_eq!(first.state, JobState::Done, "{first:?}");
    let (by, fact1) = worker_of(&r, &first);
    assert_eq!(by, w1, "only the member is trusted");

    // Version 2: w2 instead of w1. Version 1 again changes nothing.
    assert_eq!(
        r.import_roster(roster(2, w2)).await,
        Ok(RosterImport::Newer)
    );
    assert_eq!(
        r.import_roster(roster(1, w1)).await,
        Ok(RosterImport::NotNewer)
    );
    let g2 = expression(&r, &gen_id, &[("x", Value::Int(2))]);
    let second = run(&r, &g2).await;
    assert_eq!(worker_of(&r, &second).0, w2, "{second:?}");
    let verdict = r.trust.now().verdict(&fact1, &r.store);
    assert!(!verdict.trusted, "{verdict:?}");
    let again = run(&r, &g1).await;
    assert!(
        !again.from_cache,
        "w1's result is not taken any more: {again:?}"
    );
    assert_eq!(worker_of(&r, &again).0, w2);

    // Kept across a restart.
    r.shutdown().await.expect("stops");
    drop(r);
    let r = Node::start(data.path(), key, &cfg)
        .await
        .expect("starts again");
    let why = r.trust.now().signer(&w2).expect("w2 still trusted");
    assert!(why.contains("roster version 2"), "{why}");
    assert!(!r.trust.now().trusts_worker(&w1));
    r.shutdown().await.expect("stops");
}

/// `[trust] quorum = 2`: a trusted worker that returns other bytes than the
/// others (a liar) does not decide a result: the requester asks further
/// workers until two distinct ones agree, and keeps the dissenting fact. With
/// a quorum the honest workers cannot reach, the job fails saying who said
/// what.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quorum_of_workers_outvotes_a_lying_worker() {
    let (m, vote, _dirs) = mesh_with_a_liar("vote", 3, 2).await;
    let liar = m.worker_keys[0];
    let with_quorum = |k: u32| {
        let (net, boot) = (m.net.clone(), m.boot_addr.clone());
        let (trusted, vote) = (m.worker_keys.clone(), vote.clone());
        async move {
            let (r, dir) = start_with(&net, vec![boot], false, trusted, NodeKey::generate(), |c| {
                c.scheduler.quorum = k;
            })
            .await;
            let id = r.add_workflow(&vote).await.expect("workflow added");
            (r, dir, id)
        }
    };

    let (r, _dir, vote_id) = with_quorum(2).await;
    let e_of = |node: &Node, x: i64| expression(node, &vote_id, &[("x", Value::Int(x))]);
    let mut liar_took_part = false;
    // Each job asks the liar with probability 2/3 (one of three first, or
    // one of the two left second): go on until it has been asked.
    for x in 1..=12 {
        if liar_took_part {
            break;
        }
        let e = expression(&r, &vote_id, &[("x", Value::Int(x))]);
        let done = run(&r, &e).await;
        assert_eq!(done.state, JobState::Done, "{done:?}");
        assert_eq!(output_text(&r, &done).await, (2 * x).to_string());
        let result = r.store.fact(&done.fact.expect("a fact")).unwrap().unwrap();
        assert_ne!(result.body.worker, liar, "the liar's result is never taken");
        let held = r.store.facts_for(&e.id()).expect("store");
        let honest = held.iter().filter(|f| f.body.worker != liar).count();
        assert!(honest >= 2, "two honest workers agreed: {held:?}");
        let (agreed, why) = oda_node::scheduler::quorum::verdict(&held, &result, 2);
        assert!(agreed && why.starts_with("2 of 2 agree"), "{why}");
        if let Some(lie) = held.iter().find(|f| f.body.worker == liar) {
            liar_took_part = true;
            // Kept, and shown as what it is.
            let (agreed, why) = oda_node::scheduler::quorum::verdict(&held, lie, 2);
            assert!(!agreed && why.starts_with("only 1 of the 2"), "{why}");
            // Disputed, signed by the requester, and heard by the liar's node.
            let disputes = r.store.disputes_of(&lie.id()).expect("store");
            assert!(
                disputes.iter().any(|d| d.body.controller == r.key.public()
                    && d.body.observed["out"] == result.body.output("out").expect("out").blob),
                "{disputes:?}"
            );
            let (liar_store, lie_id) = (m.workers[0].store.clone(), lie.id());
            eventually("the liar's node keeps the dispute", DEADLINE, || {
                let s = liar_store.clone();
                async move { (!s.disputes_of(&lie_id).ok()?.is_empty()).then_some(()) }
            })
            .await;
        }
    }
    assert!(
        liar_took_part,
        "in 12 jobs the liar was never asked (chance 1 in 3^12: offers rank it like the others)"
    );

    // Per job, on a node whose own quorum is 1: three distinct workers
    // must agree, but one of the three lies.
    let r1 = &m.requester;
    assert!(
        r1.requester
            .submit_with_quorum(&e_of(r1, 21), false, Some(17))
            .await
            .is_err(),
        "a quorum over 16 is refused"
    );
    let job = r1
        .requester
        .submit_with_quorum(&e_of(r1, 21), false, Some(3))
        .await
        .expect("submitted");
    assert_eq!(job.quorum, 3);
    let failed = r1
        .requester
        .wait(&job.id, DEADLINE)
        .await
        .expect("status")
        .expect("job exists");
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("no 3 trusted workers agree") && error.contains("]"),
        "the error says who said what: {error}"
    );
}

/// A controller re-computes a sample of the facts it hears announced: the
/// lying worker's fact is disputed, the honest worker's endorsed; a
/// requester that heeds the controller stops trusting the liar (its facts
/// and its offers), while the honest worker keeps its standing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_catches_a_lying_worker() {
    let (m, vote, _dirs) = mesh_with_a_liar("checked", 2, 3).await;
    let (liar, honest) = (m.worker_keys[0], m.worker_keys[1]);
    // The controller computes its samples on its own worker (it trusts no
    // one else); the requester heeds it.
    let controller_key = NodeKey::generate();
    let controller_public = controller_key.public();
    let (c, _c_dir) = start_with(
        &m.net,
        vec![m.boot_addr.clone()],
        true,
        vec![],
        controller_key,
        |cfg| {
            cfg.controller = Some(oda_node::scheduler::controller::ControllerConfig {
                min_rate: 0.05,
                concurrent: 2,
            })
        },
    )
    .await;
    c.add_workflow(&vote)
        .await
        .expect("workflow added on the controller");
    let (r, _r_dir) = start_with(
        &m.net,
        vec![m.boot_addr.clone()],
        false,
        m.worker_keys.clone(),
        NodeKey::generate(),
        |cfg| cfg.controllers = vec![controller_public],
    )
    .await;
    let id = r.add_workflow(&vote).await.expect("workflow added");
    let fact_of = |job: &JobRecord| r.store.fact(&job.fact.expect("a fact")).unwrap().unwrap();

    // Jobs until the controller has disputed one of the liar's facts and
    // endorsed one of the honest worker's (offers rank the workers alike;
    // adverts sent before the gossip mesh reached the controller are not
    // heard, so their facts are not sampled).
    let (mut lies, mut truths) = (Vec::new(), Vec::new());
    let verdicts = r.store.clone();
    let found = move |lies: &[oda_protocol::SignedFact], truths: &[oda_protocol::SignedFact]| {
        let disputed = lies.iter().find_map(|f| {
            let d = verdicts.disputes_of(&f.id()).ok()?;
            let d = d
                .into_iter()
                .find(|d| d.body.controller == controller_public)?;
            Some((f.clone(), d))
        });
        let endorsed = truths.iter().find(|f| {
            verdicts
                .endorsements_of(&oda_protocol::Subject::Fact(f.id()))
                .is_ok_and(|e| e.iter().any(|e| e.body.endorser == controller_public))
        });
        Some((disputed?, endorsed?.clone()))
    };
    for x in 1..=30 {
        if found(&lies, &truths).is_some() {
            break;
        }
        let done = run(&r, &expression(&r, &id, &[("x", Value::Int(x))])).await;
        assert_eq!(done.state, JobState::Done, "{done:?}");
        let fact = fact_of(&done);
        if fact.body.worker == liar {
            assert_eq!(output_text(&r, &done).await, "forged");
            lies.push(fact);
        } else {
            assert_eq!(output_text(&r, &done).await, (3 * x).to_string());
            truths.push(fact);
        }
    }
    let ((lie, dispute), truth) = eventually("a dispute and an endorsement", DEADLINE, || {
        let got = found(&lies, &truths);
        async move { got }
    })
    .await;
    // The requester holds the disputed fact: it and its signer are no
    // longer trusted there.
    assert!(
        dispute.body.reason.contains("re-computed by"),
        "{dispute:?}"
    );
    let verdict = r.trust.now().verdict(&lie, &r.store);
    assert!(!verdict.trusted, "{verdict:?}");
    assert!(verdict.why.contains("disputed"), "{verdict:?}");
    assert!(!r.trust.now().trusts_worker(&liar));

    // The honest worker's fact is endorsed, and its standing unchanged.
    let verdict = r.trust.now().verdict(&truth, &r.store);
    assert!(verdict.trusted, "{verdict:?}");
    assert!(
        verdict.why.contains("endorsed by controller"),
        "{verdict:?}"
    );
    assert!(r.trust.now().trusts_worker(&honest));

    // The lied expression again: the lie is not a result any more, and the
    // liar is not asked.
    let lied = r.store.expr(&lie.body.expr).unwrap().expect("stored");
    let again = run(&r, &lied).await;
    assert_eq!(again.state, JobState::Done, "{again:?}");
    assert_eq!(fact_of(&again).body.worker, honest, "{again:?}");
    assert_ne!(output_text(&r, &again).await, "forged");
    for x in 100..103 {
        let done = run(&r, &expression(&r, &id, &[("x", Value::Int(x))])).await;
        assert_eq!(fact_of(&done).body.worker, honest, "{done:?}");
    }

    // A requester that joins later, trusts no worker but heeds the
    // controller, was not listening when the truth was endorsed (it may
    // still hear it from gossipsub's cache of recent messages, else it asks
    // the controller: `verdicts::look_up`, tested in tests/network.rs): it
    // takes the honest worker's fact from the mesh, as endorsed.
    let (late, _late_dir) = start_with(
        &m.net,
        vec![m.boot_addr.clone()],
        false,
        vec![],
        NodeKey::generate(),
        |cfg| cfg.controllers = vec![controller_public],
    )
    .await;
    late.add_workflow(&vote).await.expect("workflow added");
    let truth_expr = r.store.expr(&truth.body.expr).unwrap().expect("stored");
    let taken = run(&late, &truth_expr).await;
    assert_eq!(taken.state, JobState::Done, "{taken:?}");
    assert!(taken.from_cache, "{taken:?}");
    assert_eq!(taken.fact, Some(truth.id()), "{taken:?}");
    let verdict = late.trust.now().verdict(&truth, &late.store);
    assert!(
        verdict.trusted && verdict.why.contains("endorsed by controller"),
        "{verdict:?}"
    );
    late.shutdown().await.expect("clean shutdown");

    // The disrepute is kept across a restart (from the stored dispute).
    let dir = r.data_dir().to_path_buf();
    r.shutdown().await.expect("clean shutdown");
    drop((r, found));
    let mut cfg = settings(
        &m.net,
        vec![m.boot_addr.clone()],
        false,
        m.worker_keys.clone(),
    );
    cfg.controllers = vec![controller_public];
    let r = Node::start(&dir, NodeKey::generate(), &cfg)
        .await
        .expect("restarts");
    assert!(!r.trust.now().trusts_worker(&liar));
    r.shutdown().await.expect("clean shutdown");
}
