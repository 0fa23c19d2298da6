//! The in-process transport: named endpoints joined by `tokio::io::duplex` pipes.
//!
//! Used by tests and documentation examples: it behaves like a socket (ordered bytes,
//! either side can close) without touching the network.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use crate::LinkError;

/// Bytes buffered in each direction of a memory pipe.
const PIPE_BUFFER: usize = 256 * 1024;

/// An accepted memory stream with the connecting side's label.
pub(crate) type MemoryAccept = (DuplexStream, String);

type Registry = Mutex<HashMap<String, mpsc::Sender<MemoryAccept>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// A bound memory endpoint; the name is released when this is dropped.
#[derive(Debug)]
pub(crate) struct MemoryListener {
    name: String,
    tx: mpsc::Sender<MemoryAccept>,
    rx: mpsc::Receiver<MemoryAccept>,
}

impl MemoryListener {
    pub(crate) fn bind(name: &str) -> Result<Self, LinkError> {
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get(name) {
            if !existing.is_closed() {
                return Err(LinkError::MemoryAddrInUse(name.to_owned()));
            }
        }
        let (tx, rx) = mpsc::channel(64);
        map.insert(name.to_owned(), tx.clone());
        Ok(MemoryListener {
            name: name.to_owned(),
            tx,
            rx,
        })
    }

    pub(crate) async fn accept(&mut self) -> Option<MemoryAccept> {
        self.rx.recv().await
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        // Only remove the entry if it is still ours (not a newer listener's).
        if map
            .get(&self.name)
            .is_some_and(|tx| tx.same_channel(&self.tx))
        {
            map.remove(&self.name);
        }
    }
}

/// Opens a pipe to the memory endpoint `name`.
pub(crate) async fn connect(name: &str, label: String) -> Result<DuplexStream, LinkError> {
    let tx = {
        let map = registry().lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    };
    let refused = || LinkError::Connect {
        endpoint: format!("memory:{name}"),
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    };
    let tx = tx.ok_or_else(refused)?;
    let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
    tx.send((theirs, label)).await.map_err(|_| refused())?;
    Ok(ours)
}
