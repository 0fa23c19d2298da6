//! A synchronous API for code that does not run on tokio.
//!
//! [`Messaging`] owns a small tokio runtime and drives the async instance on it; every
//! method blocks the calling thread until its work is done. Safe to share between threads
//! (clone it). Do not call it from inside an async task: use the async API there.
//!
//! ```
//! use snakemq::{Event, Message, MessagingBuilder};
//! use snakemq::blocking::Messaging;
//!
//! let bob = Messaging::start(MessagingBuilder::new_blocking("bob").listen("memory:blocking-doc"))?;
//! let alice = Messaging::start(MessagingBuilder::new_blocking("alice").connect("memory:blocking-doc"))?;
//! let mut events = bob.events();
//! alice.send("bob", Message::new("hi"))?;
//! let got = events.find_map(|e| match e {
//!     Event::Received { message, .. } => Some(message.data),
//!     _ => None,
//! });
//! assert_eq!(got.as_deref(), Some(&b"hi"[..]));
//! # Ok::<(), snakemq::Error>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::proto::Uuid;
use crate::{Error, Event, Message, MessagingBuilder};

/// Owns the runtime; shut down in the background when the last handle goes, so dropping
/// it never blocks or panics.
struct RuntimeOwner(Option<Runtime>);

impl Drop for RuntimeOwner {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl RuntimeOwner {
    fn get(&self) -> Result<&Runtime, Error> {
        self.0.as_ref().ok_or(Error::Shutdown)
    }
}

/// A messaging instance driven by its own runtime.
#[derive(Clone)]
pub struct Messaging {
    inner: crate::Messaging,
    runtime: Arc<RuntimeOwner>,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl MessagingBuilder {
    /// Same as [`crate::Messaging::builder`]; reads better next to
    /// [`blocking::Messaging::start`](Messaging::start).
    pub fn new_blocking(identity: impl Into<String>) -> Self {
        MessagingBuilder::new(identity)
    }
}

impl Messaging {
    /// Starts the instance on a new two-thread runtime.
    pub fn start(builder: MessagingBuilder) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("snakemq")
            .enable_all()
            .build()
            .map_err(|e| Error::Link(e.into()))?;
        let inner = runtime.block_on(builder.start())?;
        Ok(Messaging {
            inner,
            runtime: Arc::new(RuntimeOwner(Some(runtime))),
        })
    }

    /// The async handle, for code that has both worlds.
    pub fn handle(&self) -> &crate::Messaging {
        &self.inner
    }

    /// Queues a message; see [`crate::Messaging::send`].
    pub fn send(&self, to: &str, message: impl Into<Message>) -> Result<Uuid, Error> {
        self.runtime.get()?.block_on(self.inner.send(to, message))
    }

    /// Blocking iterator over events; see [`crate::Messaging::events`].
    pub fn events(&self) -> Events {
        Events {
            inner: self.inner.events(),
            runtime: self.runtime.clone(),
        }
    }

    /// Identities of the connected peers.
    pub fn connected_peers(&self) -> Vec<String> {
        self.inner.connected_peers()
    }

    /// Flushes and closes every connection and stops; see [`crate::Messaging::shutdown`].
    pub fn shutdown(&self) {
        if let Ok(runtime) = self.runtime.get() {
            runtime.block_on(self.inner.shutdown());
        }
    }
}

/// Events, one call at a time.
pub struct Events {
    inner: crate::Events,
    runtime: Arc<RuntimeOwner>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// Acknowledges every received message handed out so far; see
    /// [`crate::Events::confirm`].
    pub fn confirm(&mut self) {
        self.inner.confirm();
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Event> {
        let runtime = self.runtime.get().ok()?;
        // The timer must be created inside the runtime, hence the async block.
        let inner = &mut self.inner;
        runtime
            .block_on(async move { tokio::time::timeout(timeout, inner.next()).await })
            .ok()
            .flatten()
    }
}

impl Iterator for Events {
    type Item = Event;

    /// Blocks until the next event; `None` after shutdown.
    fn next(&mut self) -> Option<Event> {
        let runtime = self.runtime.get().ok()?;
        runtime.block_on(self.inner.next())
    }
}
