//! Settings of a [`Messaging`](super::Messaging) instance and their builder.

use std::time::Duration;

use snakemq_link::{ConnectOptions, Endpoint, LinkConfig, ListenOptions};
use snakemq_storage::{MemoryStore, QueueStore};

use crate::Error;
use crate::proto::Keepalive;

/// Longest own identity, in characters.
pub const MAX_IDENTITY_CHARS: usize = 50;

/// What `send` does when the destination's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QueuePolicy {
    /// Wait until there is room (backpressure). The default.
    #[default]
    Wait,
    /// Fail with [`Error::QueueFull`].
    Error,
    /// Drop the oldest message that is not in flight (reported as
    /// [`DropReason::QueueFull`](super::DropReason::QueueFull)).
    DropOldest,
}

/// Per-peer queue limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most messages queued for one peer.
    pub max_messages: u64,
    /// Most payload bytes queued for one peer.
    pub max_bytes: u64,
    /// What to do when either is reached.
    pub policy: QueuePolicy,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_messages: 1_000_000,
            max_bytes: 1024 * 1024 * 1024,
            policy: QueuePolicy::Wait,
        }
    }
}

/// Settings shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) identity: String,
    pub(crate) acks: bool,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) limits: QueueLimits,
    pub(crate) replace_duplicates: bool,
    pub(crate) bind_identities: bool,
    pub(crate) max_in_flight_messages: usize,
    pub(crate) max_in_flight_bytes: usize,
    pub(crate) dedup_window: usize,
    pub(crate) event_capacity: usize,
}

/// Builds a [`Messaging`](super::Messaging).
pub struct MessagingBuilder {
    pub(crate) settings: Settings,
    pub(crate) link: LinkConfig,
    pub(crate) listen: Vec<(Endpoint, ListenOptions)>,
    pub(crate) connect: Vec<(Endpoint, ConnectOptions)>,
    /// The working queues, always in memory.
    pub(crate) memory: Box<dyn QueueStore>,
    /// Where persistent messages are committed, if anywhere.
    pub(crate) durable: Option<Box<dyn QueueStore>>,
    pub(crate) errors: Vec<Error>,
}

impl std::fmt::Debug for MessagingBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagingBuilder")
            .field("identity", &self.settings.identity)
            .field("listen", &self.listen)
            .field("connect", &self.connect)
            .finish_non_exhaustive()
    }
}

/// Checks our own identity: UTF-8 (guaranteed by `&str`), 1 to 50 characters.
pub(crate) fn validate_identity(identity: &str) -> Result<(), Error> {
    let chars = identity.chars().count();
    let reason = if chars == 0 {
        "empty"
    } else if chars > MAX_IDENTITY_CHARS {
        "longer than 50 characters"
    } else if identity.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(Error::InvalidIdentity {
        identity: identity.to_owned(),
        reason,
    })
}

/// Checks a destination identity: what a remote peer may legally announce.
pub(crate) fn validate_destination(identity: &str) -> Result<(), Error> {
    let reason = if identity.is_empty() {
        "empty"
    } else if identity.len() > crate::proto::MAX_REMOTE_IDENTITY {
        "longer than 200 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidIdentity {
        identity: identity.to_owned(),
        reason,
    })
}

impl MessagingBuilder {
    pub(crate) fn new(identity: impl Into<String>) -> Self {
        let identity = identity.into();
        let errors = validate_identity(&identity).err().into_iter().collect();
        MessagingBuilder {
            settings: Settings {
                identity,
                acks: true,
                keepalive: Some(Keepalive::default()),
                handshake_timeout: Duration::from_secs(10),
                limits: QueueLimits::default(),
                replace_duplicates: false,
                bind_identities: true,
                max_in_flight_messages: 8192,
                max_in_flight_bytes: 16 * 1024 * 1024,
                dedup_window: 65_536,
                event_capacity: 8192,
            },
            link: LinkConfig::default(),
            listen: Vec::new(),
            connect: Vec::new(),
            memory: Box::new(MemoryStore::new()),
            durable: None,
            errors,
        }
    }

    fn endpoint(&mut self, endpoint: &str) -> Option<Endpoint> {
        match endpoint.parse() {
            Ok(endpoint) => Some(endpoint),
            Err(error) => {
                self.errors.push(Error::Link(error));
                None
            }
        }
    }

    /// Listens on an endpoint (`host:port`, `[::1]:0`, `memory:NAME`). Any number.
    pub fn listen(self, endpoint: &str) -> Self {
        self.listen_with(endpoint, ListenOptions::default())
    }

    /// Listens on an endpoint with options (TLS). Any number.
    pub fn listen_with(mut self, endpoint: &str, options: ListenOptions) -> Self {
        if let Some(endpoint) = self.endpoint(endpoint) {
            self.listen.push((endpoint, options));
        }
        self
    }

    /// Keeps a connection to an endpoint, reconnecting with backoff. Any number.
    pub fn connect(self, endpoint: &str) -> Self {
        self.connect_with(endpoint, ConnectOptions::default())
    }

    /// Keeps a connection to an endpoint with options (TLS), reconnecting with backoff.
    /// Any number.
    pub fn connect_with(mut self, endpoint: &str, options: ConnectOptions) -> Self {
        if let Some(endpoint) = self.endpoint(endpoint) {
            self.connect.push((endpoint, options));
        }
        self
    }

    /// Uses this store for outgoing queues.
    ///
    /// A durable store (SQLite, RocksDB) keeps persistent messages
    /// ([`Message::persistent`](super::Message::persistent)) across restarts: they are
    /// committed, in groups, before `send` returns, and loaded again at start. The working
    /// queues stay in memory either way. A non-durable store replaces the in-memory one
    /// (default: [`MemoryStore`]).
    pub fn store(mut self, store: impl QueueStore) -> Self {
        if store.is_durable() {
            self.durable = Some(Box::new(store));
        } else {
            self.memory = Box::new(store);
        }
        self
    }

    /// Link settings (packet size limit, backoff, connection limit, middleware).
    pub fn link_config(mut self, config: LinkConfig) -> Self {
        self.link = config;
        self
    }

    /// Wraps every connection's byte stream in a tower middleware stack (throttle, trace,
    /// a layer of your own; see [`snakemq_link::middleware`]): shorthand for
    /// [`LinkConfig::middleware`] on this builder's link settings. Replaces an earlier stack.
    pub fn middleware<L>(mut self, layer: L) -> Self
    where
        L: snakemq_link::middleware::Layer<snakemq_link::Passthrough>,
        L::Service: snakemq_link::middleware::Service<
                snakemq_link::ByteStream,
                Response = snakemq_link::ByteStream,
                Error = snakemq_link::LinkError,
            > + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as snakemq_link::middleware::Service<snakemq_link::ByteStream>>::Future:
            Send + 'static,
    {
        self.link = self.link.middleware(layer);
        self
    }

    /// Keepalive timing, or `None` to turn it off (on by default: 2 s idle, 3 s wait).
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.settings.keepalive = keepalive;
        self
    }

    /// Time a new connection has to identify itself (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.settings.handshake_timeout = timeout;
        self
    }

    /// Whether to offer acknowledgements to Rust peers (default on). Off gives Python's
    /// at-most-once semantics with every peer.
    pub fn acks(mut self, on: bool) -> Self {
        self.settings.acks = on;
        self
    }

    /// Per-peer queue limits and policy.
    pub fn queue_limits(mut self, limits: QueueLimits) -> Self {
        self.settings.limits = limits;
        self
    }

    /// Whether a new connection claiming an identity that is already connected replaces
    /// the old connection (default: it is refused, as in Python snakeMQ).
    pub fn replace_duplicate_identities(mut self, replace: bool) -> Self {
        self.settings.replace_duplicates = replace;
        self
    }

    /// Identity binding (on by default): when a peer presented a certificate that this
    /// side verified (TLS with client certificates, or the server's certificate seen by
    /// a connector), the IDENTIFICATION it sends must be one of the certificate's names —
    /// a DNS name of its subject alternative names, or its common name when it has no DNS
    /// name; exact, case-insensitive, no wildcards. Otherwise the connection is closed
    /// before the peer is registered, so no queued message flows to it, and an
    /// [`Event::Error`](super::Event::Error) with [`Error::IdentityMismatch`](crate::Error::IdentityMismatch)
    /// is reported.
    ///
    /// Connections without a verified certificate (plain TCP, a TLS client that presented
    /// none, a connector using the insecure Python opt-out) are not bound. Turn binding
    /// off only when certificates name hosts rather than identities and every holder of
    /// a certificate from the trusted CA may claim any identity.
    pub fn bind_identities_to_certificates(mut self, bind: bool) -> Self {
        self.settings.bind_identities = bind;
        self
    }

    /// Most unacknowledged messages and bytes in flight per connection.
    pub fn in_flight_window(mut self, messages: usize, bytes: usize) -> Self {
        self.settings.max_in_flight_messages = messages.max(1);
        self.settings.max_in_flight_bytes = bytes.max(1);
        self
    }

    /// How many recent message ids per peer are remembered to suppress duplicates.
    pub fn dedup_window(mut self, ids: usize) -> Self {
        self.settings.dedup_window = ids.max(1);
        self
    }

    /// How many events may wait for the application before connections pause.
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.settings.event_capacity = events.max(1);
        self
    }
}
