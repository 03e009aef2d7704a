//! Group commit of the database's flushes ([`GroupCommit`]): callers that ask
//! for a flush while one is under way share the next one, so many jobs
//! finishing at once cost about two `fsync`s rather than one each. Every
//! caller still returns only after a flush that *began after its call* has
//! succeeded, so whatever it wrote before calling is durable.

use std::sync::{Condvar, Mutex, PoisonError};

/// The flush schedule. Blocking: call from a blocking thread, like the store.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    state: Mutex<State>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Tickets handed out (one per call).
    issued: u64,
    /// Every ticket up to this one is covered by a finished flush.
    covered: u64,
    /// A flush is running.
    running: bool,
}

impl GroupCommit {
    /// Return once a run of `flush` that started after this call has
    /// succeeded: run it now if none is running, else wait for the running
    /// one and share the next. If the run that would cover this call fails,
    /// this call runs its own, and returns its error if that fails too.
    pub(super) fn flush<E>(&self, flush: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut state = self.lock();
        state.issued += 1;
        let ticket = state.issued;
        loop {
            if state.covered >= ticket {
                return Ok(());
            }
            if state.running {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead a flush for every ticket issued so far.
            state.running = true;
            let target = state.issued;
            drop(state);
            let result = flush();
            state = self.lock();
            state.running = false;
            if result.is_ok() {
                state.covered = state.covered.max(target);
            }
            self.finished.notify_all();
            result?;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn concurrent_callers_share_flushes_and_each_is_covered_by_one_that_began_after_it() {
        let commit = Arc::new(GroupCommit::default());
        // `written` counts writes made before asking; each flush records how
        // many writes it saw when it began.
        let written = Arc::new(AtomicU64::new(0));
        let flushes = Arc::new(Mutex::new(Vec::<u64>::new()));
        let threads = 16;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (commit, written, flushes, barrier) = (
                    commit.clone(),
                    written.clone(),
                    flushes.clone(),
                    barrier.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                    commit
                        .flush(|| {
                            let seen = written.load(Ordering::SeqCst);
                            // A flush takes a while (an fsync), so callers pile up.
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            flushes.lock().unwrap().push(seen);
                            Ok::<(), ()>(())
                        })
                        .unwrap();
                    // Some finished flush began after this write.
                    let done = flushes.lock().unwrap().clone();
                    assert!(
                        done.iter().any(|&seen| seen >= mine),
                        "{mine} not covered: {done:?}"
                    );
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let n = flushes.lock().unwrap().len();
        assert!(n < threads, "{n} flushes for {threads} callers");
    }

    #[test]
    fn a_failed_flush_is_retried_by_those_it_would_have_covered() {
        let commit = GroupCommit::default();
        let calls = AtomicU64::new(0);
        let flaky = || {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("disk full")
            } else {
                Ok(())
            }
        };
        assert_eq!(commit.flush(flaky), Err("disk full"));
        assert_eq!(commit.flush(flaky), Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
