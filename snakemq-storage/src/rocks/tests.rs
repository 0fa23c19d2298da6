//! Behaviour particular to the RocksDB store; the shared behaviour is in the conformance
//! suite (`tests/conformance.rs`), the damaged directories in `tests/rocks.rs`.

use bytes::Bytes;

use super::*;
use crate::{Expiry, NewRecord};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn new(n: u8, expiry: Expiry) -> NewRecord {
    NewRecord {
        uuid: [n; 16],
        data: Bytes::from(vec![n; usize::from(n)]),
        flags: u32::from(n),
        expiry,
    }
}

fn place() -> Result<(tempfile::TempDir, PathBuf), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("queue");
    Ok((dir, path))
}

#[test]
fn while_connected_messages_are_dropped_at_open() -> TestResult {
    let (_dir, path) = place()?;
    let kept;
    {
        let mut store = RocksStore::open(&path, RocksOptions::default())?;
        store.push("a", new(1, Expiry::WhileConnected))?;
        kept = store.push("a", new(2, Expiry::Never))?;
        store.push("a", new(3, Expiry::WhileConnected))?;
        store.push("b", new(4, Expiry::WhileConnected))?;
        assert_eq!(store.removed_at_open(), 0);
    }
    let store = RocksStore::open(&path, RocksOptions::default())?;
    assert_eq!(store.removed_at_open(), 3);
    let stats = store.stats("a")?;
    assert_eq!(
        (stats.messages, stats.bytes, stats.oldest_seq),
        (1, 2, Some(kept))
    );
    assert_eq!(store.stats("b")?, PeerStats::default());
    assert_eq!(store.peers()?.len(), 1);
    drop(store);
    assert_eq!(
        RocksStore::open(&path, RocksOptions::default())?.removed_at_open(),
        0
    );
    Ok(())
}

#[test]
fn a_second_open_is_locked() -> TestResult {
    let (_dir, path) = place()?;
    let _store = RocksStore::open(&path, RocksOptions::default())?;
    match RocksStore::open(&path, RocksOptions::default()) {
        Err(StorageError::Locked { path: locked }) => assert_eq!(locked, path),
        other => return Err(format!("expected Locked, got {other:?}").into()),
    }
    Ok(())
}

#[test]
fn normal_durability_keeps_commits_across_a_clean_close() -> TestResult {
    let (_dir, path) = place()?;
    let options = RocksOptions {
        durability: Durability::Normal,
        ..Default::default()
    };
    let seq = {
        let mut store = RocksStore::open(&path, options)?;
        store.push("a", new(5, Expiry::At(1_000)))?
    };
    let store = RocksStore::open(&path, options)?;
    assert_eq!(store.stats("a")?.oldest_seq, Some(seq));
    assert_eq!(store.next_deadline(), Some(1_000));
    Ok(())
}

#[test]
fn a_taken_sequence_number_is_refused_and_nothing_changes() -> TestResult {
    let (_dir, path) = place()?;
    let mut store = RocksStore::open(&path, RocksOptions::default())?;
    let seq = store.push("a", new(1, Expiry::Never))?;
    store.push("a", new(2, Expiry::Never))?;
    let before = store.stats("a")?;
    let mut batch = WriteBatch::new();
    batch
        .pushes
        .push(("c".into(), Record::from_new(100, new(9, Expiry::At(5)))));
    batch
        .pushes
        .push(("a".into(), Record::from_new(seq, new(3, Expiry::Never))));
    assert!(matches!(store.write(batch), Err(StorageError::Backend(_))));
    assert_eq!(store.stats("a")?, before);
    assert_eq!(
        store.stats("c")?,
        PeerStats::default(),
        "the batch is all or nothing"
    );
    assert_eq!(store.next_deadline(), None);
    assert_eq!(store.last_seq()?, Some(seq + 1));
    let mut page = Vec::new();
    store.read("a", None, 10, &mut page)?;
    assert_eq!(
        page.first().map(|r| r.uuid),
        Some([1; 16]),
        "not overwritten"
    );
    Ok(())
}

#[test]
fn oldest_sequence_number_follows_removals_and_restarts() -> TestResult {
    let (_dir, path) = place()?;
    let mut store = RocksStore::open(&path, RocksOptions::default())?;
    let seqs: Vec<u64> = (1..=5)
        .map(|n| store.push("a", new(n, Expiry::Never)))
        .collect::<Result<_, _>>()?;
    store.remove("a", seqs.get(..2).ok_or("five")?)?;
    assert_eq!(store.stats("a")?.oldest_seq, seqs.get(2).copied());
    drop(store);
    let mut store = RocksStore::open(&path, RocksOptions::default())?;
    assert_eq!(store.stats("a")?.oldest_seq, seqs.get(2).copied());
    store.remove("a", seqs.get(2..).ok_or("five")?)?;
    assert_eq!(store.stats("a")?, PeerStats::default());
    let next = store.push("a", new(6, Expiry::Never))?;
    assert_eq!(store.stats("a")?.oldest_seq, Some(next));
    Ok(())
}

#[test]
fn a_smaller_received_limit_after_a_restart_applies_at_once() -> TestResult {
    let (_dir, path) = place()?;
    let mut store = RocksStore::open(&path, RocksOptions::default())?;
    for n in 0..20u8 {
        store.remember_received("a", [n; 16])?;
    }
    drop(store);
    let options = RocksOptions {
        received_limit: 5,
        ..Default::default()
    };
    let mut store = RocksStore::open(&path, options)?;
    let mut ids = Vec::new();
    store.recent_received("a", usize::MAX, &mut ids)?;
    assert_eq!(ids, (15..20u8).map(|n| [n; 16]).collect::<Vec<_>>());
    store.remember_received("a", [20; 16])?;
    ids.clear();
    store.recent_received("a", 2, &mut ids)?;
    assert_eq!(ids, vec![[19; 16], [20; 16]]);
    Ok(())
}

#[test]
fn expiry_reports_whole_records_and_keeps_the_cached_deadline_right() -> TestResult {
    let (_dir, path) = place()?;
    let mut store = RocksStore::open(&path, RocksOptions::default())?;
    let first = store.push("a", new(1, Expiry::At(10)))?;
    store.push("a", new(2, Expiry::At(10)))?;
    store.push("b", new(3, Expiry::At(30)))?;
    store.remove("a", &[first])?;
    assert_eq!(
        store.next_deadline(),
        Some(10),
        "another message shares the deadline"
    );
    let mut out = Vec::new();
    store.expire(20, &|_| None, &mut out)?;
    assert_eq!(out.len(), 1);
    assert_eq!(
        out.first().map(|(p, r)| (p.as_str(), r.flags)),
        Some(("a", 2))
    );
    assert_eq!(store.next_deadline(), Some(30));
    drop(store);
    let store = RocksStore::open(&path, RocksOptions::default())?;
    assert_eq!(store.next_deadline(), Some(30));
    assert_eq!(store.stats("a")?, PeerStats::default());
    Ok(())
}

/// Runs of acknowledged numbers become range deletions (`Tx::delete_runs`): the messages
/// around a run, another peer's messages between the same numbers, and messages pushed in
/// the same batch all stay or go as asked, also after a restart.
#[test]
fn removed_runs_take_exactly_their_messages() -> TestResult {
    let (_dir, path) = place()?;
    let mut store = RocksStore::open(&path, RocksOptions::default())?;
    // 1..=30 to a; then b and a alternate (31 b, 32 a, ...), so a's later numbers are
    // not consecutive integers.
    for n in 1..=30u8 {
        store.push("a", new(n, Expiry::Never))?;
    }
    for n in 31..=40u8 {
        let peer = if n % 2 == 1 { "b" } else { "a" };
        store.push(peer, new(n, Expiry::Never))?;
    }
    let mut batch = WriteBatch::new();
    // Pushed and removed in one batch, at the end of a run.
    batch
        .pushes
        .push(("a".into(), Record::from_new(41, new(41, Expiry::Never))));
    for seq in (3..=10)
        .chain([12, 13, 20])
        .chain((32..=40).step_by(2))
        .chain([41])
    {
        batch.removes.push(("a".into(), seq));
    }
    // Not queued for b (a's numbers): nothing of b may go.
    for seq in [32, 34] {
        batch.removes.push(("b".into(), seq));
    }
    store.write(batch)?;
    let kept: Vec<u64> = [1, 2, 11]
        .into_iter()
        .chain(14..=19)
        .chain(21..=30)
        .collect();
    for reopen in [false, true] {
        if reopen {
            drop(store);
            store = RocksStore::open(&path, RocksOptions::default())?;
        }
        let mut page = Vec::new();
        store.read("a", None, 100, &mut page)?;
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), kept);
        page.clear();
        store.read("b", None, 100, &mut page)?;
        assert_eq!(
            page.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![31, 33, 35, 37, 39]
        );
        assert_eq!(store.stats("a")?.messages, kept.len() as u64);
        assert_eq!(store.stats("a")?.oldest_seq, Some(1));
    }
    // A number inside a removed range can be taken again.
    store.insert("a", Record::from_new(5, new(5, Expiry::Never)))?;
    let mut page = Vec::new();
    store.read("a", Some(2), 2, &mut page)?;
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 11]);
    Ok(())
}
