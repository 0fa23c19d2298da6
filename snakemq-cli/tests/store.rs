//! The `snakemq` binary with a queue store: `--store` on send and listen, `queue`
//! listing, bad store files, and `queue import-python` with a file Python snakeMQ wrote.
//!
//! Every child process is killed when its guard is dropped and every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[path = "common/proc.rs"]
mod proc;

use proc::{Proc, listener, run};

fn text(path: &Path) -> Result<&str, Box<dyn std::error::Error>> {
    Ok(path.to_str().ok_or("temp path is not UTF-8")?)
}

/// The `data` fields of `listen --json` output, in order.
fn data_of(stdout: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    stdout
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)?;
            Ok(value
                .get("data")
                .and_then(|d| d.as_str())
                .ok_or("no data")?
                .to_owned())
        })
        .collect()
}

/// Queue listing as JSON: (peer, messages) pairs.
fn queued(store: &Path) -> Result<Vec<(String, u64)>, Box<dyn std::error::Error>> {
    let (status, stdout, stderr) = run(&["queue", text(store)?, "--json"])?;
    if !status.success() {
        return Err(format!("queue failed: {stderr}").into());
    }
    let value: serde_json::Value = serde_json::from_str(stdout.trim())?;
    let peers = value
        .get("peers")
        .and_then(|p| p.as_array())
        .ok_or("no peers")?;
    peers
        .iter()
        .map(|p| {
            Ok((
                p.get("peer")
                    .and_then(|v| v.as_str())
                    .ok_or("peer")?
                    .to_owned(),
                p.get("messages")
                    .and_then(|v| v.as_u64())
                    .ok_or("messages")?,
            ))
        })
        .collect()
}

#[test]
fn persistent_messages_wait_in_the_store_until_a_later_send_delivers_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("alice.db");
    // Nobody listens here: the messages are committed, then the sender gives up.
    let (status, _, stderr) = run(&[
        "send",
        "--ident",
        "alice",
        "--connect",
        "127.0.0.1:9",
        "--to",
        "bob",
        "--store",
        text(&store)?,
        "--persistent",
        "--timeout",
        "0.3",
        "one",
        "two",
    ])?;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("stay queued in"), "{stderr}");
    assert_eq!(queued(&store)?, vec![("bob".to_owned(), 2)]);
    let (_, table, _) = run(&["queue", text(&store)?])?;
    assert!(table.contains("bob"), "{table}");

    let (listener, addr) = listener("2")?;
    let (status, _, stderr) = run(&[
        "send",
        "--ident",
        "alice",
        "--connect",
        &addr,
        "--to",
        "bob",
        "--store",
        text(&store)?,
    ])?;
    assert!(status.success(), "{stderr}");
    let (status, stdout, stderr) = listener.finish()?;
    assert!(status.success(), "{stderr}");
    assert_eq!(data_of(&stdout)?, vec!["one", "two"]);
    assert_eq!(queued(&store)?, vec![]);
    Ok(())
}

#[test]
fn draining_an_empty_store_exits_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("empty.db");
    let (status, _, stderr) = run(&[
        "send",
        "--ident",
        "alice",
        "--connect",
        "127.0.0.1:9",
        "--to",
        "bob",
        "--store",
        text(&store)?,
    ])?;
    assert!(status.success(), "{stderr}");
    let (status, stdout, _) = run(&["queue", text(&store)?])?;
    assert!(status.success());
    assert!(stdout.contains("no queued messages"), "{stdout}");
    Ok(())
}

#[test]
fn bad_store_files_are_one_line_naming_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a_u8; 16384])?;
    let name = text(&garbage)?;
    for args in [
        vec!["queue", name],
        vec![
            "send",
            "--ident",
            "a",
            "--connect",
            "127.0.0.1:9",
            "--to",
            "b",
            "--store",
            name,
        ],
        vec![
            "listen",
            "--ident",
            "b",
            "--bind",
            "127.0.0.1:0",
            "--store",
            name,
        ],
    ] {
        let (status, stdout, stderr) = run(&args)?;
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(name), "{args:?}: {stderr}");
        assert!(stdout.is_empty());
    }
    Ok(())
}

#[test]
fn a_store_in_use_is_reported_as_such() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("busy.db");
    let mut listener = Proc::spawn(&[
        "listen",
        "--ident",
        "bob",
        "--bind",
        "127.0.0.1:0",
        "--store",
        text(&store)?,
    ])?;
    listener.stderr_line("listening on ")?;
    let (status, _, stderr) = run(&["queue", text(&store)?])?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("store is in use by a running process"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    Ok(())
}

#[test]
fn rocksdb_without_the_feature_is_a_clear_error() -> TestResult {
    if cfg!(feature = "rocksdb") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (status, _, stderr) = run(&[
        "queue",
        text(&dir.path().join("r"))?,
        "--store-backend",
        "rocksdb",
    ])?;
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("without RocksDB support"), "{stderr}");
    Ok(())
}

fn python() -> Result<PathBuf, Box<dyn std::error::Error>> {
    if let Some(path) = std::env::var_os("SNAKEMQ_PYTHON") {
        return Ok(path.into());
    }
    let home = std::env::var_os("HOME").ok_or("no HOME")?;
    let path = PathBuf::from(home).join(".cache/snakemq-venv/bin/python");
    if path.exists() {
        Ok(path)
    } else {
        Err("no Python with snakeMQ 1.6 found; run `cargo xtask python-env`".into())
    }
}

/// Python snakeMQ 1.6 queues three persistent messages for bob (and one that has
/// expired, as Python's garbage collection leaves it) in its own SQLite storage.
const PY_QUEUE: &str = r#"
import sys
from snakemq.message import Message, FLAG_PERSISTENT
from snakemq.queues import QueuesManager
from snakemq.storage.sqlite import SqliteQueuesStorage

manager = QueuesManager(SqliteQueuesStorage(sys.argv[1]))
queue = manager.get_queue("bob")
for i, ttl in enumerate([None, 600, None]):
    queue.push(Message(b"py-%d" % i, ttl=ttl, flags=FLAG_PERSISTENT))
manager.get_queue("carol").push(Message(b"gone", ttl=5, flags=FLAG_PERSISTENT))
manager.close()
# What Python's own garbage collection writes when that message's time runs out.
import sqlite3
conn = sqlite3.connect(sys.argv[1])
with conn:
    conn.execute("UPDATE items SET ttl = 0.0 WHERE queue_name = 'carol'")
conn.close()
"#;

#[test]
fn python_queues_are_imported_and_delivered_in_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let py_db = dir.path().join("python.db");
    let store = dir.path().join("alice.db");
    let status = Command::new(python()?)
        .arg("-c")
        .arg(PY_QUEUE)
        .arg(&py_db)
        .stdin(Stdio::null())
        .status()?;
    assert!(status.success(), "the Python script failed");

    // A Python file is not a store: refused, untouched.
    let (status, _, stderr) = run(&["queue", text(&py_db)?])?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("queue import-python"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let (status, stdout, stderr) = run(&[
        "queue",
        "import-python",
        text(&py_db)?,
        "--store",
        text(&store)?,
    ])?;
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("imported 3 messages"), "{stdout}");
    assert!(stdout.contains("1 expired"), "{stdout}");
    assert_eq!(queued(&store)?, vec![("bob".to_owned(), 3)]);

    let (listener, addr) = listener("3")?;
    let (status, _, stderr) = run(&[
        "send",
        "--ident",
        "alice",
        "--connect",
        &addr,
        "--to",
        "bob",
        "--store",
        text(&store)?,
    ])?;
    assert!(status.success(), "{stderr}");
    let (status, stdout, stderr) = listener.finish()?;
    assert!(status.success(), "{stderr}");
    assert_eq!(data_of(&stdout)?, vec!["py-0", "py-1", "py-2"]);
    for line in stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        let flags = value.get("flags").and_then(|f| f.as_u64()).ok_or("flags")?;
        assert_eq!(flags & 1, 1, "{line}");
    }
    assert_eq!(queued(&store)?, vec![]);
    Ok(())
}

/// `bench --store` sends persistent messages with several sends in flight, gets every one
/// acknowledged, and leaves the store empty; an existing store path is refused.
#[test]
fn persistent_bench_delivers_everything_and_empties_its_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("bench.db");
    let (status, stdout, stderr) = run(&[
        "bench",
        "--json",
        "--count",
        "300",
        "--in-flight",
        "16",
        "--store",
        text(&store)?,
    ])?;
    assert!(status.success(), "{stderr}");
    let value: serde_json::Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(value.get("persistent"), Some(&serde_json::json!(true)));
    assert_eq!(value.get("count"), Some(&serde_json::json!(300)));
    assert!(value.get("msgs_per_sec").and_then(|v| v.as_f64()) > Some(0.0));
    assert_eq!(queued(&store)?, Vec::<(String, u64)>::new());

    let (status, _, stderr) = run(&["bench", "--count", "10", "--store", text(&store)?])?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("exists"), "{stderr}");
    Ok(())
}

/// One producer awaiting each durable send on current-thread runtimes (the sender's, and
/// the receiver's, in a second process and in this one): every message is delivered and
/// the store is left empty.
#[test]
fn bench_one_producer_on_current_thread_runtimes_drains_the_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    for (name, placement) in [("process.db", None), ("thread.db", Some("--in-process"))] {
        let store = dir.path().join(name);
        let mut args = vec![
            "bench",
            "--json",
            "--count",
            "200",
            "--in-flight",
            "1",
            "--runtime",
            "current-thread",
            "--store",
            text(&store)?,
        ];
        args.extend(placement);
        let (status, stdout, stderr) = run(&args)?;
        assert!(status.success(), "{stderr}");
        let value: serde_json::Value = serde_json::from_str(stdout.trim())?;
        assert_eq!(value.get("count"), Some(&serde_json::json!(200)));
        assert_eq!(value.get("in_flight"), Some(&serde_json::json!(1)));
        assert_eq!(queued(&store)?, Vec::<(String, u64)>::new());
    }
    Ok(())
}

/// `bench --mode queue-memory` queues messages for an absent peer and reports a plausible
/// figure: at least the payload, far below what a boxed message per entry would cost.
#[test]
fn queue_memory_bench_reports_bytes_per_message() -> TestResult {
    let (status, stdout, stderr) = run(&[
        "bench",
        "--json",
        "--mode",
        "queue-memory",
        "--size",
        "64",
        "--count",
        "200000",
    ])?;
    assert!(status.success(), "{stderr}");
    let value: serde_json::Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(value.get("count"), Some(&serde_json::json!(200000)));
    let bytes = value
        .get("bytes_per_message")
        .and_then(|v| v.as_f64())
        .ok_or("no bytes_per_message")?;
    assert!((64.0..1000.0).contains(&bytes), "{bytes} B per message");
    Ok(())
}

/// With the `rocksdb` feature: persistent messages through a RocksDB store (the bench
/// empties it), and a damaged RocksDB directory is one line and exit 1.
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_store_from_the_command_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("bench.rocks");
    let (status, stdout, stderr) = run(&[
        "bench",
        "--json",
        "--count",
        "300",
        "--in-flight",
        "16",
        "--store-backend",
        "rocksdb",
        "--store",
        text(&store)?,
    ])?;
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("\"persistent\":true"), "{stdout}");
    let (status, listing, stderr) = run(&[
        "queue",
        text(&store)?,
        "--store-backend",
        "rocksdb",
        "--json",
    ])?;
    assert!(status.success(), "{stderr}");
    let value: serde_json::Value = serde_json::from_str(listing.trim())?;
    assert_eq!(
        value.get("peers"),
        Some(&serde_json::json!([])),
        "{listing}"
    );

    std::fs::write(store.join("CURRENT"), b"MANIFEST-999999\n")?;
    let (status, _, stderr) = run(&["queue", text(&store)?, "--store-backend", "rocksdb"])?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bench.rocks"), "{stderr}");
    Ok(())
}
