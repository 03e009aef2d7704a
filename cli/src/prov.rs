//! `oda prov EXPR`: how a result was made — the DAG of signed facts behind
//! it, from the node's `GET /v1/exprs/{id}/prov`. Printed as numbered steps
//! (the result first, then breadth-first), each naming its workflow,
//! arguments, worker, times, trust and the steps its inputs came from; or
//! as W3C PROV-O in Turtle or JSON-LD (`--format`), or the API's JSON
//! (`--json`).

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value as Json;

use crate::client::{Api, CliResult};
use crate::commands::{print_json, url_part, OK};
use crate::render::{self, flag, num, text};

/// What `oda prov` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProvFormat {
    /// Numbered steps, for people.
    Text,
    /// W3C PROV-O as Turtle.
    Turtle,
    /// W3C PROV-O as JSON-LD.
    Jsonld,
}

/// `oda prov EXPR [--format F] [--mesh] [--fact FACT]`.
pub fn prov(
    api: &Api,
    expr: &str,
    (format, mesh, fact): (ProvFormat, bool, Option<&str>),
    as_json: bool,
) -> CliResult<u8> {
    let mut query = Vec::new();
    match format {
        ProvFormat::Turtle => query.push("format=turtle".to_string()),
        ProvFormat::Jsonld => query.push("format=jsonld".to_string()),
        ProvFormat::Text => {}
    }
    if mesh {
        query.push("mesh=true".into());
    }
    if let Some(f) = fact {
        query.push(format!("fact={}", url_part(f)));
    }
    let path = format!(
        "/v1/exprs/{}/prov{}{}",
        url_part(expr),
        if query.is_empty() { "" } else { "?" },
        query.join("&")
    );
    if format != ProvFormat::Text {
        print!("{}", api.get_text(&path)?);
        return Ok(OK);
    }
    let p = api.get(&path)?;
    if as_json {
        print_json(&p);
    } else {
        print!("{}", steps_text(&p));
    }
    Ok(OK)
}

/// The DAG as numbered steps.
pub fn steps_text(p: &Json) -> String {
    let steps: Vec<&Json> = render::items(p, "steps").collect();
    let number: HashMap<String, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (text(s, "fact"), i + 1))
        .collect();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "provenance of {}: {} step{}",
        text(p, "expr"),
        steps.len(),
        if steps.len() == 1 { "" } else { "s" }
    ));
    for (i, s) in steps.iter().enumerate() {
        line(String::new());
        let name = workflow_label(s).unwrap_or_else(|| "(workflow not held here)".into());
        line(format!(
            "[{}] {}  {}  ({})",
            i + 1,
            text(s, "expr"),
            name,
            text(s, "workflow")
        ));
        line(format!("    fact     {}", text(s, "fact")));
        if let Some(args) = s.get("args").and_then(Json::as_object) {
            let shown: Vec<String> = args
                .iter()
                .map(|(k, v)| format!("{k}={}", arg_text(v)))
                .collect();
            line(format!("    args     {}", shown.join(" ")));
        }
        line(format!(
            "    worker   {} ({} runner), key {}",
            text(s, "worker_peer"),
            text(s, "runner_class"),
            render::short(&text(s, "worker_key"), 16)
        ));
        line(format!(
            "    ran      {} → {} ({}, cpu {})",
            date_time(num(s, "started_at")),
            date_time(num(s, "finished_at")),
            render::duration_ms(num(s, "run_ms")),
            render::duration_ms(num(s, "cpu_ms"))
        ));
        let trust = if flag(s, "trusted") {
            "trusted"
        } else {
            "UNTRUSTED"
        };
        line(format!("    trust    {trust}: {}", text(s, "trust")));
        for e in render::items(s, "endorsements") {
            line(format!(
                "    endorsed by controller {}",
                render::short(&text(e, "by"), 16)
            ));
        }
        for d in render::items(s, "disputes") {
            line(format!(
                "    DISPUTED by {}: {}",
                render::short(&text(d, "by"), 16),
                text(d, "reason")
            ));
        }
        let experts: Vec<String> = render::items(s, "workflow_endorsed_by")
            .filter_map(Json::as_str)
            .map(|k| render::short(k, 16))
            .collect();
        if !experts.is_empty() {
            line(format!("    workflow endorsed by {}", experts.join(", ")));
        }
        match s.get("outputs").and_then(Json::as_object) {
            Some(o) if !o.is_empty() => {
                for (n, v) in o {
                    line(format!(
                        "    output   {n} = {} ({})",
                        text(v, "blob"),
                        render::size(num(v, "size"))
                    ));
                }
            }
            _ => line(format!(
                "    outcome  analysis error {}: {}",
                text(s, "error_kind"),
                text(s, "error_message")
            )),
        }
        for input in render::items(s, "inputs") {
            let from = number
                .get(&text(input, "fact"))
                .map(|n| format!("step [{n}]"))
                .unwrap_or_else(|| format!("{} (not held here)", text(input, "fact")));
            let argument = input
                .get("argument")
                .and_then(Json::as_str)
                .unwrap_or("input");
            line(format!(
                "    input    {argument} ← {} of {from} ({})",
                text(input, "output"),
                text(input, "blob")
            ));
        }
    }
    let missing: Vec<&Json> = render::items(p, "missing").collect();
    if !missing.is_empty() {
        line(String::new());
        line(format!(
            "{} input fact{} not held here (try --mesh): the steps above them are unknown",
            missing.len(),
            if missing.len() == 1 { " is" } else { "s are" }
        ));
    }
    if flag(p, "truncated") {
        line("the DAG has more than 10,000 facts: cut there".into());
    }
    out
}

/// An argument as `oda submit -a` takes it, ids cut to 8 hex digits: an
/// output `ex:1a2b3c4d…/events`, a blob `bl:…`, a list comma-separated.
pub(crate) fn arg_text(v: &Json) -> String {
    let cut = |id: &str| match id.char_indices().nth(11) {
        Some((at, _)) => format!("{}…", &id[..at]),
        None => id.to_string(),
    };
    if let Some(o) = v.get("output") {
        return format!("{}/{}", cut(&text(o, "expr")), text(o, "name"));
    }
    if let Some(b) = v.get("blob").and_then(Json::as_str) {
        return cut(b);
    }
    match v {
        Json::Array(items) => items.iter().map(arg_text).collect::<Vec<_>>().join(","),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `oda credits --ack EXPR`: an acknowledgement text for a paper naming
/// the contributors of every step behind a result (from its provenance),
/// and a BibTeX entry.
pub fn ack(api: &Api, expr: &str, as_json: bool) -> CliResult<u8> {
    let p = api.get(&format!("/v1/exprs/{}/prov", url_part(expr)))?;
    let (acknowledgement, bibtex) = ack_text(&p);
    if as_json {
        print_json(&serde_json::json!({
            "expr": text(&p, "expr"),
            "acknowledgement": acknowledgement,
            "bibtex": bibtex,
        }));
    } else {
        println!("{acknowledgement}\n\n{bibtex}");
    }
    Ok(OK)
}

/// The acknowledgement and the BibTeX entry for a provenance view.
pub fn ack_text(p: &Json) -> (String, String) {
    use std::collections::BTreeMap;
    let steps: Vec<&Json> = render::items(p, "steps").collect();
    // Runs per workflow (name version), per worker (peer id), and the
    // experts who endorsed the workflows.
    let mut workflows: BTreeMap<String, usize> = BTreeMap::new();
    let mut workers: BTreeMap<String, usize> = BTreeMap::new();
    let mut experts: BTreeMap<String, ()> = BTreeMap::new();
    let mut untrusted = 0;
    for s in &steps {
        let name = workflow_label(s).unwrap_or_else(|| text(s, "workflow"));
        *workflows.entry(name).or_default() += 1;
        *workers.entry(text(s, "worker_peer")).or_default() += 1;
        for e in render::items(s, "workflow_endorsed_by").filter_map(Json::as_str) {
            experts.insert(e.to_string(), ());
        }
        untrusted += usize::from(!flag(s, "trusted"));
    }
    let counted = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, n)| format!("{k} ({n} {})", if *n == 1 { "run" } else { "runs" }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let expr = text(p, "expr");
    let mut ack = format!(
        "This result ({expr}) was computed on ODA mesh from {} signed results: workflows {}; computed by the nodes {}.",
        steps.len(),
        counted(&workflows),
        counted(&workers)
    );
    if !experts.is_empty() {
        ack.push_str(&format!(
            " The workflows were endorsed by {}.",
            experts.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if untrusted > 0 {
        ack.push_str(&format!(
            " {untrusted} of the results are not trusted by the node that wrote this acknowledgement."
        ));
    }
    ack.push_str(" We thank the people who contributed these computing resources and workflows.");
    let finished = steps.first().map_or(0, |s| num(s, "finished_at"));
    let year = date_time(finished).get(..4).unwrap_or("-").to_string();
    let key: String = expr.trim_start_matches("ex:").chars().take(8).collect();
    let bibtex = format!(
        "@misc{{odamesh-{key},\n  title = {{{{Provenance of {expr} on ODA mesh}}}},\n  howpublished = {{{{Signed facts {}}}}},\n  note = {{{{Workflows: {}. Computed by: {}.}}}},\n  year = {{{year}}}\n}}",
        render::items(p, "roots").filter_map(Json::as_str).collect::<Vec<_>>().join(", "),
        counted(&workflows),
        counted(&workers)
    );
    (ack, bibtex)
}

/// A step's workflow as `name version`, if the node has the workflow.
fn workflow_label(step: &Json) -> Option<String> {
    let name = step.get("workflow_name").and_then(Json::as_str)?;
    let version = step.get("workflow_version").and_then(Json::as_str)?;
    Some(format!("{name} {version}"))
}

/// Unix ms as `2026-12-04T18:32:09.123Z` (`-` for 0).
fn date_time(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_acknowledgement_names_every_worker_and_workflow() {
        let step = |wf: &str, peer: &str, trusted: bool| {
            json!({"workflow_name": wf, "workflow_version": "1.0.0", "worker_peer": peer,
                   "trusted": trusted, "finished_at": 1764872529123u64,
                   "workflow_endorsed_by": ["expertkey"]})
        };
        let p = json!({"expr": "ex:abcdef0123", "roots": ["fa:99"], "steps": [
            step("best_period", "12D3A", true), step("events", "12D3A", true),
            step("events", "12D3B", false)]});
        let (ack, bib) = ack_text(&p);
        assert!(ack.contains("from 3 signed results"), "{ack}");
        assert!(
            ack.contains("best_period 1.0.0 (1 run), events 1.0.0 (2 runs)"),
            "{ack}"
        );
        assert!(ack.contains("12D3A (2 runs), 12D3B (1 run)"), "{ack}");
        assert!(ack.contains("endorsed by expertkey"), "{ack}");
        assert!(ack.contains("1 of the results are not trusted"), "{ack}");
        assert!(bib.starts_with("@misc{odamesh-abcdef01,"), "{bib}");
        assert!(bib.contains("year = {2025}"), "{bib}");
        assert!(bib.contains("fa:99"), "{bib}");
    }

    #[test]
    fn steps_name_their_inputs_by_step_number() {
        let p = json!({
            "expr": "ex:aa",
            "steps": [
                {"fact": "fa:2", "expr": "ex:aa", "workflow": "wf:1", "workflow_name": "lightcurve",
                 "workflow_version": "1.0", "args": {"period": 7.3, "name": "crab",
                 "events": [{"output": {"expr": "ex:0123456789abcdef", "name": "events"}}, {"blob": "bl:fedcba9876543210"}]},
                 "worker_peer": "12D3A",
                 "worker_key": "k2", "runner_class": "public", "started_at": 1764872529123u64,
                 "finished_at": 1764872530123u64, "run_ms": 1000, "cpu_ms": 900, "trusted": true,
                 "trust": "signed by this node's own key", "outputs": {"lc": {"blob": "bl:3", "size": 2048}},
                 "inputs": [{"argument": "events", "output": "events", "fact": "fa:1", "blob": "bl:1"}]},
                {"fact": "fa:1", "expr": "ex:bb", "workflow": "wf:0", "trusted": false, "trust": "signed by X",
                 "outputs": {}, "error_kind": "no-data", "error_message": "empty", "inputs": []}
            ],
            "missing": [{"fact": "fa:9"}],
            "truncated": false
        });
        let t = steps_text(&p);
        assert!(t.contains("provenance of ex:aa: 2 steps"), "{t}");
        assert!(t.contains("[1] ex:aa  lightcurve 1.0  (wf:1)"), "{t}");
        assert!(
            t.contains("input    events ← events of step [2] (bl:1)"),
            "{t}"
        );
        assert!(t.contains("2025-12-04T18:22:09.123Z"), "{t}");
        assert!(
            t.contains("args     events=ex:01234567…/events,bl:fedcba98… name=crab period=7.3"),
            "{t}"
        );
        assert!(t.contains("trust    UNTRUSTED: signed by X"), "{t}");
        assert!(t.contains("(workflow not held here)"), "{t}");
        assert!(t.contains("1 input fact is not held here"), "{t}");
    }
}
