//! Migration from Python snakeMQ 1.6: its `SqliteQueuesStorage` file into any store.
//!
//! The Python file has one table, `items (queue_name, uuid, data, ttl, flags)`: the peer,
//! the message id as hex (text, or a blob of hex digits when Python 3 wrote `bytes`), the
//! payload, the remaining time to live in seconds (`NULL` for none) and the flags. Its
//! queues are in insertion (row) order, which the import keeps.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::{Expiry, QueueStore, Record, StorageError, Uuid, WriteBatch};

/// The persistent flag of snakeMQ messages: every imported message is persistent (the
/// Python store only ever held persistent messages).
const FLAG_PERSISTENT: u32 = 0x1;

/// What [`import_python_queue`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Messages written to the target store.
    pub imported: u64,
    /// Messages skipped because their time to live had run out (`ttl <= 0`).
    pub expired: u64,
    /// Every peer with imported messages and how many, in order of first appearance.
    pub peers: Vec<(String, u64)>,
}

/// Copies every message of a Python snakeMQ 1.6 `SqliteQueuesStorage` file at
/// `python_db` into `target`, as persistent messages, in the Python file's order and
/// after whatever `target` already holds. The Python file is opened read-only and left
/// unchanged.
///
/// A `NULL` ttl becomes [`Expiry::Never`], a positive one a deadline that many seconds
/// from now; a message with `ttl <= 0` had expired and is skipped (counted in
/// [`ImportReport::expired`]). The messages are written as one batch: either all of them
/// are imported or none.
///
/// A file that is not a SQLite database gives [`StorageError::Corrupt`]; a database
/// without the `items` table gives [`StorageError::Foreign`]; a row that cannot be read
/// (a message id that is not 32 hex digits, say) gives [`StorageError::Corrupt`].
pub fn import_python_queue(
    python_db: &Path,
    target: &mut dyn QueueStore,
) -> Result<ImportReport, StorageError> {
    let path = python_db;
    // Opening read-only would create nothing, but a clear "no such file" is better than
    // SQLite's "unable to open database file".
    std::fs::metadata(path).map_err(|source| StorageError::Io {
        path: path.to_owned(),
        source,
    })?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| map_err(path, e))?;
    let has_items: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'items'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map_err(|e| map_err(path, e))?
        > 0;
    if !has_items {
        return Err(StorageError::Foreign {
            path: path.to_owned(),
            reason: "no `items` table: not a Python snakeMQ queue file".to_owned(),
        });
    }

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut next_seq = target.last_seq()?.map_or(1, |last| last + 1);
    let mut batch = WriteBatch::new();
    let mut report = ImportReport::default();

    let mut stmt = conn
        .prepare("SELECT queue_name, uuid, data, ttl, flags FROM items ORDER BY rowid")
        .map_err(|e| map_err(path, e))?;
    let mut rows = stmt.query([]).map_err(|e| map_err(path, e))?;
    while let Some(row) = rows.next().map_err(|e| map_err(path, e))? {
        let corrupt = |reason: String| StorageError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let peer = match row.get_ref(0).map_err(|e| map_err(path, e))? {
            ValueRef::Text(text) | ValueRef::Blob(text) => String::from_utf8(text.to_vec())
                .map_err(|_| corrupt("a queue name is not UTF-8".to_owned()))?,
            _ => return Err(corrupt("a queue name is missing".to_owned())),
        };
        let uuid = match row.get_ref(1).map_err(|e| map_err(path, e))? {
            ValueRef::Text(hex) | ValueRef::Blob(hex) => parse_uuid(hex)
                .ok_or_else(|| corrupt(format!("message id {hex:?} is not 32 hex digits")))?,
            _ => return Err(corrupt("a message id is missing".to_owned())),
        };
        let data = match row.get_ref(2).map_err(|e| map_err(path, e))? {
            ValueRef::Blob(data) | ValueRef::Text(data) => Bytes::copy_from_slice(data),
            ValueRef::Null => Bytes::new(),
            _ => return Err(corrupt("a message payload is not a blob".to_owned())),
        };
        let expiry = match row.get_ref(3).map_err(|e| map_err(path, e))? {
            ValueRef::Null => Expiry::Never,
            ValueRef::Real(ttl) => match ttl_deadline(now_ms, ttl) {
                Some(deadline) => Expiry::At(deadline),
                None => {
                    report.expired += 1;
                    continue;
                }
            },
            #[allow(clippy::cast_precision_loss)] // a ttl in seconds, far below 2^52
            ValueRef::Integer(ttl) => match ttl_deadline(now_ms, ttl as f64) {
                Some(deadline) => Expiry::At(deadline),
                None => {
                    report.expired += 1;
                    continue;
                }
            },
            _ => return Err(corrupt("a time to live is not a number".to_owned())),
        };
        let flags = match row.get_ref(4).map_err(|e| map_err(path, e))? {
            ValueRef::Null => 0,
            ValueRef::Integer(flags) => {
                u32::try_from(flags).map_err(|_| corrupt(format!("flags {flags} out of range")))?
            }
            _ => return Err(corrupt("flags are not an integer".to_owned())),
        };
        let record = Record {
            seq: next_seq,
            uuid,
            data,
            flags: flags | FLAG_PERSISTENT,
            expiry,
        };
        next_seq += 1;
        report.imported += 1;
        match report.peers.iter_mut().find(|(name, _)| *name == peer) {
            Some((_, count)) => *count += 1,
            None => report.peers.push((peer.clone(), 1)),
        }
        batch.pushes.push((peer.into(), record));
    }
    if !batch.is_empty() {
        target.write(batch)?;
    }
    Ok(report)
}

/// The deadline of a message with `ttl` seconds left, or `None` when it has expired.
fn ttl_deadline(now_ms: u64, ttl: f64) -> Option<u64> {
    // NaN counts as expired too.
    if ttl.is_nan() || ttl <= 0.0 {
        return None;
    }
    let ms = (ttl * 1000.0).ceil();
    // Saturating float to integer conversion: a huge ttl is simply "very late".
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = ms as u64;
    Some(now_ms.saturating_add(ms))
}

/// 32 hex digits (either case) to 16 bytes.
fn parse_uuid(hex: &[u8]) -> Option<Uuid> {
    if hex.len() != 32 {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (byte, pair) in uuid.iter_mut().zip(hex.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(uuid)
}

/// SQLite errors on the Python file: damage is [`StorageError::Corrupt`], the rest names
/// the file too.
fn map_err(path: &Path, error: rusqlite::Error) -> StorageError {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StorageError::Corrupt {
            path: path.to_owned(),
            reason: error.to_string(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StorageError::Locked {
            path: path.to_owned(),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::PermissionDenied) => {
            StorageError::Io {
                path: path.to_owned(),
                source: std::io::Error::other(error.to_string()),
            }
        }
        _ => StorageError::Backend(format!("{}: {error}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[test]
    fn uuid_parsing() {
        assert_eq!(
            parse_uuid(b"000102030405060708090a0b0c0d0e0F").map(|u| u[15]),
            Some(15)
        );
        assert_eq!(parse_uuid(b"00"), None);
        assert_eq!(parse_uuid(b"zz0102030405060708090a0b0c0d0e0f"), None);
    }

    #[test]
    fn ttl_rules() {
        assert_eq!(ttl_deadline(1000, 1.5), Some(2500));
        assert_eq!(ttl_deadline(1000, 0.0), None);
        assert_eq!(ttl_deadline(1000, -3.0), None);
        assert_eq!(ttl_deadline(1000, f64::NAN), None);
        assert_eq!(ttl_deadline(1000, f64::INFINITY), Some(u64::MAX));
    }

    #[test]
    fn imports_in_row_order_and_skips_expired() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("py.db");
        {
            let conn = Connection::open(&path)?;
            conn.execute_batch(
                "CREATE TABLE items (queue_name VARCHAR(50), uuid VARCHAR(32), data BLOB,
                                     ttl REAL, flags INTEGER);
                 INSERT INTO items VALUES ('bob', '000102030405060708090a0b0c0d0e0f', x'61', NULL, 1);
                 INSERT INTO items VALUES ('carol', x'3030303030303030303030303030303030303030303030303030303030303031', x'62', 60.0, 1);
                 INSERT INTO items VALUES ('bob', '00000000000000000000000000000002', x'63', 0.0, 1);
                 INSERT INTO items VALUES ('bob', '00000000000000000000000000000003', x'64', NULL, 0);",
            )?;
        }
        let mut store = MemoryStore::new();
        let report = import_python_queue(&path, &mut store)?;
        assert_eq!(report.imported, 3);
        assert_eq!(report.expired, 1);
        assert_eq!(
            report.peers,
            vec![("bob".to_owned(), 2), ("carol".to_owned(), 1)]
        );
        let mut out = Vec::new();
        store.read("bob", None, 10, &mut out)?;
        let data: Vec<&[u8]> = out.iter().map(|r| &r.data[..]).collect();
        assert_eq!(data, vec![&b"a"[..], &b"d"[..]]);
        assert!(out.iter().all(|r| r.flags & FLAG_PERSISTENT != 0));
        assert_eq!(out.first().map(|r| r.expiry), Some(Expiry::Never));
        out.clear();
        store.read("carol", None, 10, &mut out)?;
        assert!(matches!(out.first().map(|r| r.expiry), Some(Expiry::At(_))));
        Ok(())
    }

    #[test]
    fn garbage_and_foreign_files_are_errors() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x5a; 8192])?;
        let mut store = MemoryStore::new();
        assert!(matches!(
            import_python_queue(&garbage, &mut store),
            Err(StorageError::Corrupt { .. })
        ));
        let other = dir.path().join("other.db");
        Connection::open(&other)?.execute_batch("CREATE TABLE t (x)")?;
        assert!(matches!(
            import_python_queue(&other, &mut store),
            Err(StorageError::Foreign { .. })
        ));
        assert!(matches!(
            import_python_queue(&dir.path().join("missing.db"), &mut store),
            Err(StorageError::Io { .. })
        ));
        Ok(())
    }
}
