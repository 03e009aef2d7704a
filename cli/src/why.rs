//! `oda why WORKFLOW -a …` / `oda why EXPR`: why an expression is a cache
//! miss here — the cached expressions of the same workflow nearest to it,
//! with the arguments that differ (`period: 7.3 cached, 7.30001 asked`),
//! and the same arguments under other versions of the workflow. From the
//! node's `POST /v1/why`; `oda submit --wait` prints the nearest one after
//! a result that had to be computed.

use serde_json::{json, Value as Json};

use crate::client::{Api, CliResult};
use crate::commands::{args_map, print_json, OK};
use crate::render::{self, flag, text};

/// `oda why TARGET [-a NAME=VALUE ...]`: TARGET is an expression id
/// (`ex:…`) or a workflow name or id with its arguments.
pub fn why(api: &Api, target: &str, args: &[(String, String)], as_json: bool) -> CliResult<u8> {
    let body = if target.starts_with("ex:") && args.is_empty() {
        json!({ "expr": target })
    } else {
        json!({ "workflow": target, "args": args_map(args) })
    };
    let v = api.post("/v1/why", Some(&body))?;
    if as_json {
        print_json(&v);
    } else {
        print!("{}", why_text(&v));
    }
    Ok(OK)
}

/// The lines `oda submit --wait` adds after a computed result: the nearest
/// cached expression and how it differs, if there is one (errors are
/// ignored: this is a hint).
pub fn near_miss_note(api: &Api, expr: &str) -> Option<String> {
    let v = api.post("/v1/why", Some(&json!({ "expr": expr }))).ok()?;
    let near = render::items(&v, "nearest").next()?;
    Some(format!(
        "not in this node's cache; the nearest cached {} differs in {} (`oda why {expr}` lists more)",
        text(near, "expr"),
        differences_text(near)
    ))
}

fn differences_text(near: &Json) -> String {
    render::items(near, "differences")
        .map(|d| {
            let side = |key: &str| match d.get(key) {
                None | Some(Json::Null) => "absent".to_string(),
                Some(v) => crate::prov::arg_text(v),
            };
            format!(
                "{}: {} cached, {} asked",
                text(d, "argument"),
                side("cached"),
                side("asked")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The answer for people.
pub fn why_text(v: &Json) -> String {
    let mut out = format!(
        "asked     {}  {} {} ({})\n",
        text(v, "expr"),
        text(v, "workflow_name"),
        text(v, "workflow_version"),
        text(v, "workflow")
    );
    out.push_str(if flag(v, "cached") {
        "cached    yes: this node holds a trusted fact of it\n"
    } else {
        "cached    no trusted fact of it here (`oda facts EXPR --mesh` asks the mesh)\n"
    });
    let nearest: Vec<&Json> = render::items(v, "nearest").collect();
    if nearest.is_empty() {
        out.push_str("nearest   no other cached expression of this workflow here\n");
    } else {
        out.push_str("nearest cached expressions of this workflow:\n");
        for n in nearest {
            out.push_str(&format!("  {}  {}\n", text(n, "expr"), differences_text(n)));
        }
    }
    let versions: Vec<&Json> = render::items(v, "other_versions").collect();
    if !versions.is_empty() {
        out.push_str("the same arguments under other versions:\n");
        for o in versions {
            let what = match o.get("problem").and_then(Json::as_str) {
                Some(problem) => format!("do not fit: {problem}"),
                None => format!(
                    "{} {}",
                    text(o, "expr"),
                    if flag(o, "cached") {
                        "cached"
                    } else {
                        "not cached"
                    }
                ),
            };
            out.push_str(&format!(
                "  {} ({})  {what}\n",
                text(o, "version"),
                text(o, "workflow")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_differing_argument_is_named_with_both_values() {
        let v = json!({
            "expr": "ex:aa", "workflow": "wf:1", "workflow_name": "lightcurve",
            "workflow_version": "1.0.0", "cached": false,
            "nearest": [{"expr": "ex:bb", "differences": [
                {"argument": "period", "cached": 7.3, "asked": 7.30001},
                {"argument": "extra", "cached": null, "asked": "x"}]}],
            "other_versions": [
                {"workflow": "wf:2", "version": "0.9", "expr": "ex:cc", "cached": true, "problem": null},
                {"workflow": "wf:3", "version": "2.0", "expr": null, "cached": false,
                 "problem": "missing required argument `k`"}]
        });
        let t = why_text(&v);
        assert!(
            t.contains("ex:bb  period: 7.3 cached, 7.30001 asked; extra: absent cached, x asked"),
            "{t}"
        );
        assert!(t.contains("cached    no trusted fact"), "{t}");
        assert!(t.contains("0.9 (wf:2)  ex:cc cached"), "{t}");
        assert!(
            t.contains("2.0 (wf:3)  do not fit: missing required argument `k`"),
            "{t}"
        );
    }
}
