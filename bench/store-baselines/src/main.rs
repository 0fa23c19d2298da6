//! Baseline loops for the persistent-queue benchmarks of `cargo xtask bench`: how fast the
//! storage underneath can go on this machine, with no queue, no messaging and no network.
//!
//! ```text
//! store-baselines rusqlite-loop DIR COUNT [--size 64] [--batch 1000]
//! store-baselines fsync-loop    DIR COUNT [--size 64]
//! store-baselines rocksdb-loop  DIR COUNT [--size 64] [--batch 100]   (feature `rocksdb`)
//! store-baselines sqlite-store  DIR COUNT [--size 64] [--batch 1000]
//! ```
//!
//! `sqlite-store` is not a baseline but our `SqliteStore` doing the `rusqlite-loop` work
//! through `QueueStore::write` (one batch of pushes, one of removals): the storage share of
//! the end-to-end figure, to tell the store's cost from the messaging layer's.
//!
//! Each run creates its database or file inside DIR (which must exist), times the loop only
//! (not the set-up), removes what it created and prints one JSON line on stdout with the
//! fields of `snakemq bench --json` plus the harness name and batch size:
//! `{"harness":"fsync-loop","size":64,"count":N,"batch":1,"seconds":S,"msgs_per_sec":R,"mib_per_sec":M}`.
//! A "message" is one row, one write or one put.
//!
//! Exit status: 0 on success; 1 when the loop fails (one line on stderr); 2 for a usage error
//! or a subcommand this build does not include.

#![forbid(unsafe_code)]

mod loops;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The usage text printed on a usage error.
const USAGE: &str = "usage: store-baselines rusqlite-loop DIR COUNT [--size N] [--batch N]\n\
                     \x20      store-baselines fsync-loop DIR COUNT [--size N]\n\
                     \x20      store-baselines rocksdb-loop DIR COUNT [--size N] [--batch N]";

/// Which loop to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Harness {
    /// Insert `batch` rows in one transaction, delete them in another (SQLite WAL + FULL).
    Rusqlite,
    /// Append `size` bytes and fsync, once per message.
    Fsync,
    /// One synced RocksDB `WriteBatch` of `batch` puts.
    Rocksdb,
    /// Our `SqliteStore`: a `WriteBatch` of `batch` pushes, then one of their removals.
    SqliteStore,
}

impl Harness {
    /// The subcommand name, also printed as the `harness` field.
    fn name(self) -> &'static str {
        match self {
            Harness::Rusqlite => "rusqlite-loop",
            Harness::Fsync => "fsync-loop",
            Harness::Rocksdb => "rocksdb-loop",
            Harness::SqliteStore => "sqlite-store",
        }
    }

    /// The batch size used when `--batch` is not given (the figures the issue names).
    fn default_batch(self) -> usize {
        match self {
            Harness::Rusqlite | Harness::SqliteStore => 1000,
            Harness::Fsync => 1,
            Harness::Rocksdb => 100,
        }
    }
}

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    harness: Harness,
    dir: PathBuf,
    count: usize,
    size: usize,
    batch: usize,
}

/// Parses the arguments after the program name.
fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut args = args.iter();
    let harness = match args.next().map(String::as_str) {
        Some("rusqlite-loop") => Harness::Rusqlite,
        Some("fsync-loop") => Harness::Fsync,
        Some("rocksdb-loop") => Harness::Rocksdb,
        Some("sqlite-store") => Harness::SqliteStore,
        Some(other) => return Err(format!("unknown subcommand `{other}`")),
        None => return Err("missing subcommand".into()),
    };
    let mut positional = Vec::new();
    let mut size = 64;
    let mut batch = harness.default_batch();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size" => size = number("--size", args.next())?,
            // fsync-loop has no batches: one write, one fsync.
            "--batch" if harness != Harness::Fsync => batch = number("--batch", args.next())?,
            flag if flag.starts_with("--") => {
                return Err(format!("unknown option `{flag}` for {}", harness.name()));
            }
            _ => positional.push(arg),
        }
    }
    let [dir, count] = positional.as_slice() else {
        return Err(format!("{} takes DIR COUNT", harness.name()));
    };
    let count = number("COUNT", Some(*count))?;
    if count == 0 || batch == 0 {
        return Err("COUNT and --batch must be at least 1".into());
    }
    Ok(Args {
        harness,
        dir: PathBuf::from(dir),
        count,
        size,
        batch,
    })
}

/// Parses a non-negative integer argument named `what`.
fn number(what: &str, value: Option<&String>) -> Result<usize, String> {
    let value = value.ok_or_else(|| format!("{what} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("{what}: `{value}` is not a non-negative integer"))
}

/// The JSON line for one finished run.
fn json_line(args: &Args, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let rate = args.count as f64 / seconds;
    let mib = rate * args.size as f64 / (1024.0 * 1024.0);
    format!(
        "{{\"harness\":\"{}\",\"size\":{},\"count\":{},\"batch\":{},\"seconds\":{:.6},\
         \"msgs_per_sec\":{:.1},\"mib_per_sec\":{:.1}}}",
        args.harness.name(),
        args.size,
        args.count,
        args.batch,
        seconds,
        rate,
        mib
    )
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("store-baselines: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = match args.harness {
        Harness::Rusqlite => loops::rusqlite_loop(&args.dir, args.count, args.size, args.batch),
        Harness::Fsync => loops::fsync_loop(&args.dir, args.count, args.size),
        Harness::SqliteStore => {
            loops::sqlite_store_loop(&args.dir, args.count, args.size, args.batch)
        }
        Harness::Rocksdb => {
            match loops::rocksdb_loop(&args.dir, args.count, args.size, args.batch) {
                Some(outcome) => outcome,
                None => {
                    eprintln!(
                        "store-baselines: rocksdb-loop needs a build with the `rocksdb` feature \
                         (cargo build --release -p store-baselines --features rocksdb)"
                    );
                    return ExitCode::from(2);
                }
            }
        }
    };
    match outcome {
        Ok(elapsed) => {
            println!("{}", json_line(&args, elapsed));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("store-baselines: {}: {err}", args.harness.name());
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, String> {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse_args(&argv)
    }

    #[test]
    fn defaults_follow_the_issue() -> Result<(), String> {
        let sqlite = parse("rusqlite-loop /tmp/x 5000")?;
        assert_eq!(
            sqlite,
            Args {
                harness: Harness::Rusqlite,
                dir: PathBuf::from("/tmp/x"),
                count: 5000,
                size: 64,
                batch: 1000,
            }
        );
        assert_eq!(parse("rocksdb-loop d 10")?.batch, 100);
        assert_eq!(parse("fsync-loop d 10")?.batch, 1);
        Ok(())
    }

    #[test]
    fn options_go_anywhere() -> Result<(), String> {
        let args = parse("rusqlite-loop --size 1024 d --batch 7 10")?;
        assert_eq!((args.size, args.batch, args.count), (1024, 7, 10));
        assert_eq!(args.dir, PathBuf::from("d"));
        Ok(())
    }

    #[test]
    fn bad_arguments_are_refused() {
        for line in [
            "",
            "sqlite d 10",
            "rusqlite-loop d",
            "rusqlite-loop d 10 extra",
            "rusqlite-loop d ten",
            "rusqlite-loop d 0",
            "rusqlite-loop d 10 --batch 0",
            "rusqlite-loop d 10 --size",
            "rusqlite-loop d 10 --size -1",
            "fsync-loop d 10 --batch 5",
            "rocksdb-loop d 10 --sync",
        ] {
            assert!(parse(line).is_err(), "accepted `{line}`");
        }
    }

    #[test]
    fn json_has_the_bench_fields() -> Result<(), String> {
        let args = parse("fsync-loop d 1000 --size 1048576")?;
        let line = json_line(&args, Duration::from_secs(2));
        assert_eq!(
            line,
            "{\"harness\":\"fsync-loop\",\"size\":1048576,\"count\":1000,\"batch\":1,\
             \"seconds\":2.000000,\"msgs_per_sec\":500.0,\"mib_per_sec\":500.0}"
        );
        Ok(())
    }
}
