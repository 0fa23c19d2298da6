//! The storage writer: one thread that owns the durable store and group-commits.
//!
//! Every persistent push, every removal of a persistent message (acknowledged, expired,
//! dropped) and every received id to remember becomes an [`Op`] on one channel. The
//! thread takes the first op, drains everything else already waiting into one
//! [`WriteBatch`], makes it durable with one write (`QueueStore::write_deferred`: one
//! synced commit log record for SQLite in `Full` durability, one synced commit elsewhere),
//! and then completes every waiting sender. Many concurrent sends therefore share one
//! sync, and the async threads never block on disk I/O. The store applies deferred
//! batches to its tables when the writer settles it: before serving a read, and whenever
//! no op is waiting.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use snakemq_storage::{QueueStore, Record, StorageError, Uuid, WriteBatch};
use tokio::sync::oneshot;

use crate::Error;

/// Most operations in one group commit; bounds the size of one transaction.
const MAX_GROUP: usize = 65_536;

/// How long a group of removals only may wait for company. Removals need no flush of their
/// own (see `WriteBatch::needs_sync`), so instead of a transaction per burst of
/// acknowledgements they ride along with the next push or received id, which the writer
/// commits anyway; only on an idle link do they go alone, after this delay. A crash inside
/// the window re-sends messages the receiver already has: duplicates, never a loss.
const REMOVAL_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// How long the writer keeps looking for the next op, instead of sleeping, after a commit
/// that a few senders waited for. A producer that awaits each send submits its next one
/// a few microseconds after its commit completes; a sleeping thread takes longer to wake
/// (on a virtual machine an idle CPU has to be woken first), and that wake-up was on the
/// path of every such send. Bounded, so an idle store costs at most this much CPU after
/// its last commit.
const SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// Most waiters of a commit after which the writer spins. Larger groups come from many
/// sends in flight: the next group is already queueing, and on a machine with few cores
/// the spinning thread would only take CPU time from the senders and the connections.
const SPIN_MAX_WAITERS: usize = 4;

/// The outcome of a commit, shared by every op of its group.
type CommitResult = Result<(), Arc<StorageError>>;

pub(crate) enum Op {
    /// Append a message; `done` completes after its commit.
    Push {
        peer: Arc<str>,
        record: Record,
        done: oneshot::Sender<CommitResult>,
    },
    /// Remove messages (no one waits).
    Remove { peer: Arc<str>, seqs: Vec<u64> },
    /// Remember received ids; `done` completes after their commit.
    Received {
        peer: Arc<str>,
        ids: Vec<Uuid>,
        done: oneshot::Sender<CommitResult>,
    },
    /// The ids most recently received from a peer (served after pending writes).
    LoadReceived {
        peer: Arc<str>,
        limit: usize,
        reply: oneshot::Sender<Vec<Uuid>>,
    },
    /// Completes once everything queued before it is committed.
    Barrier { done: oneshot::Sender<CommitResult> },
    /// A page of a peer's queue after a sequence number (served after pending writes).
    Load {
        peer: Arc<str>,
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Record>, Arc<StorageError>>>,
    },
}

/// Handle to the storage writer thread.
#[derive(Debug)]
pub(crate) struct Persister {
    tx: mpsc::Sender<Op>,
}

impl Persister {
    /// Starts the writer thread.
    pub(crate) fn start(
        mut store: Box<dyn QueueStore>,
    ) -> Result<(Persister, JoinHandle<()>), Error> {
        // Here rather than in the thread: the first send must not wait for it (laying down
        // the SQLite store's commit log writes and syncs 8 MiB).
        store.prepare_deferred()?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("snakemq-store".into())
            .spawn(move || run(store, rx))
            .map_err(|e| Error::Link(e.into()))?;
        Ok((Persister { tx }, thread))
    }

    fn submit(&self, op: Op) {
        // The thread only stops when every sender is gone, so a send cannot fail while we
        // hold one; if it ever did, the op is lost and the waiter sees a closed channel.
        let _ = self.tx.send(op);
    }

    /// Queues a push; the returned receiver completes after its commit.
    pub(crate) fn push(&self, peer: Arc<str>, record: Record) -> oneshot::Receiver<CommitResult> {
        let (done, wait) = oneshot::channel();
        self.submit(Op::Push { peer, record, done });
        wait
    }

    /// Queues removals.
    pub(crate) fn remove(&self, peer: &Arc<str>, seqs: impl IntoIterator<Item = u64>) {
        // One channel operation per batch of removals, not per message.
        let seqs: Vec<u64> = seqs.into_iter().collect();
        if !seqs.is_empty() {
            self.submit(Op::Remove {
                peer: peer.clone(),
                seqs,
            });
        }
    }

    /// Queues received ids; the receiver completes after their commit.
    pub(crate) fn received(
        &self,
        peer: Arc<str>,
        ids: Vec<Uuid>,
    ) -> oneshot::Receiver<CommitResult> {
        let (done, wait) = oneshot::channel();
        self.submit(Op::Received { peer, ids, done });
        wait
    }

    /// The ids most recently received from `peer`.
    pub(crate) async fn load_received(&self, peer: Arc<str>, limit: usize) -> Vec<Uuid> {
        let (reply, wait) = oneshot::channel();
        self.submit(Op::LoadReceived { peer, limit, reply });
        wait.await.unwrap_or_default()
    }

    /// Loads a page of `peer`'s durable queue (after everything queued before is committed).
    pub(crate) fn load(
        &self,
        peer: Arc<str>,
        after: u64,
        limit: usize,
    ) -> oneshot::Receiver<Result<Vec<Record>, Arc<StorageError>>> {
        let (reply, wait) = oneshot::channel();
        self.submit(Op::Load {
            peer,
            after,
            limit,
            reply,
        });
        wait
    }

    /// Waits until everything queued so far is committed.
    pub(crate) async fn barrier(&self) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.submit(Op::Barrier { done });
        match wait.await {
            Ok(result) => result.map_err(Error::Commit),
            Err(_) => Err(Error::Shutdown),
        }
    }
}

/// Waits for a commit.
pub(crate) async fn committed(wait: oneshot::Receiver<CommitResult>) -> Result<(), Error> {
    match wait.await {
        Ok(result) => result.map_err(Error::Commit),
        Err(_) => Err(Error::Shutdown),
    }
}

/// The next op: looked for until `spin_until` (yielding the CPU between looks), then
/// waited for until `deadline`. `None`: none came in time, or every sender is gone.
fn next_op(rx: &mpsc::Receiver<Op>, spin_until: Option<Instant>, deadline: Instant) -> Option<Op> {
    match poll_op(rx, spin_until.map(|until| until.min(deadline))) {
        Polled::Op(op) => Some(op),
        Polled::Closed => None,
        Polled::Empty => rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok(),
    }
}

/// What [`poll_op`] found.
enum Polled {
    Op(Op),
    /// Nothing yet.
    Empty,
    /// Every sender is gone.
    Closed,
}

/// The next op if one comes before `spin_until` (looked for without sleeping, yielding
/// the CPU between looks), else [`Polled::Empty`].
fn poll_op(rx: &mpsc::Receiver<Op>, spin_until: Option<Instant>) -> Polled {
    loop {
        match rx.try_recv() {
            Ok(op) => return Polled::Op(op),
            Err(mpsc::TryRecvError::Disconnected) => return Polled::Closed,
            Err(mpsc::TryRecvError::Empty) => {
                if spin_until.is_none_or(|until| Instant::now() >= until) {
                    return Polled::Empty;
                }
                std::thread::yield_now();
            }
        }
    }
}

/// Applies deferred batches to the store's tables; a failure is logged (the batches stay
/// durable in the store's log, and the next settle tries again).
fn settle(store: &mut dyn QueueStore) {
    if let Err(error) = store.settle() {
        tracing::error!(%error, "applying committed batches to the store failed");
    }
}

fn run(mut store: Box<dyn QueueStore>, rx: mpsc::Receiver<Op>) {
    let span = tracing::debug_span!("store-writer");
    let _entered = span.enter();

    // Set after a commit that a few senders waited for (see SPIN).
    let mut spin_until: Option<Instant> = None;
    loop {
        let first = match poll_op(&rx, spin_until) {
            Polled::Op(op) => op,
            Polled::Closed => break,
            Polled::Empty => {
                // Idle: a good moment to apply deferred batches to the store's tables.
                settle(&mut *store);
                match rx.recv() {
                    Ok(op) => op,
                    Err(_) => break,
                }
            }
        };
        let mut batch = WriteBatch::new();
        let mut waiting = Vec::new();
        let mut loads = Vec::new();
        let mut pages = Vec::new();
        let mut next = Some(first);
        // When the group started waiting for company (removals only, see REMOVAL_DELAY).
        let mut removals_since: Option<Instant> = None;
        while let Some(op) = next.take() {
            match op {
                Op::Push { peer, record, done } => {
                    batch.pushes.push((peer, record));
                    waiting.push(done);
                }
                Op::Remove { peer, seqs } => batch
                    .removes
                    .extend(seqs.into_iter().map(|seq| (peer.clone(), seq))),
                Op::Received { peer, ids, done } => {
                    batch
                        .received
                        .extend(ids.into_iter().map(|id| (peer.clone(), id)));
                    waiting.push(done);
                }
                Op::LoadReceived { peer, limit, reply } => loads.push((peer, limit, reply)),
                Op::Load {
                    peer,
                    after,
                    limit,
                    reply,
                } => pages.push((peer, after, limit, reply)),
                Op::Barrier { done } => waiting.push(done),
            }
            if batch.len() < MAX_GROUP {
                next = rx.try_recv().ok();
                if next.is_none() && only_removals(&batch, &waiting, &loads, &pages) {
                    let deadline = *removals_since.get_or_insert_with(Instant::now) + REMOVAL_DELAY;
                    if Instant::now() < deadline {
                        next = next_op(&rx, spin_until, deadline);
                    }
                }
            }
        }
        let result = if batch.is_empty() {
            Ok(())
        } else {
            let ops = batch.len();
            let result = store.write_deferred(batch).map_err(Arc::new);
            match &result {
                Ok(()) => tracing::trace!(ops, waiters = waiting.len(), "group committed"),
                Err(error) => tracing::error!(%error, ops, "group commit failed"),
            }
            result
        };
        spin_until = (!waiting.is_empty() && waiting.len() <= SPIN_MAX_WAITERS)
            .then(|| Instant::now() + SPIN);
        for done in waiting {
            let _ = done.send(result.clone());
        }
        if !loads.is_empty() || !pages.is_empty() {
            settle(&mut *store);
        }
        for (peer, limit, reply) in loads {
            let mut ids = Vec::new();
            if let Err(error) = store.recent_received(&peer, limit, &mut ids) {
                tracing::error!(%error, "loading received ids failed");
            }
            let _ = reply.send(ids);
        }
        for (peer, after, limit, reply) in pages {
            let mut page = Vec::with_capacity(limit);
            let result = store
                .read(&peer, Some(after), limit, &mut page)
                .map(|()| page)
                .map_err(Arc::new);
            let _ = reply.send(result);
        }
    }
}

/// Whether the group so far holds removals and nothing anyone waits for.
fn only_removals<A, B, C>(batch: &WriteBatch, waiting: &[A], loads: &[B], pages: &[C]) -> bool {
    !batch.removes.is_empty()
        && !batch.needs_sync()
        && waiting.is_empty()
        && loads.is_empty()
        && pages.is_empty()
}
