//! The worker's journal: one entry per lease in the sled tree `journal`, so a
//! restart never loses a finished result (its `Done` is sent again) and never
//! re-runs an interrupted job silently (it is reported to the requester as
//! a run failure, so it reassigns without waiting for the lease to expire
//! and without penalising the worker).
//!
//! Writes go through the blocking pool; a `running` entry is flushed before
//! the run starts, so a crash at any later point finds it.

use libp2p::PeerId;
use oda_protocol::messages::{Done, JobRequest, LeaseId, RunFailure};
use oda_protocol::{ExprId, Wire};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// A journal entry, keyed by lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Entry {
    Running {
        expr: ExprId,
        requester: String,
    },
    Finished {
        expr: ExprId,
        requester: String,
        done: Vec<u8>,
        delivered: bool,
    },
    Interrupted {
        expr: ExprId,
    },
}

impl Wire for Entry {
    const WHAT: &'static str = "worker journal entry";
    const MAX_SIZE: usize = 1024 * 1024;
}

/// A `Done` to send again after a restart.
pub(super) struct Redelivery {
    pub lease: LeaseId,
    pub expr: ExprId,
    pub requester: PeerId,
    pub done: JobRequest,
    /// Mark the entry delivered once sent (a finished result; an
    /// interruption report is sent once and not tracked).
    pub finished: bool,
}

/// The journal tree, and the store whose (shared) flushes make it durable.
/// Cheap to clone.
#[derive(Clone)]
pub(super) struct Journal(sled::Tree, Store);

impl Journal {
    pub(super) fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self(store.tree("journal")?, store.clone()))
    }

    /// Record `entry` for `lease`; with `durable`, flushed before this
    /// returns. Failures are logged: a journal that cannot be written costs
    /// a re-run after a crash, not the result.
    pub(super) async fn put(&self, lease: LeaseId, entry: Entry, durable: bool) {
        let (tree, store) = (self.0.clone(), self.1.clone());
        let written = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let bytes = entry.encode().map_err(|e| e.to_string())?;
            tree.insert(lease.to_be_bytes(), bytes)
                .map_err(|e| e.to_string())?;
            if durable {
                store.flush().map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(lease, error = %e, "cannot write the worker journal"),
            Err(e) => tracing::error!(lease, error = %e, "the journal write task failed"),
        }
    }

    /// After a restart (blocking): mark every run that was in progress as
    /// interrupted, and list what must be sent: an interruption report for
    /// each of those, and each finished result not yet delivered.
    pub(super) fn recover(&self) -> Result<Vec<Redelivery>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.iter() {
            let (key, bytes) = item.map_err(StoreError::db("read journal"))?;
            let Ok(entry) = Entry::decode(&bytes) else {
                tracing::warn!(key = %hex::encode(&key), "skipping a corrupt journal entry");
                continue;
            };
            let Ok(lease) = <[u8; 8]>::try_from(key.as_ref()).map(u64::from_be_bytes) else {
                tracing::warn!(key = %hex::encode(&key), "skipping a journal entry with a bad key");
                continue;
            };
            match entry {
                Entry::Running { expr, requester } => {
                    tracing::warn!(%expr, lease, "job was interrupted by a restart; not re-running it (the requester will reassign)");
                    let interrupted = Entry::Interrupted { expr }
                        .encode()
                        .map_err(|e| StoreError::corrupt("journal", &key, e.to_string()))?;
                    self.0
                        .insert(&key, interrupted)
                        .map_err(StoreError::db("write journal"))?;
                    let Ok(requester) = requester.parse::<PeerId>() else {
                        continue;
                    };
                    out.push(Redelivery {
                        lease,
                        expr,
                        requester,
                        done: JobRequest::Done(Box::new(Done {
                            expr,
                            lease,
                            result: Err(RunFailure {
                                message: "interrupted: the worker restarted".into(),
                                log_tail: String::new(),
                            }),
                        })),
                        finished: false,
                    });
                }
                Entry::Finished {
                    expr,
                    requester,
                    done,
                    delivered: false,
                } => {
                    tracing::info!(%expr, lease, "re-delivering a result finished before the restart");
                    if let (Ok(requester), Ok(done)) =
                        (requester.parse::<PeerId>(), JobRequest::decode(&done))
                    {
                        out.push(Redelivery {
                            lease,
                            expr,
                            requester,
                            done,
                            finished: true,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
