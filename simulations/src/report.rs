//! What a benchmark returns, and how a run is written: a Markdown table (for the
//! terminal and `docs/benchmarks.md`) and JSON (`target/oda-bench.json`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::python::PEERS;

/// One number with its unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// What it is (`p50`, `jobs/s`, ...).
    pub label: String,
    /// The value.
    pub value: f64,
    /// Its unit (`ms`, `MiB/s`, `jobs/s`, `MiB`).
    pub unit: String,
}

impl Figure {
    /// A figure.
    pub fn new(label: &str, value: f64, unit: &str) -> Self {
        Self {
            label: label.into(),
            value,
            unit: unit.into(),
        }
    }
}

/// The result of one benchmark.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Short name, also the `--only` selector.
    pub name: String,
    /// What was run (sizes, settings), one line.
    pub setup: String,
    /// The mesh's figures, as the table shows them.
    pub mesh: String,
    /// The physical limit measured in the same run, as the table shows it.
    pub limit: String,
    /// The figures of the tools a user would pick instead, as the table shows
    /// them, by [`Peer::name`](crate::python::Peer::name) (one column each).
    pub peers: BTreeMap<String, String>,
    /// Mesh figure over limit or peer figures, as the table shows it.
    pub ratio: String,
    /// Anything a reader must know (scaled down, skipped, failures).
    pub notes: Vec<String>,
    /// Every number, for the JSON.
    pub figures: Vec<Figure>,
}

impl Outcome {
    /// An outcome named `name` with the given setup line.
    pub fn new(name: &str, setup: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            setup: setup.into(),
            ..Self::default()
        }
    }

    /// A benchmark that did not run, and why.
    pub fn skipped(name: &str, why: impl Into<String>) -> Self {
        let mut o = Self::new(name, "");
        o.mesh = "skipped".into();
        o.notes.push(why.into());
        o
    }

    /// Record a figure for the JSON.
    pub fn figure(&mut self, label: &str, value: f64, unit: &str) -> &mut Self {
        self.figures.push(Figure::new(label, value, unit));
        self
    }

    /// The first figure with this label.
    pub fn get(&self, label: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.label == label)
            .map(|f| f.value)
    }
}

/// The machine a run was taken on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory, GiB.
    pub memory_gib: f64,
}

impl Machine {
    /// Read what Linux tells about this machine (fields stay `unknown` elsewhere).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            memory_gib,
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// The command line.
    pub command: String,
    /// 1-minute load average when the run started and when it ended: other
    /// processes competing for the cores (this machine is shared).
    pub load_average: (f64, f64),
    /// Every benchmark, in order.
    pub results: Vec<Outcome>,
}

/// The 1-minute load average (0 where unavailable).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Escape `|` so a cell cannot break the table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

impl Run {
    /// The Markdown section: machine, date, command, then the table and notes.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "Measured {} on {} cores ({}), {:.0} GiB, Linux {}{}. \
             1-minute load average {:.1} at the start, {:.1} at the end.\n\nCommand: `{}`\n\n",
            self.date,
            m.cores,
            m.cpu,
            m.memory_gib,
            m.kernel,
            if self.quick {
                " — **quick run: tiny sizes, not comparable**"
            } else {
                ""
            },
            self.load_average.0,
            self.load_average.1,
            self.command,
        );
        let mut header = vec![
            "benchmark",
            "setup",
            "ODA mesh",
            "physical limit (same run)",
        ];
        header.extend(PEERS.iter().map(|p| p.name));
        header.push("ratio");
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!("|{}\n", " --- |".repeat(header.len())));
        for r in &self.results {
            let mut row = vec![r.name.as_str(), &r.setup, &r.mesh, &r.limit];
            row.extend(
                PEERS
                    .iter()
                    .map(|p| r.peers.get(p.name).map_or("", String::as_str)),
            );
            row.push(&r.ratio);
            let row: Vec<String> = row.into_iter().map(cell).collect();
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        let notes: Vec<String> = self
            .results
            .iter()
            .flat_map(|r| {
                r.notes
                    .iter()
                    .map(move |n| format!("- **{}**: {n}", r.name))
            })
            .collect();
        if !notes.is_empty() {
            out.push_str("\nNotes from this run:\n\n");
            out.push_str(&notes.join("\n"));
            out.push('\n');
        }
        out
    }
}

/// Marker lines around the generated section of `docs/benchmarks.md`.
pub const BEGIN: &str = "<!-- oda-bench:begin (generated by oda-bench; do not edit by hand) -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- oda-bench:end -->";

/// Replace the text between [`BEGIN`] and [`END`] in `doc` with `section`
/// (appending both markers if they are missing).
pub fn splice(doc: &str, section: &str) -> String {
    let block = format!("{BEGIN}\n{section}{END}");
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{}{}", &doc[..b], block, &doc[e + END.len()..])
        }
        _ => format!("{}\n{block}\n", doc.trim_end()),
    }
}

/// Write the section into the Markdown file at `path` (created if missing).
pub fn update_doc(path: &Path, section: &str) -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, splice(&doc, section))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Today's UTC date as `YYYY-MM-DD` (civil-from-days, no time-zone database).
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_between_markers_and_appends_otherwise() {
        let doc = format!("# T\n\nintro\n\n{BEGIN}\nold\n{END}\n\nafter\n");
        let new = splice(&doc, "new\n");
        assert!(new.contains("new\n") && !new.contains("old"));
        assert!(new.starts_with("# T\n\nintro") && new.ends_with("after\n"));
        let appended = splice("# T\n", "x\n");
        assert!(appended.contains(BEGIN) && appended.contains("x\n"));
    }

    #[test]
    fn date_is_plausible() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.as_str() > "2024-01-01", "{d}");
    }
}
