//! The three loops. Each creates a fresh database or file in the given directory, times only
//! the loop itself, and removes what it created on the way out (also when it fails).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};

/// The time the loop took, or a one-line description of what failed.
pub(crate) type Outcome = Result<Duration, String>;

/// Removes the listed files and directories when dropped, so a failed run leaves nothing
/// behind either. Declared before the handle that uses them, it drops after that handle.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            // NotFound is the normal case for an SQLite side file that never appeared.
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

/// Removes an SQLite database and its side files (log, shared memory, journal).
fn sqlite_cleanup(path: &Path) -> Cleanup {
    let side = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    Cleanup(vec![
        path.to_owned(),
        side("-wal"),
        side("-shm"),
        side("-journal"),
    ])
}

/// A path in `dir` that does not exist yet, named after this process so parallel runs in
/// one directory do not collide. `dir` itself must exist: the point is to measure *that*
/// file system, so a typo should fail rather than silently create a directory elsewhere.
fn fresh_path(dir: &Path, extension: &str) -> Result<PathBuf, String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    let path = dir.join(format!(
        "store-baselines-{}.{extension}",
        std::process::id()
    ));
    if path.exists() {
        return Err(format!("{}: already exists", path.display()));
    }
    Ok(path)
}

/// Prefixes an error with the path it concerns.
fn at<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// The content of message `n`: `size` bytes, the first few carrying `n` so rows differ.
fn payload(n: u64, size: usize) -> Vec<u8> {
    let mut data = vec![0xab; size];
    for (byte, source) in data.iter_mut().zip(n.to_le_bytes()) {
        *byte = source;
    }
    data
}

/// The table of the SQLite store (`snakemq-storage/src/sqlite/schema.rs`) without its
/// secondary indexes: the ceiling is a plain insert+delete loop, so it pays for the row and
/// its primary key only.
const SQLITE_SCHEMA: &str = "CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    peer INTEGER NOT NULL,
    uuid BLOB NOT NULL,
    data BLOB NOT NULL,
    flags INTEGER NOT NULL,
    expiry INTEGER
)";

/// A deadline in milliseconds, as the store keeps for a message with a ttl.
const EXPIRY: i64 = 1_900_000_000_000;

/// `count` rows in and out of an SQLite table in WAL mode with `synchronous = FULL`: one
/// transaction inserts `batch` rows, the next deletes them one statement per row (as a queue
/// acknowledges messages), repeated until `count` rows went through. The connection is set up
/// as the SQLite store sets up its own (exclusive locking, WAL), so the ratio compares like
/// with like.
pub(crate) fn rusqlite_loop(dir: &Path, count: usize, size: usize, batch: usize) -> Outcome {
    let path = fresh_path(dir, "db")?;
    let _cleanup = sqlite_cleanup(&path);
    let err = at(&path);

    let mut conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(&err)?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(&err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(&err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "{}: could not switch to WAL (journal mode is {mode})",
            path.display()
        ));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(&err)?;
    conn.execute_batch(SQLITE_SCHEMA).map_err(&err)?;

    let count = count as u64;
    let batch = batch as u64;
    let started = Instant::now();
    let mut done = 0u64;
    while done < count {
        let end = count.min(done + batch);
        let tx = conn.transaction().map_err(&err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (seq, peer, uuid, data, flags, expiry) \
                     VALUES (?1, 1, ?2, ?3, 1, ?4)",
                )
                .map_err(&err)?;
            for seq in done..end {
                let uuid = u128::from(seq).to_be_bytes();
                insert
                    .execute(params![seq, uuid, payload(seq, size), EXPIRY])
                    .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        let tx = conn.transaction().map_err(&err)?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM messages WHERE seq = ?1")
                .map_err(&err)?;
            for seq in done..end {
                delete.execute([seq]).map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        done = end;
    }
    let elapsed = started.elapsed();
    conn.close().map_err(|(_, e)| err(e))?;
    Ok(elapsed)
}

/// [`rusqlite_loop`]'s work done by our `SqliteStore` (default options: `Durability::Full`):
/// one `WriteBatch` of `batch` pushes, then one of their removals.
pub(crate) fn sqlite_store_loop(dir: &Path, count: usize, size: usize, batch: usize) -> Outcome {
    use snakemq_storage::{Expiry, QueueStore, Record, SqliteOptions, SqliteStore, WriteBatch};

    let path = fresh_path(dir, "db")?;
    let _cleanup = sqlite_cleanup(&path);
    let err = at(&path);
    let mut store = SqliteStore::open(&path, SqliteOptions::default()).map_err(&err)?;
    let peer: std::sync::Arc<str> = "bob".into();
    let count = count as u64;
    let batch = batch as u64;
    let started = Instant::now();
    let mut done = 0u64;
    while done < count {
        let end = count.min(done + batch);
        let mut pushes = WriteBatch::new();
        let mut removes = WriteBatch::new();
        for seq in done + 1..=end {
            let record = Record {
                seq,
                uuid: u128::from(seq).to_be_bytes(),
                data: bytes::Bytes::from(payload(seq, size)),
                flags: 1,
                expiry: Expiry::Never,
            };
            pushes.pushes.push((peer.clone(), record));
            removes.removes.push((peer.clone(), seq));
        }
        store.write(pushes).map_err(&err)?;
        store.write(removes).map_err(&err)?;
        done = end;
    }
    let elapsed = started.elapsed();
    drop(store);
    Ok(elapsed)
}

/// `count` appends of `size` bytes to one new file, each followed by `File::sync_all`
/// (fsync): what one producer awaiting each durable send cannot beat on this file system.
pub(crate) fn fsync_loop(dir: &Path, count: usize, size: usize) -> Outcome {
    let path = fresh_path(dir, "fsync")?;
    let _cleanup = Cleanup(vec![path.clone()]);
    let err = at(&path);
    let mut file = File::options()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(&err)?;
    let data = payload(0, size);
    let started = Instant::now();
    for _ in 0..count {
        file.write_all(&data).map_err(&err)?;
        file.sync_all().map_err(&err)?;
    }
    let elapsed = started.elapsed();
    drop(file);
    Ok(elapsed)
}

/// `count` puts (16-byte big-endian sequential keys, `size`-byte values) in synced write
/// batches of `batch`: the rust-rocksdb loop equivalent to
/// `db_bench --benchmarks=fillseq --sync=1 --batch_size=100 --key_size=16 --value_size=SIZE`.
/// Compression is off, as in the RocksDB store. `None`: this build lacks the feature.
#[cfg(feature = "rocksdb")]
pub(crate) fn rocksdb_loop(dir: &Path, count: usize, size: usize, batch: usize) -> Option<Outcome> {
    Some(rocksdb_fill(dir, count, size, batch))
}

/// `None`: this build has no RocksDB (feature `rocksdb`).
#[cfg(not(feature = "rocksdb"))]
pub(crate) fn rocksdb_loop(
    _dir: &Path,
    _count: usize,
    _size: usize,
    _batch: usize,
) -> Option<Outcome> {
    None
}

#[cfg(feature = "rocksdb")]
fn rocksdb_fill(dir: &Path, count: usize, size: usize, batch: usize) -> Outcome {
    use rocksdb::{DB, DBCompressionType, Options, WriteBatch, WriteOptions};

    let path = fresh_path(dir, "rocksdb")?;
    let _cleanup = Cleanup(vec![path.clone()]);
    let err = at(&path);
    let mut options = Options::default();
    options.create_if_missing(true);
    options.set_compression_type(DBCompressionType::None);
    let db = DB::open(&options, &path).map_err(&err)?;
    let mut write = WriteOptions::default();
    write.set_sync(true);

    let count = count as u64;
    let batch = batch as u64;
    let started = Instant::now();
    let mut done = 0u64;
    while done < count {
        let end = count.min(done + batch);
        let mut puts = WriteBatch::default();
        for n in done..end {
            puts.put(u128::from(n).to_be_bytes(), payload(n, size));
        }
        db.write_opt(puts, &write).map_err(&err)?;
        done = end;
    }
    let elapsed = started.elapsed();
    drop(db);
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_empty(dir: &Path) -> std::io::Result<bool> {
        Ok(std::fs::read_dir(dir)?.next().is_none())
    }

    #[test]
    fn rusqlite_loop_runs_a_partial_last_batch_and_cleans_up() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        rusqlite_loop(dir.path(), 25, 16, 10)?;
        assert!(is_empty(dir.path()).map_err(|e| e.to_string())?);
        Ok(())
    }

    #[test]
    fn fsync_loop_cleans_up() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        fsync_loop(dir.path(), 3, 0)?;
        assert!(is_empty(dir.path()).map_err(|e| e.to_string())?);
        Ok(())
    }

    #[test]
    fn a_missing_directory_is_an_error() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let missing = dir.path().join("nope");
        assert!(fsync_loop(&missing, 1, 1).is_err());
        assert!(rusqlite_loop(&missing, 1, 1, 1).is_err());
        assert!(!missing.exists());
        Ok(())
    }

    #[test]
    fn payloads_differ_and_have_the_size_asked() {
        assert_eq!(payload(1, 64).len(), 64);
        assert_ne!(payload(1, 64), payload(2, 64));
        assert_eq!(payload(1, 3), vec![1, 0, 0]);
        assert!(payload(1, 0).is_empty());
    }
}
