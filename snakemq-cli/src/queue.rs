//! `snakemq queue`: look into a queue store, and import Python snakeMQ queues into one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use snakemq::storage::{Expiry, PeerStats, Record};
use snakemq::uuid_hex;

use crate::common::{CliError, DurabilityArg, StoreBackend, open_store, store_error};

/// Arguments of `snakemq queue`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct QueueArgs {
    #[command(subcommand)]
    action: Option<QueueAction>,
    /// The store to list (it must not be open in a running snakemq).
    #[arg(value_name = "PATH", required = true)]
    path: Option<PathBuf>,
    /// The kind of store at PATH.
    #[arg(long, value_enum, value_name = "BACKEND", default_value_t = StoreBackend::Sqlite)]
    store_backend: StoreBackend,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum QueueAction {
    /// Copy the queued messages of a Python snakeMQ 1.6 SQLite queue file into a store.
    ImportPython(ImportArgs),
}

/// Arguments of `snakemq queue import-python`.
#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// The Python `SqliteQueuesStorage` file (read, not changed).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The store to import into (created if missing).
    #[arg(long, value_name = "PATH")]
    store: PathBuf,
    /// The kind of store at --store PATH.
    #[arg(long, value_enum, value_name = "BACKEND", default_value_t = StoreBackend::Sqlite)]
    store_backend: StoreBackend,
    /// How hard the commit tries to reach the disk.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = DurabilityArg::Full)]
    durability: DurabilityArg,
}

/// One peer's line of the listing.
struct PeerLine {
    peer: String,
    stats: PeerStats,
    oldest: Option<Record>,
}

pub(crate) fn run(args: QueueArgs) -> Result<ExitCode, CliError> {
    if let Some(QueueAction::ImportPython(import)) = args.action {
        return import_python(&import);
    }
    let Some(path) = args.path else {
        return Err("give the store PATH".into());
    };
    let store = open_store(&path, args.store_backend, DurabilityArg::Full)?;
    let store = store.as_store();
    let mut lines = Vec::new();
    let mut peers = store.peers().map_err(|e| store_error(&path, &e))?;
    peers.sort_by(|a, b| a.0.cmp(&b.0));
    for (peer, stats) in peers {
        let mut page = Vec::new();
        store
            .read(&peer, None, 1, &mut page)
            .map_err(|e| store_error(&path, &e))?;
        lines.push(PeerLine {
            peer,
            stats,
            oldest: page.into_iter().next(),
        });
    }
    if args.json {
        println!("{}", json(&lines));
    } else if lines.is_empty() {
        println!("{}: no queued messages", path.display());
    } else {
        print_table(&lines);
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How an expiry reads in the table: `never`, `in 12.3 s`, `expired`, `with connection`.
fn expiry_text(expiry: Expiry, now: u64) -> String {
    match expiry {
        Expiry::Never => "never".to_owned(),
        Expiry::At(at) if at <= now => "expired".to_owned(),
        #[allow(clippy::cast_precision_loss)] // milliseconds shown to a tenth of a second
        Expiry::At(at) => format!("in {:.1} s", (at - now) as f64 / 1000.0),
        Expiry::WhileConnected => "with connection".to_owned(),
    }
}

fn print_table(lines: &[PeerLine]) {
    let now = now_ms();
    let width = lines
        .iter()
        .map(|l| l.peer.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:<width$}  {:>9}  {:>12}  {:>10}  {:<32}  EXPIRES",
        "PEER", "MESSAGES", "BYTES", "OLDEST_SEQ", "OLDEST_UUID"
    );
    for line in lines {
        let seq = line
            .stats
            .oldest_seq
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        let (uuid, expires) = match &line.oldest {
            Some(record) => (uuid_hex(&record.uuid), expiry_text(record.expiry, now)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<width$}  {:>9}  {:>12}  {:>10}  {:<32}  {expires}",
            line.peer, line.stats.messages, line.stats.bytes, seq, uuid
        );
    }
}

/// `{"peers":[{"peer","messages","bytes","oldest_seq","oldest_uuid","oldest_expires_ms"}]}`;
/// `oldest_expires_ms` is the deadline in milliseconds since the epoch, `null` for none.
fn json(lines: &[PeerLine]) -> serde_json::Value {
    let peers: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| {
            let oldest = line.oldest.as_ref();
            serde_json::json!({
                "peer": line.peer,
                "messages": line.stats.messages,
                "bytes": line.stats.bytes,
                "oldest_seq": line.stats.oldest_seq,
                "oldest_uuid": oldest.map(|r| uuid_hex(&r.uuid)),
                "oldest_expires_ms": oldest.and_then(|r| r.expiry.deadline_ms()),
            })
        })
        .collect();
    serde_json::json!({ "peers": peers })
}

fn import_python(args: &ImportArgs) -> Result<ExitCode, CliError> {
    let mut store = open_store(&args.store, args.store_backend, args.durability)?;
    let report = snakemq::storage::import_python_queue(&args.file, store.as_store_mut())
        .map_err(|e| store_error(&args.file, &e))?;
    for (peer, count) in &report.peers {
        println!("{peer}: {count} messages");
    }
    println!(
        "imported {} messages from {} into {} ({} expired, skipped)",
        report.imported,
        args.file.display(),
        args.store.display(),
        report.expired
    );
    Ok(ExitCode::SUCCESS)
}
