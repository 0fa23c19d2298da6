//! What every subcommand shares: logging set-up, errors, the peer arguments
//! (`--ident`, `--bind`, `--connect`) and starting a [`Messaging`] from them.

use std::future::Future;
use std::time::Duration;

use snakemq::{Messaging, MessagingBuilder};

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
}

impl PeerArgs {
    /// A builder with the identity, listeners and connectors, for callers that want to
    /// tune it before starting.
    pub(crate) fn builder(&self) -> MessagingBuilder {
        let mut builder = Messaging::builder(self.ident.as_str());
        for addr in &self.bind {
            builder = builder.listen(addr);
        }
        for addr in &self.connect {
            builder = builder.connect(addr);
        }
        builder
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

    /// [`PeerArgs::start_with`] the default builder.
    pub(crate) async fn start(&self) -> Result<Messaging, CliError> {
        self.start_with(self.builder()).await
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
