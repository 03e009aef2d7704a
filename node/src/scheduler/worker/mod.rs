//! The worker: listens to the jobs topics of workflows it can run, offers when
//! it is able and allowed, and on assignment fetches the workflow and inputs,
//! runs the executor, stores the outputs, signs the fact, publishes it and
//! reports `Done`, sending heartbeats while it runs.
//!
//! Checks before offering ([`admission`]): the runner class admits the
//! requester and the workflow is trusted (added by the owner, or endorsed by
//! a configured expert); then a slot must be free and the expression not
//! already offered for or running here ([`slots`]). An acceptable advert
//! heard while every slot is busy waits in the [`Backlog`] and is offered for
//! when a slot frees.
//!
//! Structure: one actor task ([`actor`]) owns the worker's state (slots, the
//! backlog, the runs in progress with their cancellation tokens, the runs
//! other requesters joined) and owns every task the worker starts: a run
//! ([`run`]) from its offer to its last `Done`, the offers to join a running
//! expression and the joined requesters' heartbeats ([`join`]), the
//! re-deliveries after a restart. [`Worker`] is its cloneable handle.
//! Adverts and fact announcements (gossip) are offered to the actor with
//! `try_send` and shed (and counted) when its queue is full; a `Cancel`
//! (a job RPC) waits for room. At shutdown the actor stops: running jobs are
//! killed, their journal entries say `running`, and the next start reports
//! them interrupted ([`journal`]).

mod actor;
mod admission;
pub use admission::{Serves, Session};
mod inputs;
mod join;
mod journal;
mod run;
mod slots;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use oda_protocol::messages::{Cancel, JobAdvert};
use oda_protocol::names::Topic;
use oda_protocol::{ExprId, SignedFact, WorkflowId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backlog::Backlog;
use super::trust::TrustBook;
use crate::identity::NodeKey;
use crate::network::{Client, JobReply};
use crate::store::{Store, StoreError};
use actor::Cmd;
use journal::Journal;

/// Commands waiting for the actor. Gossip beyond this is shed.
const COMMAND_QUEUE: usize = 1024;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Concurrent jobs.
    pub slots: u32,
    /// Whom it serves: its runner class and what the class needs.
    pub serves: Serves,
    /// Workflows it listens for besides those in its store (run only when
    /// endorsed by a trusted expert).
    pub extra_workflows: Vec<WorkflowId>,
    /// Where job directories are created.
    pub jobs_dir: PathBuf,
    /// Whose jobs run in the sandbox (bubblewrap found at start).
    pub sandbox: crate::executor::SandboxPolicy,
    /// The executors it can run (tools found at start); it offers only for
    /// workflows it can run.
    pub executors: crate::executor::Executors,
}

/// What the worker is built from.
pub struct Parts {
    /// The network.
    pub client: Client,
    /// The store.
    pub store: Store,
    /// This node's key (facts are signed with it).
    pub key: NodeKey,
    /// Which workflows it runs besides its own (endorsements).
    pub trust: TrustBook,
    /// Settings.
    pub cfg: WorkerConfig,
}

/// What the actor and its tasks share: the immutable parts, the journal and
/// the counters published for `/metrics`.
struct Ctx {
    parts: Parts,
    journal: Journal,
    stats: Stats,
    /// The last run that ended (its `Done` delivered, its fact published).
    ended: watch::Sender<Option<RunEnd>>,
}

/// How a run of this worker ended, once its requesters have heard and its
/// fact was published.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// The expression run.
    pub expr: ExprId,
    /// The fact signed, or why the run failed without one.
    pub result: Result<SignedFact, String>,
}

/// Counters for `/metrics` and tests. `free` and `backlog` are written by
/// the actor only (a snapshot after each command); `executions` by the run
/// that starts an executor.
#[derive(Default)]
struct Stats {
    executions: AtomicU64,
    declined: AtomicU64,
    shed: AtomicU64,
    free: AtomicU32,
    backlog: AtomicUsize,
}

/// The worker half of the scheduler: a handle on its actor. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    commands: mpsc::Sender<Cmd>,
    ctx: Arc<Ctx>,
}

impl Worker {
    /// Start the worker's actor: look at the journal (re-deliver results
    /// finished before a restart, report interrupted runs), listen for the
    /// configured extra workflows (those in the store are subscribed by the
    /// runtime for every node). The actor's task ends once `shutdown` is
    /// cancelled.
    pub async fn start(
        parts: Parts,
        shutdown: CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let journal = Journal::open(&parts.store)?;
        let recovered = {
            let journal = journal.clone();
            tokio::task::spawn_blocking(move || journal.recover())
                .await
                .map_err(|e| StoreError::Task(e.to_string()))??
        };
        for id in &parts.cfg.extra_workflows {
            if let Err(e) = parts.client.subscribe(Topic::jobs(id)).await {
                tracing::warn!(workflow = %id, error = %e, "cannot subscribe to a jobs topic");
            }
        }
        let stats = Stats {
            free: AtomicU32::new(parts.cfg.slots),
            ..Stats::default()
        };
        let ctx = Arc::new(Ctx {
            parts,
            journal,
            stats,
            ended: watch::Sender::new(None),
        });
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        let mut actor = actor::Actor::new(ctx.clone(), commands.clone(), inbox, shutdown);
        for redelivery in recovered {
            actor.redeliver(redelivery);
        }
        Ok((Self { commands, ctx }, tokio::spawn(actor.run())))
    }

    /// The last run that ended, watched: `oda-node execute` waits on it.
    pub fn ended(&self) -> watch::Receiver<Option<RunEnd>> {
        self.ctx.ended.subscribe()
    }

    /// Executions started since this process began.
    pub fn executions(&self) -> u64 {
        self.ctx.stats.executions.load(Ordering::Relaxed)
    }

    /// Adverts declined since this process began.
    pub fn declined(&self) -> u64 {
        self.ctx.stats.declined.load(Ordering::Relaxed)
    }

    /// Adverts and fact announcements shed because the actor was busy.
    pub fn shed(&self) -> u64 {
        self.ctx.stats.shed.load(Ordering::Relaxed)
    }

    /// Free slots now.
    pub fn free_slots(&self) -> u32 {
        self.ctx.stats.free.load(Ordering::Relaxed)
    }

    /// Adverts waiting for a free slot.
    pub fn backlog_len(&self) -> usize {
        self.ctx.stats.backlog.load(Ordering::Relaxed)
    }

    /// A job advert arrived (gossip, or this node's own requester). Never
    /// waits: when the actor is busy the advert is shed, and its next
    /// re-publication brings it back.
    pub fn on_advert(&self, advert: JobAdvert) {
        self.hint(Cmd::Advert(Box::new(advert)));
    }

    /// The fact for `expr` exists now: its advert no longer needs a worker.
    /// Never waits, as above.
    pub fn on_fact_announce(&self, expr: &ExprId) {
        self.hint(Cmd::FactKnown(*expr));
    }

    fn hint(&self, cmd: Cmd) {
        if self.commands.try_send(cmd).is_err() {
            self.ctx.stats.shed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("worker busy; shedding a gossip message");
        }
    }

    /// A requester cancelled a lease (job protocol). Waits for room in the
    /// actor's queue.
    pub async fn on_cancel(&self, cancel: Cancel, reply: JobReply) {
        if self
            .commands
            .send(Cmd::Cancel { cancel, reply })
            .await
            .is_err()
        {
            tracing::debug!("a cancel arrived while the worker stops");
        }
    }
}
