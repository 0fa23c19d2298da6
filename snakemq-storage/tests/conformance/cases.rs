//! The cases of the conformance suite, generic over the store.

use std::path::PathBuf;

use bytes::Bytes;
use snakemq_storage::{Expiry, NewRecord, QueueStore, Record, Uuid, WriteBatch};

use crate::{Backend, TestResult};

/// A fresh temporary folder and the store path inside it (dropped with the folder).
fn place() -> Result<(tempfile::TempDir, PathBuf), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("queue.db");
    Ok((dir, path))
}

fn uuid(n: u64) -> Uuid {
    (u128::from(n) << 64 | u128::from(!n)).to_be_bytes()
}

fn new(n: u64, expiry: Expiry) -> NewRecord {
    NewRecord {
        uuid: uuid(n),
        data: Bytes::from(format!("message {n}")),
        flags: (n % 7) as u32,
        expiry,
    }
}

fn read_all<S: QueueStore>(
    store: &S,
    peer: &str,
) -> Result<Vec<Record>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    store.read(peer, None, usize::MAX, &mut out)?;
    Ok(out)
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

pub(crate) fn push_read_and_page<S: QueueStore>(backend: &Backend<S>) -> TestResult {
    let (_dir, path) = place()?;
    let mut store = (backend.open)(&path)?;
    assert_eq!(store.last_seq()?, None, "a new store has used no number");
    let mut expected = Vec::new();
    for n in 0..10 {
        let record = new(n, Expiry::Never);
        let seq = store.push("alice", record.clone())?;
        expected.push(Record::from_new(seq, record));
        store.push("bob", new(100 + n, Expiry::At(1_000 + n)))?;
    }
    assert!(seqs(&expected).is_sorted());
    let expected: [Record; 10] = expected.try_into().map_err(|_| "ten records")?;
    assert_eq!(
        read_all(&store, "alice")?,
        expected,
        "fields come back unchanged"
    );
    assert_eq!(
        store.last_seq()?,
        Some(expected[9].seq + 1),
        "bob's last push"
    );

    // Pages of 3 following `after`.
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let mut page = Vec::new();
        store.read("alice", after, 3, &mut page)?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        assert!(page.len() <= 3);
        pages.extend(page);
    }
    assert_eq!(pages, expected);

    let mut out = Vec::new();
    store.read("alice", None, 0, &mut out)?;
    store.read("nobody", None, 10, &mut out)?;
    store.read("alice", Some(expected[9].seq), 10, &mut out)?;
    assert!(out.is_empty());

    // `read` appends.
    out.push(expected[0].clone());
    store.read("alice", Some(expected[8].seq), 10, &mut out)?;
    assert_eq!(seqs(&out), vec![expected[0].seq, expected[9].seq]);

    let bob = read_all(&store, "bob")?;
    assert_eq!(bob.len(), 10);
    assert_eq!(bob.get(3).map(|r| r.expiry), Some(Expiry::At(1_003)));
    Ok(())
}

pub(crate) fn caller_assigned_sequence_numbers<S: QueueStore>(backend: &Backend<S>) -> TestResult {
    let (_dir, path) = place()?;
    let mut store = (backend.open)(&path)?;
    store.insert("a", Record::from_new(10, new(1, Expiry::Never)))?;
    store.insert("b", Record::from_new(20, new(2, Expiry::Never)))?;
    assert_eq!(store.last_seq()?, Some(20));
    let pushed = store.push("a", new(3, Expiry::Never))?;
    assert_eq!(
        pushed, 21,
        "push continues after the highest inserted number"
    );
    let mut batch = WriteBatch::new();
    batch
        .pushes
        .push(("a".into(), Record::from_new(30, new(4, Expiry::Never))));
    batch
        .pushes
        .push(("a".into(), Record::from_new(31, new(5, Expiry::Never))));
    store.write(batch)?;
    assert_eq!(seqs(&read_all(&store, "a")?), vec![10, 21, 30, 31]);
    store.remove("a", &[31])?;
    assert_eq!(store.last_seq()?, Some(31), "a removed number stays used");
    Ok(())
}

pub(crate) fn remove_front_middle_and_unknown<S: QueueStore>(backend: &Backend<S>) -> TestResult {
    let (_dir, path) = place()?;
    let mut store = (backend.open)(&path)?;
    let mut pushed = Vec::new();
    for n in 0..6 {
        pushed.push(store.push("a", new(n, Expiry::Never))?);
    }
    let all: [u64; 6] = pushed.try_into().map_err(|_| "six numbers")?;
    let other = store.push("b", new(99, Expiry::Never))?;
    let size = |n: u64| format!("message {n}").len() as u64;

    assert_eq!(store.remove("a", &[all[0]])?, 1, "front");
    assert_eq!(store.remove("a", &[all[3]])?, 1, "middle");
    assert_eq!(store.remove("a", &[all[3], 9_999])?, 0, "gone and unknown");
    assert_eq!(store.remove("a", &[other])?, 0, "another peer's message");
    assert_eq!(store.remove("nobody", &[all[1]])?, 0, "unknown peer");
    assert_eq!(store.remove("a", &[])?, 0);
    let left = vec![all[1], all[2], all[4], all[5]];
    assert_eq!(seqs(&read_all(&store, "a")?), left);

    let stats = store.stats("a")?;
    assert_eq!(stats.messages, 4);
    assert_eq!(
        stats.bytes,
        [1, 2, 4, 5].iter().map(|n| size(*n)).sum::<u64>()
    );
    assert_eq!(stats.oldest_seq, Some(all[1]));
    assert_eq!(store.stats("nobody")?, Default::default());

    assert_eq!(store.remove("a", &left)?, 4, "several at once");
    assert_eq!(store.stats("a")?, Default::default());
    let peers = store.peers()?;
    let [(name, stats)] = peers.as_slice() else {
        return Err("an emptied queue is not listed".into());
    };
    assert_eq!((name.as_str(), stats.messages), ("b", 1));
    assert_eq!(seqs(&read_all(&store, "b")?), vec![other]);
    Ok(())
}

pub(crate) fn deadlines_expire_with_protection<S: QueueStore>(backend: &Backend<S>) -> TestResult {
    let (_dir, path) = place()?;
    let mut store = (backend.open)(&path)?;
    assert_eq!(store.next_deadline(), None);
    let early = store.push("a", new(1, Expiry::At(100)))?;
    let late = store.push("a", new(2, Expiry::At(500)))?;
    let never = store.push("a", new(3, Expiry::Never))?;
    let transient = store.push("a", new(4, Expiry::WhileConnected))?;
    let flying = store.push("b", new(5, Expiry::At(50)))?;
    let after_flying = store.push("b", new(6, Expiry::At(60)))?;
    assert_eq!(store.next_deadline(), Some(50));

    let mut out = Vec::new();
    store.expire(49, &|_| None, &mut out)?;
    assert!(out.is_empty(), "nothing is due before its deadline");

    // b's first message is in flight: kept even though due; the one after it goes.
    let protect = |peer: &str| (peer == "b").then_some(flying);
    store.expire(100, &protect, &mut out)?;
    let mut got: Vec<(String, u64)> = out.iter().map(|(p, r)| (p.clone(), r.seq)).collect();
    got.sort();
    assert_eq!(got, vec![("a".into(), early), ("b".into(), after_flying)]);
    let (_, record) = out.iter().find(|(_, r)| r.seq == early).ok_or("early")?;
    assert_eq!(
        record,
        &Record::from_new(early, new(1, Expiry::At(100))),
        "whole record"
    );
    assert_eq!(
        store.next_deadline(),
        Some(50),
        "the protected message stays due"
    );

    out.clear();
    store.expire(10_000, &|_| None, &mut out)?;
    let mut got: Vec<u64> = out.iter().map(|(_, r)| r.seq).collect();
    got.sort_unstable();
    assert_eq!(got, vec![late, flying]);
    assert_eq!(
        store.next_deadline(),
        None,
        "Never and WhileConnected have no deadline"
    );
    assert_eq!(seqs(&read_all(&store, "a")?), vec![never, transient]);
    assert_eq!(store.stats("a")?.messages, 2);
    assert_eq!(store.stats("b")?.messages, 0);

    // Removing a message removes its deadline.
    let seq = store.push("c", new(7, Expiry::At(70)))?;
    assert_eq!(store.next_deadline(), Some(70));
    store.remove("c", &[seq])?;
    assert_eq!(store.next_deadline(), None);
    Ok(())
}

pub(crate) fn restart_keeps_everything<S: QueueStore>(backend: &Backend<S>) -> TestResult {
    if !backend.persistent {
        return Ok(());
    }
    let (_dir, path) = place()?;
    let (before_a, before_b, last);
    {
        let mut store = (backend.open)(&path)?;
        assert!(store.is_durable());
        for n in 0..20 {
            store.push("a", new(n, Expiry::At(5_000 + n)))?;
            store.push("b", new(100 + n, Expiry::Never))?;
        }
        let a = seqs(&read_all(&store, "a")?);
        let gone: Vec<u64> = a
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| [0, 7].contains(i))
            .map(|(_, s)| s)
            .collect();
        store.remove("a", &gone)?;
        before_a = read_all(&store, "a")?;
        before_b = read_all(&store, "b")?;
        last = store.last_seq()?;
    }
    let mut store = (backend.open)(&path)?;
    assert_eq!(
        read_all(&store, "a")?,
        before_a,
        "records, order and deadlines kept"
    );
    assert_eq!(read_all(&store, "b")?, before_b);
    assert_eq!(store.last_seq()?, last);
    assert_eq!(store.next_deadline(), Some(5_001));
    assert_eq!(store.stats("a")?.messages, 18);
    assert_eq!(store.peers()?.len(), 2);
    let next = store.push("a", new(50, Expiry::Never))?;
    assert!(Some(next) > last, "numbers keep increasing");

    // Even an emptied store continues its numbering after a restart.
    let all: Vec<u64> = seqs(&read_all(&store, "a")?);
    store.remove("a", &all)?;
    store.remove("b", &seqs(&before_b))?;
    drop(store);
    let mut store = (backend.open)(&path)?;
    assert_eq!(store.peers()?, vec![]);
    assert_eq!(store.last_seq()?, Some(next));
    assert!(store.push("a", new(51, Expiry::Never))? > next);
    Ok(())
}

pub(crate) fn many_peers_interleaved<S: QueueStore>(backend: &Backend<S>) -> TestResult {
    let (_dir, path) = place()?;
    let mut store = (backend.open)(&path)?;
    let peer = |p: u64| format!("peer-{p:03}");
    // 100 messages to each of 100 peers, interleaved, in batches of 1000.
    let mut next = store.last_seq()?.unwrap_or(0) + 1;
    for round in 0..10u64 {
        let mut batch = WriteBatch::new();
        for i in 0..10u64 {
            for p in 0..100u64 {
                let n = (round * 10 + i) * 100 + p;
                batch.pushes.push((
                    peer(p).into(),
                    Record::from_new(next, new(n, Expiry::Never)),
                ));
                next += 1;
            }
        }
        store.write(batch)?;
    }
    let peers = store.peers()?;
    assert_eq!(peers.len(), 100);
    assert!(peers.is_sorted_by(|a, b| a.0 < b.0), "sorted by name");
    for p in 0..100 {
        let records = read_all(&store, &peer(p))?;
        assert_eq!(records.len(), 100);
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.uuid, uuid(i as u64 * 100 + p), "per-peer FIFO");
        }
        let stats = store.stats(&peer(p))?;
        assert_eq!(stats.messages, 100);
        assert_eq!(stats.oldest_seq, records.first().map(|r| r.seq));
        assert_eq!(
            stats.bytes,
            records.iter().map(|r| r.data.len() as u64).sum::<u64>()
        );
    }
    Ok(())
}

pub(crate) fn large_payloads<S: QueueStore>(backend: &Backend<S>) -> TestResult {
    let (_dir, path) = place()?;
    let mut store = (backend.open)(&path)?;
    let big = |fill: u8| {
        let mut data = vec![fill; 8 << 20];
        if let Some(byte) = data.get_mut(12_345) {
            *byte = fill.wrapping_add(1);
        }
        Bytes::from(data)
    };
    let mut seqs_pushed = Vec::new();
    for fill in [1u8, 2, 3] {
        let record = NewRecord {
            uuid: [fill; 16],
            data: big(fill),
            flags: 0,
            expiry: Expiry::Never,
        };
        seqs_pushed.push(store.push("big", record)?);
        store.push("big", new(u64::from(fill), Expiry::Never))?;
    }
    let records = read_all(&store, "big")?;
    assert_eq!(records.len(), 6);
    for (record, fill) in records.iter().step_by(2).zip([1u8, 2, 3]) {
        assert_eq!(record.data, big(fill));
    }
    assert_eq!(
        store.stats("big")?.bytes,
        records.iter().map(|r| r.data.len() as u64).sum::<u64>()
    );
    assert_eq!(store.remove("big", &seqs_pushed)?, 3);
    assert_eq!(store.stats("big")?.messages, 3);
    Ok(())
}

pub(crate) fn many_messages<S: QueueStore>(backend: &Backend<S>, count: u64) -> TestResult {
    const BATCH: u64 = 10_000;
    let (_dir, path) = place()?;
    let mut store = (backend.open)(&path)?;
    let started = std::time::Instant::now();
    let mut next = store.last_seq()?.unwrap_or(0) + 1;
    let mut pushed = 0;
    while pushed < count {
        let mut batch = WriteBatch::new();
        for n in pushed..(pushed + BATCH).min(count) {
            let peer = if n % 10 == 0 { "side" } else { "main" };
            batch
                .pushes
                .push((peer.into(), Record::from_new(next, new(n, Expiry::Never))));
            next += 1;
        }
        pushed += batch.pushes.len() as u64;
        store.write(batch)?;
    }
    let written = started.elapsed();
    assert_eq!(
        store.stats("main")?.messages + store.stats("side")?.messages,
        count
    );

    // Read "main" in pages; remove each page in one batch once read.
    let mut after = None;
    let mut seen = 0u64;
    let mut previous = 0;
    let mut page = Vec::new();
    loop {
        page.clear();
        store.read("main", after, 5_000, &mut page)?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        let mut batch = WriteBatch::new();
        for record in &page {
            assert!(record.seq > previous, "ordered");
            previous = record.seq;
            batch.removes.push(("main".into(), record.seq));
        }
        seen += page.len() as u64;
        store.write(batch)?;
    }
    assert_eq!(seen, count - count.div_ceil(10));
    assert_eq!(store.stats("main")?, Default::default());
    let side: Vec<u64> = seqs(&read_all(&store, "side")?);
    assert_eq!(side.len() as u64, count.div_ceil(10));
    for chunk in side.chunks(BATCH as usize) {
        assert_eq!(store.remove("side", chunk)?, chunk.len());
    }
    assert_eq!(store.peers()?, vec![]);
    eprintln!(
        "{count} messages: written in {written:?}, all read and removed after {:?}",
        started.elapsed()
    );
    Ok(())
}

pub(crate) fn write_batch_is_applied_whole<S: QueueStore>(backend: &Backend<S>) -> TestResult {
    let (_dir, path) = place()?;
    let mut store = (backend.open)(&path)?;
    let old = store.push("a", new(1, Expiry::Never))?;
    let kept = store.push("a", new(2, Expiry::Never))?;
    let first = store.last_seq()?.unwrap_or(0) + 1;
    let mut batch = WriteBatch::new();
    batch
        .pushes
        .push(("a".into(), Record::from_new(first, new(3, Expiry::At(77)))));
    batch.pushes.push((
        "b".into(),
        Record::from_new(first + 1, new(4, Expiry::Never)),
    ));
    batch.removes.push(("a".into(), old));
    batch.removes.push(("a".into(), first)); // pushed in the same batch: removals follow pushes
    batch.received.push(("c".into(), uuid(40)));
    batch.received.push(("c".into(), uuid(41)));
    assert_eq!(batch.len(), 6);
    store.write(batch)?;
    store.write(WriteBatch::new())?;

    let check = |store: &S| -> TestResult {
        assert_eq!(seqs(&read_all(store, "a")?), vec![kept]);
        assert_eq!(seqs(&read_all(store, "b")?), vec![first + 1]);
        assert_eq!(store.next_deadline(), None);
        if backend.received_bound.is_some() {
            let mut ids = Vec::new();
            store.recent_received("c", 10, &mut ids)?;
            assert_eq!(ids, vec![uuid(40), uuid(41)]);
        }
        Ok(())
    };
    check(&store)?;
    if backend.persistent {
        drop(store);
        check(&(backend.open)(&path)?)?;
    }
    Ok(())
}

pub(crate) fn received_ids_bounded_and_ordered<S: QueueStore>(backend: &Backend<S>) -> TestResult {
    let (_dir, path) = place()?;
    let mut store = (backend.open)(&path)?;
    let Some(bound) = backend.received_bound else {
        store.remember_received("a", uuid(1))?;
        let mut ids = Vec::new();
        store.recent_received("a", 10, &mut ids)?;
        assert!(ids.is_empty(), "a store that keeps no ids returns none");
        return Ok(());
    };
    let total = bound as u64 + 250;
    // Half one at a time, half in batches, interleaved with another peer.
    for n in 0..total / 2 {
        store.remember_received("a", uuid(n))?;
    }
    store.remember_received("b", uuid(9_000))?;
    for chunk in (total / 2..total).collect::<Vec<_>>().chunks(100) {
        let mut batch = WriteBatch::new();
        for &n in chunk {
            batch.received.push(("a".into(), uuid(n)));
        }
        batch.received.push(("b".into(), uuid(9_001)));
        store.write(batch)?;
    }
    let check = |store: &S| -> TestResult {
        let mut ids = Vec::new();
        store.recent_received("a", usize::MAX, &mut ids)?;
        let expected: Vec<Uuid> = (total - bound as u64..total).map(uuid).collect();
        assert_eq!(ids, expected, "the newest `bound` ids, newest last");
        ids.clear();
        store.recent_received("a", 3, &mut ids)?;
        assert_eq!(ids, vec![uuid(total - 3), uuid(total - 2), uuid(total - 1)]);
        ids.clear();
        store.recent_received("b", 2, &mut ids)?;
        assert_eq!(ids, vec![uuid(9_001), uuid(9_001)]);
        ids.clear();
        store.recent_received("nobody", 10, &mut ids)?;
        assert!(ids.is_empty());
        Ok(())
    };
    check(&store)?;
    if backend.persistent {
        drop(store);
        check(&(backend.open)(&path)?)?;
    }
    Ok(())
}
