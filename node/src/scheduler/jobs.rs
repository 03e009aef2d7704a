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

    /// Short lowercase name.
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::ResolvingInputs => "resolving-inputs",
            JobState::Advertised => "advertised",
            JobState::Assigned { .. } => "assigned",
            JobState::Running { .. } => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
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

/// The `jobs` tree.
#[derive(Clone, Debug)]
pub struct JobStore {
    tree: sled::Tree,
}

impl JobStore {
    /// Open the tree in `store`.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree("jobs")?,
        })
    }

    /// Insert or replace a record.
    pub fn put(&self, record: &JobRecord) -> Result<(), StoreError> {
        let bytes = record
            .encode()
            .map_err(|e| StoreError::corrupt("jobs", &record.id.0, e.to_string()))?;
        self.tree
            .insert(record.id.0, bytes)
            .map_err(|source| StoreError::Db {
                op: "put job",
                source,
            })?;
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
