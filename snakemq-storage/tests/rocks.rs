//! The RocksDB store given damaged, foreign or wrong paths: always a typed error naming
//! the path, never a panic, and never a write into what is not ours.
#![cfg(feature = "rocksdb")]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use snakemq_storage::{Expiry, NewRecord, QueueStore, RocksOptions, RocksStore, StorageError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn place() -> Result<(tempfile::TempDir, PathBuf), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("queue");
    Ok((dir, path))
}

fn new(n: u64) -> NewRecord {
    NewRecord {
        uuid: u128::from(n).to_be_bytes(),
        data: Bytes::from(format!("message {n}")),
        flags: 0,
        expiry: Expiry::Never,
    }
}

/// A store at `path` with `count` messages to "a", each its own synced commit.
fn filled(path: &Path, count: u64) -> Result<(), StorageError> {
    let mut store = RocksStore::open(path, RocksOptions::default())?;
    for n in 0..count {
        store.push("a", new(n))?;
    }
    Ok(())
}

fn open(path: &Path) -> Result<RocksStore, StorageError> {
    RocksStore::open(path, RocksOptions::default())
}

/// The error of opening `path`, checked to name it.
fn open_error(path: &Path) -> Result<StorageError, Box<dyn std::error::Error>> {
    match open(path) {
        Ok(_) => Err(format!("{} opened", path.display()).into()),
        Err(error) => {
            let shown = error.to_string();
            assert!(
                shown.contains(&path.display().to_string()),
                "error names the path: {shown}"
            );
            Ok(error)
        }
    }
}

fn files_starting(path: &Path, prefix: &str) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

#[test]
fn a_regular_file_is_refused() -> TestResult {
    let (_dir, path) = place()?;
    std::fs::write(&path, b"just some text")?;
    assert!(matches!(open_error(&path)?, StorageError::Corrupt { .. }));
    let mut sqlite = b"SQLite format 3\0".to_vec();
    sqlite.resize(4096, 0);
    std::fs::write(&path, &sqlite)?;
    assert!(matches!(open_error(&path)?, StorageError::Foreign { .. }));
    assert_eq!(std::fs::read(&path)?, sqlite, "left untouched");
    Ok(())
}

#[test]
fn a_directory_of_other_files_is_refused_untouched() -> TestResult {
    let (_dir, path) = place()?;
    std::fs::create_dir(&path)?;
    std::fs::write(path.join("notes.txt"), b"hello")?;
    assert!(matches!(open_error(&path)?, StorageError::Corrupt { .. }));
    assert_eq!(std::fs::read_dir(&path)?.count(), 1);
    Ok(())
}

#[test]
fn an_empty_directory_becomes_a_store() -> TestResult {
    let (_dir, path) = place()?;
    std::fs::create_dir(&path)?;
    let mut store = open(&path)?;
    store.push("a", new(1))?;
    Ok(())
}

#[test]
fn a_missing_current_file_is_refused_and_the_data_kept() -> TestResult {
    let (_dir, path) = place()?;
    filled(&path, 10)?;
    std::fs::remove_file(path.join("CURRENT"))?;
    let before: Vec<_> = std::fs::read_dir(&path)?.collect::<Result<_, _>>()?;
    assert!(matches!(open_error(&path)?, StorageError::Corrupt { .. }));
    let after: Vec<_> = std::fs::read_dir(&path)?.collect::<Result<_, _>>()?;
    assert_eq!(before.len(), after.len(), "nothing created or deleted");
    assert!(!files_starting(&path, "MANIFEST")?.is_empty());
    Ok(())
}

#[test]
fn a_current_file_naming_a_missing_manifest_is_an_error() -> TestResult {
    let (_dir, path) = place()?;
    filled(&path, 3)?;
    std::fs::write(path.join("CURRENT"), b"MANIFEST-999999\n")?;
    let error = open_error(&path)?;
    assert!(
        matches!(
            error,
            StorageError::Corrupt { .. } | StorageError::Io { .. }
        ),
        "{error:?}"
    );
    Ok(())
}

#[test]
fn a_truncated_manifest_is_corrupt() -> TestResult {
    let (_dir, path) = place()?;
    filled(&path, 10)?;
    let manifests = files_starting(&path, "MANIFEST")?;
    let manifest = manifests.last().ok_or("no MANIFEST")?;
    let len = std::fs::metadata(manifest)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(manifest)?
        .set_len(len / 3)?;
    let error = open_error(&path)?;
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error:?}");
    Ok(())
}

#[test]
fn an_empty_manifest_is_corrupt() -> TestResult {
    let (_dir, path) = place()?;
    filled(&path, 3)?;
    for manifest in files_starting(&path, "MANIFEST")? {
        std::fs::OpenOptions::new()
            .write(true)
            .open(manifest)?
            .set_len(0)?;
    }
    let error = open_error(&path)?;
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error:?}");
    Ok(())
}

#[test]
fn every_file_zero_filled_is_an_error() -> TestResult {
    let (_dir, path) = place()?;
    filled(&path, 10)?;
    for entry in std::fs::read_dir(&path)? {
        let file = entry?.path();
        let len = std::fs::metadata(&file)?.len();
        std::fs::write(&file, vec![0u8; usize::try_from(len)?.max(64)])?;
    }
    let error = open_error(&path)?;
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error:?}");
    Ok(())
}

#[test]
fn garbage_in_every_file_is_an_error() -> TestResult {
    let (_dir, path) = place()?;
    filled(&path, 10)?;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for entry in std::fs::read_dir(&path)? {
        let file = entry?.path();
        let len = usize::try_from(std::fs::metadata(&file)?.len())?.max(64);
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(&file, garbage)?;
    }
    let error = open_error(&path)?;
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error:?}");
    Ok(())
}

/// A log cut short (a crash in the middle of a write) is recovered up to its last whole
/// commit: the store opens with a prefix of the queue, its counts matching its contents.
#[test]
fn a_truncated_log_keeps_the_commits_before_the_cut() -> TestResult {
    let (_dir, path) = place()?;
    filled(&path, 50)?;
    let logs = files_starting(&path, "0")?;
    let log = logs
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .ok_or("no write-ahead log")?;
    let len = std::fs::metadata(log)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(len / 2)?;
    let mut store = open(&path)?;
    let mut records = Vec::new();
    store.read("a", None, usize::MAX, &mut records)?;
    assert!(
        !records.is_empty() && records.len() < 50,
        "{} kept",
        records.len()
    );
    for (n, record) in records.iter().enumerate() {
        assert_eq!(record.data, new(n as u64).data, "a prefix, in order");
    }
    let stats = store.stats("a")?;
    assert_eq!(stats.messages, records.len() as u64);
    assert_eq!(stats.oldest_seq, records.first().map(|r| r.seq));
    let next = store.push("a", new(99))?;
    assert!(records.iter().all(|r| r.seq < next));
    Ok(())
}

#[test]
fn a_foreign_rocksdb_database_is_refused_untouched() -> TestResult {
    let (_dir, path) = place()?;
    {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = rocksdb::DB::open(&options, &path)?;
        db.put(b"their key", b"their value")?;
    }
    assert!(matches!(open_error(&path)?, StorageError::Foreign { .. }));
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path)?;
    assert_eq!(
        families,
        vec!["default".to_owned()],
        "no column family added"
    );
    Ok(())
}
