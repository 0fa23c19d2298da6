//! Persistent messages through the storage writer, with a durable test store that
//! survives "restarts" (it is shared between two instances in one process). The SQLite and
//! RocksDB backends are checked against the same contract by the storage conformance suite.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use snakemq::storage::{
    MemoryStore, PeerStats, QueueStore, Record, StorageError, Uuid, WriteBatch,
};
use snakemq::{Event, Events, Message, Messaging};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A "durable" store kept in memory, shared by clones, counting commits.
#[derive(Clone, Default)]
struct SharedStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    queues: MemoryStore,
    received: Vec<(std::sync::Arc<str>, Uuid)>,
    commits: usize,
}

impl SharedStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn commits(&self) -> usize {
        self.lock().commits
    }
    fn messages(&self, peer: &str) -> u64 {
        self.lock()
            .queues
            .stats(peer)
            .map(|s| s.messages)
            .unwrap_or(0)
    }
}

impl QueueStore for SharedStore {
    fn insert(&mut self, peer: &str, record: Record) -> Result<(), StorageError> {
        self.lock().queues.insert(peer, record)
    }
    fn last_seq(&self) -> Result<Option<u64>, StorageError> {
        self.lock().queues.last_seq()
    }
    fn read(
        &self,
        peer: &str,
        after: Option<u64>,
        limit: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), StorageError> {
        self.lock().queues.read(peer, after, limit, out)
    }
    fn remove(&mut self, peer: &str, seqs: &[u64]) -> Result<usize, StorageError> {
        self.lock().queues.remove(peer, seqs)
    }
    fn expire(
        &mut self,
        now_ms: u64,
        protect: &dyn Fn(&str) -> Option<u64>,
        out: &mut Vec<(String, Record)>,
    ) -> Result<(), StorageError> {
        self.lock().queues.expire(now_ms, protect, out)
    }
    fn next_deadline(&self) -> Option<u64> {
        self.lock().queues.next_deadline()
    }
    fn stats(&self, peer: &str) -> Result<PeerStats, StorageError> {
        self.lock().queues.stats(peer)
    }
    fn peers(&self) -> Result<Vec<(String, PeerStats)>, StorageError> {
        self.lock().queues.peers()
    }
    fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.commits += 1;
        for (peer, record) in batch.pushes {
            inner.queues.insert(&peer, record)?;
        }
        for (peer, seq) in batch.removes {
            inner.queues.remove(&peer, &[seq])?;
        }
        inner.received.extend(batch.received);
        Ok(())
    }
    fn recent_received(
        &self,
        peer: &str,
        limit: usize,
        out: &mut Vec<Uuid>,
    ) -> Result<(), StorageError> {
        let inner = self.lock();
        let ids: VecDeque<Uuid> = inner
            .received
            .iter()
            .filter(|(p, _)| &**p == peer)
            .map(|(_, id)| *id)
            .collect();
        out.extend(ids.iter().skip(ids.len().saturating_sub(limit)));
        Ok(())
    }
    fn is_durable(&self) -> bool {
        true
    }
}

async fn received(events: &mut Events) -> Result<Bytes, String> {
    let wait = async {
        while let Some(event) = events.next().await {
            if let Event::Received { message, .. } = event {
                return Ok(message.data);
            }
        }
        Err("event stream ended".to_owned())
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .map_err(|_| "timed out".to_owned())?
}

fn name(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("memory:{base}-{}-{n}", std::process::id())
}

#[tokio::test]
async fn persistent_messages_survive_a_sender_restart_in_order() -> TestResult {
    let store = SharedStore::default();
    let alice = Messaging::builder("alice")
        .store(store.clone())
        .start()
        .await?;
    for i in 0..5 {
        alice
            .send(
                "bob",
                Message::new(format!("p{i}").into_bytes()).persistent(),
            )
            .await?;
        alice
            .send("bob", Message::new(format!("volatile{i}").into_bytes()))
            .await?;
    }
    // `send` of a persistent message returns only after its commit.
    assert_eq!(store.messages("bob"), 5);
    alice.shutdown().await;
    drop(alice);

    let addr = name("restart");
    let alice = Messaging::builder("alice")
        .store(store.clone())
        .listen(&addr)
        .start()
        .await?;
    assert_eq!(
        alice.queue_stats("bob")?.messages,
        5,
        "only persistent messages come back"
    );
    let bob = Messaging::builder("bob").connect(&addr).start().await?;
    let mut events = bob.events();
    for i in 0..5 {
        assert_eq!(received(&mut events).await?, Bytes::from(format!("p{i}")));
    }
    events.confirm();
    bob.shutdown().await;
    alice.shutdown().await;
    assert_eq!(
        store.messages("bob"),
        0,
        "acknowledged messages are deleted from the store"
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_persistent_sends_share_commits() -> TestResult {
    let store = SharedStore::default();
    let alice = Messaging::builder("alice")
        .store(store.clone())
        .start()
        .await?;
    let sends = (0..200).map(|i| {
        let alice = alice.clone();
        async move {
            alice
                .send("bob", Message::new(vec![i as u8]).persistent())
                .await
        }
    });
    for result in futures_join_all(sends).await {
        result?;
    }
    assert_eq!(store.messages("bob"), 200);
    assert!(
        store.commits() < 200,
        "{} commits for 200 sends",
        store.commits()
    );
    alice.shutdown().await;
    Ok(())
}

/// Runs futures concurrently on the current task (no extra dependency).
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, fut) in outputs.iter_mut().zip(set.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => *slot = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test]
async fn a_restarted_receiver_still_suppresses_duplicates() -> TestResult {
    let bob_store = SharedStore::default();
    let addr = name("dedup");
    let bob = Messaging::builder("bob")
        .store(bob_store.clone())
        .listen(&addr)
        .start()
        .await?;
    let alice = Messaging::builder("alice").connect(&addr).start().await?;
    let mut events = bob.events();
    let id = [42u8; 16];
    alice.send("bob", Message::new("once").uuid(id)).await?;
    assert_eq!(received(&mut events).await?, Bytes::from("once"));
    events.confirm();
    bob.shutdown().await;
    drop(bob);

    let bob = Messaging::builder("bob")
        .store(bob_store.clone())
        .listen(&addr)
        .start()
        .await?;
    let mut events = bob.events();
    // The same id again (as a sender that never saw the ack would re-send it), then a new one.
    alice.send("bob", Message::new("once").uuid(id)).await?;
    alice.send("bob", Message::new("twice")).await?;
    assert_eq!(received(&mut events).await?, Bytes::from("twice"));
    assert_eq!(bob.stats().duplicates, 1);
    alice.shutdown().await;
    events.confirm();
    bob.shutdown().await;
    Ok(())
}

/// A durable queue longer than a page is streamed into memory page by page; messages sent
/// while the backlog drains, persistent or not, still come after it, in order.
#[tokio::test]
async fn a_long_durable_queue_is_paged_in_and_stays_in_order() -> TestResult {
    let mut store = SharedStore::default();
    let backlog = 10_000u64;
    for seq in 1..=backlog {
        store.insert(
            "bob",
            Record {
                seq,
                uuid: (seq as u128).to_be_bytes(),
                data: Bytes::from(format!("old{seq}")),
                flags: snakemq::FLAG_PERSISTENT,
                expiry: snakemq::storage::Expiry::Never,
            },
        )?;
    }
    let addr = name("paging");
    let alice = Messaging::builder("alice")
        .store(store.clone())
        .listen(&addr)
        .start()
        .await?;
    assert_eq!(alice.queue_stats("bob")?.messages, backlog);
    for i in 0..3 {
        alice
            .send(
                "bob",
                Message::new(format!("new{i}a").into_bytes()).persistent(),
            )
            .await?;
        alice
            .send("bob", Message::new(format!("new{i}b").into_bytes()))
            .await?;
    }
    assert_eq!(alice.queue_stats("bob")?.messages, backlog + 6);

    let bob = Messaging::builder("bob").connect(&addr).start().await?;
    let mut events = bob.events();
    for seq in 1..=backlog {
        assert_eq!(
            received(&mut events).await?,
            Bytes::from(format!("old{seq}"))
        );
    }
    for i in 0..3 {
        assert_eq!(
            received(&mut events).await?,
            Bytes::from(format!("new{i}a"))
        );
        assert_eq!(
            received(&mut events).await?,
            Bytes::from(format!("new{i}b"))
        );
    }
    events.confirm();
    bob.shutdown().await;
    alice.shutdown().await;
    assert_eq!(store.messages("bob"), 0);
    Ok(())
}
