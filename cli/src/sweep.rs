//! `oda submit WORKFLOW --sweep NAME=SPEC …`: a parameter sweep. Each
//! `--sweep` gives one argument a range of integers (`A..B`, both ends
//! included) or a list of values (`x,y,z`); the jobs are every combination
//! of them, with the `-a` arguments in common, submitted one after the
//! other and, with `--wait`, followed together with one progress line.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::client::{Api, CliError, CliResult, EXIT_FAILED};
use crate::commands::{args_map, print_json, url_part, OK};
use crate::render::{flag, text};

/// Most jobs one sweep submits.
pub const MAX_JOBS: usize = 10_000;

/// One `--sweep NAME=SPEC`: the argument's name and its values.
pub fn parse(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, spec) = crate::commands::parse_arg(s)?;
    let values: Vec<String> = match spec.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (a.trim(), b.trim());
            let bound = |x: &str| {
                x.parse::<i64>()
                    .map_err(|_| format!("{s:?}: {x:?} is not an integer (A..B takes integers)"))
            };
            let (a, b) = (bound(a)?, bound(b)?);
            if a > b {
                return Err(format!("{s:?}: the range {a}..{b} is empty"));
            }
            if b.abs_diff(a) >= MAX_JOBS as u64 {
                return Err(format!(
                    "{s:?}: more than {MAX_JOBS} values (a sweep submits at most {MAX_JOBS} jobs)"
                ));
            }
            (a..=b).map(|i| i.to_string()).collect()
        }
        None => spec.split(',').map(|v| v.trim().to_string()).collect(),
    };
    if values.iter().any(String::is_empty) {
        return Err(format!("{s:?}: an empty value"));
    }
    Ok((name, values))
}

/// Every combination of the swept values, each with the common arguments
/// (`-a`) first; an error names what is wrong.
pub fn combinations(
    common: &[(String, String)],
    sweeps: &[(String, Vec<String>)],
) -> Result<Vec<Vec<(String, String)>>, String> {
    let mut names = std::collections::HashSet::new();
    for (name, _) in sweeps {
        if !names.insert(name) {
            return Err(format!("`{name}` is swept twice"));
        }
        if common.iter().any(|(n, _)| n == name) {
            return Err(format!("`{name}` is given both with -a and with --sweep"));
        }
    }
    let total = sweeps
        .iter()
        .try_fold(1usize, |n, (_, v)| n.checked_mul(v.len()))
        .filter(|n| *n <= MAX_JOBS)
        .ok_or_else(|| format!("the sweep has more than {MAX_JOBS} combinations"))?;
    let mut all = vec![common.to_vec()];
    for (name, values) in sweeps {
        all = all
            .into_iter()
            .flat_map(|args| {
                values.iter().map(move |v| {
                    let mut a = args.clone();
                    a.push((name.clone(), v.clone()));
                    a
                })
            })
            .collect();
    }
    debug_assert_eq!(all.len(), total);
    Ok(all)
}

/// Submit every combination; with `wait`, follow them to their end. Exit
/// code: 1 when any job failed or was cancelled.
pub fn run(
    api: &Api,
    workflow: &str,
    jobs: &[Vec<(String, String)>],
    (wait, no_cache, quorum): (bool, bool, Option<u32>),
    as_json: bool,
) -> CliResult<u8> {
    let mut submitted = Vec::with_capacity(jobs.len());
    for args in jobs {
        let job = api.post(
            "/v1/jobs",
            Some(&json!({ "workflow": workflow, "args": args_map(args), "no_cache": no_cache, "quorum": quorum })),
        ).map_err(|e| {
            CliError::failed(format!(
                "{e} (after submitting {} of {} jobs)",
                submitted.len(),
                jobs.len()
            ))
        })?;
        submitted.push(job);
    }
    if !as_json {
        println!("submitted {} jobs of {workflow}", submitted.len());
    }
    let ended = if wait {
        follow(api, &submitted)?
    } else {
        submitted
    };
    if as_json {
        print_json(&Json::Array(ended.clone()));
    } else {
        for (job, args) in ended.iter().zip(jobs) {
            let swept: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "{}  {:<9}  {}",
                text(job, "id"),
                text(job, "state"),
                swept.join(" ")
            );
        }
    }
    let bad = ended
        .iter()
        .any(|j| matches!(text(j, "state").as_str(), "failed" | "cancelled"));
    Ok(if bad { EXIT_FAILED } else { OK })
}

/// The jobs once every one has ended, printing one progress line (on a
/// terminal, rewritten in place; otherwise when it changes).
fn follow(api: &Api, jobs: &[Json]) -> CliResult<Vec<Json>> {
    let ids: Vec<String> = jobs.iter().map(|j| text(j, "id")).collect();
    let tty = std::io::stderr().is_terminal();
    let mut shown = String::new();
    let started = Instant::now();
    loop {
        let all = api.get("/v1/jobs")?;
        let by_id: BTreeMap<String, &Json> = all
            .as_array()
            .map(|a| a.iter().map(|j| (text(j, "id"), j)).collect())
            .unwrap_or_default();
        let now: Vec<Json> = ids
            .iter()
            .zip(jobs)
            .map(|(id, old)| by_id.get(id).map_or_else(|| old.clone(), |j| (*j).clone()))
            .collect();
        let count = |state: &str| now.iter().filter(|j| text(j, "state") == state).count();
        let open: Vec<&String> = ids
            .iter()
            .zip(&now)
            .filter(|(_, j)| !flag(j, "terminal"))
            .map(|(id, _)| id)
            .collect();
        let line = format!(
            "{} done, {} failed, {} waiting or running of {} ({} s)",
            count("done"),
            count("failed") + count("cancelled"),
            open.len(),
            ids.len(),
            started.elapsed().as_secs()
        );
        if tty {
            eprint!("\r{line}   ");
        } else if line.split(" (").next() != shown.split(" (").next() {
            eprintln!("{line}");
        }
        shown = line;
        let Some(first) = open.first() else {
            if tty {
                eprintln!();
            }
            return Ok(now);
        };
        // Sleep on the first open job (returns at its end or after 1 s).
        api.get(&format!(
            "/v1/jobs/{}/wait?timeout_ms={}",
            url_part(first),
            Duration::from_secs(1).as_millis()
        ))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn sweeps_are_ranges_or_lists() {
        assert_eq!(
            parse("obs_id=1..3").unwrap(),
            ("obs_id".into(), vec!["1".into(), "2".into(), "3".into()])
        );
        assert_eq!(
            parse("period=7.2,7.3").unwrap(),
            ("period".into(), vec!["7.2".into(), "7.3".into()])
        );
        assert_eq!(parse("n=-1..0").unwrap().1, ["-1", "0"]);
        for bad in [
            "obs_id=3..1",
            "obs_id=a..3",
            "x=1,,2",
            "noequals",
            "n=0..10000",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn combinations_multiply_the_sweeps_and_keep_the_common_arguments() {
        let jobs = combinations(
            &pairs(&[("duration", "100")]),
            &[
                ("obs_id".into(), vec!["0".into(), "1".into()]),
                ("seed".into(), vec!["5".into(), "6".into(), "7".into()]),
            ],
        )
        .unwrap();
        assert_eq!(jobs.len(), 6);
        assert_eq!(
            jobs[0],
            pairs(&[("duration", "100"), ("obs_id", "0"), ("seed", "5")])
        );
        assert_eq!(
            jobs[5],
            pairs(&[("duration", "100"), ("obs_id", "1"), ("seed", "7")])
        );
        let twice = combinations(
            &pairs(&[("obs_id", "1")]),
            &[("obs_id".into(), vec!["2".into()])],
        );
        assert!(twice.unwrap_err().contains("both with -a and with --sweep"));
        let big: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        let e = combinations(&[], &[("a".into(), big.clone()), ("b".into(), big)]).unwrap_err();
        assert!(e.contains("more than 10000"), "{e}");
    }
}
