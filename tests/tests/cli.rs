//! The `oda` command line against real `oda-node` processes on loopback: a
//! requester node and a worker node it trusts, the example workflows
//! (events → lightcurve), results verified byte for byte; exit codes for bad
//! arguments (2) and an unreachable node (3); the API's token check and JSON
//! errors.

use std::path::Path;

use oda_tests::{examples, network_id, NodeProc};
use serde_json::Value as Json;

/// A worker node and a requester that joins it and trusts its key; both have
/// the `events` and `lightcurve` workflows.
struct Mesh {
    requester: NodeProc,
    worker: NodeProc,
}

fn mesh(test: &str) -> Mesh {
    let net = network_id(test);
    let mut worker = NodeProc::init("worker", &net, |c| {
        c.worker.enabled = true;
        c.worker.slots = 2;
    });
    worker.start();
    let mut requester = NodeProc::init("requester", &net, |c| {
        c.peers = vec![worker.addr()];
        c.trust.keys = vec![worker.public_key()];
        c.scheduler.offer_window_ms = 100;
    });
    requester.start();
    for node in [&worker, &requester] {
        for wf in ["events", "lightcurve"] {
            let dir = examples().join(wf);
            node.oda(&["workflow", "add", dir.to_str().expect("utf-8 path")])
                .expect_code(0);
        }
    }
    Mesh { requester, worker }
}

/// BLAKE3 of a file as a blob id (`bl:<hex>`).
fn blob_id_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    format!("bl:{}", blake3::hash(&bytes).to_hex())
}

fn str_of<'a>(v: &'a Json, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_else(|| panic!("{pointer} is not a string in {v}"))
}

#[test]
fn submit_wait_get_and_the_json_shapes() {
    let m = mesh("submit");
    let r = &m.requester;
    let worker_key = m.worker.public_key();

    // Compute: events for one short observation.
    let job = r
        .oda(&[
            "--json",
            "submit",
            "events",
            "-a",
            "obs_id=1",
            "-a",
            "duration=200",
            "--wait",
        ])
        .expect_code(0)
        .json();
    for field in [
        "id",
        "expr",
        "workflow",
        "workflow_name",
        "state",
        "terminal",
        "from_cache",
        "no_cache",
        "created_at",
        "updated_at",
        "elapsed_ms",
        "attempts",
        "result",
    ] {
        assert!(
            job.get(field).is_some(),
            "submit --json lacks `{field}`: {job}"
        );
    }
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["terminal"], true);
    assert_eq!(job["from_cache"], false);
    assert_eq!(job["workflow_name"], "events");
    assert_eq!(job["result"]["outcome"], "success");
    assert_eq!(job["result"]["worker_key"], worker_key.as_str());
    assert_eq!(
        job["result"]["worker_peer"],
        m.worker.info.as_ref().expect("started").peer_id.as_str()
    );
    let expr = str_of(&job, "/expr").to_string();
    let blob = str_of(&job, "/result/outputs/events/blob").to_string();
    let size = job["result"]["outputs"]["events"]["size"]
        .as_u64()
        .expect("size");

    // Get the outputs of the expression: bytes hash to the blob id, content is the event list.
    let out = tempfile::tempdir().expect("temp dir");
    let got = r
        .oda(&[
            "--json",
            "get",
            &expr,
            "-o",
            out.path().to_str().expect("utf-8"),
        ])
        .expect_code(0)
        .json();
    assert_eq!(got["id"], expr.as_str());
    assert_eq!(got["files"][0]["output"], "events");
    assert_eq!(got["files"][0]["blob"], blob.as_str());
    let file = out.path().join("events");
    assert_eq!(blob_id_of(&file), blob);
    assert_eq!(std::fs::metadata(&file).expect("file").len(), size);
    let events: Json = serde_json::from_slice(&std::fs::read(&file).expect("read"))
        .expect("events output is JSON");
    assert_eq!(events["obs_id"], 1);
    let times = events["times"].as_array().expect("times");
    assert_eq!(events["n_events"].as_u64(), Some(times.len() as u64));
    assert!(!times.is_empty());
    assert!(
        times.windows(2).all(|w| w[0].as_f64() <= w[1].as_f64()),
        "times ascend"
    );

    // A single blob, too.
    let single = out.path().join("single.json");
    r.oda(&["get", &blob, "-o", single.to_str().expect("utf-8")])
        .expect_code(0);
    assert_eq!(blob_id_of(&single), blob);

    // A download that broke resumes from its .part (only the rest is asked
    // for); a .part whose bytes are wrong is caught by the hash and removed.
    let bytes = std::fs::read(&single).expect("read");
    let resumed = out.path().join("resumed.json");
    let part = out.path().join("resumed.json.part");
    std::fs::write(&part, &bytes[..bytes.len() / 2]).expect("write part");
    let again = r
        .oda(&["get", &blob, "-o", resumed.to_str().expect("utf-8")])
        .expect_code(0);
    assert!(again.stderr.contains("resuming"), "{}", again.stderr);
    assert_eq!(std::fs::read(&resumed).expect("read"), bytes);
    assert!(!part.exists());
    let mut wrong = bytes[..bytes.len() / 2].to_vec();
    wrong[0] ^= 0xff;
    std::fs::write(&part, &wrong).expect("write part");
    std::fs::remove_file(&resumed).expect("remove");
    let bad = r
        .oda(&["get", &blob, "-o", resumed.to_str().expect("utf-8")])
        .expect_code(1);
    assert!(bad.stderr.contains("hash to"), "{}", bad.stderr);
    assert!(!part.exists() && !resumed.exists());

    // The next step takes the output by reference; --fetch downloads its result.
    let fetched = tempfile::tempdir().expect("temp dir");
    let lc = r
        .oda(&[
            "--json",
            "submit",
            "lightcurve",
            "-a",
            &format!("events={expr}/events"),
            "-a",
            "bin_s=10",
            "--fetch",
            "-o",
            fetched.path().to_str().expect("utf-8"),
        ])
        .expect_code(0)
        .json();
    assert_eq!(lc["state"], "done", "{lc}");
    let lc_blob = str_of(&lc, "/result/outputs/lightcurve/blob");
    assert_eq!(lc["fetched"][0]["output"], "lightcurve");
    let lc_file = fetched.path().join("lightcurve");
    assert_eq!(lc["fetched"][0]["path"], lc_file.display().to_string());
    assert_eq!(blob_id_of(&lc_file), lc_blob);
    let curve: Json = serde_json::from_slice(&std::fs::read(&lc_file).expect("read"))
        .expect("lightcurve is JSON");
    assert_eq!(curve["obs_id"], 1);
    assert_eq!(curve["bin_s"], 10.0);
    assert_eq!(curve["n_bins"], 20);
    let counts: u64 = curve["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .filter_map(Json::as_u64)
        .sum();
    assert_eq!(counts, curve["n_events"].as_u64().expect("n_events"));

    // How the light curve was made: two steps, each signed by the worker.
    let lc_expr = str_of(&lc, "/expr");
    let prov = r.oda(&["--json", "prov", lc_expr]).expect_code(0).json();
    let steps = prov["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{prov}");
    assert_eq!(steps[0]["workflow_name"], "lightcurve");
    assert_eq!(steps[1]["workflow_name"], "events");
    assert_eq!(steps[1]["expr"], expr.as_str());
    assert_eq!(steps[0]["inputs"][0]["argument"], "events");
    assert_eq!(steps[0]["inputs"][0]["fact"], steps[1]["fact"]);
    assert!(steps
        .iter()
        .all(|s| s["worker_key"] == worker_key.as_str() && s["trusted"] == true));
    assert_eq!(prov["missing"], serde_json::json!([]));
    let human = r.oda(&["prov", lc_expr]).expect_code(0);
    assert!(
        human
            .stdout
            .contains("input    events ← events of step [2]"),
        "{}",
        human.stdout
    );
    let turtle = r
        .oda(&["prov", lc_expr, "--format", "turtle"])
        .expect_code(0);
    assert!(
        turtle.stdout.contains("prov:wasAssociatedWith"),
        "{}",
        turtle.stdout
    );
    r.oda(&["prov", "ex:nothex"]).expect_code(2);
    let ack = r.oda(&["credits", "--ack", lc_expr]).expect_code(0);
    let worker_peer = m.worker.info.as_ref().expect("started").peer_id.clone();
    assert!(
        ack.stdout.contains("from 2 signed results")
            && ack.stdout.contains(&format!("{worker_peer} (2 runs)"))
            && ack.stdout.contains("@misc{odamesh-"),
        "{}",
        ack.stdout
    );

    // An analysis exception fails the job: exit 1, the exception named.
    let empty = r
        .oda(&[
            "--json",
            "submit",
            "events",
            "-a",
            "obs_id=2",
            "-a",
            "duration=100",
            "-a",
            "rate=0",
            "--wait",
        ])
        .expect_code(0)
        .json();
    let empty_expr = str_of(&empty, "/expr");
    let failed = r
        .oda(&[
            "submit",
            "lightcurve",
            "-a",
            &format!("events={empty_expr}/events"),
            "--wait",
        ])
        .expect_code(1);
    assert!(failed.stdout.contains("failed"), "{}", failed.stdout);
    assert!(failed.stdout.contains("NoData"), "{}", failed.stdout);

    // Asking again is a cache hit, said in the human output.
    let again = r
        .oda(&[
            "submit",
            "events",
            "-a",
            "obs_id=1",
            "-a",
            "duration=200",
            "--wait",
        ])
        .expect_code(0);
    assert!(again.stdout.contains(&expr), "{}", again.stdout);
    assert!(again.stdout.contains("from cache"), "{}", again.stdout);
    assert!(again.stdout.contains(&blob), "{}", again.stdout);

    // A near miss is computed, and the output names the cached neighbour
    // and the argument that differs.
    let near_miss = [
        "events",
        "-a",
        "obs_id=1",
        "-a",
        "duration=200",
        "-a",
        "period=7.30001",
    ];
    let computed = r
        .oda(&[&["submit"][..], &near_miss, &["--wait"]].concat())
        .expect_code(0);
    let hint = format!("the nearest cached {expr} differs in period: 7.3 cached, 7.30001 asked");
    assert!(computed.stdout.contains(&hint), "{}", computed.stdout);
    let why = r.oda(&[&["why"][..], &near_miss].concat()).expect_code(0);
    assert!(why.stdout.contains("cached    yes"), "{}", why.stdout);
    assert!(
        why.stdout
            .contains(&format!("{expr}  period: 7.3 cached, 7.30001 asked")),
        "{}",
        why.stdout
    );
    let why = r.oda(&["--json", "why", &expr]).expect_code(0).json();
    assert_eq!(why["cached"], true, "{why}");
    r.oda(&["why", "events", "-a", "obs_id=nope"])
        .expect_code(2);

    // --no-cache recomputes and says so.
    let forced = r
        .oda(&[
            "--json",
            "submit",
            "events",
            "-a",
            "obs_id=1",
            "-a",
            "duration=200",
            "--wait",
            "--no-cache",
        ])
        .expect_code(0)
        .json();
    assert_eq!(forced["from_cache"], false);
    assert_eq!(forced["no_cache"], true);
    assert_eq!(forced["expr"], expr.as_str());
    let human = r
        .oda(&[
            "submit",
            "events",
            "-a",
            "obs_id=1",
            "-a",
            "duration=200",
            "--no-cache",
        ])
        .expect_code(0);
    assert!(human.stderr.contains("--no-cache"), "{}", human.stderr);
    let job_id = human
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("job"))
        .map(str::trim)
        .expect("submit prints the job id")
        .to_string();
    let waited = r.oda(&["--json", "wait", &job_id]).expect_code(0).json();
    assert_eq!(waited["state"], "done");

    // The other commands' JSON shapes.
    let jobs = r.oda(&["--json", "jobs"]).expect_code(0).json();
    let jobs = jobs.as_array().expect("jobs is an array");
    assert_eq!(jobs.len(), 8);
    assert!(jobs
        .iter()
        .all(|j| j["id"].is_string() && j["state"].is_string()));
    let done_ids = r.oda(&["jobs", "--state", "done", "-q"]).expect_code(0);
    let done_count = jobs.iter().filter(|j| j["state"] == "done").count();
    assert_eq!(
        done_ids.stdout.lines().count(),
        done_count,
        "{}",
        done_ids.stdout
    );
    assert!(
        done_ids.stdout.lines().any(|l| l == job_id),
        "{}",
        done_ids.stdout
    );
    let last = r
        .oda(&["--json", "jobs", "--workflow", "events", "--limit", "1"])
        .expect_code(0)
        .json();
    assert_eq!(last.as_array().map(Vec::len), Some(1), "{last}");
    // Submitted within the last hour: all of them; a bad duration: usage.
    let recent = r
        .oda(&["jobs", "--since", "1h", "-q"])
        .expect_code(0)
        .stdout;
    let all_ids: Vec<&str> = jobs.iter().map(|j| str_of(j, "/id")).collect();
    assert_eq!(
        recent.lines().collect::<Vec<_>>(),
        all_ids,
        "every job is from the last hour"
    );
    r.oda(&["jobs", "--since", "soon"]).expect_code(2);
    r.oda(&["wait", &job_id, "--timeout", "5"]).expect_code(0);
    let node = r.oda(&["--json", "node"]).expect_code(0).json();
    assert_eq!(
        node["peer_id"],
        r.info.as_ref().expect("started").peer_id.as_str()
    );
    assert!(node["peers"].as_u64() >= Some(1), "{node}");
    assert_eq!(node["worker"], false);
    assert!(node["facts"].as_u64() >= Some(1), "{node}");
    let status = r.oda(&["--json", "status", &job_id]).expect_code(0).json();
    assert_eq!(status["id"], job_id.as_str());
    let logs = r.oda(&["--json", "logs", &job_id]).expect_code(0).json();
    assert!(logs["lines"].is_array(), "{logs}");
    let facts = r.oda(&["--json", "facts", &expr]).expect_code(0).json();
    assert_eq!(facts["expr"], expr.as_str());
    assert_eq!(facts["expression"]["args"]["obs_id"], 1);
    let fact_list = facts["facts"].as_array().expect("facts");
    assert!(!fact_list.is_empty());
    assert!(fact_list
        .iter()
        .all(|f| f["worker_key"] == worker_key.as_str() && f["local"] == true));
    let key = r.oda(&["--json", "key", "show"]).expect_code(0).json();
    assert_eq!(key["public_key"], r.public_key().as_str());
    let peers = r.oda(&["--json", "peers"]).expect_code(0).json();
    let worker_peer = m.worker.info.as_ref().expect("started").peer_id.clone();
    assert!(
        peers
            .as_array()
            .expect("peers")
            .iter()
            .any(|p| p["peer_id"] == worker_peer.as_str()),
        "{peers}"
    );
    let blobs = r.oda(&["--json", "cache", "ls"]).expect_code(0).json();
    assert!(
        blobs
            .as_array()
            .expect("blobs")
            .iter()
            .any(|b| b["blob"] == blob.as_str()),
        "{blobs}"
    );
    let pinned = r
        .oda(&["--json", "cache", "pin", &blob])
        .expect_code(0)
        .json();
    assert_eq!(pinned["pinned"], true);
    let stats = r.oda(&["--json", "cache", "stats"]).expect_code(0).json();
    assert!(stats["pinned_blobs"].as_u64() >= Some(1), "{stats}");
    let gc = r.oda(&["--json", "cache", "gc"]).expect_code(0).json();
    assert_eq!(gc["over_cap"], false);
    let wfs = r.oda(&["--json", "workflow", "ls"]).expect_code(0).json();
    let names: Vec<&str> = wfs
        .as_array()
        .expect("workflows")
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"events") && names.contains(&"lightcurve"));
    let shown = r
        .oda(&["--json", "workflow", "show", "lightcurve"])
        .expect_code(0)
        .json();
    assert_eq!(shown["inputs"]["events"]["type"]["type"], "blob");
    let endorsed = r
        .oda(&[
            "--json",
            "workflow",
            "endorse",
            "lightcurve",
            "--note",
            "reviewed",
        ])
        .expect_code(0)
        .json();
    assert_eq!(endorsed["endorser"], r.public_key().as_str());
    assert_eq!(endorsed["note"], "reviewed");

    // Human tables too.
    let table = r.oda(&["jobs"]).expect_code(0);
    assert!(table.stdout.starts_with("JOB"), "{}", table.stdout);
    assert!(table.stdout.contains("cache"), "{}", table.stdout);

    // Graceful stop removes api.addr: the CLI then says no node is running.
    let mut requester = m.requester;
    assert!(
        requester.stop(),
        "oda-node exits 0 on SIGTERM\n{}",
        requester.log()
    );
    let down = requester.oda(&["jobs"]).expect_code(3);
    assert!(
        down.stderr.contains("oda-node init && oda-node run"),
        "{}",
        down.stderr
    );
}

#[test]
fn a_sweep_submits_every_combination_and_follows_them_to_their_end() {
    let m = mesh("sweep");
    let out = m
        .requester
        .oda(&[
            "--json",
            "submit",
            "events",
            "-a",
            "duration=100",
            "--sweep",
            "obs_id=0..2",
            "--sweep",
            "seed=1,2",
            "--wait",
        ])
        .expect_code(0);
    let jobs = out.json();
    let jobs = jobs.as_array().expect("an array of jobs");
    assert_eq!(jobs.len(), 6, "{jobs:?}");
    assert!(jobs.iter().all(|j| j["state"] == "done"), "{jobs:?}");
    let exprs: std::collections::BTreeSet<&str> = jobs.iter().map(|j| str_of(j, "/expr")).collect();
    assert_eq!(exprs.len(), 6, "each combination is its own expression");
    assert!(out.stderr.contains("6 done, 0 failed"), "{}", out.stderr);

    // Without --wait: submitted and listed with their swept values.
    let out = m
        .requester
        .oda(&[
            "submit",
            "events",
            "--sweep",
            "obs_id=3,4",
            "-a",
            "duration=100",
        ])
        .expect_code(0);
    assert!(out.stdout.contains("submitted 2 jobs"), "{}", out.stdout);
    assert!(out.stdout.contains("obs_id=4"), "{}", out.stdout);

    for bad in [
        vec!["--sweep", "obs_id=2..1"],
        vec!["--sweep", "obs_id=0..1", "-a", "obs_id=3"],
        vec!["--sweep", "obs_id=0..1", "--fetch"],
    ] {
        let mut args = vec!["submit", "events"];
        args.extend(bad.iter().copied());
        m.requester.oda(&args).expect_code(2);
    }
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    let mut node = NodeProc::init("alone", &network_id("badargs"), |_| {});
    node.start();
    let dir = examples().join("events");
    node.oda(&["workflow", "add", dir.to_str().expect("utf-8")])
        .expect_code(0);

    for (args, needles) in [
        (vec!["-a", "obs_id=abc"], vec!["obs_id", "int"]),
        (vec!["-a", "obs_id=5000"], vec!["obs_id", "maximum"]),
        (
            vec!["-a", "obs_id=1", "-a", "period=fast"],
            vec!["period", "float"],
        ),
        (vec!["-a", "obs_id=1", "-a", "colour=red"], vec!["colour"]),
        (vec![], vec!["missing", "obs_id"]),
    ] {
        let mut full = vec!["submit", "events"];
        full.extend(args.iter().copied());
        let out = node.oda(&full).expect_code(2);
        for n in &needles {
            assert!(
                out.stderr.contains(n),
                "{full:?}: stderr should mention {n:?}: {}",
                out.stderr
            );
        }
        // --json: the same error as JSON on stdout.
        let mut with_json = vec!["--json"];
        with_json.extend(full.iter().copied());
        let v = node.oda(&with_json).expect_code(2).json();
        assert_eq!(v["exit_code"], 2);
        let error = v["error"].as_str().expect("error is a string");
        assert!(needles.iter().all(|n| error.contains(n)), "{v}");
    }
    // Malformed on the command line itself (clap) and unknown names.
    node.oda(&["submit", "events", "-a", "no-equals-sign"])
        .expect_code(2);
    let out = node
        .oda(&["submit", "nosuchworkflow", "-a", "x=1"])
        .expect_code(2);
    assert!(out.stderr.contains("nosuchworkflow"), "{}", out.stderr);
    let out = node.oda(&["status", "not-a-job-id"]).expect_code(2);
    assert!(out.stderr.contains("not-a-job-id"), "{}", out.stderr);
    node.oda(&["status", "00112233445566778899aabbccddeeff"])
        .expect_code(2);
    node.oda(&["get", "bl:zz"]).expect_code(2);
    node.oda(&["workflow", "add", "/nonexistent/workflow/folder"])
        .expect_code(2);
}

#[test]
fn node_down_exits_3_with_a_hint() {
    // Never started: no api.addr.
    let node = NodeProc::init("down", &network_id("down"), |_| {});
    let out = node.oda(&["jobs"]).expect_code(3);
    assert!(
        out.stderr.contains("oda-node init && oda-node run"),
        "{}",
        out.stderr
    );
    let v = node
        .oda(&["--json", "status", "00112233445566778899aabbccddeeff"])
        .expect_code(3)
        .json();
    assert_eq!(v["exit_code"], 3);
    assert!(v["hint"]
        .as_str()
        .is_some_and(|h| h.contains("oda-node run")));

    // A stale api.addr (the node died without cleaning up): nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    std::fs::write(node.path().join("api.addr"), format!("127.0.0.1:{port}\n")).expect("write");
    let out = node
        .oda(&["submit", "events", "-a", "obs_id=1"])
        .expect_code(3);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    assert!(
        out.stderr.contains("oda-node init && oda-node run"),
        "{}",
        out.stderr
    );

    // No data dir at all.
    let empty = tempfile::tempdir().expect("temp dir");
    let out = oda_tests::oda(&empty.path().join("missing"), &["peers"]).expect_code(3);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
}

#[test]
fn api_needs_the_token_and_answers_json_errors() {
    let mut node = NodeProc::init("api", &network_id("api"), |_| {});
    node.start();
    let base = format!("http://{}", node.api.clone().expect("started"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let read = |r: ureq::http::Response<ureq::Body>| -> (u16, Json) {
        let status = r.status().as_u16();
        let body = r.into_body().read_to_string().expect("body");
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")),
        )
    };

    let (status, v) = read(
        agent
            .get(format!("{base}/v1/jobs"))
            .call()
            .expect("request"),
    );
    assert_eq!(status, 401);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("token")),
        "{v}"
    );
    let (status, _) = read(
        agent
            .get(format!("{base}/metrics"))
            .header("Authorization", "Bearer 0000")
            .call()
            .expect("request"),
    );
    assert_eq!(status, 401);

    let auth = format!("Bearer {}", node.token());
    let (status, v) = read(
        agent
            .post(format!("{base}/v1/jobs"))
            .header("Authorization", &auth)
            .content_type("application/json")
            .send("{\"workflow\": \"events\", ")
            .expect("request"),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid JSON")),
        "{v}"
    );
    let (status, v) = read(
        agent
            .post(format!("{base}/v1/jobs"))
            .header("Authorization", &auth)
            .content_type("application/json")
            .send("{\"workflow\": [1]}")
            .expect("request"),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("workflow")),
        "{v}"
    );

    // With the token: the OpenAPI document and the metrics are served.
    let (status, doc) = read(
        agent
            .get(format!("{base}/openapi.json"))
            .call()
            .expect("request"),
    );
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/jobs"]["post"].is_object());
    let metrics = agent
        .get(format!("{base}/metrics"))
        .header("Authorization", &auth)
        .call()
        .expect("request")
        .into_body()
        .read_to_string()
        .expect("body");
    assert!(metrics.contains("oda_jobs{state=\"done\"} 0"), "{metrics}");
    assert!(metrics.contains("oda_peers 0"), "{metrics}");
}

/// Group trust through the command line: the worker's owner signs a roster
/// of its group (`oda group sign`), a requester that names the group in
/// `[trust] groups` (and lists no keys) imports it (`oda trust import`),
/// shows it (`oda trust ls`), and gets its job computed and trusted.
#[test]
fn a_group_roster_signed_by_one_node_makes_another_trust_its_members() {
    let net = network_id("groups");
    let mut worker = NodeProc::init("worker", &net, |c| {
        c.worker.enabled = true;
        c.worker.slots = 1;
    });
    worker.start();
    let group = format!("{}/integral-team", worker.public_key());
    let mut requester = NodeProc::init("requester", &net, |c| {
        c.peers = vec![worker.addr()];
        c.trust.groups = vec![group.clone()];
        c.scheduler.offer_window_ms = 100;
    });
    requester.start();
    for node in [&worker, &requester] {
        let dir = examples().join("events");
        node.oda(&["workflow", "add", dir.to_str().expect("utf-8 path")])
            .expect_code(0);
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let roster = tmp.path().join("team.roster");
    let roster_arg = roster.to_str().expect("utf-8 path");
    let member = requester.public_key();
    worker
        .oda(&[
            "group",
            "sign",
            "integral-team",
            "--version",
            "1",
            "--member",
            &member,
            "-o",
            roster_arg,
        ])
        .expect_code(0);
    let listed = requester
        .oda(&["--json", "trust", "ls"])
        .expect_code(0)
        .json();
    assert_eq!(listed["groups"][0]["group"], group.as_str());
    assert!(listed["groups"][0]["roster"].is_null(), "{listed}");

    let imported = requester
        .oda(&["--json", "trust", "import", roster_arg])
        .expect_code(0)
        .json();
    assert_eq!(imported["imported"], true, "{imported}");
    assert_eq!(imported["trusted_group"], true, "{imported}");
    let listed = requester.oda(&["trust", "ls"]).expect_code(0);
    assert!(
        listed.stdout.contains("roster version 1, 1 member(s)"),
        "{}",
        listed.stdout
    );
    let again = requester
        .oda(&["trust", "import", roster_arg])
        .expect_code(0);
    assert!(again.stdout.contains("not imported"), "{}", again.stdout);

    // The worker (the group's owner) computes, and its fact is trusted.
    let job = requester
        .oda(&[
            "--json",
            "submit",
            "events",
            "-a",
            "obs_id=3",
            "-a",
            "duration=100",
            "--wait",
        ])
        .expect_code(0)
        .json();
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["result"]["trusted"], true, "{job}");
    let why = str_of(&job, "/result/trust");
    assert!(why.contains("a member of group \"integral-team\""), "{why}");

    // What the requester knows of the worker's key; a key added and removed.
    let shown = requester
        .oda(&["--json", "trust", "show", &worker.public_key()])
        .expect_code(0)
        .json();
    assert_eq!(shown["trusted"], true, "{shown}");
    assert_eq!(shown["groups"][0], group.as_str(), "{shown}");
    assert_eq!(shown["facts"], 1, "the events fact: {shown}");
    let other = "11".repeat(32);
    let added = requester.oda(&["trust", "add", &other]).expect_code(0);
    assert!(added.stdout.contains("trusting"), "{}", added.stdout);
    let listed = requester
        .oda(&["--json", "trust", "ls"])
        .expect_code(0)
        .json();
    assert_eq!(listed["added_keys"][0], other.as_str(), "{listed}");
    let removed = requester.oda(&["trust", "rm", &other]).expect_code(0);
    assert!(
        removed.stdout.contains("no longer trusting"),
        "{}",
        removed.stdout
    );
    let own = requester.public_key();
    let refused = requester.oda(&["trust", "rm", &own]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("own key"), "{}", refused.stderr);

    // A roster file that is not one: usage error from the node, exit 1 or 2.
    std::fs::write(&roster, "zz\n").expect("write");
    let bad = requester.oda(&["trust", "import", roster_arg]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("not hex"), "{}", bad.stderr);
}
