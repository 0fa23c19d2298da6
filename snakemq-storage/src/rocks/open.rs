//! Opening a store directory: refusing what is not one (a file, a damaged or foreign
//! directory) before RocksDB gets to write anything into it, and mapping RocksDB's errors
//! to [`StorageError`]s that name the directory.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, DBCompressionType, ErrorKind, IteratorMode, Options};

use super::keys::{CF_INDEX, CF_MESSAGES, FAMILIES, FORMAT, KEY_FORMAT};
use crate::StorageError;

/// Maps a RocksDB error on the store at `path`.
pub(super) fn map_err(path: &Path, error: rocksdb::Error) -> StorageError {
    let kind = error.kind();
    let message = error.into_string();
    match kind {
        ErrorKind::Corruption => StorageError::Corrupt {
            path: path.to_owned(),
            reason: message,
        },
        // RocksDB reports its `LOCK` file held (by this process or another) as an I/O error.
        ErrorKind::IOError
            if message.contains("While lock file") || message.contains("lock hold by") =>
        {
            StorageError::Locked {
                path: path.to_owned(),
            }
        }
        ErrorKind::IOError => StorageError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(message),
        },
        _ => StorageError::Backend(format!("{}: {message}", path.display())),
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn foreign(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::Foreign {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Whether `path` holds a RocksDB database already (`true`), is to be created (`false`),
/// or must not be touched (an error).
///
/// A directory with files but no `CURRENT` is refused rather than handed to RocksDB:
/// RocksDB would take it for a new database and delete the data files it does not know.
fn precheck(path: &Path) -> Result<bool, StorageError> {
    let io = |source| StorageError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(e)),
    };
    if !meta.is_dir() {
        let mut head = [0u8; 16];
        let is_sqlite = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .is_ok()
            && head.starts_with(b"SQLite format 3");
        if is_sqlite {
            return Err(foreign(
                path,
                "a SQLite database file; a RocksDB store is a directory",
            ));
        }
        return Err(corrupt(path, "a file, not a RocksDB store directory"));
    }
    let current = path.join("CURRENT");
    match std::fs::metadata(&current) {
        Ok(meta) if meta.is_file() => return Ok(true),
        Ok(_) => return Err(corrupt(path, "CURRENT is not a file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut entries = std::fs::read_dir(path).map_err(io)?;
    match entries.next() {
        None => Ok(false),
        Some(entry) => {
            let name = entry.map_err(io)?.file_name();
            Err(corrupt(
                path,
                format!(
                    "the directory holds files ({} ...) but no CURRENT file: not a RocksDB \
                     store, or a damaged one",
                    name.to_string_lossy()
                ),
            ))
        }
    }
}

fn db_options() -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Payloads are usually compressed or small; no compression library is built in.
    options.set_compression_type(DBCompressionType::None);
    options.set_keep_log_file_num(4);
    options.set_max_log_file_size(4 << 20);
    options
}

/// Opens (or creates) the database at `path` with every column family of the store,
/// making sure an existing one is ours.
pub(super) fn open_db(path: &Path) -> Result<DB, StorageError> {
    let exists = precheck(path)?;
    let options = db_options();
    if exists {
        let families = DB::list_cf(&options, path).map_err(|e| map_err(path, e))?;
        let mut ours = FAMILIES.to_vec();
        ours.sort_unstable();
        let mut theirs: Vec<&str> = families.iter().map(String::as_str).collect();
        theirs.sort_unstable();
        if theirs != ours {
            // Not (yet) our layout: look before writing anything into it.
            check_read_only(path, &options, &families)?;
        }
    }
    let descriptors = FAMILIES.iter().map(|name| {
        let mut options = db_options();
        if [CF_MESSAGES, CF_INDEX].contains(name) {
            // A queue deletes from its front all the time; files dense with tombstones
            // would slow every read that starts there until compacted, so they are
            // compacted as soon as they are seen to be.
            options.add_compact_on_deletion_collector_factory(10_000, 5_000, 0.5);
        }
        ColumnFamilyDescriptor::new(*name, options)
    });
    let db = DB::open_cf_descriptors(&options, path, descriptors).map_err(|e| map_err(path, e))?;
    let format = db.get(KEY_FORMAT).map_err(|e| map_err(path, e))?;
    match format {
        Some(format) => check_format(path, &format)?,
        None => {
            if !is_empty(&db, path)? {
                return Err(foreign(
                    path,
                    "a RocksDB database without the snakemq-rs format marker",
                ));
            }
            // A new store (or one whose creation stopped before its marker was written).
            let mut write = rocksdb::WriteOptions::default();
            write.set_sync(true);
            db.put_opt(KEY_FORMAT, FORMAT, &write)
                .map_err(|e| map_err(path, e))?;
        }
    }
    Ok(db)
}

fn check_format(path: &Path, format: &[u8]) -> Result<(), StorageError> {
    if format == FORMAT {
        return Ok(());
    }
    let shown = String::from_utf8_lossy(format);
    if format.starts_with(b"snakemq-rs rocksdb store ") {
        return Err(corrupt(
            path,
            format!(
                "store format \"{shown}\", this build reads \"{}\"",
                String::from_utf8_lossy(FORMAT)
            ),
        ));
    }
    Err(foreign(path, format!("unknown format marker \"{shown}\"")))
}

/// Opens an existing database read-only and accepts it only if it is an empty database or
/// one of our stores.
fn check_read_only(
    path: &Path,
    options: &Options,
    families: &[String],
) -> Result<(), StorageError> {
    let db =
        DB::open_cf_for_read_only(options, path, families, false).map_err(|e| map_err(path, e))?;
    if let Some(format) = db.get(KEY_FORMAT).map_err(|e| map_err(path, e))? {
        return check_format(path, &format);
    }
    if !is_empty(&db, path)? {
        return Err(foreign(
            path,
            format!(
                "a RocksDB database of another application (column families: {})",
                families.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Whether no column family of `db` holds a key.
fn is_empty(db: &DB, path: &Path) -> Result<bool, StorageError> {
    for name in FAMILIES {
        let Some(cf) = db.cf_handle(name) else {
            continue;
        };
        if let Some(item) = db.iterator_cf(cf, IteratorMode::Start).next() {
            item.map_err(|e| map_err(path, e))?;
            return Ok(false);
        }
    }
    Ok(true)
}
