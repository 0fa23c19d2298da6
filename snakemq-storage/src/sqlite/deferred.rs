//! Deferred writes of the SQLite store (`Full` durability): the commit log makes a group
//! durable, the tables get it later. See `commit_log.rs` for why.

use super::commit_log::{Appended, CommitLog};
use super::{SqliteStore, Writer};
use crate::{Durability, StorageError, WriteBatch};

impl SqliteStore {
    /// Applies what a commit log left by an earlier run holds (batches made durable there
    /// and maybe not in the tables), syncs the tables, and starts the log over.
    pub(super) fn replay_commit_log(&mut self) -> Result<(), StorageError> {
        let Some(found) = CommitLog::recover(&self.path)? else {
            return Ok(());
        };
        if !found.batches.is_empty() {
            let records = found.batches.len();
            // Synced whatever the durability: the log is reset right after.
            let normal = self.options.durability == Durability::Normal;
            if normal {
                self.set_synchronous("FULL")?;
            }
            let replayed = self.transact(|w| {
                for batch in &found.batches {
                    w.replay(batch)?;
                }
                w.touch_meta()
            });
            if normal {
                self.set_synchronous("NORMAL")?;
            }
            replayed?;
            tracing::info!(path = %self.path.display(), records, "replayed the commit log");
        }
        self.log = Some(CommitLog::create(&self.path, Some(&found))?);
        Ok(())
    }

    /// Applies the deferred batches to the tables, without a sync of their own: the
    /// commit log holds them durably until [`SqliteStore::checkpoint`].
    pub(super) fn settle_pending(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() && self.uncovered.is_none() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        // (With what a failed settle cancelled: those pairs are gone from `pending`.)
        let cancelled = cancel_acknowledged(&mut pending).max(self.uncovered.take());
        let result = self.without_sync(|store| {
            store.transact(|w| {
                pending.apply(w)?;
                if let Some(seq) = cancelled {
                    w.cover_removed(seq);
                }
                Ok(())
            })
        });
        if result.is_err() {
            // Rolled back: still durable in the log, and tried again at the next settle.
            self.pending = pending;
            self.uncovered = cancelled;
        }
        result
    }

    /// Runs `f` in a synced transaction (after the deferred batches). Everything in the
    /// tables is then on disk, so the commit log starts over.
    pub(super) fn synced<T>(
        &mut self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StorageError> {
        self.settle_pending()?;
        let out = self.transact(f)?;
        self.log_absorbed()?;
        Ok(out)
    }

    /// After a synced commit: the log's records are all in the tables on disk.
    fn log_absorbed(&mut self) -> Result<(), StorageError> {
        match self.log.as_mut() {
            Some(log) if !log.is_empty() && self.options.durability == Durability::Full => {
                log.reset()
            }
            _ => Ok(()),
        }
    }

    /// Moves everything in the commit log into the tables and onto the disk, and starts
    /// the log over (when it is full, and when the store is closed).
    pub(super) fn checkpoint(&mut self) -> Result<(), StorageError> {
        self.synced(|w| w.touch_meta())
    }

    pub(super) fn append_to_log(&mut self, batch: &WriteBatch) -> Result<Appended, StorageError> {
        match self.log.as_mut() {
            Some(log) => log.append(batch),
            None => Ok(Appended::TooLarge),
        }
    }
}

/// Drops the pushes that a later removal of the same batch takes back, with those
/// removals: an acknowledged message then never reaches the tables at all. Returns the
/// highest number dropped (numbers are never given out twice, also across restarts).
fn cancel_acknowledged(batch: &mut WriteBatch) -> Option<u64> {
    if batch.pushes.is_empty() || batch.removes.is_empty() {
        return None;
    }
    // Sequence numbers are store-wide: one number is one message (of the peer checked).
    let pushed: foldhash::HashMap<u64, &str> = batch
        .pushes
        .iter()
        .map(|(peer, record)| (record.seq, &**peer))
        .collect();
    let mut cancelled = foldhash::HashSet::default();
    batch.removes.retain(|(peer, seq)| {
        let cancel = pushed.get(seq) == Some(&&**peer);
        if cancel {
            cancelled.insert(*seq);
        }
        !cancel
    });
    let highest = cancelled.iter().max().copied()?;
    batch
        .pushes
        .retain(|(_, record)| !cancelled.contains(&record.seq));
    Some(highest)
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let used = self.log.as_ref().is_some_and(|log| !log.is_empty());
        if used || !self.pending.is_empty() {
            // A clean close leaves an empty log; if this fails, the next open replays it.
            if let Err(error) = self.checkpoint() {
                tracing::warn!(%error, "closing the store: the commit log stays for the next open");
            }
        }
    }
}
