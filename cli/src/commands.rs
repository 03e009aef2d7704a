//! The `oda` commands: each talks to the node's local API, prints a human
//! view (or the API's JSON with `--json`, shapes in docs/cli.md) and returns
//! the exit code.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value as Json};

use crate::client::{Api, CliError, CliResult, EXIT_FAILED};
use crate::render::{self, flag, num, text, Table};

/// Exit code 0.
pub const OK: u8 = 0;

/// Print JSON to stdout, pretty.
pub fn print_json(v: &Json) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(_) => println!("{v}"),
    }
}

/// A `name=value` argument as given on the command line.
pub fn parse_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

/// `-a NAME=VALUE` arguments as the API's `args` object (text values, typed
/// by the node); a repeated name gives a list.
pub fn args_map(args: &[(String, String)]) -> serde_json::Map<String, Json> {
    let mut map = serde_json::Map::new();
    for (k, v) in args {
        match map.get_mut(k) {
            Some(Json::Array(items)) => items.push(Json::String(v.clone())),
            Some(existing) => {
                let first = existing.take();
                *existing = Json::Array(vec![first, Json::String(v.clone())]);
            }
            None => {
                map.insert(k.clone(), Json::String(v.clone()));
            }
        }
    }
    map
}

/// The job's exit code: 0 done (or still running), 1 failed or cancelled.
pub fn job_exit(job: &Json) -> u8 {
    match job.get("state").and_then(Json::as_str) {
        Some("failed") | Some("cancelled") => EXIT_FAILED,
        _ => OK,
    }
}

pub(crate) fn url_part(s: &str) -> String {
    // Ids and names are [A-Za-z0-9:_-]; escape anything else.
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.:~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Print a job for humans: state, who computed it, cache, time, outputs.
pub fn print_job(job: &Json) {
    let state = text(job, "state");
    println!("job       {}", text(job, "id"));
    println!("expr      {}", text(job, "expr"));
    if let Some(name) = job.get("workflow_name").and_then(Json::as_str) {
        println!("workflow  {name} ({})", text(job, "workflow"));
    }
    let mut line = state.clone();
    if let Some(w) = job.get("worker").and_then(Json::as_str) {
        line.push_str(&format!(" on {w}"));
    }
    if flag(job, "no_cache") {
        line.push_str(" (recompute forced with --no-cache)");
    }
    println!("state     {line}");
    let quorum = num(job, "quorum");
    if quorum > 1 {
        println!("quorum    {quorum} distinct trusted workers must agree on the result");
    }
    let elapsed = render::duration_ms(num(job, "elapsed_ms"));
    if let Some(r) = job.get("result").filter(|r| !r.is_null()) {
        let source = if flag(job, "from_cache") {
            "from cache (not recomputed)"
        } else {
            "computed for this job"
        };
        println!("result    {} {source}", text(r, "outcome"));
        println!(
            "worker    {} (key {})",
            text(r, "worker_peer"),
            text(r, "worker_key")
        );
        println!("trust     {}", trust_label(r));
        println!(
            "time      {elapsed} since submission; the run took {}",
            render::duration_ms(num(r, "run_ms"))
        );
        if let Some(kind) = r.get("error_kind").and_then(Json::as_str) {
            println!("exception {kind}: {}", text(r, "error_message"));
        }
        if let Some(outputs) = r.get("outputs").and_then(Json::as_object) {
            if !outputs.is_empty() {
                println!("outputs");
                let mut t = Table::new(&["  NAME", "SIZE", "BLOB"]);
                for (name, o) in outputs {
                    t.row(vec![
                        format!("  {name}"),
                        render::size(num(o, "size")),
                        text(o, "blob"),
                    ]);
                }
                t.print();
            }
        }
    } else {
        println!("time      {elapsed} since submission");
    }
    let has_exception = job
        .pointer("/result/error_kind")
        .is_some_and(|k| !k.is_null());
    if let Some(e) = job.get("error").and_then(Json::as_str) {
        if !has_exception {
            println!("error     {e}");
        }
    }
    if let Some(attempts) = job.get("attempts").and_then(Json::as_array) {
        if !attempts.is_empty() && state != "done" {
            println!("attempts");
            for a in attempts {
                let worker = text(a, "worker");
                println!(
                    "  {}: {}",
                    if worker.is_empty() {
                        "-".into()
                    } else {
                        worker
                    },
                    text(a, "outcome")
                );
                let tail = text(a, "log_tail");
                for l in tail
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    println!("    | {l}");
                }
            }
        }
    }
}

/// Follow a job until it is terminal: a spinner with the state and the last
/// log line (unless `quiet`), fed by the event stream, falling back to long
/// polls if the stream breaks. Returns the final job.
pub fn follow(api: &Api, job: &str, quiet: bool) -> CliResult<Json> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    };
    let mut state = String::from("queued");
    let mut last_log = String::new();
    let mut last: Option<Json> = None;
    let path = format!("/v1/jobs/{}/events?backlog=false", url_part(job));
    let streamed = api.events(&path, |event, data| {
        match event {
            "state" => {
                if let Ok(j) = serde_json::from_str::<Json>(data) {
                    state = text(&j, "state");
                    if let Some(w) = j.get("worker").and_then(Json::as_str) {
                        state.push_str(&format!(" on {}", render::short(w, 8)));
                    }
                    let terminal = flag(&j, "terminal");
                    last = Some(j);
                    if terminal {
                        return false;
                    }
                }
            }
            "log" => {
                if let Ok(j) = serde_json::from_str::<Json>(data) {
                    last_log = text(&j, "line");
                }
            }
            _ => {}
        }
        bar.set_message(if last_log.is_empty() {
            state.clone()
        } else {
            format!("{state} | {}", render::truncate(&last_log, 70))
        });
        true
    });
    if let Err(e) = streamed {
        if e.code != EXIT_FAILED {
            bar.finish_and_clear();
            return Err(e);
        }
    }
    let done = last.as_ref().is_some_and(|j| flag(j, "terminal"));
    let result = if done {
        last.ok_or_else(|| CliError::failed("no job state received"))
    } else {
        // The stream ended early (node restarting, proxy): long-poll instead.
        loop {
            let j = api.get(&format!("/v1/jobs/{}/wait?timeout_ms=60000", url_part(job)))?;
            bar.set_message(text(&j, "state"));
            if flag(&j, "terminal") {
                break Ok(j);
            }
        }
    };
    bar.finish_and_clear();
    result
}

/// `oda submit`.
/// `oda submit`: `(wait, fetch, out)` say what to do after submitting,
/// `(no_cache, quorum)` how the result is wanted.
pub fn submit(
    api: &Api,
    workflow: &str,
    args: &[(String, String)],
    (wait, fetch, out): (bool, bool, Option<&Path>),
    (no_cache, quorum): (bool, Option<u32>),
    as_json: bool,
) -> CliResult<u8> {
    let map = args_map(args);
    if no_cache && !as_json {
        eprintln!(
            "--no-cache: skipping the local and mesh caches; the expression is computed again"
        );
    }
    let job = api.post(
        "/v1/jobs",
        Some(&json!({ "workflow": workflow, "args": map, "no_cache": no_cache, "quorum": quorum })),
    )?;
    let id = text(&job, "id");
    if !as_json {
        println!("expression {}", text(&job, "expr"));
        println!("job        {id}");
    }
    if !(wait || fetch) {
        if as_json {
            print_json(&job);
        }
        return Ok(OK);
    }
    let mut done = follow(api, &id, as_json)?;
    if !as_json {
        println!();
        print_job(&done);
        let computed = text(&done, "state") == "done" && !flag(&done, "from_cache");
        if computed && !no_cache {
            if let Some(note) = crate::why::near_miss_note(api, &text(&done, "expr")) {
                println!("{note}");
            }
        }
    }
    let code = job_exit(&done);
    if fetch && code == OK {
        let dir = out
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let files = fetch_outputs(
            api,
            done.get("result").unwrap_or(&Json::Null),
            &dir,
            as_json,
        )?;
        if let Some(obj) = done.as_object_mut() {
            obj.insert("fetched".into(), Json::Array(files));
        }
    }
    if as_json {
        print_json(&done);
    }
    Ok(code)
}

/// Download every output of a fact (`FactView` JSON) into `dir` as
/// `<output name>`; returns `[{output, path, blob, size}]`.
fn fetch_outputs(api: &Api, fact: &Json, dir: &Path, quiet: bool) -> CliResult<Vec<Json>> {
    let Some(outputs) = fact.get("outputs").and_then(Json::as_object) else {
        return Err(CliError::failed("the result has no outputs to fetch"));
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for (name, o) in outputs {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(CliError::failed(format!(
                "output name {name:?} cannot be a file name"
            )));
        }
        let blob = text(o, "blob");
        let path = dir.join(name);
        let size = download(api, &blob, &Dest::File(path.clone()), quiet)?;
        if !quiet {
            println!(
                "fetched   {name} -> {} ({})",
                path.display(),
                render::size(size)
            );
        }
        files.push(json!({ "output": name, "path": path.display().to_string(), "blob": blob, "size": size }));
    }
    Ok(files)
}

/// Where downloaded bytes go.
pub enum Dest {
    /// A file (written to `<path>.part`, renamed when verified).
    File(PathBuf),
    /// Standard output.
    Stdout,
}

/// Download a blob, with a progress bar (unless `quiet`), hashing the bytes:
/// a file whose BLAKE3 is not the blob id is deleted and the command fails.
/// A file is written to `<path>.part` and renamed once verified; a download
/// that broke leaves the `.part`, and the next one resumes it (its bytes are
/// hashed again and only the rest is asked for, with an HTTP range).
pub fn download(api: &Api, blob: &str, dest: &Dest, quiet: bool) -> CliResult<u64> {
    let expected: oda_protocol::BlobId = blob
        .parse()
        .map_err(|e| CliError::usage(format!("{blob:?} is not a blob id: {e}")))?;
    let id = format!("{expected:#}");
    let mut hasher = blake3::Hasher::new();
    let (mut sink, part, mut total): (Box<dyn Write>, Option<PathBuf>, u64) = match dest {
        Dest::Stdout => (Box::new(std::io::stdout().lock()), None, 0),
        Dest::File(path) => {
            let mut part = path.clone().into_os_string();
            part.push(".part");
            let part = PathBuf::from(part);
            let (file, held) = resume(&part, &mut hasher)?;
            if held > 0 && !quiet {
                eprintln!("resuming {} at {}", part.display(), render::size(held));
            }
            (Box::new(std::io::BufWriter::new(file)), Some(part), held)
        }
    };
    let (ranged, len, mut reader) = api.blob_from(&id, total)?;
    if let (Some(path), true) = (&part, total > 0 && !ranged) {
        // The node sent the whole blob: start the file again.
        drop(sink);
        let file = File::create(path)
            .map_err(|e| CliError::failed(format!("cannot create {}: {e}", path.display())))?;
        sink = Box::new(std::io::BufWriter::new(file));
        hasher = blake3::Hasher::new();
        total = 0;
    }
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(total + len.unwrap_or(0));
        b.set_style(
            ProgressStyle::with_template(
                "{bytes:>10}/{total_bytes:<10} {wide_bar} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_message(render::short(blob, 12));
        b.set_position(total);
        b
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut broke = false;
    let result: Result<(), String> = (|| {
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    broke = true;
                    return Err(format!("the download broke after {total} bytes: {e}"));
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            sink.write_all(&buf[..n])
                .map_err(|e| format!("cannot write: {e}"))?;
            total += n as u64;
            bar.set_position(total);
        }
        sink.flush().map_err(|e| format!("cannot write: {e}"))
    })();
    drop(sink);
    bar.finish_and_clear();
    let actual = oda_protocol::BlobId(*hasher.finalize().as_bytes());
    let problem = match result {
        Err(e) => Some(e),
        Ok(()) if actual != expected => Some(format!(
            "the bytes received hash to {actual:#}, not {expected:#}; discarded"
        )),
        Ok(()) => None,
    };
    match (problem, part, dest) {
        (Some(p), Some(part), _) if broke => Err(CliError::failed(format!(
            "{p}; run the command again to resume ({} is kept)",
            part.display()
        ))),
        (Some(p), Some(part), _) => {
            let _ = std::fs::remove_file(&part);
            Err(CliError::failed(p))
        }
        (Some(p), None, _) => Err(CliError::failed(p)),
        (None, Some(part), Dest::File(path)) => {
            std::fs::rename(&part, path).map_err(|e| {
                CliError::failed(format!(
                    "cannot rename {} to {}: {e}",
                    part.display(),
                    path.display()
                ))
            })?;
            Ok(total)
        }
        (None, _, _) => Ok(total),
    }
}

/// Open `part` to append to it, with its bytes so far fed to `hasher`;
/// returns the file and how many bytes it holds (0 for a new file).
fn resume(part: &Path, hasher: &mut blake3::Hasher) -> CliResult<(File, u64)> {
    let failed =
        |e: std::io::Error| CliError::failed(format!("cannot use {}: {e}", part.display()));
    match File::open(part) {
        Ok(mut held) => {
            let n = std::io::copy(&mut held, hasher).map_err(failed)?;
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(part)
                .map_err(failed)?;
            Ok((file, n))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((File::create(part).map_err(failed)?, 0))
        }
        Err(e) => Err(failed(e)),
    }
}

/// `oda get ID [-o PATH]`.
pub fn get(api: &Api, id: &str, out: Option<&Path>, as_json: bool) -> CliResult<u8> {
    let id = id.trim();
    let is_blob = id.starts_with("bl:");
    if !is_blob {
        // An expression (`ex:…`, or bare hex that names one).
        match api.get(&format!("/v1/exprs/{}/facts", url_part(id))) {
            Ok(facts) => return get_expr(api, &facts, out, as_json),
            Err(e) if id.starts_with("ex:") || e.code != crate::client::EXIT_USAGE => {
                return Err(e)
            }
            Err(_) => {}
        }
    }
    let blob: oda_protocol::BlobId = id.parse().map_err(|e| {
        CliError::usage(format!(
            "{id:?} is neither an expression nor a blob id: {e}"
        ))
    })?;
    let dest = match out {
        Some(p) if p == Path::new("-") => Dest::Stdout,
        Some(p) if p.is_dir() => Dest::File(p.join(blob.to_string())),
        Some(p) => Dest::File(p.to_path_buf()),
        None => Dest::File(PathBuf::from(blob.to_string())),
    };
    let quiet = as_json || matches!(dest, Dest::Stdout);
    let size = download(api, &format!("{blob:#}"), &dest, quiet)?;
    let path = match &dest {
        Dest::File(p) => p.display().to_string(),
        Dest::Stdout => "-".into(),
    };
    if as_json {
        print_json(
            &json!({ "id": format!("{blob:#}"), "files": [{ "output": null, "path": path, "blob": format!("{blob:#}"), "size": size }] }),
        );
    } else if !matches!(dest, Dest::Stdout) {
        eprintln!(
            "fetched   {blob:#} -> {path} ({}, BLAKE3 verified)",
            render::size(size)
        );
    }
    Ok(OK)
}

/// The fact `oda get EXPR` downloads: a held, trusted one, successes
/// first. A node may hold facts it does not trust (a worker keeps the input
/// facts of what it computed): those are never taken, and say so.
fn result_fact<'a>(expr: &str, facts: &'a [Json]) -> CliResult<&'a Json> {
    let local: Vec<&Json> = facts.iter().filter(|f| flag(f, "local")).collect();
    let trusted: Vec<&Json> = local
        .iter()
        .copied()
        .filter(|f| flag(f, "trusted"))
        .collect();
    if let Some(fact) = trusted
        .iter()
        .find(|f| text(f, "outcome") == "success")
        .or_else(|| trusted.first())
    {
        return Ok(fact);
    }
    match local.first() {
        Some(untrusted) => Err(CliError::failed(format!(
            "expression {expr} has no trusted result on this node: its fact {} is not trusted here ({}); submit it to get a trusted one",
            text(untrusted, "fact"),
            text(untrusted, "trust")
        ))),
        None => Err(CliError::usage(format!(
            "expression {expr} has no result on this node yet; submit it (or wait for its job) first"
        ))),
    }
}

fn get_expr(api: &Api, facts: &Json, out: Option<&Path>, as_json: bool) -> CliResult<u8> {
    let expr = text(facts, "expr");
    let list = facts
        .get("facts")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let fact = result_fact(&expr, &list)?;
    if text(fact, "outcome") != "success" {
        return Err(CliError::failed(format!(
            "expression {expr} ended in an analysis exception {}: {}",
            text(fact, "error_kind"),
            text(fact, "error_message")
        )));
    }
    let dir = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let files = fetch_outputs(api, fact, &dir, as_json)?;
    if as_json {
        print_json(&json!({ "id": expr, "fact": text(fact, "fact"), "files": files }));
    }
    Ok(OK)
}

/// `oda status JOB`.
pub fn status(api: &Api, job: &str, as_json: bool) -> CliResult<u8> {
    let j = api.get(&format!("/v1/jobs/{}", url_part(job)))?;
    if as_json {
        print_json(&j);
    } else {
        print_job(&j);
    }
    Ok(OK)
}

/// `oda wait JOB`.
pub fn wait(api: &Api, job: &str, timeout: Option<u64>, as_json: bool) -> CliResult<u8> {
    // Fail early (404, 400) before showing a spinner.
    api.get(&format!("/v1/jobs/{}", url_part(job)))?;
    let j = match timeout {
        None => follow(api, job, as_json)?,
        Some(secs) => {
            let j = wait_until(api, job, Duration::from_secs(secs))?;
            if !flag(&j, "terminal") {
                if as_json {
                    print_json(&j);
                }
                return Err(CliError::failed(format!(
                    "job {job} is still {} after {secs} s (it keeps running; `oda wait {job}` again)",
                    text(&j, "state")
                )));
            }
            j
        }
    };
    if as_json {
        print_json(&j);
    } else {
        print_job(&j);
    }
    Ok(job_exit(&j))
}

/// The job after long polls (`/v1/jobs/{id}/wait`) until it ends or `limit`
/// has passed.
fn wait_until(api: &Api, job: &str, limit: Duration) -> CliResult<Json> {
    let end = std::time::Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let poll = left.min(Duration::from_secs(30)).as_millis();
        let j = api.get(&format!(
            "/v1/jobs/{}/wait?timeout_ms={poll}",
            url_part(job)
        ))?;
        if flag(&j, "terminal") || left.is_zero() {
            return Ok(j);
        }
    }
}

/// `oda logs JOB [-f]`.
pub fn logs(api: &Api, job: &str, follow_logs: bool, as_json: bool) -> CliResult<u8> {
    if !follow_logs {
        let l = api.get(&format!("/v1/jobs/{}/logs", url_part(job)))?;
        if as_json {
            print_json(&l);
        } else {
            for line in l
                .get("lines")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                println!("{}", line.as_str().unwrap_or_default());
            }
        }
        return Ok(OK);
    }
    let mut last: Option<Json> = None;
    api.events(
        &format!("/v1/jobs/{}/events?backlog=true", url_part(job)),
        |event, data| {
            let Ok(j) = serde_json::from_str::<Json>(data) else {
                return true;
            };
            match event {
                "log" => {
                    if as_json {
                        println!("{}", json!({ "job": job, "line": text(&j, "line") }));
                    } else {
                        println!("{}", text(&j, "line"));
                    }
                }
                "state" => {
                    let terminal = flag(&j, "terminal");
                    last = Some(j);
                    if terminal {
                        return false;
                    }
                }
                _ => {}
            }
            true
        },
    )?;
    let final_job = match last {
        Some(j) if flag(&j, "terminal") => j,
        _ => api.get(&format!("/v1/jobs/{}", url_part(job)))?,
    };
    if !as_json {
        eprintln!(
            "job {} {}",
            text(&final_job, "id"),
            text(&final_job, "state")
        );
    }
    Ok(job_exit(&final_job))
}

/// `oda cancel JOB`.
pub fn cancel(api: &Api, job: &str, as_json: bool) -> CliResult<u8> {
    let j = api.post(&format!("/v1/jobs/{}/cancel", url_part(job)), None)?;
    if as_json {
        print_json(&j);
    } else if text(&j, "state") == "cancelled" {
        println!("job {} cancelled", text(&j, "id"));
    } else {
        println!(
            "job {} had already ended: {}",
            text(&j, "id"),
            text(&j, "state")
        );
    }
    Ok(OK)
}

/// `oda jobs`.
/// `oda node`.
pub fn node(api: &Api, as_json: bool) -> CliResult<u8> {
    let n = api.get("/v1/node")?;
    if as_json {
        print_json(&n);
        return Ok(OK);
    }
    println!(
        "oda-node   {} (protocol v{})",
        text(&n, "version"),
        num(&n, "protocol")
    );
    println!("peer id    {}", text(&n, "peer_id"));
    println!("key        {}", text(&n, "public_key"));
    for addr in render::items(&n, "listen") {
        println!("listening  {}", addr.as_str().unwrap_or_default());
    }
    println!("peers      {} connected", num(&n, "peers"));
    println!(
        "up         {}",
        render::duration_ms(num(&n, "uptime_s") * 1000)
    );
    println!(
        "worker     {}",
        if flag(&n, "worker") {
            "computes jobs"
        } else {
            "off (requests only)"
        }
    );
    println!(
        "store      {} facts, {} blobs ({})",
        num(&n, "facts"),
        num(&n, "blobs"),
        render::size(num(&n, "blob_bytes"))
    );
    Ok(OK)
}

/// Which jobs `oda jobs` lists.
#[derive(Debug, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Only jobs of this workflow (name).
    pub workflow: Option<String>,
    /// Only the most recent N.
    pub limit: Option<usize>,
    /// Only jobs created at or after this Unix millisecond.
    pub since_ms: Option<u64>,
}

impl JobFilter {
    /// The jobs of `list` (oldest first) that pass, oldest first.
    pub fn apply<'a>(&self, list: &'a [Json]) -> Vec<&'a Json> {
        let kept: Vec<&Json> = list
            .iter()
            .filter(|j| self.state.as_ref().is_none_or(|s| text(j, "state") == *s))
            .filter(|j| {
                self.workflow
                    .as_ref()
                    .is_none_or(|w| text(j, "workflow_name") == *w)
            })
            .filter(|j| {
                self.since_ms.is_none_or(|since| {
                    j.get("created_at").and_then(Json::as_u64).unwrap_or(0) >= since
                })
            })
            .collect();
        let skip = self.limit.map_or(0, |n| kept.len().saturating_sub(n));
        kept[skip..].to_vec()
    }
}

/// `oda jobs [--state S] [--workflow W] [--limit N] [-q]`.
pub fn jobs(api: &Api, filter: &JobFilter, quiet: bool, as_json: bool) -> CliResult<u8> {
    let all = api.get("/v1/jobs")?;
    let list: Vec<Json> = filter
        .apply(all.as_array().map(Vec::as_slice).unwrap_or_default())
        .into_iter()
        .cloned()
        .collect();
    if as_json {
        print_json(&Json::Array(list));
        return Ok(OK);
    }
    if quiet {
        for j in &list {
            println!("{}", text(j, "id"));
        }
        return Ok(OK);
    }
    let mut t = Table::new(&[
        "JOB",
        "STATE",
        "WORKFLOW",
        "EXPR",
        "SOURCE",
        "SUBMITTED",
        "TIME",
    ]);
    for j in &list {
        let source = match (text(j, "state").as_str(), flag(j, "from_cache")) {
            ("done", true) => "cache",
            ("done", false) => "computed",
            _ => "-",
        };
        t.row(vec![
            text(j, "id"),
            text(j, "state"),
            text(j, "workflow_name"),
            render::short(&text(j, "expr"), 12),
            source.into(),
            render::ago(num(j, "created_at")),
            render::duration_ms(num(j, "elapsed_ms")),
        ]);
    }
    if t.is_empty() {
        println!("no jobs yet; submit one with `oda submit WORKFLOW -a NAME=VALUE`");
    } else {
        t.print();
    }
    Ok(OK)
}

/// `oda facts EXPR`.
pub fn facts(api: &Api, expr: &str, mesh: bool, as_json: bool) -> CliResult<u8> {
    let f = api.get(&format!(
        "/v1/exprs/{}/facts{}",
        url_part(expr),
        if mesh { "?mesh=true" } else { "" }
    ))?;
    if as_json {
        print_json(&f);
        return Ok(OK);
    }
    println!("expr      {}", text(&f, "expr"));
    if let Some(e) = f.get("expression").filter(|e| !e.is_null()) {
        println!("workflow  {}", text(e, "workflow"));
        if let Some(args) = e.get("args").and_then(Json::as_object) {
            for (k, v) in args {
                println!("  {k} = {v}");
            }
        }
    }
    let mut t = Table::new(&[
        "FACT", "TRUST", "OUTCOME", "WORKER", "RUN", "FINISHED", "HELD", "OUTPUTS",
    ]);
    let mut reasons = Vec::new();
    for fact in f
        .get("facts")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let outputs = match fact.get("outputs").and_then(Json::as_object) {
            Some(o) if !o.is_empty() => o
                .iter()
                .map(|(n, v)| format!("{n} {} {}", render::size(num(v, "size")), text(v, "blob")))
                .collect::<Vec<_>>()
                .join("; "),
            _ => format!(
                "{}: {}",
                text(fact, "error_kind"),
                text(fact, "error_message")
            ),
        };
        let id = render::short(&text(fact, "fact"), 12);
        reasons.push(format!("{id}  {}", trust_label(fact)));
        // Verdicts on the fact: (list, label, what the signer said).
        for (list, label, said) in [
            ("disputes", "DISPUTED", "reason"),
            ("endorsements", "ENDORSED", "note"),
        ] {
            for verdict in render::items(fact, list) {
                reasons.push(format!(
                    "{id}  {label} by {}{}: {}",
                    render::short(&text(verdict, "by"), 8),
                    heeded(verdict),
                    text(verdict, said)
                ));
            }
        }
        t.row(vec![
            id,
            if flag(fact, "trusted") {
                "trusted"
            } else {
                "UNTRUSTED"
            }
            .into(),
            text(fact, "outcome"),
            render::short(&text(fact, "worker_peer"), 10),
            render::duration_ms(num(fact, "run_ms")),
            render::ago(num(fact, "finished_at")),
            if flag(fact, "local") { "here" } else { "mesh" }.into(),
            outputs,
        ]);
    }
    if t.is_empty() {
        println!(
            "no facts yet{}",
            if mesh {
                ""
            } else {
                " on this node (try --mesh)"
            }
        );
    } else {
        t.print();
        println!();
        for line in reasons {
            println!("{line}");
        }
    }
    let failures: Vec<&Json> = render::items(&f, "failures").collect();
    if !failures.is_empty() {
        println!(
            "\nfailed without a result on {} trusted worker(s) in the last hour:",
            failures.len()
        );
        for failure in failures {
            println!(
                "  {}  {}  {}",
                render::short(&text(failure, "worker_peer"), 10),
                render::ago(num(failure, "at")),
                text(failure, "reason")
            );
        }
    }
    Ok(OK)
}

/// " (heeded)" for a verdict on a fact by a key this node heeds (its
/// `[trust] controllers`, or itself): it counts in the trust label.
fn heeded(verdict: &Json) -> &'static str {
    if flag(verdict, "by_heeded") {
        " (heeded)"
    } else {
        ""
    }
}

/// "trusted: why" or "UNTRUSTED: why" for a fact's JSON view; untrusted
/// facts are never results, and say so.
fn trust_label(fact: &Json) -> String {
    if flag(fact, "trusted") {
        format!("trusted: {}", text(fact, "trust"))
    } else {
        format!(
            "UNTRUSTED (never returned as a result): {}",
            text(fact, "trust")
        )
    }
}

fn print_workflow(w: &Json) {
    println!("workflow  {} {}", text(w, "name"), text(w, "version"));
    println!("id        {}", text(w, "id"));
    println!("about     {}", text(w, "description"));
    println!(
        "runs      {} executor, timeout {} s, {}deterministic{}",
        text(w, "executor"),
        num(w, "timeout_secs"),
        if flag(w, "deterministic") { "" } else { "not " },
        if flag(w, "local") {
            ", added on this node"
        } else {
            ""
        }
    );
    let mut t = Table::new(&["  INPUT", "TYPE", "DEFAULT", "DESCRIPTION"]);
    for (name, i) in w
        .get("inputs")
        .and_then(Json::as_object)
        .into_iter()
        .flatten()
    {
        let ty = i.get("type").cloned().unwrap_or(Json::Null);
        let mut tname = text(&ty, "type");
        if tname == "list" {
            tname = format!(
                "list of {}",
                text(ty.get("items").unwrap_or(&Json::Null), "type")
            );
        }
        let bounds = match (
            ty.get("min").filter(|v| !v.is_null()),
            ty.get("max").filter(|v| !v.is_null()),
        ) {
            (Some(a), Some(b)) => format!(" {a}..{b}"),
            (Some(a), None) => format!(" >= {a}"),
            (None, Some(b)) => format!(" <= {b}"),
            _ => String::new(),
        };
        t.row(vec![
            format!("  {name}"),
            format!("{tname}{bounds}"),
            if flag(i, "required") {
                "(required)".into()
            } else {
                i.get("default")
                    .map(ToString::to_string)
                    .unwrap_or_default()
            },
            render::truncate(&text(i, "description"), 60),
        ]);
    }
    if !t.is_empty() {
        t.print();
    }
    let mut t = Table::new(&["  OUTPUT", "FILE", "DESCRIPTION"]);
    for (name, o) in w
        .get("outputs")
        .and_then(Json::as_object)
        .into_iter()
        .flatten()
    {
        t.row(vec![
            format!("  {name}"),
            text(o, "path"),
            render::truncate(&text(o, "description"), 60),
        ]);
    }
    if !t.is_empty() {
        t.print();
    }
    if let Some(e) = w.get("endorsements").and_then(Json::as_array) {
        if e.is_empty() {
            println!("endorsed  by nobody");
        }
        for x in e {
            println!(
                "endorsed  by {} {} {}",
                text(x, "endorser"),
                render::ago(num(x, "issued_at")),
                text(x, "note")
            );
        }
    }
}

/// `oda workflow add DIR`.
pub fn workflow_add(api: &Api, dir: &Path, as_json: bool) -> CliResult<u8> {
    let abs = std::fs::canonicalize(dir).map_err(|e| {
        CliError::usage(format!("cannot use workflow folder {}: {e}", dir.display()))
    })?;
    let w = api.post(
        "/v1/workflows",
        Some(&json!({ "path": abs.display().to_string() })),
    )?;
    if as_json {
        print_json(&w);
    } else {
        println!(
            "added {} {} as {}",
            text(&w, "name"),
            text(&w, "version"),
            text(&w, "id")
        );
        println!();
        print_workflow(&w);
    }
    Ok(OK)
}

/// `oda workflow ls`.
pub fn workflow_ls(api: &Api, as_json: bool) -> CliResult<u8> {
    let list = api.get("/v1/workflows")?;
    if as_json {
        print_json(&list);
        return Ok(OK);
    }
    let mut t = Table::new(&[
        "NAME",
        "VERSION",
        "ID",
        "ADDED HERE",
        "ENDORSEMENTS",
        "DESCRIPTION",
    ]);
    for w in list.as_array().into_iter().flatten() {
        t.row(vec![
            text(w, "name"),
            text(w, "version"),
            text(w, "id"),
            if flag(w, "local") { "yes" } else { "no" }.into(),
            num(w, "endorsements").to_string(),
            render::truncate(&text(w, "description"), 50),
        ]);
    }
    if t.is_empty() {
        println!("no workflows yet; add one with `oda workflow add DIR`");
    } else {
        t.print();
    }
    Ok(OK)
}

/// `oda workflow show ID`.
pub fn workflow_show(api: &Api, id: &str, as_json: bool) -> CliResult<u8> {
    let w = api.get(&format!("/v1/workflows/{}", url_part(id)))?;
    if as_json {
        print_json(&w);
    } else {
        print_workflow(&w);
    }
    Ok(OK)
}

/// `oda workflow endorse ID`.
pub fn workflow_endorse(api: &Api, id: &str, note: Option<&str>, as_json: bool) -> CliResult<u8> {
    let body = json!({ "note": note.unwrap_or("") });
    let e = api.post(
        &format!("/v1/workflows/{}/endorse", url_part(id)),
        Some(&body),
    )?;
    if as_json {
        print_json(&e);
    } else {
        println!(
            "endorsed {} with key {}{}",
            text(&e, "subject"),
            text(&e, "endorser"),
            if flag(&e, "new") {
                ""
            } else {
                " (already endorsed before)"
            }
        );
    }
    Ok(OK)
}

/// `oda peers`.
pub fn peers(api: &Api, as_json: bool) -> CliResult<u8> {
    let list = api.get("/v1/peers")?;
    if as_json {
        print_json(&list);
        return Ok(OK);
    }
    let mut t = Table::new(&["PEER", "AGENT", "REPUTATION", "ADDRESS"]);
    for p in list.as_array().into_iter().flatten() {
        let addr = p
            .get("addrs")
            .and_then(Json::as_array)
            .and_then(|a| a.first())
            .and_then(Json::as_str)
            .unwrap_or("-")
            .to_string();
        t.row(vec![
            text(p, "peer_id"),
            text(p, "agent"),
            p.get("reputation")
                .map(ToString::to_string)
                .unwrap_or_default(),
            addr,
        ]);
    }
    if t.is_empty() {
        println!("no connected peers");
    } else {
        t.print();
    }
    Ok(OK)
}

/// `oda cache ls`.
pub fn cache_ls(api: &Api, as_json: bool) -> CliResult<u8> {
    let list = api.get("/v1/cache/blobs")?;
    if as_json {
        print_json(&list);
        return Ok(OK);
    }
    let mut t = Table::new(&["BLOB", "SIZE", "PINNED", "LAST USED"]);
    for b in list.as_array().into_iter().flatten() {
        t.row(vec![
            text(b, "blob"),
            render::size(num(b, "size")),
            if flag(b, "pinned") { "pinned" } else { "-" }.into(),
            render::ago(num(b, "last_access_ms")),
        ]);
    }
    if t.is_empty() {
        println!("the cache is empty");
    } else {
        t.print();
    }
    Ok(OK)
}

/// `oda cache pin|unpin BLOB`.
pub fn cache_pin(api: &Api, blob: &str, pin: bool, as_json: bool) -> CliResult<u8> {
    let r = api.post(
        &format!(
            "/v1/cache/blobs/{}/{}",
            url_part(blob),
            if pin { "pin" } else { "unpin" }
        ),
        None,
    )?;
    if as_json {
        print_json(&r);
    } else {
        println!(
            "{} {}",
            text(&r, "blob"),
            if pin { "pinned" } else { "unpinned" }
        );
    }
    Ok(OK)
}

/// `oda cache gc`.
pub fn cache_gc(api: &Api, as_json: bool) -> CliResult<u8> {
    let r = api.post("/v1/cache/gc", None)?;
    if as_json {
        print_json(&r);
        return Ok(OK);
    }
    let evicted = r
        .get("evicted")
        .and_then(Json::as_array)
        .map_or(0, Vec::len);
    println!(
        "evicted {evicted} blobs, freed {}; {} of {} cap in use{}",
        render::size(num(&r, "freed_bytes")),
        render::size(num(&r, "total_bytes_after")),
        render::size(num(&r, "cap_bytes")),
        if flag(&r, "over_cap") {
            " (over the cap: the rest is pinned)"
        } else {
            ""
        }
    );
    Ok(OK)
}

/// `oda cache stats`.
pub fn cache_stats(api: &Api, as_json: bool) -> CliResult<u8> {
    let s = api.get("/v1/cache/stats")?;
    if as_json {
        print_json(&s);
        return Ok(OK);
    }
    println!(
        "blobs         {} ({}), cap {}",
        num(&s, "blobs"),
        render::size(num(&s, "blob_bytes")),
        render::size(num(&s, "cap_bytes"))
    );
    println!(
        "pinned        {} ({})",
        num(&s, "pinned_blobs"),
        render::size(num(&s, "pinned_bytes"))
    );
    println!(
        "facts         {} ({} with outputs held here)",
        num(&s, "facts"),
        num(&s, "held_facts")
    );
    println!("workflows     {}", num(&s, "workflows"));
    println!("expressions   {}", num(&s, "exprs"));
    println!("endorsements  {}", num(&s, "endorsements"));
    Ok(OK)
}

/// `oda key show`.
pub fn key_show(api: &Api, as_json: bool) -> CliResult<u8> {
    let k = api.get("/v1/key")?;
    if as_json {
        print_json(&k);
    } else {
        println!("public key  {}", text(&k, "public_key"));
        println!("peer id     {}", text(&k, "peer_id"));
    }
    Ok(OK)
}

/// `oda trust ls`.
pub fn trust_ls(api: &Api, as_json: bool) -> CliResult<u8> {
    let t = api.get("/v1/trust")?;
    if as_json {
        print_json(&t);
        return Ok(OK);
    }
    println!("own key   {} (always trusted)", text(&t, "own_key"));
    println!("keys      {}", render::list(&t, "keys"));
    println!("added     {}", render::list(&t, "added_keys"));
    println!("experts   {}", render::list(&t, "experts"));
    println!("controllers {}", render::list(&t, "controllers"));
    for d in render::items(&t, "disreputed") {
        println!(
            "disputed  {}: its fact {} was disputed by controller {}; its facts are trusted only when endorsed",
            text(d, "key"),
            text(d, "fact"),
            render::short(&text(d, "controller"), 8)
        );
    }
    if render::items(&t, "groups").next().is_none() {
        println!("groups    none");
    }
    for g in render::items(&t, "groups") {
        match g.get("roster").filter(|r| !r.is_null()) {
            Some(r) => println!(
                "group     {} — roster version {}, {} member(s): {}",
                text(g, "group"),
                num(r, "version"),
                render::items(r, "members").count(),
                render::list(r, "members")
            ),
            None => println!(
                "group     {} — no roster imported yet: nobody is trusted through it (oda trust import FILE)",
                text(g, "group")
            ),
        }
    }
    for r in render::items(&t, "other_rosters") {
        println!(
            "roster    {} version {} (held, not trusted: not in [trust] groups)",
            text(r, "group"),
            num(r, "version")
        );
    }
    Ok(OK)
}

/// `oda trust import FILE`.
pub fn trust_import(api: &Api, file: &Path, as_json: bool) -> CliResult<u8> {
    let roster = std::fs::read_to_string(file)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
    let r = api.post(
        "/v1/trust/rosters",
        Some(&serde_json::json!({ "roster": roster.trim() })),
    )?;
    if as_json {
        print_json(&r);
        return Ok(OK);
    }
    let what = if flag(&r, "imported") {
        "imported"
    } else {
        "not imported: this node already holds this version or a newer one of"
    };
    println!(
        "{what} group {} version {}",
        text(&r, "group"),
        num(&r, "version")
    );
    if !flag(&r, "trusted_group") {
        println!(
            "note: [trust] groups does not name this group, so its members are not trusted here; add \"{}\" to it",
            text(&r, "group")
        );
    }
    Ok(OK)
}

/// `oda group sign NAME --version N --member KEY...`.
pub fn group_sign(
    api: &Api,
    (name, version, members): (&str, u64, &[String]),
    out: Option<&Path>,
    as_json: bool,
) -> CliResult<u8> {
    let r = api.post(
        "/v1/groups",
        Some(&serde_json::json!({ "name": name, "version": version, "members": members })),
    )?;
    let roster = text(&r, "roster");
    if let Some(path) = out {
        std::fs::write(path, format!("{roster}\n"))
            .map_err(|e| CliError::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    if as_json {
        print_json(&r);
    } else if let Some(path) = out {
        println!(
            "signed group {} version {} ({} member(s)) into {}; give it to requesters: oda trust import {}",
            text(&r, "group"),
            version,
            members.len(),
            path.display(),
            path.display()
        );
    } else {
        println!("{roster}");
    }
    Ok(OK)
}

/// `oda trust add KEY` (`add`) and `oda trust rm KEY`.
pub fn trust_key(api: &Api, key: &str, add: bool, as_json: bool) -> CliResult<u8> {
    let r = if add {
        api.post("/v1/trust/keys", Some(&serde_json::json!({ "key": key })))?
    } else {
        api.delete(&format!("/v1/trust/keys/{}", url_part(key)))?
    };
    if as_json {
        print_json(&r);
        return Ok(OK);
    }
    let key = text(&r, "key");
    match (add, flag(&r, "changed")) {
        (true, true) => println!("trusting {key} from now on"),
        (true, false) => println!("{key} was already trusted"),
        (false, true) => println!("no longer trusting {key}"),
        (false, false) => println!("{key} was not added with `oda trust add`; nothing changed"),
    }
    Ok(OK)
}

/// `oda trust show KEY`.
pub fn trust_show(api: &Api, key: &str, as_json: bool) -> CliResult<u8> {
    let k = api.get(&format!("/v1/trust/keys/{}", url_part(key)))?;
    if as_json {
        print_json(&k);
        return Ok(OK);
    }
    println!("key       {}", text(&k, "key"));
    println!("peer id   {}", text(&k, "peer_id"));
    println!(
        "trust     {}: {}",
        if flag(&k, "trusted") {
            "trusted"
        } else {
            "UNTRUSTED"
        },
        text(&k, "trust")
    );
    println!("groups    {}", render::list(&k, "groups"));
    println!(
        "facts     {} stored here, {} with their outputs",
        num(&k, "facts"),
        num(&k, "facts_held")
    );
    if flag(&k, "heeded_controller") {
        println!("controller  heeded: its endorsements and disputes of facts count here");
    }
    Ok(OK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_job_filter_keeps_state_workflow_and_the_most_recent() {
        let jobs: Vec<Json> = [
            ("a", "done", "events", 1_000),
            ("b", "failed", "events", 2_000),
            ("c", "done", "lightcurve", 3_000),
            ("d", "done", "events", 4_000),
        ]
        .iter()
        .map(|(id, state, wf, at)| {
            json!({"id": id, "state": state, "workflow_name": wf, "created_at": at})
        })
        .collect();
        let ids = |f: &JobFilter| -> Vec<String> {
            f.apply(&jobs).iter().map(|j| text(j, "id")).collect()
        };
        assert_eq!(ids(&JobFilter::default()), ["a", "b", "c", "d"]);
        let done = JobFilter {
            state: Some("done".into()),
            ..JobFilter::default()
        };
        assert_eq!(ids(&done), ["a", "c", "d"]);
        let recent_events = JobFilter {
            workflow: Some("events".into()),
            limit: Some(2),
            ..JobFilter::default()
        };
        assert_eq!(ids(&recent_events), ["b", "d"]);
        let since = JobFilter {
            since_ms: Some(2_000),
            state: Some("done".into()),
            ..JobFilter::default()
        };
        assert_eq!(ids(&since), ["c", "d"]);
    }

    use super::*;

    fn fact(id: &str, outcome: &str, local: bool, trusted: bool) -> Json {
        let trust = if trusted {
            "signed by k, listed in [trust] keys"
        } else {
            "signed by x, whom this node does not trust"
        };
        json!({"fact": id, "outcome": outcome, "local": local, "trusted": trusted, "trust": trust})
    }

    #[test]
    fn get_takes_only_a_held_trusted_fact_successes_first() {
        let facts = vec![
            fact("fa:untrusted", "success", true, false),
            fact("fa:mesh", "success", false, true),
            fact("fa:error", "analysis-error", true, true),
            fact("fa:good", "success", true, true),
        ];
        let picked = result_fact("ex:1", &facts).map(|f| text(f, "fact"));
        assert_eq!(picked.ok().as_deref(), Some("fa:good"));
        let refusal = |facts: &[Json]| match result_fact("ex:1", facts) {
            Ok(f) => panic!("took {f}"),
            Err(e) => e.to_string(),
        };
        let err = refusal(&[fact("fa:untrusted", "success", true, false)]);
        assert!(err.contains("no trusted result"), "{err}");
        assert!(err.contains("whom this node does not trust"), "{err}");
        let err = refusal(&[fact("fa:mesh", "success", false, true)]);
        assert!(err.contains("no result on this node yet"), "{err}");
    }
}
