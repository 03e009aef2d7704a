//! Requester job records, persisted in the sled tree `jobs`: id, expression,
//! state, attempts and timings. A restarted requester reads the unfinished ones
//! back and resumes them.

use std::fmt;
use std::str::FromStr;

use oda_protocol::{ExprId, FactId, Wire};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// Identifies a submitted job (16 random bytes, hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub [u8; 16]);

impl JobId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job:{}", hex::encode(&self.0[..4]))
    }
}

/// A job id string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a job id is 32 hex digits, got {0:?}")]
pub struct BadJobId(pub String);

impl FromStr for JobId {
    type Err = BadJobId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_prefix("job:").unwrap_or(t);
        let mut out = [0u8; 16];
        hex::decode_to_slice(t, &mut out).map_err(|_| BadJobId(s.to_string()))?;
        Ok(Self(out))
    }
}

/// Where a job is. Variants are stored by index: add new ones at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Accepted, not started.
    Queued,
    /// Waiting for the expressions it depends on.
    ResolvingInputs,
    /// Advertised; collecting offers.
    Advertised,
    /// Assigned to a worker under a lease.
    Assigned {
        /// The worker's peer id.
        worker: String,
    },
    /// The worker reported progress.
    Running {
        /// The worker's peer id.
        worker: String,
    },
    /// Finished with a trusted fact.
    Done,
    /// Failed (analysis error or exhausted attempts).
    Failed,
    /// Cancelled by the user.
    Cancelled,
}

impl JobState {
    /// Whether the job can still change.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }

    /// Every state's name, in the order of [`JobState::index`].
    pub const NAMES: [&'static str; 8] = [
        "queued",
        "resolving-inputs",
        "advertised",
        "assigned",
        "running",
        "done",
        "failed",
        "cancelled",
    ];

    /// Position of this state's name in [`JobState::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            JobState::Queued => 0,
            JobState::ResolvingInputs => 1,
            JobState::Advertised => 2,
            JobState::Assigned { .. } => 3,
            JobState::Running { .. } => 4,
            JobState::Done => 5,
            JobState::Failed => 6,
            JobState::Cancelled => 7,
        }
    }

    /// Short lowercase name.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// One try on one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The worker's peer id.
    pub worker: String,
    /// When assigned, Unix ms.
    pub started_at: u64,
    /// When it ended, Unix ms.
    pub ended_at: u64,
    /// What happened.
    pub outcome: String,
    /// Last log lines, if the worker sent them.
    pub log_tail: String,
}

/// One submitted job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job id.
    pub id: JobId,
    /// The expression it evaluates (stored in the `exprs` tree).
    pub expr: ExprId,
    /// Current state.
    pub state: JobState,
    /// Attempts so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// Submitted, Unix ms.
    pub created_at: u64,
    /// Last change, Unix ms.
    pub updated_at: u64,
    /// The accepted fact, when done (or failed with an analysis error).
    pub fact: Option<FactId>,
    /// Whether the result came from a cache (local or mesh) without computing.
    pub from_cache: bool,
    /// Why it failed, for failed jobs.
    pub error: Option<String>,
    /// Skip cache lookups and force a recompute.
    pub no_cache: bool,
    /// Distinct trusted workers that must agree on the result (1: any one).
    /// Store format 3 and later; older records are read as 1.
    pub quorum: u32,
}

impl Wire for JobRecord {
    const WHAT: &'static str = "job record";
    const MAX_SIZE: usize = 4 * 1024 * 1024;
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How many jobs are in each state, kept in step with the `jobs` tree so
/// that `/metrics` does not read every record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobTally {
    /// Jobs by state, in the order of [`JobState::NAMES`].
    pub by_state: [u64; 8],
    /// Jobs whose result came from a cache.
    pub from_cache: u64,
}

impl JobTally {
    fn add(&mut self, record: &JobRecord) {
        self.by_state[record.state.index()] += 1;
        self.from_cache += u64::from(record.from_cache);
    }

    fn remove(&mut self, record: &JobRecord) {
        let n = &mut self.by_state[record.state.index()];
        *n = n.saturating_sub(1);
        self.from_cache = self.from_cache.saturating_sub(u64::from(record.from_cache));
    }
}

/// The `jobs` tree.
#[derive(Clone, Debug)]
pub struct JobStore {
    tree: sled::Tree,
    tally: std::sync::Arc<std::sync::Mutex<JobTally>>,
}

impl JobStore {
    /// Open the tree in `store` (counting its records once).
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let jobs = Self {
            tree: store.tree(crate::store::JOBS_TREE)?,
            tally: Default::default(),
        };
        let mut tally = JobTally::default();
        for record in jobs.all()? {
            tally.add(&record);
        }
        *jobs.lock_tally() = tally;
        Ok(jobs)
    }

    fn lock_tally(&self) -> std::sync::MutexGuard<'_, JobTally> {
        // The tally is plain counters: a panic elsewhere cannot break it.
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs by state, without reading the records.
    pub fn tally(&self) -> JobTally {
        *self.lock_tally()
    }

    /// Insert or replace a record.
    pub fn put(&self, record: &JobRecord) -> Result<(), StoreError> {
        let bytes = record
            .encode()
            .map_err(|e| StoreError::corrupt("jobs", &record.id.0, e.to_string()))?;
        let old = self
            .tree
            .insert(record.id.0, bytes)
            .map_err(|source| StoreError::Db {
                op: "put job",
                source,
            })?;
        let mut tally = self.lock_tally();
        if let Some(old) = old.and_then(|b| JobRecord::decode(&b).ok()) {
            tally.remove(&old);
        }
        tally.add(record);
        Ok(())
    }

    /// One record.
    pub fn get(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let Some(bytes) = self.tree.get(id.0).map_err(|source| StoreError::Db {
            op: "get job",
            source,
        })?
        else {
            return Ok(None);
        };
        JobRecord::decode(&bytes)
            .map(Some)
            .map_err(|e| StoreError::corrupt("jobs", &id.0, e.to_string()))
    }

    /// Every record (corrupt ones are skipped with a warning).
    pub fn all(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (key, bytes) = item.map_err(|source| StoreError::Db {
                op: "list jobs",
                source,
            })?;
            match JobRecord::decode(&bytes) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(key = %hex::encode(&key), error = %e, "skipping corrupt job record")
                }
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Apply `change` to a record and store it; returns the new record.
    pub fn update(
        &self,
        id: &JobId,
        change: impl FnOnce(&mut JobRecord),
    ) -> Result<Option<JobRecord>, StoreError> {
        let Some(mut record) = self.get(id)? else {
            return Ok(None);
        };
        change(&mut record);
        record.updated_at = now_ms();
        self.put(&record)?;
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn record(state: JobState, from_cache: bool) -> JobRecord {
        JobRecord {
            id: JobId::random(),
            expr: ExprId([3; 32]),
            state,
            attempts: Vec::new(),
            created_at: 1,
            updated_at: 1,
            fact: None,
            from_cache,
            error: None,
            no_cache: false,
            quorum: 1,
        }
    }

    fn recount(jobs: &JobStore) -> JobTally {
        let mut tally = JobTally::default();
        for r in jobs.all().unwrap() {
            tally.add(&r);
        }
        tally
    }

    #[test]
    fn the_tally_follows_every_change_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            Store::open(StoreConfig::new(dir.path().to_path_buf(), 1 << 20))
                .unwrap()
                .0
        };
        let store = open();
        let jobs = JobStore::open(&store).unwrap();
        let a = record(JobState::Queued, false);
        let b = record(JobState::Queued, false);
        jobs.put(&a).unwrap();
        jobs.put(&b).unwrap();
        jobs.update(&a.id, |r| {
            r.state = JobState::Running { worker: "w".into() }
        })
        .unwrap();
        jobs.update(&b.id, |r| {
            r.state = JobState::Done;
            r.from_cache = true;
        })
        .unwrap();
        jobs.put(&record(JobState::Failed, false)).unwrap();
        let tally = jobs.tally();
        assert_eq!(tally, recount(&jobs));
        let at =
            |name: &str| tally.by_state[JobState::NAMES.iter().position(|n| *n == name).unwrap()];
        assert_eq!(
            (at("queued"), at("running"), at("done"), at("failed")),
            (0, 1, 1, 1)
        );
        assert_eq!(tally.from_cache, 1);
        store.flush().unwrap();
        drop((jobs, store));
        let store = open();
        let reopened = JobStore::open(&store).unwrap();
        assert_eq!(reopened.tally(), tally);
    }
}
