//! Human output: aligned tables, sizes, durations, short ids.

use serde_json::Value as Json;

/// A text table with a header row; columns are padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Render (the last column is not padded).
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut widths = vec![0usize; n];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(n) {
                if i + 1 == n {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Print to stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// `1536` → `1.5 KiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = bytes as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
}

/// `1830` (ms) → `1.83 s`; `125000` → `2 min 5 s`.
pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// How long ago a Unix-ms time was: `5 s ago`.
pub fn ago(unix_ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if unix_ms == 0 {
        return "-".into();
    }
    format!("{} ago", duration_ms(now.saturating_sub(unix_ms)))
}

/// `12D3KooWAbc…xyz` → its last 8 characters after `…`, for narrow columns.
pub fn short(id: &str, keep: usize) -> String {
    let n = id.chars().count();
    if n <= keep + 1 {
        return id.to_string();
    }
    let tail: String = id.chars().skip(n - keep).collect();
    format!("…{tail}")
}

/// Cut a line to `max` characters.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line = text.lines().next().unwrap_or("");
    if one_line.chars().count() <= max {
        one_line.to_string()
    } else {
        format!(
            "{}…",
            one_line
                .chars()
                .take(max.saturating_sub(1))
                .collect::<String>()
        )
    }
}

/// A JSON field as text (`-` when absent or null).
pub fn text(v: &Json, key: &str) -> String {
    match v.get(key) {
        None | Some(Json::Null) => "-".into(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A JSON field as a number (0 when absent).
pub fn num(v: &Json, key: &str) -> u64 {
    v.get(key).and_then(Json::as_u64).unwrap_or(0)
}

/// A JSON field's array items (none when absent or not an array).
pub fn items<'a>(v: &'a Json, key: &str) -> impl Iterator<Item = &'a Json> + 'a {
    v.get(key).and_then(Json::as_array).into_iter().flatten()
}

/// A JSON field's strings joined with ", ", or "none".
pub fn list(v: &Json, key: &str) -> String {
    let all: Vec<&str> = items(v, key).filter_map(Json::as_str).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

/// A JSON field as a bool (false when absent).
pub fn flag(v: &Json, key: &str) -> bool {
    v.get(key).and_then(Json::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(size(10), "10 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(duration_ms(999), "999 ms");
        assert_eq!(duration_ms(1830), "1.83 s");
        assert_eq!(duration_ms(125_000), "2 min 5 s");
        assert_eq!(short("abcdefghij", 4), "…ghij");
        assert_eq!(truncate("hello world", 6), "hello…");
        let mut t = Table::new(&["A", "LONG"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.render(), "A    LONG\nxyz  1\n");
    }
}
