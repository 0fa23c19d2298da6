//! Paging a large durable queue into memory.
//!
//! At start, only the first page of each peer's durable queue is loaded. While a peer has
//! a backlog (messages in the durable store not yet in memory), the in-memory queue holds
//! only messages up to the loaded frontier, in order:
//! - a new persistent message goes to the durable store only (it is loaded in its turn);
//! - a new non-persistent message is parked beside the backlog;
//! - the driver sends nothing beyond the frontier, and asks for the next page when few
//!   loaded messages are left; each page is merged with the parked messages it overtakes,
//!   by sequence number, so per-peer FIFO holds across both kinds.
//!
//! Memory therefore stays bounded by a couple of pages per peer however long the durable
//! queue is.

use std::collections::VecDeque;
use std::sync::Arc;

use snakemq_storage::{QueueStore, Record};

use super::state::{Shared, State};
use crate::Error;

/// Messages per page loaded from the durable store.
pub(crate) const PAGE: usize = 4096;

/// A peer whose durable queue is not fully in memory.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// Highest sequence number loaded into memory.
    pub(crate) loaded_upto: u64,
    /// Non-persistent messages queued after the backlog, in order.
    pub(crate) parked: VecDeque<Record>,
    /// Messages in the durable store and not in memory.
    pub(crate) unloaded: u64,
    /// Persistent messages sent to the durable store only; compared before and after a
    /// load to tell whether the store may hold more than the load saw.
    pub(crate) durable_only_sends: u64,
    /// A page load is in progress.
    pub(crate) loading: bool,
}

impl Backlog {
    /// Bytes of the parked messages.
    pub(crate) fn parked_bytes(&self) -> u64 {
        self.parked.iter().map(|r| r.data.len() as u64).sum()
    }
}

/// Loads the first page of every durable queue into memory. Returns the backlogs of the
/// peers with more, and the next sequence number to use.
pub(crate) fn load_first_pages(
    durable: &dyn QueueStore,
    memory: &mut dyn QueueStore,
) -> Result<(foldhash::HashMap<Arc<str>, Backlog>, u64), Error> {
    let mut backlogs = foldhash::HashMap::default();
    let mut loaded = 0usize;
    let mut page = Vec::new();
    for (peer, stats) in durable.peers()? {
        page.clear();
        durable.read(&peer, None, PAGE, &mut page)?;
        let Some(last) = page.last().map(|r| r.seq) else {
            continue;
        };
        let count = page.len() as u64;
        for record in page.drain(..) {
            memory.insert(&peer, record)?;
        }
        loaded += count as usize;
        if stats.messages > count {
            backlogs.insert(
                Arc::from(peer.as_str()),
                Backlog {
                    loaded_upto: last,
                    unloaded: stats.messages - count,
                    ..Backlog::default()
                },
            );
        }
    }
    if loaded > 0 {
        tracing::info!(
            messages = loaded,
            paged_peers = backlogs.len(),
            "loaded persistent messages from the store"
        );
    }
    let last = durable.last_seq()?.max(memory.last_seq()?).unwrap_or(0);
    Ok((backlogs, last + 1))
}

/// Starts loading the next page for `peer` unless one is on its way.
pub(crate) fn request_page(shared: &Arc<Shared>, state: &mut State, peer: &Arc<str>) {
    let Some(persister) = shared.persister.as_ref() else {
        return;
    };
    let Some(backlog) = state.backlogs.get_mut(peer) else {
        return;
    };
    if backlog.loading {
        return;
    }
    backlog.loading = true;
    let after = backlog.loaded_upto;
    let snapshot = backlog.durable_only_sends;
    let wait = persister.load(peer.clone(), after, PAGE);
    let shared = shared.clone();
    let peer = peer.clone();
    tokio::spawn(async move {
        let page = match wait.await {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => {
                tracing::error!(%error, %peer, "loading a page of the queue failed");
                Vec::new()
            }
            Err(_) => return,
        };
        let wake = {
            let mut state = shared.lock();
            integrate(&mut state, &peer, page, snapshot);
            state.peers.get(&peer).map(|l| l.wake.clone())
        };
        if let Some(wake) = wake {
            wake.notify();
        }
    });
}

/// Merges a loaded page (and the parked messages it overtakes) into the memory queue.
fn integrate(state: &mut State, peer: &Arc<str>, page: Vec<Record>, snapshot: u64) {
    let Some(backlog) = state.backlogs.get_mut(peer) else {
        return;
    };
    backlog.loading = false;
    let complete = page.len() < PAGE && backlog.durable_only_sends == snapshot;
    if let Some(last) = page.last() {
        backlog.loaded_upto = last.seq;
    }
    backlog.unloaded = backlog.unloaded.saturating_sub(page.len() as u64);
    let frontier = if complete {
        u64::MAX
    } else {
        backlog.loaded_upto
    };
    let mut parked = Vec::new();
    while backlog.parked.front().is_some_and(|r| r.seq <= frontier) {
        parked.extend(backlog.parked.pop_front());
    }
    if complete {
        state.backlogs.remove(peer);
    }
    // Both runs are sorted; merging keeps the memory queue sorted by sequence number.
    let mut page = page.into_iter().peekable();
    let mut parked = parked.into_iter().peekable();
    loop {
        let take_page = match (page.peek(), parked.peek()) {
            (Some(a), Some(b)) => a.seq < b.seq,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_page {
            page.next()
        } else {
            parked.next()
        };
        if let Some(record) = next {
            if let Err(error) = state.insert(peer, record) {
                tracing::error!(%error, "memory queue insert failed");
            }
        }
    }
}
