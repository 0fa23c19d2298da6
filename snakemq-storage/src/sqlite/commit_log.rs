//! The commit log in front of a SQLite store in `Full` durability.
//!
//! Why: a producer that awaits each durable send pays one commit per message. A SQLite
//! commit writes a 4 KiB page frame (plus its header) to the WAL and fsyncs it, and the
//! per-message SQLite work sits on the path of every such send. Measured on the project's
//! machine (`docs/ARCHITECTURE.md`, "The SQLite store's commit log"), one `O_DIRECT | O_DSYNC` write of a 4 KiB block
//! in a preallocated file takes 1.3-1.7x less time than a buffered write + fsync, and
//! leaving SQLite's part to later, in groups, takes the rest of its work off that path
//! (an acknowledged message's insert and delete then cancel out before SQLite sees either).
//!
//! So a batch becomes durable by one write of a checksummed record here; the SQLite store
//! applies it to its tables later (without a sync of its own), and syncs SQLite only when
//! this log is full, after which the log starts over. After a crash, the records of the
//! current epoch are replayed into SQLite at open (idempotently: a push that is already
//! there is skipped, a removal of a missing message is a no-op).
//!
//! Layout (little-endian), every write a whole number of 4 KiB blocks at a block offset:
//! - block 0, the header: magic `SNKQLOG1`, the epoch (u64), a CRC-32 of both;
//! - from block 1, records: magic `SNKR`, epoch (u64), record number in the epoch (u64),
//!   payload length (u32), CRC-32 of epoch, number, length and payload (u32), the payload
//!   (an encoded [`WriteBatch`], see `log_codec.rs`), zero padding to the block.
//!
//! Replay reads records until the first one that is not the next of the current epoch
//! (stale records of an earlier epoch, a torn write, zeros). A reset writes a new header
//! with the next epoch, which makes every older record stale at once.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::log_codec;
use crate::{StorageError, WriteBatch};

/// The unit of every write (and the alignment `O_DIRECT` needs).
const BLOCK: usize = 4096;
/// Size of a new log. About 2000 single-message records, or 70 groups of 1024 small
/// messages, between two SQLite syncs.
const CAPACITY: u64 = 8 << 20;
const HEADER_MAGIC: [u8; 8] = *b"SNKQLOG1";
const RECORD_MAGIC: [u8; 4] = *b"SNKR";
/// magic, epoch, number, payload length, CRC.
const RECORD_HEAD: usize = 4 + 8 + 8 + 4 + 4;

/// The log file next to the database `db`.
pub(super) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-commitlog");
    PathBuf::from(name)
}

/// An open commit log.
pub(super) struct CommitLog {
    file: File,
    path: PathBuf,
    /// Whether `file` bypasses the page cache (`O_DIRECT`); not every file system allows it.
    direct: bool,
    epoch: u64,
    /// Number of the next record in this epoch.
    number: u64,
    /// Offset of the next record.
    offset: u64,
    capacity: u64,
    /// The record being written, then copied to `aligned`.
    scratch: Vec<u8>,
    /// Storage for block-aligned writes (the aligned part starts at `align_offset`).
    aligned: Vec<u8>,
}

impl std::fmt::Debug for CommitLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitLog")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .field("offset", &self.offset)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

/// What [`CommitLog::append`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Appended {
    /// The record is on disk.
    Durable,
    /// The log has no room for it: sync the store, [`CommitLog::reset`], and try again.
    Full,
    /// Larger than a quarter of the log: better committed to the store directly.
    TooLarge,
}

/// A log found at open.
#[derive(Debug)]
pub(super) struct Recovered {
    /// Its epoch.
    pub(super) epoch: u64,
    /// The records of that epoch, oldest first.
    pub(super) batches: Vec<WriteBatch>,
}

impl CommitLog {
    /// What the log of `db` holds, without opening it for writing: its epoch and the
    /// records of that epoch, oldest first. `None` when there is no log.
    pub(super) fn recover(db: &Path) -> Result<Option<Recovered>, StorageError> {
        let path = path_for(db);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StorageError::Io { path, source }),
        };
        read_records(&path, &bytes).map(Some)
    }

    /// Opens the log of `db` for records of a new epoch: the one [`CommitLog::recover`]
    /// found (`found`, whose records the caller has replayed and synced), or a new one.
    pub(super) fn create(db: &Path, found: Option<&Recovered>) -> Result<CommitLog, StorageError> {
        let path = path_for(db);
        let io = |source| StorageError::Io {
            path: path.clone(),
            source,
        };
        if found.is_none() {
            preallocate(&path)?;
        }
        let capacity = std::fs::metadata(&path).map_err(io)?.len() / BLOCK as u64 * BLOCK as u64;
        let (file, direct) = open_for_writes(&path, true).map_err(io)?;
        let mut log = CommitLog {
            file,
            path,
            direct,
            epoch: found.map_or(0, |found| found.epoch),
            number: 0,
            offset: BLOCK as u64,
            capacity,
            scratch: Vec::new(),
            aligned: Vec::new(),
        };
        log.reset()?;
        Ok(log)
    }

    /// Whether no record was written since the last reset.
    pub(super) fn is_empty(&self) -> bool {
        self.number == 0
    }

    /// Writes `batch` as the next record and returns once it is on disk.
    pub(super) fn append(&mut self, batch: &WriteBatch) -> Result<Appended, StorageError> {
        // The payload is encoded after room for the head, which needs its length and CRC.
        self.scratch.clear();
        self.scratch.resize(RECORD_HEAD, 0);
        log_codec::encode(batch, &mut self.scratch);
        let padded = self.scratch.len().div_ceil(BLOCK) * BLOCK;
        let payload = self.scratch.get(RECORD_HEAD..).unwrap_or_default();
        let Ok(payload_len) = u32::try_from(payload.len()) else {
            return Ok(Appended::TooLarge);
        };
        if padded as u64 > self.capacity / 4 {
            return Ok(Appended::TooLarge);
        }
        if self.offset + padded as u64 > self.capacity {
            return Ok(Appended::Full);
        }
        let (epoch, number, len) = (
            self.epoch.to_le_bytes(),
            self.number.to_le_bytes(),
            payload_len.to_le_bytes(),
        );
        let crc = record_crc(&epoch, &number, &len, payload).to_le_bytes();
        let fields: [&[u8]; 5] = [&RECORD_MAGIC, &epoch, &number, &len, &crc];
        let mut at = 0;
        for field in fields {
            if let Some(slot) = self.scratch.get_mut(at..at + field.len()) {
                slot.copy_from_slice(field);
            }
            at += field.len();
        }
        self.scratch.resize(padded, 0);
        let record = std::mem::take(&mut self.scratch);
        let written = self.write_blocks(&record, self.offset);
        self.scratch = record;
        written?;
        self.offset += padded as u64;
        self.number += 1;
        Ok(Appended::Durable)
    }

    /// Starts a new epoch: every record written so far becomes stale. Only after the store
    /// has synced everything those records hold.
    pub(super) fn reset(&mut self) -> Result<(), StorageError> {
        let epoch = self.epoch.wrapping_add(1);
        self.write_blocks(&header_block(epoch), 0)?;
        self.epoch = epoch;
        self.number = 0;
        self.offset = BLOCK as u64;
        Ok(())
    }

    /// One durable write of whole blocks at a block offset.
    fn write_blocks(&mut self, bytes: &[u8], offset: u64) -> Result<(), StorageError> {
        let result = self.try_write(bytes, offset);
        match result {
            // Some file systems accept O_DIRECT at open and refuse the write: go through
            // the page cache from now on (still O_DSYNC).
            Err(error) if self.direct && error.kind() == ErrorKind::InvalidInput => {
                tracing::debug!(path = %self.path.display(), "commit log: no direct I/O here");
                let (file, direct) =
                    open_for_writes(&self.path, false).map_err(|source| StorageError::Io {
                        path: self.path.clone(),
                        source,
                    })?;
                self.file = file;
                self.direct = direct;
                self.try_write(bytes, offset)
            }
            other => other,
        }
        .map_err(|source| StorageError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn try_write(&mut self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if !self.direct {
            return self.file.write_all_at(bytes, offset);
        }
        // O_DIRECT wants the memory block-aligned too: copy into the aligned part of a
        // buffer one block larger than needed.
        self.aligned.resize(bytes.len() + BLOCK, 0);
        let start = self.aligned.as_ptr().align_offset(BLOCK);
        let Some(window) = self.aligned.get_mut(start..start + bytes.len()) else {
            return Err(std::io::Error::from(ErrorKind::InvalidInput));
        };
        window.copy_from_slice(bytes);
        self.file.write_all_at(window, offset)
    }
}

/// CRC-32 of a record's epoch, number, payload length and payload.
fn record_crc(epoch: &[u8; 8], number: &[u8; 8], len: &[u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(epoch);
    hasher.update(number);
    hasher.update(len);
    hasher.update(payload);
    hasher.finalize()
}

/// A header block: magic, epoch, CRC-32 of both, zeros.
fn header_block(epoch: u64) -> Vec<u8> {
    let mut block = Vec::with_capacity(BLOCK);
    block.extend_from_slice(&HEADER_MAGIC);
    block.extend_from_slice(&epoch.to_le_bytes());
    let crc = crc32fast::hash(&block);
    block.extend_from_slice(&crc.to_le_bytes());
    block.resize(BLOCK, 0);
    block
}

/// The `N` bytes at `at`, if the file has them.
fn field<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The epoch in a log's header, or why the file is not a commit log.
fn read_header(path: &Path, bytes: &[u8]) -> Result<u64, StorageError> {
    let corrupt = |reason: &str| StorageError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let (Some(magic), Some(epoch), Some(crc)) = (
        field::<8>(bytes, 0),
        field::<8>(bytes, 8),
        field::<4>(bytes, 16),
    ) else {
        return Err(corrupt("shorter than a commit log header"));
    };
    if magic != HEADER_MAGIC {
        return Err(corrupt("not a snakemq commit log (wrong magic)"));
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&magic);
    hasher.update(&epoch);
    if hasher.finalize() != u32::from_le_bytes(crc) {
        return Err(corrupt("commit log header checksum mismatch"));
    }
    if bytes.len() < 2 * BLOCK {
        return Err(corrupt("commit log shorter than two blocks"));
    }
    Ok(u64::from_le_bytes(epoch))
}

/// The epoch and its valid records, decoded.
fn read_records(path: &Path, bytes: &[u8]) -> Result<Recovered, StorageError> {
    let found = read_header(path, bytes)?;
    let epoch = found.to_le_bytes();
    let mut batches = Vec::new();
    let mut offset = BLOCK;
    let mut number = 0u64;
    loop {
        let expected = number.to_le_bytes();
        let (Some(magic), Some(record_epoch), Some(record_number), Some(len), Some(crc)) = (
            field::<4>(bytes, offset),
            field::<8>(bytes, offset + 4),
            field::<8>(bytes, offset + 12),
            field::<4>(bytes, offset + 20),
            field::<4>(bytes, offset + 24),
        ) else {
            break;
        };
        if magic != RECORD_MAGIC || record_epoch != epoch || record_number != expected {
            break;
        }
        let start = offset + RECORD_HEAD;
        let size = u32::from_le_bytes(len) as usize;
        let Some(payload) = bytes.get(start..start.saturating_add(size)) else {
            break;
        };
        if record_crc(&epoch, &expected, &len, payload) != u32::from_le_bytes(crc) {
            // A write that did not complete: it was never reported durable.
            break;
        }
        let batch = log_codec::decode(payload).map_err(|reason| StorageError::Corrupt {
            path: path.to_owned(),
            reason: format!("commit log record {number}: {reason}"),
        })?;
        batches.push(batch);
        number += 1;
        offset += (RECORD_HEAD + size).div_ceil(BLOCK) * BLOCK;
    }
    Ok(Recovered {
        epoch: found,
        batches,
    })
}

/// Creates a log of [`CAPACITY`] zeros with an epoch-0 header under a temporary name and
/// renames it into place, so a crash never leaves a half-made log behind. Zeros are
/// written, not just reserved: overwriting blocks that exist needs no allocation (and no
/// file system journal commit) at each record.
fn preallocate(path: &Path) -> Result<(), StorageError> {
    use std::io::Write;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let io = |source| StorageError::Io {
        path: temporary.clone(),
        source,
    };
    let mut file = File::create(&temporary).map_err(io)?;
    file.write_all(&header_block(0)).map_err(io)?;
    let zeros = vec![0u8; 1 << 20];
    let mut written = BLOCK as u64;
    while written < CAPACITY {
        let chunk = (CAPACITY - written).min(zeros.len() as u64) as usize;
        file.write_all(zeros.get(..chunk).unwrap_or_default())
            .map_err(io)?;
        written += chunk as u64;
    }
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StorageError::Io {
                path: dir.to_owned(),
                source,
            })?;
    }
    Ok(())
}

/// Opens the log for durable writes: every write returns once on disk (`O_DSYNC`), and
/// bypasses the page cache where the file system allows (`O_DIRECT`, Linux).
fn open_for_writes(path: &Path, try_direct: bool) -> std::io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    #[cfg(target_os = "linux")]
    if try_direct {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path);
        match direct {
            Ok(file) => return Ok((file, true)),
            Err(error) if error.kind() == ErrorKind::InvalidInput => {}
            Err(error) => return Err(error),
        }
    }
    let _ = try_direct;
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(path)?;
    Ok((file, false))
}
