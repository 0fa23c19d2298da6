//! Routing received messages to handlers by data prefix.
//!
//! Python snakeMQ's `ReceiveHook` maps one prefix to one callback and silently replaces a
//! callback registered twice. Here every prefix may have several handlers, each matching
//! handler runs (in registration order), and nothing is ever replaced. Messages no handler
//! claims go to the fallback, if any.

use std::sync::Arc;

use bytes::Bytes;

use crate::{Event, ReceivedMessage};

type Handler = Arc<dyn Fn(&str, &ReceivedMessage) + Send + Sync>;

/// Dispatches [`Event::Received`] by data prefix.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use snakemq::router::PrefixRouter;
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let router = PrefixRouter::new()
///     .route("calc:", move |from, msg| log.lock().unwrap().push((from.to_owned(), msg.data.clone())))
///     .fallback(|from, _| eprintln!("unrouted message from {from}"));
/// # let _ = router;
/// ```
#[derive(Clone, Default)]
pub struct PrefixRouter {
    routes: Vec<(Bytes, Handler)>,
    fallback: Option<Handler>,
}

impl std::fmt::Debug for PrefixRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefixes: Vec<_> = self.routes.iter().map(|(p, _)| p).collect();
        f.debug_struct("PrefixRouter")
            .field("prefixes", &prefixes)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl PrefixRouter {
    /// A router with no routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a handler for messages whose data starts with `prefix`. Adding another
    /// handler for the same prefix keeps both.
    pub fn route(
        mut self,
        prefix: impl AsRef<[u8]>,
        handler: impl Fn(&str, &ReceivedMessage) + Send + Sync + 'static,
    ) -> Self {
        self.routes
            .push((Bytes::copy_from_slice(prefix.as_ref()), Arc::new(handler)));
        self
    }

    /// The handler for messages no route matches.
    pub fn fallback(
        mut self,
        handler: impl Fn(&str, &ReceivedMessage) + Send + Sync + 'static,
    ) -> Self {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// Runs the handlers for one message; returns how many ran (the fallback counts).
    pub fn dispatch_message(&self, from: &str, message: &ReceivedMessage) -> usize {
        let mut ran = 0;
        for (prefix, handler) in &self.routes {
            if message.data.starts_with(prefix) {
                handler(from, message);
                ran += 1;
            }
        }
        if ran == 0 {
            if let Some(fallback) = &self.fallback {
                fallback(from, message);
                ran = 1;
            }
        }
        ran
    }

    /// Dispatches an event if it is a received message; returns how many handlers ran
    /// (0 for every other event).
    pub fn dispatch(&self, event: &Event) -> usize {
        match event {
            Event::Received { from, message } => self.dispatch_message(from, message),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn message(data: &'static [u8]) -> ReceivedMessage {
        ReceivedMessage {
            uuid: [0; 16],
            ttl: None,
            flags: 0,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn several_handlers_per_prefix_all_run() {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (a, b, c, d) = (hits.clone(), hits.clone(), hits.clone(), hits.clone());
        let router = PrefixRouter::new()
            .route("rpc:", move |_, _| {
                a.lock().unwrap_or_else(|e| e.into_inner()).push("first")
            })
            .route("rpc:", move |_, _| {
                b.lock().unwrap_or_else(|e| e.into_inner()).push("second")
            })
            .route("rpc:call", move |_, _| {
                c.lock().unwrap_or_else(|e| e.into_inner()).push("longer")
            })
            .fallback(move |_, _| d.lock().unwrap_or_else(|e| e.into_inner()).push("fallback"));
        assert_eq!(router.dispatch_message("p", &message(b"rpc:call 1")), 3);
        assert_eq!(router.dispatch_message("p", &message(b"other")), 1);
        let hits = hits.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(hits, vec!["first", "second", "longer", "fallback"]);
    }
}
