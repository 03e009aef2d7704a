//! CI smoke: the whole `oda-bench` suite at `--quick` sizes (seconds, not
//! minutes) produces finite numbers for every benchmark, and nothing fails.

use std::time::Duration;

use oda_simulations::suite;
use oda_simulations::Sizes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_suite_yields_finite_figures() {
    let run = tokio::time::timeout(
        Duration::from_secs(300),
        suite::run(&Sizes::quick(), None, "smoke".into(), |what| {
            eprintln!("smoke: {what}")
        }),
    )
    .await
    .expect("the quick suite finishes within 5 minutes");

    let table = run.markdown();
    eprintln!("{table}");
    assert!(run.quick);
    for r in &run.results {
        assert_ne!(r.mesh, "failed", "{} failed: {:?}", r.name, r.notes);
        if r.mesh == "skipped" {
            continue;
        }
        assert!(!r.figures.is_empty(), "{} has no figures", r.name);
        for f in &r.figures {
            assert!(
                f.value.is_finite() && f.value >= 0.0,
                "{}: {} = {}",
                r.name,
                f.label,
                f.value
            );
        }
    }
    for name in [
        "remote cache hit",
        "cold DHT lookup",
        "trivial job round trip",
        "throughput, all at once",
        "verified blob transfer",
    ] {
        let r = run
            .results
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no row {name:?} in\n{table}"));
        assert!(
            r.get("p50")
                .or(r.get("jobs_per_s"))
                .or(r.get("mib_per_s"))
                .unwrap()
                > 0.0
        );
    }
    let burst = run
        .results
        .iter()
        .find(|r| r.name == "throughput, all at once")
        .unwrap();
    assert!(
        burst.get("done").unwrap() > 0.0,
        "no job of the burst finished:\n{table}"
    );
}
