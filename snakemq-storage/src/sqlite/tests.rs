//! Bad files and SQLite-specific behaviour; the shared behaviour is in the conformance
//! suite (`tests/conformance.rs`).

use std::path::Path;

use bytes::Bytes;
use rusqlite::Connection;

use super::*;
use crate::Expiry;

fn record(n: u8, expiry: Expiry) -> NewRecord {
    NewRecord {
        uuid: [n; 16],
        data: Bytes::from(vec![n; 100]),
        flags: u32::from(n),
        expiry,
    }
}

fn at(seq: u64, n: u8, expiry: Expiry) -> Record {
    Record::from_new(seq, record(n, expiry))
}

fn open(path: &Path) -> Result<SqliteStore, StorageError> {
    SqliteStore::open(path, SqliteOptions::default())
}

fn names_file(error: &StorageError, path: &Path) -> bool {
    error.to_string().contains(&path.display().to_string())
}

#[test]
fn garbage_file_is_corrupt() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("garbage.db");
    let garbage: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, garbage)?;
    let error = open(&path).err().ok_or("opened garbage")?;
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(names_file(&error, &path), "{error}");
    Ok(())
}

#[test]
fn zero_filled_and_tiny_files_are_corrupt() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    for (name, content) in [
        ("zeros.db", vec![0u8; 8192]),
        ("tiny.db", b"SQLite".to_vec()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content)?;
        let error = open(&path).err().ok_or("opened a bad file")?;
        assert!(
            matches!(error, StorageError::Corrupt { .. }),
            "{name}: {error}"
        );
        assert!(names_file(&error, &path), "{error}");
    }
    Ok(())
}

#[test]
fn truncated_store_is_corrupt() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("truncated.db");
    {
        let mut store = open(&path)?;
        let mut batch = WriteBatch::new();
        for n in 0..2000u32 {
            batch.pushes.push((
                format!("peer{}", n % 7).into(),
                at(u64::from(n) + 1, (n % 250) as u8, Expiry::Never),
            ));
        }
        store.write(batch)?;
    }
    let len = std::fs::metadata(&path)?.len();
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.set_len(len / 2)?;
    drop(file);
    let error = open(&path).err().ok_or("opened a truncated file")?;
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(names_file(&error, &path), "{error}");
    Ok(())
}

/// A store killed inside the commit that created it (made with a rollback journal, before
/// the switch to WAL) is shorter than its header says, beside a hot journal that SQLite
/// rolls back at open: it opens as a new, empty store instead of being called truncated.
/// The two files are what `snakemq listen --store` left when killed at its ninth `pwrite`
/// (`strace -f -e inject=pwrite64:signal=KILL:when=9`): page 1 counting 8 pages, 6 pages
/// written. The crash test met this once. Without its journal the file is truncated indeed.
#[test]
fn a_store_killed_while_being_created_opens_empty() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let killed = include_bytes!("testdata/killed-at-creation.pages").as_slice();
    let journal = include_bytes!("testdata/killed-at-creation.journal").as_slice();

    let path = dir.path().join("created.db");
    std::fs::write(&path, killed)?;
    std::fs::write(dir.path().join("created.db-journal"), journal)?;
    {
        let mut store = open(&path)?;
        let mut page = Vec::new();
        store.read("bob", None, 10, &mut page)?;
        assert!(page.is_empty());
        store.push("bob", record(7, Expiry::Never))?;
    }
    let mut page = Vec::new();
    open(&path)?.read("bob", None, 10, &mut page)?;
    assert_eq!(page.len(), 1);

    let alone = dir.path().join("alone.db");
    std::fs::write(&alone, killed)?;
    let error = open(&alone)
        .err()
        .ok_or("a truncated file without its journal opened")?;
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(names_file(&error, &alone), "{error}");
    Ok(())
}

#[test]
fn damaged_pages_are_reported_not_panicked_on() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("damaged.db");
    {
        let mut store = open(&path)?;
        let mut batch = WriteBatch::new();
        for n in 0..2000u32 {
            batch.pushes.push((
                "bob".into(),
                at(u64::from(n) + 1, (n % 250) as u8, Expiry::At(u64::from(n))),
            ));
        }
        store.write(batch)?;
    }
    // Overwrite everything after the first page with junk, keeping the length.
    let mut bytes = std::fs::read(&path)?;
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i % 251) as u8;
    }
    std::fs::write(&path, bytes)?;
    // Either the open or the first use reports it, as a typed error naming the file.
    match open(&path) {
        Err(error) => assert!(names_file(&error, &path), "{error}"),
        Ok(store) => {
            let mut page = Vec::new();
            let error = store
                .read("bob", None, 10_000, &mut page)
                .err()
                .ok_or("read junk")?;
            assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
        }
    }
    Ok(())
}

#[test]
fn python_snakemq_queue_is_foreign_and_untouched() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("python.db");
    {
        let conn = Connection::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE items (queue_name VARCHAR(50), uuid VARCHAR(32), data BLOB,
                                 ttl REAL, flags INTEGER);
             INSERT INTO items VALUES ('bob', '00', x'68', 60.0, 0);",
        )?;
    }
    let before = std::fs::read(&path)?;
    let error = open(&path).err().ok_or("opened a Python queue")?;
    assert!(matches!(error, StorageError::Foreign { .. }), "{error}");
    assert!(error.to_string().contains("Python snakeMQ"), "{error}");
    assert!(names_file(&error, &path), "{error}");
    assert_eq!(
        std::fs::read(&path)?,
        before,
        "a foreign file is not modified"
    );
    Ok(())
}

#[test]
fn other_application_database_is_foreign() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("other.db");
    Connection::open(&path)?.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")?;
    let error = open(&path).err().ok_or("opened a foreign db")?;
    assert!(matches!(error, StorageError::Foreign { .. }), "{error}");

    let path = dir.path().join("app.db");
    Connection::open(&path)?.pragma_update(None, "application_id", 42)?;
    let error = open(&path).err().ok_or("opened a foreign db")?;
    assert!(matches!(error, StorageError::Foreign { .. }), "{error}");
    Ok(())
}

#[test]
fn empty_file_becomes_a_store() -> Result<(), Box<dyn std::error::Error>> {
    let file = tempfile::NamedTempFile::new()?;
    let mut store = open(file.path())?;
    store.push("bob", record(1, Expiry::Never))?;
    assert_eq!(store.stats("bob")?.messages, 1);
    Ok(())
}

#[test]
fn second_open_is_locked() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q.db");
    let _first = open(&path)?;
    let error = open(&path).err().ok_or("opened twice")?;
    assert!(matches!(error, StorageError::Locked { .. }), "{error}");
    assert!(names_file(&error, &path), "{error}");
    Ok(())
}

#[test]
fn directory_is_an_io_error() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let error = open(dir.path()).err().ok_or("opened a directory")?;
    assert!(names_file(&error, dir.path()), "{error}");
    Ok(())
}

#[test]
fn while_connected_messages_are_deleted_at_open() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q.db");
    let kept;
    {
        let mut store = open(&path)?;
        store.push("bob", record(1, Expiry::WhileConnected))?;
        kept = store.push("bob", record(2, Expiry::Never))?;
        store.push("amy", record(3, Expiry::WhileConnected))?;
        assert_eq!(store.removed_at_open(), 0);
    }
    let store = open(&path)?;
    assert_eq!(store.removed_at_open(), 2);
    let mut page = Vec::new();
    store.read("bob", None, 10, &mut page)?;
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![kept]);
    assert_eq!(store.stats("bob")?.messages, 1);
    assert_eq!(store.stats("bob")?.bytes, 100);
    assert_eq!(store.peers()?.len(), 1);
    Ok(())
}

#[test]
fn normal_durability_opens_and_keeps_messages() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q.db");
    let options = SqliteOptions {
        durability: Durability::Normal,
        ..SqliteOptions::default()
    };
    let seq = SqliteStore::open(&path, options)?.push("bob", record(1, Expiry::Never))?;
    let store = SqliteStore::open(&path, options)?;
    assert_eq!(store.stats("bob")?.oldest_seq, Some(seq));
    Ok(())
}

#[test]
fn hot_queries_use_indexes() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = open(&dir.path().join("q.db"))?;
    for (query, index) in [
        (
            "SELECT seq FROM messages WHERE peer = 1 AND seq > 0 ORDER BY seq LIMIT 10",
            "PRIMARY KEY",
        ),
        (
            "SELECT COUNT(*), SUM(size) FROM messages WHERE peer = 1 AND seq IN (4, 5, 6)",
            "PRIMARY KEY (peer=? AND seq=?)",
        ),
        (
            "SELECT peer, COUNT(*), SUM(size), MAX(seq) FROM messages GROUP BY peer",
            "SCAN messages",
        ),
        (
            "SELECT deadline FROM messages WHERE deadline IS NOT NULL ORDER BY deadline LIMIT 1",
            "messages_by_deadline",
        ),
        (
            "SELECT seq FROM messages WHERE deadline IS NOT NULL AND deadline <= 5 ORDER BY deadline, seq",
            "messages_by_deadline",
        ),
        (
            "SELECT seq FROM messages WHERE kind = 2",
            "messages_while_connected",
        ),
    ] {
        let plan: Vec<String> = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {query}"))?
            .query_map([], |row| row.get::<_, String>(3))?
            .collect::<Result<_, _>>()?;
        let plan = plan.join("; ");
        assert!(plan.contains(index), "{query}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{query} sorts: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{query}: {plan}");
    }
    Ok(())
}

#[test]
fn failed_transaction_rolls_back_memory_state() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = open(&dir.path().join("q.db"))?;
    let first = store.push("bob", record(1, Expiry::Never))?;
    // A batch that fails in the middle: a too-large flag value cannot fail, so break
    // the table under it instead.
    store.conn.execute_batch("CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.flags = 99 BEGIN SELECT RAISE(ABORT, 'boom'); END")?;
    let mut batch = WriteBatch::new();
    batch
        .pushes
        .push(("bob".into(), at(first + 1, 2, Expiry::Never)));
    batch
        .pushes
        .push(("carl".into(), at(first + 2, 99, Expiry::Never)));
    assert!(store.write(batch).is_err());
    assert_eq!(store.stats("bob")?.messages, 1);
    assert_eq!(store.stats("carl")?.messages, 0);
    assert_eq!(store.peers()?.len(), 1);
    let next = store.push("bob", record(3, Expiry::Never))?;
    assert_eq!(next, first + 1, "the failed batch used no sequence numbers");
    Ok(())
}

/// A batch of removals commits without a flush of its own, and the store goes back to
/// flushing for the next batch that adds messages; the removals still survive a reopen.
#[test]
fn removal_only_batches_skip_the_flush_and_restore_it() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q.db");
    let synchronous = |store: &SqliteStore| -> Result<i64, rusqlite::Error> {
        store
            .conn
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
    };
    let mut store = open(&path)?;
    let mut pushes = WriteBatch::new();
    for n in 1..=3u8 {
        pushes
            .pushes
            .push(("bob".into(), at(u64::from(n), n, Expiry::Never)));
    }
    assert!(pushes.needs_sync());
    store.write(pushes)?;
    let mut removes = WriteBatch::new();
    removes.removes.push(("bob".into(), 1));
    removes.removes.push(("bob".into(), 2));
    assert!(!removes.needs_sync());
    store.write(removes)?;
    // 2 = FULL: the configured durability is back after the unflushed commit.
    assert_eq!(synchronous(&store)?, 2);
    drop(store);

    let store = open(&path)?;
    let mut page = Vec::new();
    store.read("bob", None, 10, &mut page)?;
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
    Ok(())
}

/// A file written with schema version 1 (rowid table plus a `(peer, seq)` index, counts
/// stored in `peers`) still opens, reads, takes pushes and removals, and its counts come
/// from the messages themselves, not from the old count columns.
#[test]
fn schema_version_1_files_still_work() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v1.db");
    {
        let conn = Connection::open(&path)?;
        conn.execute_batch(&format!(
            "PRAGMA application_id = {};
             PRAGMA user_version = 1;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE peers (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                 messages INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
                 received_next INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE messages (seq INTEGER PRIMARY KEY, peer INTEGER NOT NULL,
                 uuid BLOB NOT NULL, flags INTEGER NOT NULL, kind INTEGER NOT NULL,
                 deadline INTEGER, size INTEGER NOT NULL, data BLOB NOT NULL);
             CREATE INDEX messages_by_peer ON messages (peer, seq);
             CREATE INDEX messages_by_deadline ON messages (deadline, seq) WHERE deadline IS NOT NULL;
             CREATE INDEX messages_while_connected ON messages (seq) WHERE kind = 2;
             CREATE TABLE received (peer INTEGER NOT NULL, n INTEGER NOT NULL,
                 uuid BLOB NOT NULL, PRIMARY KEY (peer, n)) WITHOUT ROWID;
             INSERT INTO meta (key, value) VALUES ('next_seq', 8);
             -- stale counts on purpose: the store must not trust them
             INSERT INTO peers (id, name, messages, bytes) VALUES (1, 'bob', 99, 99);
             INSERT INTO messages VALUES (5, 1, zeroblob(16), 0, 0, NULL, 3, x'616263');
             INSERT INTO messages VALUES (7, 1, zeroblob(16), 0, 0, NULL, 2, x'6465');",
            schema::APPLICATION_ID
        ))?;
    }
    let mut store = open(&path)?;
    let stats = store.stats("bob")?;
    assert_eq!(
        (stats.messages, stats.bytes, stats.oldest_seq),
        (2, 5, Some(5))
    );
    assert_eq!(store.last_seq()?, Some(7));
    let seq = store.push("bob", record(9, Expiry::Never))?;
    assert_eq!(seq, 8);
    assert_eq!(store.remove("bob", &[5, 7])?, 2);
    let mut page = Vec::new();
    store.read("bob", None, 10, &mut page)?;
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [8]);
    drop(store);
    assert_eq!(open(&path)?.stats("bob")?.messages, 1);
    Ok(())
}

/// Counts are rebuilt from the messages at every open, for every peer, and sequence
/// numbers keep increasing when the newest message was removed before the restart.
#[test]
fn counts_and_numbering_survive_reopen() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q.db");
    let mut store = open(&path)?;
    let mut last = 0;
    for n in 0..30u8 {
        last = store.push(if n % 3 == 0 { "a" } else { "b" }, record(n, Expiry::Never))?;
    }
    assert_eq!(store.remove("b", &[last])?, 1);
    drop(store);
    let mut store = open(&path)?;
    assert_eq!(store.stats("a")?.messages, 10);
    assert_eq!(store.stats("b")?.messages, 19);
    assert_eq!(store.stats("b")?.bytes, 19 * 100);
    assert!(store.push("a", record(1, Expiry::Never))? > last);
    Ok(())
}

/// Numbering continues after a restart whichever messages were removed: the newest alone,
/// older ones only, or everything in several steps.
#[test]
fn numbering_survives_every_removal_pattern() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q.db");
    let mut highest = 0;
    for round in 0..4u8 {
        let mut store = open(&path)?;
        let first = store.push("bob", record(round, Expiry::Never))?;
        assert!(first > highest, "round {round}: {first} after {highest}");
        let second = store.push("bob", record(round, Expiry::Never))?;
        highest = second;
        match round {
            0 => assert_eq!(store.remove("bob", &[second])?, 1),
            1 => assert_eq!(store.remove("bob", &[first])?, 1),
            _ => {
                let mut all = Vec::new();
                store.read("bob", None, 100, &mut all)?;
                let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
                assert_eq!(store.remove("bob", &seqs)?, seqs.len());
            }
        }
        drop(store);
        assert_eq!(open(&path)?.last_seq()?, Some(highest));
    }
    Ok(())
}

/// A store opened without a log gets a zero-filled one, which SQLite takes as empty and
/// writes over: commits made on it are read back after a reopen, and after a reopen that
/// found the log already there.
#[test]
fn the_prefilled_log_is_written_over_and_read_back() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q.db");
    let wal = dir.path().join("q.db-wal");
    let mut store = open(&path)?;
    assert!(std::fs::metadata(&wal)?.len() >= 4 * 1024 * 1024);
    let first = store.push("bob", record(1, Expiry::Never))?;
    // A process that dies keeps its log: copy the files as a crash would leave them.
    let crashed = dir.path().join("crashed.db");
    std::fs::copy(&path, &crashed)?;
    std::fs::copy(&wal, dir.path().join("crashed.db-wal"))?;
    drop(store);

    for path in [&path, &crashed] {
        let store = open(path)?;
        let mut page = Vec::new();
        store.read("bob", None, 10, &mut page)?;
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [first]);
    }
    Ok(())
}
