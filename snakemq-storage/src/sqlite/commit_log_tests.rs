//! The commit log of the SQLite store: what a crash leaves is replayed, a clean close
//! leaves nothing, a full log starts over, and bad log files are typed errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::Expiry;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn message(seq: u64, size: usize) -> Record {
    Record {
        seq,
        uuid: [seq as u8; 16],
        data: Bytes::from(vec![seq as u8; size]),
        flags: 0,
        expiry: Expiry::Never,
    }
}

fn pushes(peer: &Arc<str>, seqs: impl IntoIterator<Item = u64>, size: usize) -> WriteBatch {
    WriteBatch {
        pushes: seqs
            .into_iter()
            .map(|seq| (peer.clone(), message(seq, size)))
            .collect(),
        ..WriteBatch::new()
    }
}

fn removals(peer: &Arc<str>, seqs: impl IntoIterator<Item = u64>) -> WriteBatch {
    WriteBatch {
        removes: seqs.into_iter().map(|seq| (peer.clone(), seq)).collect(),
        ..WriteBatch::new()
    }
}

/// A temporary folder, a store path in it, and the peer most tests queue for.
fn fresh() -> Result<(tempfile::TempDir, PathBuf, Arc<str>), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q.db");
    Ok((dir, path, Arc::from("bob")))
}

/// Records of the current epoch in the store's commit log (none without a log).
fn log_records(path: &Path) -> Result<usize, StorageError> {
    Ok(CommitLog::recover(path)?.map_or(0, |found| found.batches.len()))
}

fn open(path: &Path) -> Result<SqliteStore, StorageError> {
    SqliteStore::open(path, SqliteOptions::default())
}

fn queued(store: &SqliteStore, peer: &str) -> Result<Vec<u64>, StorageError> {
    let mut page = Vec::new();
    store.read(peer, None, usize::MAX, &mut page)?;
    Ok(page.iter().map(|r| r.seq).collect())
}

impl SqliteStore {
    /// What a killed process leaves: the tables as far as they were written, the log as
    /// written, and nothing of what was only in memory.
    fn abandon(mut self) {
        self.log = None;
        self.pending = WriteBatch::new();
    }
}

#[test]
fn deferred_batches_come_back_after_a_crash() -> TestResult {
    let (_dir, path, bob) = fresh()?;
    let mut store = open(&path)?;
    store.write_deferred(pushes(&bob, 1..=3, 10))?;
    store.write_deferred(pushes(&bob, 4..=5, 10))?;
    assert!(commit_log::path_for(&path).exists());
    store.abandon();

    let store = open(&path)?;
    assert_eq!(queued(&store, "bob")?, vec![1, 2, 3, 4, 5]);
    assert_eq!(store.stats("bob")?.messages, 5);
    assert_eq!(store.stats("bob")?.bytes, 50);
    // Replayed into the tables and synced: the log starts over.
    assert!(log_records(&path)? == 0);
    Ok(())
}

#[test]
fn replay_skips_what_the_tables_already_hold() -> TestResult {
    let (_dir, path, bob) = fresh()?;
    let mut store = open(&path)?;
    store.write_deferred(pushes(&bob, 1..=4, 10))?;
    store.settle()?;
    store.write_deferred(removals(&bob, [2]))?;
    store.write_deferred(WriteBatch {
        received: vec![(bob.clone(), [7; 16])],
        ..pushes(&bob, [5], 10)
    })?;
    store.settle()?;
    store.abandon();

    let store = open(&path)?;
    assert_eq!(queued(&store, "bob")?, vec![1, 3, 4, 5]);
    assert_eq!(store.stats("bob")?.messages, 4);
    let mut ids = Vec::new();
    store.recent_received("bob", 10, &mut ids)?;
    assert!(ids.contains(&[7; 16]));
    Ok(())
}

#[test]
fn the_log_stands_in_for_tables_that_lost_their_unsynced_commits() -> TestResult {
    let (dir, path, bob) = fresh()?;
    let wal = dir.path().join("q.db-wal");
    let mut store = open(&path)?;
    store.insert("bob", message(1, 10))?;
    // The files as a synced commit left them: what a power loss may roll the tables back to.
    let db_then = std::fs::read(&path)?;
    let wal_then = std::fs::read(&wal).ok();
    store.write_deferred(pushes(&bob, 2..=3, 10))?;
    store.settle()?;
    store.write_deferred(pushes(&bob, [4], 10))?;
    store.abandon();

    std::fs::write(&path, db_then)?;
    match wal_then {
        Some(bytes) => std::fs::write(&wal, bytes)?,
        None => {
            let _ = std::fs::remove_file(&wal);
        }
    }
    let store = open(&path)?;
    assert_eq!(queued(&store, "bob")?, vec![1, 2, 3, 4]);
    Ok(())
}

#[test]
fn acknowledged_messages_skip_the_tables_and_their_numbers_stay_used() -> TestResult {
    let (_dir, path, bob) = fresh()?;
    let mut store = open(&path)?;
    store.write_deferred(pushes(&bob, 1..=3, 10))?;
    store.write_deferred(removals(&bob, 1..=3))?;
    store.settle()?;
    assert_eq!(store.stats("bob")?.messages, 0);
    assert_eq!(store.last_seq()?, Some(3));
    drop(store);

    let store = open(&path)?;
    assert_eq!(store.last_seq()?, Some(3));
    assert!(queued(&store, "bob")?.is_empty());
    Ok(())
}

/// A settle that fails after cancelling a push with its removal still records that
/// number as used when it is tried again (the pair is gone from the pending batches).
#[test]
fn numbers_of_cancelled_pairs_stay_used_after_a_failed_settle() -> TestResult {
    let (_dir, path, bob) = fresh()?;
    let mut store = open(&path)?;
    store.conn.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.flags = 99 \
         BEGIN SELECT RAISE(ABORT, 'boom'); END",
    )?;
    let mut failing = pushes(&bob, [1], 10);
    for (_, record) in &mut failing.pushes {
        record.flags = 99;
    }
    store.write_deferred(failing)?;
    store.write_deferred(pushes(&bob, [2], 10))?;
    store.write_deferred(removals(&bob, [2]))?;
    assert!(store.settle().is_err());
    store.conn.execute_batch("DROP TRIGGER boom")?;
    store.settle()?;
    assert_eq!(queued(&store, "bob")?, vec![1]);
    assert_eq!(store.last_seq()?, Some(2));
    drop(store);

    let store = open(&path)?;
    assert_eq!(store.last_seq()?, Some(2));
    Ok(())
}

#[test]
fn a_clean_close_leaves_an_empty_log() -> TestResult {
    let (_dir, path, bob) = fresh()?;
    let mut store = open(&path)?;
    store.write_deferred(pushes(&bob, 1..=2, 10))?;
    drop(store);
    assert!(log_records(&path)? == 0);
    assert_eq!(queued(&open(&path)?, "bob")?, vec![1, 2]);
    Ok(())
}

#[test]
fn a_full_log_starts_over_and_large_batches_commit_directly() -> TestResult {
    let (_dir, path, bob) = fresh()?;
    let mut store = open(&path)?;
    // 100 records of 200 KB fill the 8 MiB log more than twice.
    for seq in 1..=100 {
        store.write_deferred(pushes(&bob, [seq], 200_000))?;
    }
    // Larger than a quarter of the log: committed to the tables directly.
    store.write_deferred(pushes(&bob, [101], 3_000_000))?;
    store.write_deferred(pushes(&bob, [102], 10))?;
    store.abandon();

    let store = open(&path)?;
    assert_eq!(queued(&store, "bob")?, (1..=102).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn normal_durability_writes_no_log() -> TestResult {
    let (_dir, path, bob) = fresh()?;
    let options = SqliteOptions {
        durability: Durability::Normal,
        ..SqliteOptions::default()
    };
    let mut store = SqliteStore::open(&path, options)?;
    store.prepare_deferred()?;
    store.write_deferred(pushes(&bob, 1..=2, 10))?;
    assert_eq!(queued(&store, "bob")?, vec![1, 2]);
    assert!(!commit_log::path_for(&path).exists());
    Ok(())
}

#[test]
fn a_torn_last_record_is_ignored() -> TestResult {
    let (_dir, path, bob) = fresh()?;
    let mut store = open(&path)?;
    store.write_deferred(pushes(&bob, [1], 10))?;
    store.write_deferred(pushes(&bob, [2], 10))?;
    store.abandon();
    // Damage the second record's payload (block 2): a write that did not complete.
    let log = commit_log::path_for(&path);
    let mut bytes = std::fs::read(&log)?;
    let byte = bytes.get_mut(2 * 4096 + 40).ok_or("short log")?;
    *byte ^= 0xff;
    std::fs::write(&log, bytes)?;

    let store = open(&path)?;
    assert_eq!(queued(&store, "bob")?, vec![1]);
    Ok(())
}

#[test]
fn bad_log_files_are_typed_errors_naming_the_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    let garbage: Vec<u8> = (0..3 * 4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (name, content) in [
        ("garbage", garbage),
        ("zeros", vec![0u8; 3 * 4096]),
        ("truncated", b"SNKQLOG1".to_vec()),
    ] {
        let path = dir.path().join(format!("{name}.db"));
        drop(open(&path)?);
        let log = commit_log::path_for(&path);
        std::fs::write(&log, content)?;
        let error = open(&path).err().ok_or("opened a bad log")?;
        assert!(
            matches!(error, StorageError::Corrupt { .. }),
            "{name}: {error}"
        );
        assert!(
            error.to_string().contains(&log.display().to_string()),
            "{name}: {error}"
        );
    }
    Ok(())
}

#[test]
fn a_log_left_by_a_full_run_is_replayed_in_normal_durability() -> TestResult {
    let (_dir, path, bob) = fresh()?;
    let mut store = open(&path)?;
    store.write_deferred(pushes(&bob, 1..=2, 10))?;
    store.abandon();
    let options = SqliteOptions {
        durability: Durability::Normal,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options)?;
    assert_eq!(queued(&store, "bob")?, vec![1, 2]);
    assert!(log_records(&path)? == 0);
    Ok(())
}

#[test]
fn prepare_lays_down_an_empty_log() -> TestResult {
    let (_dir, path, _) = fresh()?;
    let mut store = open(&path)?;
    assert!(!commit_log::path_for(&path).exists());
    store.prepare_deferred()?;
    let log = std::fs::metadata(commit_log::path_for(&path))?;
    assert_eq!(log.len(), 8 << 20);
    assert!(log_records(&path)? == 0);
    Ok(())
}
