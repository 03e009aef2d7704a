//! Runner classes against real `oda-node` processes on loopback: a worker
//! of each class and two requesters that trust it, one the class admits and
//! one it does not. The admitted requester's job is computed and its fact
//! records the class; the other's advert is declined (`NotAllowed` in the
//! worker's log, polled with a deadline). A `session` worker stops by
//! itself when its session ends.
//!
//! (The executors of issue 13 — SLURM, containers, CWL, the sandbox — are
//! to be tested here too; they are not built yet.)

use std::time::{Duration, Instant, SystemTime};

use oda_node::config::Config;
use oda_tests::{examples, network_id, NodeProc};

/// Two requesters (started first, so that their keys are known) and a
/// worker configured by `worker(config, admitted key, other key)` that
/// dials both; each requester trusts the worker; all have `events`.
struct Mesh {
    admitted: NodeProc,
    other: NodeProc,
    worker: NodeProc,
}

fn mesh(test: &str, worker: impl FnOnce(&mut Config, &str, &str)) -> Mesh {
    let net = network_id(test);
    let mut admitted = NodeProc::init("admitted", &net, |_| {});
    admitted.start();
    let mut other = NodeProc::init("other", &net, |_| {});
    other.start();
    let (a, o) = (admitted.public_key(), other.public_key());
    let peers = vec![admitted.addr(), other.addr()];
    let mut w = NodeProc::init("worker", &net, |c| {
        c.worker.enabled = true;
        c.peers = peers;
        worker(c, &a, &o);
    });
    w.start();
    for node in [&admitted, &other] {
        node.oda(&["trust", "add", &w.public_key()]).expect_code(0);
    }
    let events = examples().join("events");
    for node in [&admitted, &other, &w] {
        node.oda(&["workflow", "add", events.to_str().expect("utf-8 path")])
            .expect_code(0);
    }
    Mesh {
        admitted,
        other,
        worker: w,
    }
}

/// Submit `events` for observation `obs`; the job's JSON.
fn submit(node: &NodeProc, obs: u32, wait: bool) -> serde_json::Value {
    let obs = format!("obs_id={obs}");
    let mut args = vec![
        "--json",
        "submit",
        "events",
        "-a",
        &obs,
        "-a",
        "duration=100",
    ];
    if wait {
        args.push("--wait");
    }
    node.oda(&args).expect_code(0).json()
}

/// The admitted requester's job is computed with the worker's class in its
/// fact; the other's advert is declined as not allowed.
fn admits_one_and_declines_the_other(m: &Mesh, class: &str) {
    let done = submit(&m.admitted, 1, true);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["result"]["worker_key"], m.worker.public_key().as_str());
    assert_eq!(done["result"]["runner_class"], class, "{done}");

    let job = submit(&m.other, 2, false);
    let expr = job["expr"].as_str().expect("expr").to_string();
    let short = expr.trim_start_matches("ex:");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let log = m.worker.log();
        if log
            .lines()
            .any(|l| l.contains("not offering") && l.contains(short) && l.contains("NotAllowed"))
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "the {class} worker did not decline {expr} within 60 s\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = job["id"].as_str().expect("id");
    let status = m.other.oda(&["--json", "status", id]).expect_code(0).json();
    assert_ne!(status["state"], "done", "{status}");
    m.other.oda(&["cancel", id]).expect_code(0);
}

#[test]
fn a_user_runner_serves_its_owners_only() {
    let m = mesh("runner-user", |c, admitted, _| {
        c.worker.runner_class = "user".into();
        c.worker.owners = vec![admitted.to_string()];
    });
    admits_one_and_declines_the_other(&m, "user");
}

#[test]
fn a_group_runner_serves_the_members_of_its_groups_newest_roster() {
    let m = mesh("runner-group", |c, admitted, _| {
        c.worker.runner_class = "group".into();
        // The admitted requester owns the group "team".
        c.worker.groups = vec![format!("{admitted}/team")];
    });
    // The owner signs a roster; the worker imports it.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("team.roster");
    let file = file.to_str().expect("utf-8 path");
    let admitted = m.admitted.public_key();
    m.admitted
        .oda(&[
            "group",
            "sign",
            "team",
            "--version",
            "1",
            "--member",
            &admitted,
            "-o",
            file,
        ])
        .expect_code(0);
    m.worker.oda(&["trust", "import", file]).expect_code(0);
    admits_one_and_declines_the_other(&m, "group");
}

#[test]
fn a_session_runner_serves_one_key_until_the_session_ends_then_stops() {
    let until = SystemTime::now() + Duration::from_secs(20);
    let mut m = mesh("runner-session", |c, admitted, _| {
        c.worker.runner_class = "session".into();
        c.worker.session_key = admitted.to_string();
        c.worker.session_until = humantime::format_rfc3339_seconds(until).to_string();
    });
    admits_one_and_declines_the_other(&m, "session");
    let status = m
        .worker
        .wait_exit(Duration::from_secs(60))
        .expect("the session worker stops by itself when its session ends");
    assert!(status.success(), "{status}\n{}", m.worker.log());
    assert!(
        m.worker.log().contains("the session ended at"),
        "{}",
        m.worker.log()
    );
}
