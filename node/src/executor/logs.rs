//! Capturing a job's stdout and stderr: raw bytes to a file, lines to an
//! optional channel, and a short tail of both streams for the report.
//!
//! - Each stream's bytes are written unchanged to its file, up to
//!   [`MAX_LOG_FILE_BYTES`]; beyond that the rest is read and discarded (so the
//!   job never blocks on a full pipe) and a note is appended to the file.
//! - Lines (split on `\n`, decoded lossily as UTF-8, a trailing `\r` removed,
//!   cut at [`MAX_LINE_BYTES`]) of both streams, in arrival order, go to the
//!   optional channel with `try_send`: a slow receiver loses lines rather than
//!   slowing the job, and is told how many it lost.
//! - The [`Tail`] keeps the last [`TAIL_LINES`] lines, at most [`TAIL_BYTES`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Lines kept in the tail.
pub const TAIL_LINES: usize = 64;
/// Bytes kept in the tail.
pub const TAIL_BYTES: usize = 8 * 1024;
/// Longest line passed on; longer lines are cut and marked with `…`.
pub const MAX_LINE_BYTES: usize = 4 * 1024;
/// Largest stdout or stderr file kept per job.
pub const MAX_LOG_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// The last lines of a job's output.
#[derive(Debug, Default)]
pub(super) struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.lines.len() > TAIL_LINES || (self.bytes > TAIL_BYTES && self.lines.len() > 1) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
            }
        }
    }

    /// The kept lines, each ending in `\n`.
    pub(super) fn render(&self) -> String {
        let mut out = String::with_capacity(self.bytes);
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

/// Put the last lines of `files` (written by someone else, e.g. SLURM)
/// into `tail`, file after file; a file that cannot be read adds nothing.
pub(super) fn tail_files(tail: &SharedTail, files: &[&std::path::Path]) {
    let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for file in files {
        let Ok(bytes) = last_bytes(file, TAIL_BYTES as u64) else {
            continue;
        };
        for line in String::from_utf8_lossy(&bytes).lines() {
            tail.push(line.chars().take(MAX_LINE_BYTES).collect());
        }
    }
}

/// The last `n` bytes of `file`.
fn last_bytes(file: &std::path::Path, n: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
    let mut out = Vec::new();
    f.take(n).read_to_end(&mut out)?;
    Ok(out)
}

/// A [`Tail`] shared by the two stream readers.
pub(super) type SharedTail = Arc<Mutex<Tail>>;

/// Where lines go.
struct LineSink {
    tail: SharedTail,
    channel: Option<mpsc::Sender<String>>,
    dropped: u64,
}

impl LineSink {
    fn emit(&mut self, raw: &[u8]) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = if raw.len() > MAX_LINE_BYTES {
            let mut s = String::from_utf8_lossy(&raw[..MAX_LINE_BYTES]).into_owned();
            s.push('…');
            s
        } else {
            String::from_utf8_lossy(raw).into_owned()
        };
        if let Some(tx) = &self.channel {
            if self.dropped > 0
                && tx
                    .try_send(format!(
                        "[oda: {} log lines dropped: the reader was too slow]",
                        self.dropped
                    ))
                    .is_ok()
            {
                self.dropped = 0;
            }
            match tx.try_send(line.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => self.dropped += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => self.channel = None,
            }
        }
        self.tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line);
    }
}

/// Copy `stream` to `file` until end of file, passing lines on. Returns the
/// number of bytes read; an error only if the file cannot be written.
pub(super) async fn pump(
    mut stream: impl AsyncRead + Unpin,
    file: tokio::fs::File,
    tail: SharedTail,
    channel: Option<mpsc::Sender<String>>,
) -> std::io::Result<u64> {
    let mut file = tokio::io::BufWriter::new(file);
    let mut sink = LineSink {
        tail,
        channel,
        dropped: 0,
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    let mut written: u64 = 0;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The pipe broke (it does not on Linux); treat as the end.
            Err(_) => break,
        };
        let chunk = &buf[..n];
        total += n as u64;
        if written < MAX_LOG_FILE_BYTES {
            let room = (MAX_LOG_FILE_BYTES - written).min(n as u64) as usize;
            file.write_all(&chunk[..room]).await?;
            written += room as u64;
            if written == MAX_LOG_FILE_BYTES {
                file.write_all(b"\n[oda: log truncated at the size limit]\n")
                    .await?;
            }
        }
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if partial.is_empty() {
                sink.emit(&rest[..i]);
            } else {
                partial.extend_from_slice(&rest[..i]);
                sink.emit(&partial);
                partial.clear();
            }
            rest = &rest[i + 1..];
        }
        // Keep at most one line's worth (plus one byte, to know it was cut).
        let room = (MAX_LINE_BYTES + 1).saturating_sub(partial.len());
        partial.extend_from_slice(&rest[..rest.len().min(room)]);
    }
    if !partial.is_empty() {
        sink.emit(&partial);
    }
    // The file is scratch in the job directory (removed after the job), so
    // it is flushed to the kernel but not synced to the disk.
    file.flush().await?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_within_bounds() {
        let mut t = Tail::default();
        for i in 0..100 {
            t.push(format!("line {i}"));
        }
        let r = t.render();
        assert_eq!(r.lines().count(), TAIL_LINES);
        assert!(r.ends_with("line 99\n"));
        for _ in 0..10 {
            t.push("x".repeat(2000));
        }
        assert!(t.render().len() <= TAIL_BYTES);
        t.push("y".repeat(20_000));
        assert_eq!(t.lines.len(), 1, "one huge line is still kept");
    }

    #[tokio::test]
    async fn pump_splits_lines_and_copies_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = tokio::fs::File::create(&path).await.unwrap();
        let input: &[u8] = b"one\r\ntwo\n\xffbad\nlast-no-newline";
        let long = vec![b'z'; MAX_LINE_BYTES + 10];
        let data = [input, b"\n", &long].concat();
        let tail = SharedTail::default();
        let (tx, mut rx) = mpsc::channel(100);
        let n = pump(&data[..], file, tail.clone(), Some(tx)).await.unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let mut lines = Vec::new();
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        assert_eq!(lines[..4], ["one", "two", "\u{fffd}bad", "last-no-newline"]);
        assert!(lines[4].ends_with('…') && lines[4].len() < MAX_LINE_BYTES + 8);
        assert!(tail.lock().unwrap().render().starts_with("one\ntwo\n"));
    }

    #[tokio::test]
    async fn pump_drops_lines_a_slow_reader_has_no_room_for() {
        let dir = tempfile::tempdir().unwrap();
        let file = tokio::fs::File::create(dir.path().join("o")).await.unwrap();
        let data: Vec<u8> = (0..10)
            .flat_map(|i| format!("l{i}\n").into_bytes())
            .collect();
        let (tx, mut rx) = mpsc::channel(2);
        pump(&data[..], file, SharedTail::default(), Some(tx))
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), "l0");
        assert_eq!(rx.recv().await.unwrap(), "l1");
        assert!(rx.try_recv().is_err());
    }
}
