//! What every subcommand shares: logging set-up, errors.

/// Errors of the command line, printed as one line.
pub(crate) type CliError = Box<dyn std::error::Error + Send + Sync>;

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
