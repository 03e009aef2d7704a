//! Blocking work (store calls, file I/O) run from async code on tokio's
//! blocking pool, so the async threads that serve the API and the network
//! never wait on a disk; the work's error comes back as text.

/// Run `work` on the blocking pool; its error (or the task's) as text.
pub(crate) async fn run<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("a blocking task failed: {e}"))?
        .map_err(|e| e.to_string())
}
