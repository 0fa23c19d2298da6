//! Opening a store file: recognising damaged and foreign files before touching them,
//! creating the schema, and turning SQLite errors into [`StorageError`]s that name the file.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::StorageError;

/// `PRAGMA application_id` of a snakemq store: "SnkQ". Lets a foreign SQLite file be
/// told apart from ours without guessing from table names.
pub(super) const APPLICATION_ID: i32 = 0x536E_6B51;

/// `PRAGMA user_version`: the schema version this code writes.
pub(super) const SCHEMA_VERSION: i32 = 2;

/// Versions this code reads. Version 1 kept messages in a rowid table keyed by `seq` with
/// an index on `(peer, seq)`, and per-peer counts in `peers`; every query works on both
/// layouts (they name columns, never indexes, and the old count columns are ignored):
/// version 2 just writes fewer pages per message.
const READABLE_VERSIONS: [i32; 2] = [1, 2];

/// The whole schema, created in one transaction.
///
/// - `messages`: one row per queued message, keyed by `(peer, seq)` in a `WITHOUT ROWID`
///   table: a peer's queue is one ordered key range, and a push or a removal touches one
///   b-tree (plus the deadline index for messages with a TTL), not a table and an index.
///   Sequence numbers are store-wide, so they still order messages across peers. The
///   payload is the last column so that reading the small columns never touches its
///   overflow pages; `size` is its length, so removing a message updates the byte count
///   without reading it.
/// - `peers`: one row per peer ever seen (its id keys the other tables). The per-peer
///   message and byte counts live in memory only: they are counted once at open (one
///   ordered pass over `messages`) and kept up to date by every write, so a commit that adds
///   a message writes the `messages` page(s) and nothing else. That page count is what a
///   commit's fsync pays for.
/// - `received`: ids of received messages, numbered per peer so that keeping the last N is
///   a range delete.
/// - `meta`: the next sequence number, so that numbers keep increasing after the queue
///   was emptied and the process restarted. Written only by commits that remove messages:
///   until then the highest number is still in `messages`, where the open finds it.
const SCHEMA: &str = "
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE peers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE messages (
    peer INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    uuid BLOB NOT NULL,
    flags INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    deadline INTEGER,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (peer, seq)
) WITHOUT ROWID;
CREATE INDEX messages_by_deadline ON messages (deadline, seq) WHERE deadline IS NOT NULL;
CREATE INDEX messages_while_connected ON messages (seq) WHERE kind = 2;
CREATE TABLE received (
    peer INTEGER NOT NULL,
    n INTEGER NOT NULL,
    uuid BLOB NOT NULL,
    PRIMARY KEY (peer, n)
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('next_seq', 1);
";

/// Statements that fail when a table or column the code relies on is missing.
const SCHEMA_PROBES: [&str; 4] = [
    "SELECT key, value FROM meta LIMIT 0",
    "SELECT id, name FROM peers LIMIT 0",
    "SELECT seq, peer, uuid, flags, kind, deadline, size, data FROM messages LIMIT 0",
    "SELECT peer, n, uuid FROM received LIMIT 0",
];

/// Turns a SQLite error on the file at `path` into a storage error naming it.
pub(super) fn map_err(path: &Path, error: rusqlite::Error) -> StorageError {
    let code = error.sqlite_error_code();
    match code {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StorageError::Corrupt {
            path: path.to_owned(),
            reason: error.to_string(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StorageError::Locked {
            path: path.to_owned(),
        },
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly,
        ) => StorageError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(error.to_string()),
        },
        _ => match error {
            // A value of the wrong type or range in one of our own tables: the file was
            // damaged or written by something else.
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StorageError::Corrupt {
                path: path.to_owned(),
                reason: error.to_string(),
            },
            other => StorageError::Backend(format!("{}: {other}", path.display())),
        },
    }
}

/// Checks the first bytes of an existing file before SQLite sees it, so that garbage,
/// zero-filled and truncated files are reported as such instead of as whatever SQLite
/// makes of them (a truncated file may otherwise open fine and fail at the first read of
/// a missing page).
pub(super) fn precheck_file(path: &Path) -> Result<(), StorageError> {
    let io = |source| StorageError::Io {
        path: path.to_owned(),
        source,
    };
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        // SQLite treats an empty file as an empty database: a new store.
        return Ok(());
    }
    let mut header = [0u8; 100];
    if len < header.len() as u64 {
        return Err(corrupt(format!(
            "{len} bytes, shorter than a SQLite header"
        )));
    }
    file.read_exact(&mut header).map_err(io)?;
    if !header.starts_with(b"SQLite format 3\0") {
        return Err(corrupt("not a SQLite database (bad header)".into()));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(corrupt(format!("invalid page size {page_size}")));
    }
    // The page count in the header is only trustworthy when its "version valid for"
    // matches the change counter (file format rule), and only compared when no log is
    // pending: a checkpoint interrupted by a crash can leave a longer header than file,
    // which SQLite repairs from the write-ahead log; and so can a crash inside the commit
    // that creates a new store (made before the switch to WAL, so with a rollback
    // journal), which SQLite rolls back from that journal.
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    let count_valid = header[24..28] == header[92..96] && pages > 0;
    if count_valid && !log_pending(path) && len < pages.saturating_mul(page_size) {
        return Err(corrupt(format!(
            "truncated: the header counts {pages} pages of {page_size} bytes, the file has {len} bytes"
        )));
    }
    Ok(())
}

/// Whether a write-ahead log or a rollback journal with content lies beside the store.
fn log_pending(path: &Path) -> bool {
    ["-wal", "-journal"].iter().any(|suffix| {
        let mut log = path.as_os_str().to_owned();
        log.push(suffix);
        std::fs::metadata(log).is_ok_and(|m| m.len() > 0)
    })
}

/// Opens the connection, takes the file for this store alone, recognises a foreign file
/// before writing anything to it, and creates the schema in a new file.
pub(super) fn open_connection(path: &Path) -> Result<Connection, StorageError> {
    precheck_file(path)?;
    let err = |e| map_err(path, e);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    // The store caches per-peer counts and the next sequence number in memory: a second
    // writer would make them wrong. Exclusive locking makes a second open fail with
    // `Locked` instead (and lets WAL run without shared memory).
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(err)?;
    conn.execute_batch("BEGIN EXCLUSIVE").map_err(err)?;
    let checked = check_or_create(&conn, path);
    match checked {
        Ok(()) => conn.execute_batch("COMMIT").map_err(err)?,
        Err(e) => {
            // Nothing was written; the rollback only releases the lock.
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    // Switched only now that the file is known to be ours: a foreign file stays as it was.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Backend(format!(
            "{}: could not switch to WAL (journal mode is {mode})",
            path.display()
        )));
    }
    prefill_wal(path).map_err(|source| StorageError::Io {
        path: wal_path(path),
        source,
    })?;
    Ok(conn)
}

/// Bytes of zeros laid down as the write-ahead log of a store that has none: a little more
/// than the log reaches before SQLite's automatic checkpoint (1000 pages) starts it over.
const WAL_PREFILL: usize = 4608 * 1024;

fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// Gives a store opened without a write-ahead log (new, or closed cleanly, which deletes
/// it) one made of written zeros.
///
/// Why: until its first checkpoint, SQLite appends to the log, and on ext4 an fsync after
/// a 4 KiB append that allocates a block costs a journal commit (about 3.5 ms here) where
/// an fsync after overwriting allocated blocks costs about 0.25 ms; so a freshly opened
/// store committed ten times slower for its first thousand commits. SQLite reads a log
/// whose header is not valid as empty and writes from its start, so it overwrites these
/// zeros. A log that already holds something (left by a crash) is never touched: SQLite
/// has just recovered it.
fn prefill_wal(path: &Path) -> std::io::Result<()> {
    use std::io::Write;

    let wal = wal_path(path);
    match std::fs::metadata(&wal) {
        Ok(meta) if meta.len() > 0 => return Ok(()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&wal)?;
    let zeros = vec![0u8; 64 * 1024];
    for _ in 0..WAL_PREFILL / zeros.len() {
        file.write_all(&zeros)?;
    }
    file.sync_all()
}

fn check_or_create(conn: &Connection, path: &Path) -> Result<(), StorageError> {
    let err = |e| map_err(path, e);
    let foreign = |reason: String| StorageError::Foreign {
        path: path.to_owned(),
        reason,
    };
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(err)?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(err)?;
    if app_id == APPLICATION_ID {
        if !READABLE_VERSIONS.contains(&version) {
            return Err(StorageError::Corrupt {
                path: path.to_owned(),
                reason: format!(
                    "schema version {version}, this build reads versions {READABLE_VERSIONS:?}"
                ),
            });
        }
        for probe in SCHEMA_PROBES {
            conn.prepare(probe).map_err(|e| StorageError::Corrupt {
                path: path.to_owned(),
                reason: format!("damaged schema: {e}"),
            })?;
        }
        return Ok(());
    }
    if app_id != 0 {
        return Err(foreign(format!(
            "SQLite database with application id {app_id:#010x}"
        )));
    }
    let mut statement = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .map_err(err)?;
    let tables = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    if tables.iter().any(|t| t == "items") {
        return Err(foreign(
            "a Python snakeMQ queue file (table `items`), not a snakemq-rs store".into(),
        ));
    }
    if !tables.is_empty() || version != 0 {
        return Err(foreign(format!(
            "SQLite database of another application (tables: {})",
            tables.join(", ")
        )));
    }
    conn.execute_batch(SCHEMA).map_err(err)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(err)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err)?;
    Ok(())
}
