//! What every subcommand shares: logging set-up, errors, the peer arguments
//! (`--ident`, `--bind`, `--connect`) and starting a [`Messaging`] from them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use snakemq::storage::{QueueStore, StorageError};
use snakemq::{Messaging, MessagingBuilder};

use crate::transport::TransportArgs;

/// Errors of the command line, printed as one line; the process exits with 1.
pub(crate) type CliError = Box<dyn std::error::Error + Send + Sync>;

/// Exit code when the work could not be finished in time (`send --timeout`): not every
/// message was delivered.
pub(crate) const EXIT_UNDELIVERED: u8 = 2;

/// Logs go to stderr, never stdout (stdout carries data, e.g. `listen --json`).
pub(crate) fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet {
        "error"
    } else {
        match verbose {
            0 => "warn",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Who we are and where we meet peers; flattened into the commands that run a peer.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PeerArgs {
    /// Our identity (1 to 50 characters).
    #[arg(long, value_name = "NAME")]
    pub(crate) ident: String,
    /// Listen on ADDR (`host:port`; port 0 picks a free port). Repeatable.
    #[arg(long, value_name = "ADDR")]
    pub(crate) bind: Vec<String>,
    /// Keep a connection to ADDR, reconnecting as needed. Repeatable.
    #[arg(long, value_name = "ADDR")]
    pub(crate) connect: Vec<String>,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}

impl PeerArgs {
    /// A builder with the identity, listeners and connectors (with their TLS, QUIC and
    /// throttle settings), for callers that want to tune it before starting.
    pub(crate) fn builder(&self) -> Result<MessagingBuilder, CliError> {
        let transport = &self.transport;
        let mut builder =
            Messaging::builder(self.ident.as_str()).link_config(transport.link_config());
        if !self.bind.is_empty() {
            let options = transport.listen_options()?;
            for addr in &self.bind {
                builder = builder.listen_with(&transport.endpoint(addr), options.clone());
            }
        }
        if !self.connect.is_empty() {
            let options = transport.connect_options()?;
            for addr in &self.connect {
                builder = builder.connect_with(&transport.endpoint(addr), options.clone());
            }
        }
        Ok(builder)
    }

    /// Checks that there is somewhere to meet a peer: without a listener or a connector
    /// nothing would ever arrive or leave, and the command would just hang.
    pub(crate) fn check(&self) -> Result<(), CliError> {
        if self.bind.is_empty() && self.connect.is_empty() {
            return Err("give at least one --bind ADDR or --connect ADDR".into());
        }
        Ok(())
    }

    /// Checks, starts `builder` (from [`PeerArgs::builder`], possibly tuned) and prints
    /// `listening on ADDR` on stderr for each bound listener, so a user (or a test) that
    /// bound port 0 learns the port.
    pub(crate) async fn start_with(
        &self,
        builder: MessagingBuilder,
    ) -> Result<Messaging, CliError> {
        self.check()?;
        let messaging = builder.start().await?;
        for endpoint in messaging.local_endpoints() {
            eprintln!("listening on {endpoint}");
        }
        Ok(messaging)
    }

    /// The connect addresses as one printable list (for messages about unreachable peers).
    pub(crate) fn connect_list(&self) -> String {
        self.connect.join(", ")
    }
}

/// Parses a duration in seconds (`1.5` allowed), for clap.
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} is not a non-negative number of seconds"))
}

/// Runs `future` with an optional deadline; `None` when the deadline passed first.
pub(crate) async fn with_deadline<F: Future>(
    deadline: Option<tokio::time::Instant>,
    future: F,
) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await.ok(),
        None => Some(future.await),
    }
}

/// Which store implementation keeps the queues on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoreBackend {
    /// One SQLite file (the default).
    Sqlite,
    /// A RocksDB directory (needs a `snakemq` built with the `rocksdb` feature).
    Rocksdb,
}

impl std::fmt::Display for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreBackend::Sqlite => "SQLite",
            StoreBackend::Rocksdb => "RocksDB",
        })
    }
}

/// How hard a commit of the store tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DurabilityArg {
    /// Flush every commit to the disk: survives a crash and a power loss.
    Full,
    /// Survives a process crash; the last commits may be lost on a power loss.
    Normal,
}

impl From<DurabilityArg> for snakemq::storage::Durability {
    fn from(value: DurabilityArg) -> Self {
        match value {
            DurabilityArg::Full => snakemq::storage::Durability::Full,
            DurabilityArg::Normal => snakemq::storage::Durability::Normal,
        }
    }
}

/// `--store`, `--store-backend`, `--durability`: queues that survive a restart.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreArgs {
    /// Keep queues (persistent messages, received ids) in the store at PATH, so they
    /// survive a restart.
    #[arg(long, value_name = "PATH")]
    pub(crate) store: Option<PathBuf>,
    /// The kind of store at --store PATH.
    #[arg(long, value_enum, value_name = "BACKEND", default_value_t = StoreBackend::Sqlite)]
    pub(crate) store_backend: StoreBackend,
    /// How hard a commit of the store tries to reach the disk.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = DurabilityArg::Full)]
    pub(crate) durability: DurabilityArg,
}

impl StoreArgs {
    /// Adds the store (if `--store` was given) to `builder`. Any failure to open it is one
    /// line naming the file.
    pub(crate) fn apply(&self, builder: MessagingBuilder) -> Result<MessagingBuilder, CliError> {
        let Some(path) = &self.store else {
            return Ok(builder);
        };
        Ok(
            match open_store(path, self.store_backend, self.durability)? {
                AnyStore::Sqlite(store) => builder.store(store),
                #[cfg(feature = "rocksdb")]
                AnyStore::Rocks(store) => builder.store(store),
            },
        )
    }
}

/// A store opened by the command line, of whichever backend.
pub(crate) enum AnyStore {
    /// A SQLite file.
    Sqlite(snakemq::storage::SqliteStore),
    /// A RocksDB directory.
    #[cfg(feature = "rocksdb")]
    Rocks(snakemq::storage::RocksStore),
}

impl AnyStore {
    /// The store as the trait, for code that does not care about the backend.
    pub(crate) fn as_store(&self) -> &dyn QueueStore {
        match self {
            AnyStore::Sqlite(store) => store,
            #[cfg(feature = "rocksdb")]
            AnyStore::Rocks(store) => store,
        }
    }

    /// The store as the trait, mutable.
    pub(crate) fn as_store_mut(&mut self) -> &mut dyn QueueStore {
        match self {
            AnyStore::Sqlite(store) => store,
            #[cfg(feature = "rocksdb")]
            AnyStore::Rocks(store) => store,
        }
    }
}

/// Opens the store at `path`; errors become one line that names the file.
pub(crate) fn open_store(
    path: &Path,
    backend: StoreBackend,
    durability: DurabilityArg,
) -> Result<AnyStore, CliError> {
    let opened = match backend {
        StoreBackend::Sqlite => {
            let options = snakemq::storage::SqliteOptions {
                durability: durability.into(),
                ..Default::default()
            };
            snakemq::storage::SqliteStore::open(path, options).map(AnyStore::Sqlite)
        }
        #[cfg(feature = "rocksdb")]
        StoreBackend::Rocksdb => {
            let options = snakemq::storage::RocksOptions {
                durability: durability.into(),
                ..Default::default()
            };
            snakemq::storage::RocksStore::open(path, options).map(AnyStore::Rocks)
        }
        #[cfg(not(feature = "rocksdb"))]
        StoreBackend::Rocksdb => {
            return Err(
                "--store-backend rocksdb: this snakemq was built without RocksDB support \
                 (rebuild with `--features rocksdb`)"
                    .into(),
            );
        }
    };
    opened.map_err(|error| store_error(path, &error))
}

/// One line for a store that cannot be opened, always naming the file.
pub(crate) fn store_error(path: &Path, error: &StorageError) -> CliError {
    match error {
        StorageError::Locked { .. } => {
            format!("{}: store is in use by a running process", path.display()).into()
        }
        StorageError::Foreign { reason, .. } if reason.contains("Python") => format!(
            "{error} (copy its messages into a store with `snakemq queue import-python {} \
             --store NEW_PATH`)",
            path.display()
        )
        .into(),
        // These name the file already.
        StorageError::Io { .. } | StorageError::Corrupt { .. } | StorageError::Foreign { .. } => {
            error.to_string().into()
        }
        _ => format!("{}: {error}", path.display()).into(),
    }
}

/// Logs a connection that could not be established: a refused TLS handshake and the first
/// failure of a connector as warnings, a connector's further retries (every backoff step
/// while a peer is away) only with `-v`.
pub(crate) fn log_connection_failure(
    event: &snakemq::Event,
    failure: &snakemq::link::EstablishFailure,
) {
    let tls = matches!(failure.error, snakemq::link::LinkError::TlsHandshake { .. });
    if tls || failure.attempt <= 1 {
        tracing::warn!("{event}");
    } else {
        tracing::debug!("{event}");
    }
}
